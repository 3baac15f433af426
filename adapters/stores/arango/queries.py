"""Every AQL statement and index the arango:// store uses, and how a listing picks its query.

Values are always bind variables and the collection a collection bind parameter (@@coll):
nothing a caller passes is ever formatted into AQL.
"""

from __future__ import annotations

from typing import Any

# Every write waits for the disk: `waitForSync: true` on each statement and insert (and as the
# collection's property when the store creates it). python-arango creates a collection with
# an explicit `"waitForSync": false`, which overrides the server's --database.wait-for-sync,
# and RocksDB otherwise syncs its log only every --rocksdb.sync-interval (100 ms): a power
# loss could take a save that had returned, such as a step's start recorded just before its
# effect. Per statement, so a collection made by an older version or by hand is covered too.
QUERIES: dict[str, str] = {
    # The revision check and the write are one AQL statement, one transaction on the server.
    # The integer FILTER on `revision` alone decides "conflict or not":
    #
    # - No match: another save took the revision (or the document is gone); save() reads the
    #   document back to say which.
    # - Error 1200 only says "the document changed after this statement's snapshot": by a
    #   save, or by a heartbeat, which changes `_rev` but not `revision`. ignoreRevs:false
    #   makes the REPLACE apply only to the very version the FILTER read (same `_rev`), and
    #   RocksDB's snapshot check reports a document written after the snapshot the same way
    #   (ArangoDB begins every transaction with set_snapshot: RocksDBTrxBaseMethods::
    #   createTransaction; docs, "Locking and isolation": snapshot isolation, write-write
    #   conflicts fail with 1200). So a 1200 is never taken as a conflict by itself: the
    #   store runs the statement again, on a new snapshot, and the FILTER decides.
    #
    # Why not drop the `_rev` comparison instead: a heartbeat would still fail the save with
    # 1200 through the snapshot check, and "no lost update" would rest on how the engine
    # validates writes against the snapshot (which changed in 3.11, when writes to one
    # document became serialized on key locks). Keeping it costs nothing.
    #
    # REPLACE, not UPDATE: the document is exactly what the model says, no merged leftovers.
    # heartbeat_at_us is merged with MAX (which skips null) so a save carrying an older copy
    # cannot move the heartbeat back.
    "save": (
        "FOR d IN @@coll FILTER d._key == @key AND d.revision == @revision "
        "REPLACE d WITH MERGE(@doc, "
        "{heartbeat_at_us: MAX([d.heartbeat_at_us, @doc.heartbeat_at_us])}) "
        "IN @@coll OPTIONS {ignoreRevs: false, waitForSync: true} RETURN NEW.revision"
    ),
    # A heartbeat touches one attribute and leaves `revision` alone, so a save's FILTER never
    # fails because of it (a save that meets it mid-flight gets 1200 and runs again). The MAX
    # is computed from the version the statement read; ignoreRevs:false writes it only over
    # that very version, so a newer heartbeat written meanwhile is never replaced by a lower
    # one (the statement gets 1200 and runs again on the newer version), as in the SQLite
    # store, whatever the engine's snapshot check does.
    "heartbeat": (
        "FOR d IN @@coll FILTER d._key == @key "
        "UPDATE d WITH {heartbeat_at_us: MAX([d.heartbeat_at_us, @at])} IN @@coll "
        "OPTIONS {ignoreRevs: false, waitForSync: true} RETURN NEW._key"
    ),
    # The listing variants are fixed strings chosen by which filters are present (not built
    # from values), so each one reads its persistent index in order: equality on the leading
    # attribute, then (created_at_us, _key) already sorted, and a LIMIT stops the scan early.
    # `_key` breaks ties in the order.
    "list": "FOR d IN @@coll SORT d.created_at_us, d._key RETURN d",
    "list_session": (
        "FOR d IN @@coll FILTER d.session_id == @session_id SORT d.created_at_us, d._key RETURN d"
    ),
    "list_status": (
        "FOR d IN @@coll FILTER d.status == @status SORT d.created_at_us, d._key RETURN d"
    ),
    "list_session_status": (
        "FOR d IN @@coll FILTER d.session_id == @session_id AND d.status == @status "
        "SORT d.created_at_us, d._key RETURN d"
    ),
    # AQL orders null before every number, so `< @before` also matches a heartbeat that is
    # null or missing (never beaten); written as one range, [status, heartbeat_at_us] serves
    # it as one index lookup per status. Its result (the stale ones only) is sorted in memory.
    "stale": (
        "FOR d IN @@coll FILTER d.status IN @statuses AND d.heartbeat_at_us < @before "
        "SORT d.created_at_us, d._key RETURN d"
    ),
}
_LIMIT = " LIMIT @limit"  # inserted before RETURN when a limit is given; @limit is bound

# Persistent indexes. The first three serve the list queries' filter *and* sort (equality on
# the leading attribute leaves the rest in index order; indexing `_key` is allowed, only
# `_id` is not); [status, heartbeat_at_us] serves list_stale. Not sparse: list_stale looks for
# a null heartbeat too. Built in the background, so initialize() on a populated collection
# does not hold the collection's write lock while the index is built.
INDEXES: tuple[tuple[str, ...], ...] = (
    ("session_id", "created_at_us", "_key"),
    ("status", "created_at_us", "_key"),
    ("created_at_us", "_key"),
    ("status", "heartbeat_at_us"),
)


def list_query(
    collection: str,
    session_id: str | None = None,
    status: str | None = None,
    limit: int | None = None,
) -> tuple[str, dict[str, Any]]:
    """The listing statement for these filters, and its bind variables."""
    name = "list"
    binds: dict[str, Any] = {"@coll": collection}
    if session_id is not None:
        name, binds["session_id"] = "list_session", session_id
    if status is not None:
        name = "list_session_status" if session_id is not None else "list_status"
        binds["status"] = status
    query = QUERIES[name]
    if limit is not None:
        query = query.replace(" RETURN d", _LIMIT + " RETURN d")
        binds["limit"] = max(int(limit), 0)
    return query, binds


__all__ = ["INDEXES", "QUERIES", "list_query"]
