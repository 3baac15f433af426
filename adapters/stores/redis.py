"""`redis://host:port/db?prefix=statesaga:`: workflow documents in Redis, shareable by every
worker on every host that reaches the server.

Layout (every key starts with the prefix):

- `wf:<id>`: a hash: `doc` (the JSON text of `WorkflowState.to_json()`, read back through
  `WorkflowState.from_json`, never pickle), `rev`, and the fields the indexes are kept from
  (`status`, `session`, `created`).
- `all`, `status:<STATUS>`, `session:<SESSION>`: sorted sets of ids scored by the creation
  time, so a listing is one range read, oldest first (equal scores order by id, as SQL's
  `ORDER BY created_at, id` does).
- `heartbeat`: a sorted set of ids scored by their latest heartbeat.

Times are scored in integer microseconds since the epoch, not float seconds: a float of
epoch seconds cannot hold every microsecond exactly, and a heartbeat must read back as written
and compare strictly against a cutoff. Integers up to 2**53 are exact in a sorted-set score
(until the year 2255).

Every write is one Lua script, so one round trip and atomic: `save` checks the revision,
writes the document and moves the indexes together, and a lost revision check writes nothing.
The scripts build index key names from the prefix, so they suit a single Redis server (or a
replicated one), not Redis Cluster.

Durability: workflows are only as durable as the server's persistence. A Redis with neither
AOF (`appendonly yes`) nor RDB snapshots (`save ...`) loses every workflow when it restarts,
and nothing would notice (`list` empty, `recover`: nothing to recover). So opening the store
asks the server (`CONFIG GET`, or `INFO persistence` where CONFIG is disabled, as on managed
services) and refuses a server that persists nothing, unless the URL says
`?durability=none`: the operator accepts that a restart loses the workflows (tests,
benchmarks, a throwaway server). RDB snapshots alone are accepted with a warning: a crash
loses the writes since the last snapshot; AOF (`appendfsync everysec`) loses at most about
a second.

Replication: a Redis primary acknowledges a write before its replicas have it, so a failover
(Sentinel promoting a replica) may lose the last writes. `?wait_replicas=N` makes every
create and save wait (Redis `WAIT`, up to `wait_timeout` ms, default 1000) until N replicas
have it, at the cost of a replica round trip per save; when fewer answer in time the save
stands on the primary alone and a warning says so (once, until replicas keep up again).
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import statesaga.adapters._redis_errors  # noqa: F401 (declares redis-py's errors to the core)
from statesaga.adapters._redis_url import (
    CLIENT_DEFAULTS,
    check_redis_url,
    is_sentinel,
    sentinel_client,
)
from statesaga.errors import AdapterError

from .document import (  # noqa: TID251 (relative, so mypy reads the base class)
    MISSING,
    WRITTEN,
    DocumentStore,
    Outcome,
    Record,
    Stored,
    from_micros,
    taken,
)

if TYPE_CHECKING:
    import redis

#: redis-py's option (redis.client.NEVER_DECODE) for a reply left as bytes.
NEVER_DECODE = "NEVER_DECODE"

log = logging.getLogger("statesaga.redis_store")

DEFAULT_PREFIX = "statesaga:"
#: `?durability=` values: check the server's persistence (the default), or accept none.
DURABILITY = ("checked", "none")

# KEYS[1] = the document hash. ARGV: prefix, id, doc, status, has_session, session, created,
# heartbeat ('' for none). Returns the stored revision when the id exists, else 0.
_CREATE = """
local rev = redis.call('HGET', KEYS[1], 'rev')
if rev then return tonumber(rev) end
local p, id, created = ARGV[1], ARGV[2], ARGV[7]
redis.call('HSET', KEYS[1], 'doc', ARGV[3], 'rev', 1, 'status', ARGV[4], 'created', created)
redis.call('ZADD', p .. 'all', created, id)
redis.call('ZADD', p .. 'status:' .. ARGV[4], created, id)
if ARGV[5] == '1' then
  redis.call('HSET', KEYS[1], 'session', ARGV[6])
  redis.call('ZADD', p .. 'session:' .. ARGV[6], created, id)
end
if ARGV[8] ~= '' then redis.call('ZADD', p .. 'heartbeat', ARGV[8], id) end
return 0
"""

# KEYS[1] = the document hash. ARGV: prefix, id, doc, expected revision, status, has_session,
# session, created, heartbeat. Returns {code, revision}: 1 saved, 0 conflict (with the stored
# `rev` as it is, which may be damaged), -1 not found.
_SAVE = """
local cur = redis.call('HMGET', KEYS[1], 'rev', 'status', 'session', 'created')
if not cur[1] then return {-1, 0} end
if tonumber(cur[1]) ~= tonumber(ARGV[4]) then return {0, cur[1]} end
local p, id, status, created = ARGV[1], ARGV[2], ARGV[5], ARGV[8]
local new = tonumber(ARGV[4]) + 1
redis.call('HSET', KEYS[1], 'doc', ARGV[3], 'rev', new, 'status', status, 'created', created)
if cur[2] ~= status then redis.call('ZREM', p .. 'status:' .. cur[2], id) end
redis.call('ZADD', p .. 'status:' .. status, created, id)
if cur[4] ~= created then redis.call('ZADD', p .. 'all', created, id) end
local session = false
if ARGV[6] == '1' then session = ARGV[7] end
if cur[3] and cur[3] ~= session then redis.call('ZREM', p .. 'session:' .. cur[3], id) end
if session then
  redis.call('HSET', KEYS[1], 'session', session)
  redis.call('ZADD', p .. 'session:' .. session, created, id)
elseif cur[3] then
  redis.call('HDEL', KEYS[1], 'session')
end
if ARGV[9] ~= '' then
  -- A save carrying an old heartbeat must not hide a newer one recorded meanwhile.
  local hb = redis.call('ZSCORE', p .. 'heartbeat', id)
  if not hb or tonumber(hb) < tonumber(ARGV[9]) then
    redis.call('ZADD', p .. 'heartbeat', ARGV[9], id)
  end
end
return {1, new}
"""

# KEYS[1] = the document hash, KEYS[2] = the heartbeat index. ARGV: id, time. Returns 0 when
# the id is unknown. The revision is not touched: a beat must not make a worker's copy stale.
_HEARTBEAT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local hb = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not hb or tonumber(hb) < tonumber(ARGV[2]) then redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1]) end
return 1
"""


class RedisStore(DocumentStore):
    """The Store port on Redis: documents as JSON, revision check and indexes in Lua."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str = DEFAULT_PREFIX,
        durability: str = "checked",
        *,
        wait_replicas: int = 0,
        wait_timeout: int = 1000,
    ) -> None:
        if durability not in DURABILITY:
            raise AdapterError(
                f"redis store URL option durability={durability!r}: expected one of "
                f"{', '.join(DURABILITY)}"
            )
        super().__init__()
        self.client = client
        self.prefix = prefix
        # Checked on first use rather than here, so that opening a store stays free of
        # network calls (a process may start while Redis is still coming up).
        self._durable = durability == "none"
        self.wait_replicas = wait_replicas
        self.wait_timeout = wait_timeout
        self._replicas_behind = False
        self._create = client.register_script(_CREATE)
        self._save = client.register_script(_SAVE)
        self._heartbeat = client.register_script(_HEARTBEAT)

    def __repr__(self) -> str:
        return f"RedisStore({location(self.client)!r}, prefix={self.prefix!r})"

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        """`redis://[:password@]host:port/db?prefix=statesaga:` (also `rediss://` for TLS);
        other query options are redis-py's own (e.g. `socket_timeout`)."""
        try:
            import redis
        except ImportError:
            raise AdapterError(
                "the redis store needs redis-py; install it with: pip install 'statesaga[rq]'"
            ) from None
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix", "redis+sentinel"):
            raise AdapterError(f"not a redis store URL: {url!r} (expected redis://host:port/db)")
        own = ("prefix", "durability", "wait_replicas", "wait_timeout")
        check_redis_url(url, "redis store", own=own)
        query = parse_qs(parts.query, keep_blank_values=True)
        prefix = query.pop("prefix", [DEFAULT_PREFIX])[-1]
        durability = query.pop("durability", ["checked"])[-1]
        waits: dict[str, int] = {}
        for option in ("wait_replicas", "wait_timeout"):
            if option in query:
                value = query.pop(option)[-1]
                if not value.isdigit():
                    raise AdapterError(
                        f"bad redis store URL: {option} must be a whole number, not {value!r}"
                    )
                waits[option] = int(value)
        rest = urlunsplit(parts._replace(query=urlencode(query, doseq=True)))
        try:
            if is_sentinel(rest):
                client = sentinel_client(
                    rest, "redis store", decode_responses=True, **CLIENT_DEFAULTS
                )
            else:
                client = redis.Redis.from_url(rest, decode_responses=True, **CLIENT_DEFAULTS)
        except ValueError as exc:
            raise AdapterError(f"bad redis store URL: {exc}") from None
        return cls(client, prefix, durability, **waits)

    def _ensure_durable(self) -> None:
        """Before the first read or write: check the server's persistence, once."""
        if not self._durable:
            self.check_durability()
            self._durable = True

    def check_durability(self) -> None:
        """Refuse a server that would lose every workflow when it restarts (see the module
        docstring); `?durability=none` in the URL skips this check. A server that cannot be
        reached raises redis-py's ConnectionError, as any other command would."""
        where = _server(self.client)
        aof, save = self._persistence()
        if aof:
            return
        if save:
            log.warning(
                "redis store at %s persists by RDB snapshots only (save %s): a crash loses "
                "the workflow changes since the last snapshot; appendonly yes loses at most ~1 s",
                where,
                save,
            )
            return
        if save is None:
            raise AdapterError(
                f"redis store at {where}: cannot read the server's persistence settings (CONFIG "
                "is disabled) and AOF is off, so a restart may lose every workflow; enable "
                "appendonly, or add ?durability=none to the store URL to accept that"
            )
        raise AdapterError(
            f'redis store at {where} has no persistence (appendonly no, save ""): a restart '
            "would lose every workflow; enable it (redis-server --appendonly yes), or add "
            "?durability=none to the store URL to accept that"
        )

    def _persistence(self) -> tuple[bool, str | None]:
        """(AOF on, the RDB save points: '' for none, None when CONFIG is not allowed)."""
        import redis

        try:
            config = self.client.config_get("appendonly")
            config.update(self.client.config_get("save"))
            return config.get("appendonly") == "yes", str(config.get("save") or "").strip()
        except redis.exceptions.ResponseError:
            # CONFIG renamed away or denied (managed Redis): AOF still shows in INFO.
            info = self.client.info("persistence")
            return bool(int(info.get("aof_enabled", 0))), None

    # -- keys ------------------------------------------------------------------------------
    def _doc_key(self, workflow_id: str) -> str:
        return f"{self.prefix}wf:{workflow_id}"

    @property
    def _heartbeat_key(self) -> str:
        return f"{self.prefix}heartbeat"

    def _fields(self, record: Record) -> list[Any]:
        """The record as the scripts take it: doc, status, has_session, session, created,
        heartbeat ('' for none)."""
        session = record.session_id
        return [
            record.text,
            record.status,
            "0" if session is None else "1",
            session or "",
            record.created_us,
            "" if record.heartbeat_us is None else record.heartbeat_us,
        ]

    # -- the port --------------------------------------------------------------------------
    def initialize(self) -> None:
        """Nothing to create; check that the server answers and persists, so a bad URL or a
        server that would lose the workflows fails early."""
        import redis

        try:
            self.client.ping()
            self._ensure_durable()
        except redis.exceptions.ConnectionError as exc:
            raise AdapterError(f"redis store cannot reach the server: {exc}") from None

    def close(self) -> None:
        self.client.close()

    def server_time(self) -> datetime:
        """Redis's `TIME`: the one clock of every worker and recovery loop on this server,
        so a host whose clock runs ahead or behind cannot misjudge a heartbeat."""
        got: Any = self.client.time()
        seconds, micro = got
        return from_micros(int(seconds) * 1_000_000 + int(micro))

    # -- the primitives of the store algorithm (statesaga.adapters.stores.document) ----------------
    def _insert(self, record: Record) -> Outcome:
        self._ensure_durable()
        existing = int(
            self._replicated(
                self._create,
                keys=[self._doc_key(record.id)],
                args=[self.prefix, record.id, *self._fields(record)],
            )
        )
        return taken(existing) if existing else WRITTEN

    def _replace(self, record: Record, expected: int) -> Outcome:
        self._ensure_durable()
        doc, status, has_session, session, created, heartbeat = self._fields(record)
        code, stored = self._replicated(
            self._save,
            keys=[self._doc_key(record.id)],
            args=[
                self.prefix,
                record.id,
                doc,
                expected,
                status,
                has_session,
                session,
                created,
                heartbeat,
            ],
        )
        if int(code) == -1:
            return MISSING
        if int(code) == 1:
            return WRITTEN
        # A `rev` that is not a number never matches: a conflict whose re-read reports it.
        revision = _revision(str(stored).encode())
        return taken(revision if isinstance(revision, int) else None)

    def _replicated(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """Run a writing script; with `wait_replicas`, then WAIT on the same connection (a
        pipeline: WAIT counts the writes of the connection it is sent on)."""
        if not self.wait_replicas:
            return script(keys=keys, args=args)
        with self.client.pipeline(transaction=False) as pipe:
            script(keys=keys, args=args, client=pipe)
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout)  # type: ignore[no-untyped-call]
            result, acked = pipe.execute()
        behind = int(acked) < self.wait_replicas
        if behind and not self._replicas_behind:
            log.warning(
                "redis store at %s: a save reached %s of %s replicas within %s ms; until "
                "they keep up, a failover may lose the latest saves",
                _server(self.client),
                acked,
                self.wait_replicas,
                self.wait_timeout,
            )
        elif not behind and self._replicas_behind:
            log.info("redis store at %s: replicas keep up again", _server(self.client))
        self._replicas_behind = behind
        return result

    def _read(self, workflow_id: str) -> Stored | None:
        (got,) = self._fetch([workflow_id])
        return got

    def _beat(self, workflow_id: str, at_us: int) -> bool:
        self._ensure_durable()
        found = self._heartbeat(
            keys=[self._doc_key(workflow_id), self._heartbeat_key], args=[workflow_id, at_us]
        )
        return bool(int(found))

    def _select(
        self, session_id: str | None, status: str | None, limit: int | None
    ) -> Iterable[Stored]:
        self._ensure_durable()
        if session_id is not None:
            index = f"{self.prefix}session:{session_id}"
        elif status is not None:
            index = f"{self.prefix}status:{status}"
        else:
            index = f"{self.prefix}all"
        # With both filters the session index is read whole and filtered by the status field:
        # sessions are small (one conversation's workflows), statuses are not.
        both = session_id is not None and status is not None
        stop = -1 if limit is None or both else limit - 1
        ids = [str(i) for i in self.client.zrange(index, 0, stop)]
        rows = [r for r in self._fetch(ids, status if both else None) if r is not None]
        return rows[:limit]

    def _select_stale(self, statuses: builtins.list[str], before_us: int) -> Iterable[Stored]:
        self._ensure_durable()
        pipe = self.client.pipeline(transaction=False)
        for s in statuses:
            pipe.zrange(f"{self.prefix}status:{s}", 0, -1, withscores=True)
        ranges: builtins.list[builtins.list[tuple[str, float]]] = pipe.execute()
        candidates = sorted((created, wid) for r in ranges for wid, created in r)
        if not candidates:
            return []
        ids = [wid for _, wid in candidates]
        beats = self.client.zmscore(self._heartbeat_key, ids)
        stale = [
            wid for wid, beat in zip(ids, beats, strict=True) if beat is None or beat < before_us
        ]
        return [r for r in self._fetch(stale) if r is not None]

    def _fetch(
        self, ids: builtins.list[str], status: str | None = None
    ) -> builtins.list[Stored | None]:
        """Documents by id in one round trip, each with its heartbeat; None for an id with no
        document (or, given `status`, a document in another status)."""
        self._ensure_durable()
        if not ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        command: Callable[..., Any] = pipe.execute_command  # (untyped in redis-py)
        for wid in ids:
            # Raw bytes, not decoded by redis-py: a document that is not UTF-8 would fail the
            # whole pipeline (and leave its connection mid-reply); the store algorithm
            # decodes each document apart.
            command("HMGET", self._doc_key(wid), "doc", "status", "rev", **{NEVER_DECODE: True})
        pipe.zmscore(self._heartbeat_key, ids)
        *docs, beats = pipe.execute()
        return [
            None
            if text is None or (status is not None and stored_status != status.encode())
            else Stored(wid, text, None if beat is None else int(beat), _revision(rev))
            for wid, (text, stored_status, rev), beat in zip(ids, docs, beats, strict=True)
        ]


def _revision(raw: bytes | None) -> object:
    """The `rev` field as the revision check reads it (Lua's tonumber): a whole number, or
    what is there, which the store algorithm reports as damaged."""
    text = (raw or b"").decode("utf-8", "backslashreplace")
    return int(text) if text.isascii() and text.isdigit() else text


def location(client: redis.Redis) -> str:
    """Where a redis-py client connects, as a URL whose password (if any) is masked."""
    kw = client.connection_pool.connection_kwargs
    service = getattr(client.connection_pool, "service_name", None)
    if service is not None:  # a primary that Sentinels name (redis+sentinel://)
        return f"redis+sentinel://{service}/{kw.get('db', 0)}"
    scheme = "rediss" if "SSL" in client.connection_pool.connection_class.__name__ else "redis"
    auth = f"{kw.get('username') or ''}:***@" if kw.get("password") else ""
    if kw.get("path"):
        return f"unix://{auth}{kw['path']}?db={kw.get('db', 0)}"
    host, port, db = kw.get("host", "localhost"), kw.get("port", 6379), kw.get("db", 0)
    return f"{scheme}://{auth}{host}:{port}/{db}"


def _server(client: redis.Redis) -> str:
    """The server a store's messages name: a socket, a Sentinel service's primary, host:port."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix:{kwargs['path']}"
    service = getattr(client.connection_pool, "service_name", None)
    if service is not None:
        return f"the primary of {service!r}/{kwargs.get('db', 0)}"
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"


__all__ = ["RedisStore", "location"]
