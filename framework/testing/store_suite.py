"""The Store conformance suite: every clause of the `statesaga.ports.Store` contract as a test.

Run it against your adapter by subclassing it in a test module and providing a `store`
fixture that yields a fresh, empty store (closed afterwards)::

    import pytest
    from . import StoreConformance
    from my_plugin import MyStore

    class TestMyStore(StoreConformance):
        @pytest.fixture
        def store(self, tmp_path):
            store = MyStore.from_url(f"mystore://{tmp_path}")
            store.initialize()
            yield store
            store.close()

        # Optional: lets the suite check that a stored document with an unknown field is
        # rejected on read. Without it, that test is skipped.
        def write_raw(self, store, workflow_id, text):
            store._collection.replace(workflow_id, text)

`write_raw(store, workflow_id, text)` must replace the stored JSON document of an existing
workflow with `text`, bypassing validation. `damage(store, workflow_id, kind)` (optional too)
damages a stored workflow as a disk, a hand edit or another program could, for each of
`DAMAGE`: "bytes" (a document that is not UTF-8), "revision" (the revision the store's
check compares is not a whole number); "json" and "schema" go through `write_raw` unless
`damage` does them. A kind a store cannot hold raises NotImplementedError (its test is
skipped). The thread test shares one store object between threads, as the engine does; set
`concurrency_threads` / `concurrency_rounds` on the subclass to make it lighter or heavier.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from ..errors import ConflictError, DefinitionError, NotFoundError
from ..models import (
    CompensationAction,
    CompensationStrategy,
    HistoryEntry,
    RetryPolicy,
    SagaStep,
    StepError,
    StepStatus,
    WorkflowState,
    WorkflowStatus,
)
from ..ports import Browsable, Store, store_exists

T0 = datetime(2026, 2, 8, 9, 30, 0, 123456, tzinfo=UTC)

#: The kinds of damage a stored document may suffer (see `StoreConformance.damage`).
DAMAGE = ("bytes", "json", "schema", "revision")
#: Written into every damaged document: no error may quote it (a document may hold secrets).
SECRET = "s3cret-in-the-document"


def make_workflow(
    *,
    session_id: str | None = None,
    status: WorkflowStatus = WorkflowStatus.PENDING,
    created_at: datetime = T0,
    heartbeat_at: datetime | None = None,
    name: str = "conformance",
    input: dict[str, Any] | None = None,
) -> WorkflowState:
    """A small workflow document with the fields the listing queries look at."""
    return WorkflowState(
        name=name,
        session_id=session_id,
        status=status,
        created_at=created_at,
        updated_at=created_at,
        heartbeat_at=heartbeat_at,
        input=input or {},
    )


def rich_workflow() -> WorkflowState:
    """A document that exercises every kind of value a store must carry back unchanged."""
    paris = timezone(timedelta(hours=1), "CET")
    steps: list[SagaStep] = []
    for i, name in enumerate(["réserver_vol", "hôtel", "voiture", "paiement", "courriel"]):
        steps.append(
            SagaStep(
                id=f"STEP-20260208-{i:08x}",
                name=name,
                action_type=f"trip.{name}",
                params={"ville": "Zürich → 東京 🚆", "n": i, "prix": 12.5 * i, "tags": ["a", None]},
                depends_on=[s.name for s in steps[-1:]],
                status=StepStatus.COMPLETED if i < 3 else StepStatus.FAILED,
                attempts=i + 1,
                retry=RetryPolicy(max_attempts=5, jitter=0.25, non_retryable=["ValueError"]),
                timeout=30.0,
                pivot=i == 2,
                result={"confirmation": f"C-{i}", "nested": {"deep": [1, {"x": "ÿ"}]}},
                error=(
                    StepError(type="Timeout", message="délai dépassé", attempt=i) if i > 3 else None
                ),
                compensation=CompensationAction(
                    id=f"COMP-20260208-{i:08x}",
                    step_id=f"STEP-20260208-{i:08x}",
                    action_type=f"trip.annuler_{name}",
                    params={"raison": "échec du paiement"},
                    attempts=1,
                    started_at=T0 + timedelta(seconds=i),
                    finished_at=T0 + timedelta(seconds=i, microseconds=999999),
                ),
                first_started_at=T0.astimezone(paris),
                started_at=T0 + timedelta(minutes=i),
                completed_at=T0 + timedelta(minutes=i, microseconds=1) if i < 3 else None,
            )
        )
    return WorkflowState(
        id="WF-20260208-5b193f0d",
        name="voyage",
        version="2",
        session_id="session-ü",
        status=WorkflowStatus.COMPENSATING,
        strategy=CompensationStrategy.PARALLEL,
        handlers=["examples.trip_handlers"],
        input={"voyageur": "Zoë", "big": 2**53 + 1, "ratio": 0.1, "ok": True, "none": None},
        results={"réserver_vol": {"siège": "12A"}},
        steps=steps,
        error=StepError(type="PaymentDeclined", message="carte refusée", traceback="…", attempt=2),
        reason="paiement refusé",
        created_at=T0,
        updated_at=T0 + timedelta(hours=1),
        history=[
            HistoryEntry(
                at=T0 + timedelta(seconds=k),
                chart="step",
                trigger="succeed",
                source="EXECUTING",
                dest="COMPLETED",
                step=steps[k].name,
                attempt=1,
                by="worker-1",
                detail="ok ✓",
            )
            for k in range(3)
        ],
    )


class DamagedDocuments:
    """The Store contract's part about documents that cannot be read: no reader fails on one,
    each names it (`Store.unreadable`). Part of StoreConformance; `write_raw` and `damage`
    are the adapter's suite's hooks."""

    def write_raw(self, store: Store, workflow_id: str, text: str) -> None:
        """Replace a stored document with raw JSON text (adapter-specific; optional)."""
        raise NotImplementedError

    def damage(self, store: Store, workflow_id: str, kind: str) -> None:
        """Damage a stored workflow (see the module docstring; adapter-specific, optional).
        The default does "json" and "schema" through `write_raw`."""
        if kind == "json":
            self.write_raw(store, workflow_id, '{"id": "' + workflow_id + '", "name": "' + SECRET)
        elif kind == "schema":
            self.write_raw(store, workflow_id, json.dumps({"id": workflow_id, "steps": SECRET}))
        else:
            raise NotImplementedError

    def test_a_stored_document_with_an_unknown_field_is_rejected(self, store: Store) -> None:
        wf = make_workflow()
        store.create(wf)
        doc = store.get(wf.id).model_dump(mode="json")
        doc["surprise"] = "a field this version does not know"
        try:
            self.write_raw(store, wf.id, json.dumps(doc))
        except NotImplementedError:
            pytest.skip("this adapter's suite does not implement write_raw()")
        with pytest.raises(DefinitionError) as caught:
            store.get(wf.id)
        assert any(p.field == "surprise" for p in caught.value.problems)

    def test_a_listing_goes_on_past_an_unreadable_document(self, store: Store) -> None:
        """One corrupt document must not hide every other workflow from list() and from
        recovery's list_stale(): it is left out (and named in `store.unreadable` by the
        adapters that keep that record), while get() of it still raises."""
        good = make_workflow(status=WorkflowStatus.RUNNING)
        bad = make_workflow(status=WorkflowStatus.RUNNING, created_at=T0 + timedelta(seconds=1))
        store.create(good)
        store.create(bad)
        try:
            # Well-formed JSON no model reads (a store may refuse malformed JSON at write time).
            self.write_raw(store, bad.id, '{"id": "' + bad.id + '", "steps": "none"}')
        except NotImplementedError:
            pytest.skip("this adapter's suite does not implement write_raw()")
        assert [wf.id for wf in store.list()] == [good.id]
        assert [wf.id for wf in store.list(status=WorkflowStatus.RUNNING)] == [good.id]
        stale = store.list_stale(T0 + timedelta(days=1), [WorkflowStatus.RUNNING])
        assert [wf.id for wf in stale] == [good.id]
        assert list(store.unreadable) == [bad.id]
        with pytest.raises(DefinitionError):
            store.get(bad.id)

    @pytest.mark.parametrize("kind", DAMAGE)
    def test_one_damaged_document_is_named_and_hides_no_other(
        self, store: Store, kind: str
    ) -> None:
        """Whatever damaged one document (its bytes, its JSON, its fields, its revision), every
        reader goes on past it: list, list by status, the stale scan and (when the store has
        it) the dashboard's browse leave it out and name it in `store.unreadable` with what
        is wrong; get() of it raises DefinitionError naming it. No message quotes the
        document, and the other workflows can still be saved."""
        first = make_workflow(status=WorkflowStatus.RUNNING)
        bad = make_workflow(status=WorkflowStatus.RUNNING, created_at=T0 + timedelta(seconds=1))
        last = make_workflow(status=WorkflowStatus.RUNNING, created_at=T0 + timedelta(seconds=2))
        for wf in (first, bad, last):
            store.create(wf)
        good = [first.id, last.id]
        try:
            self.damage(store, bad.id, kind)
        except NotImplementedError:
            pytest.skip(f"this adapter's suite cannot damage a document's {kind}")
        assert [wf.id for wf in store.list()] == good
        assert [wf.id for wf in store.list(status=WorkflowStatus.RUNNING)] == good
        stale = store.list_stale(T0 + timedelta(days=1), [WorkflowStatus.RUNNING])
        assert [wf.id for wf in stale] == good
        if isinstance(store, Browsable):
            assert [wf.id for wf in store.browse(limit=10)] == good[::-1]
        assert list(store.unreadable) == [bad.id]
        assert store.unreadable[bad.id] and SECRET not in store.unreadable[bad.id]
        with pytest.raises(DefinitionError) as caught:
            store.get(bad.id)
        assert bad.id in str(caught.value) and SECRET not in str(caught.value)
        wf = store.get(last.id)
        wf.status = WorkflowStatus.COMPLETED
        store.save(wf)
        assert store.get(last.id).status is WorkflowStatus.COMPLETED


class StoreConformance(DamagedDocuments):
    """Pytest tests for the Store contract; subclass and provide a `store` fixture."""

    concurrency_threads = 8
    concurrency_rounds = 25

    # -- the port's members --------------------------------------------------------------------

    def test_the_store_offers_every_member_of_the_port(self, store: Store) -> None:
        """The core asks a store for its optional features instead of probing for them: a
        store has them all (subclassing statesaga.ports.Store gives the defaults)."""
        assert isinstance(store, Store)
        assert isinstance(store.location(), str) and store.location()
        assert isinstance(store.unreadable, Mapping)
        store.initialize()
        now = store.server_time()
        assert now is None or (isinstance(now, datetime) and now.tzinfo is not None)

    # -- exists --------------------------------------------------------------------------------

    def test_a_store_holding_a_workflow_exists(self, store: Store) -> None:
        """`exists()` lets a command that only reads refuse a store that is not there yet
        instead of creating it (an SQLite file); a store that holds a workflow is there."""
        store.create(make_workflow())
        assert store_exists(store) is True

    # -- create / get --------------------------------------------------------------------------

    def test_create_sets_revision_1(self, store: Store) -> None:
        wf = make_workflow()
        store.create(wf)
        assert wf.revision == 1
        assert store.get(wf.id).revision == 1

    def test_create_of_an_existing_id_conflicts_and_keeps_the_first(self, store: Store) -> None:
        first = make_workflow(name="first")
        store.create(first)
        second = make_workflow(name="second")
        second.id = first.id
        with pytest.raises(ConflictError) as caught:
            store.create(second)
        assert caught.value.workflow_id == first.id
        assert store.get(first.id).name == "first"

    def test_get_of_an_unknown_id_raises_not_found(self, store: Store) -> None:
        with pytest.raises(NotFoundError) as caught:
            store.get("WF-20260208-00000000")
        assert caught.value.workflow_id == "WF-20260208-00000000"

    def test_get_returns_a_copy(self, store: Store) -> None:
        wf = make_workflow(input={"k": 1})
        store.create(wf)
        got = store.get(wf.id)
        got.input["k"] = 2
        wf.input["k"] = 3
        assert store.get(wf.id).input == {"k": 1}

    # -- save ----------------------------------------------------------------------------------

    def test_save_bumps_the_revision(self, store: Store) -> None:
        wf = make_workflow()
        store.create(wf)
        wf.status = WorkflowStatus.RUNNING
        store.save(wf)
        assert wf.revision == 2
        got = store.get(wf.id)
        assert (got.revision, got.status) == (2, WorkflowStatus.RUNNING)
        store.save(got)
        assert got.revision == 3
        assert store.get(wf.id).revision == 3

    def test_stale_save_conflicts_and_the_first_writer_wins(self, store: Store) -> None:
        wf = make_workflow(input={"by": "nobody"})
        store.create(wf)
        a, b = store.get(wf.id), store.get(wf.id)
        a.input["by"] = "a"
        store.save(a)
        b.input["by"] = "b"
        with pytest.raises(ConflictError) as caught:
            store.save(b)
        assert (caught.value.expected, caught.value.actual) == (1, 2)
        assert b.revision == 1, "a failed save must not change the caller's revision"
        got = store.get(wf.id)
        assert (got.revision, got.input) == (2, {"by": "a"})

    def test_save_of_an_unknown_id_raises_not_found(self, store: Store) -> None:
        wf = make_workflow()
        wf.revision = 1
        with pytest.raises(NotFoundError):
            store.save(wf)

    # -- heartbeat -----------------------------------------------------------------------------

    def test_heartbeat_records_the_time_without_a_new_revision(self, store: Store) -> None:
        wf = make_workflow(status=WorkflowStatus.RUNNING)
        store.create(wf)
        at = T0 + timedelta(minutes=5, microseconds=7)
        store.heartbeat(wf.id, at)
        got = store.get(wf.id)
        assert got.heartbeat_at == at
        assert got.revision == 1
        # The copy read before the heartbeat can still be saved: no revision was taken.
        wf.reason = "after heartbeat"
        store.save(wf)
        assert store.get(wf.id).revision == 2

    def test_a_save_does_not_move_the_heartbeat_backwards(self, store: Store) -> None:
        wf = make_workflow(status=WorkflowStatus.RUNNING)
        store.create(wf)
        stale_copy = store.get(wf.id)  # read before the heartbeat: heartbeat_at is None
        later = T0 + timedelta(minutes=10)
        store.heartbeat(wf.id, later)
        stale_copy.reason = "saved by a worker that never saw the heartbeat"
        store.save(stale_copy)
        assert store.get(wf.id).heartbeat_at == later

        older = store.get(wf.id)
        older.heartbeat_at = T0 + timedelta(minutes=1)
        store.save(older)
        assert store.get(wf.id).heartbeat_at == later

    def test_a_save_can_move_the_heartbeat_forwards(self, store: Store) -> None:
        wf = make_workflow(status=WorkflowStatus.RUNNING, heartbeat_at=T0)
        store.create(wf)
        wf.heartbeat_at = T0 + timedelta(minutes=3)
        store.save(wf)
        assert store.get(wf.id).heartbeat_at == T0 + timedelta(minutes=3)

    def test_heartbeat_of_an_unknown_id_raises_not_found(self, store: Store) -> None:
        with pytest.raises(NotFoundError):
            store.heartbeat("WF-20260208-00000000", T0)

    # -- list ----------------------------------------------------------------------------------

    def _populate(self, store: Store) -> dict[str, WorkflowState]:
        # Created out of order, so "oldest first" cannot come from insertion order.
        specs = {
            "a3": ("A", WorkflowStatus.RUNNING, 3),
            "b1": ("B", WorkflowStatus.RUNNING, 1),
            "a0": ("A", WorkflowStatus.COMPLETED, 0),
            "a2": ("A", WorkflowStatus.RUNNING, 2),
            "n4": (None, WorkflowStatus.FAILED, 4),
        }
        out = {}
        for key, (session, status, minute) in specs.items():
            wf = make_workflow(
                name=key,
                session_id=session,
                status=status,
                created_at=T0 + timedelta(minutes=minute),
            )
            store.create(wf)
            out[key] = wf
        return out

    @staticmethod
    def _names(docs: Iterable[WorkflowState]) -> list[str]:
        return [d.name for d in docs]

    def test_list_everything_oldest_first(self, store: Store) -> None:
        self._populate(store)
        assert self._names(store.list()) == ["a0", "b1", "a2", "a3", "n4"]

    def test_list_by_session(self, store: Store) -> None:
        self._populate(store)
        assert self._names(store.list(session_id="A")) == ["a0", "a2", "a3"]
        assert self._names(store.list(session_id="nobody")) == []

    def test_list_by_status(self, store: Store) -> None:
        self._populate(store)
        assert self._names(store.list(status=WorkflowStatus.RUNNING)) == ["b1", "a2", "a3"]

    def test_list_by_session_and_status(self, store: Store) -> None:
        self._populate(store)
        got = store.list(session_id="A", status=WorkflowStatus.RUNNING)
        assert self._names(got) == ["a2", "a3"]

    def test_list_limit_keeps_the_oldest(self, store: Store) -> None:
        self._populate(store)
        assert self._names(store.list(limit=2)) == ["a0", "b1"]
        assert self._names(store.list(session_id="A", limit=1)) == ["a0"]
        assert self._names(store.list(status=WorkflowStatus.RUNNING, limit=10)) == [
            "b1",
            "a2",
            "a3",
        ]

    def test_list_returns_whole_documents(self, store: Store) -> None:
        wf = rich_workflow()
        store.create(wf)
        (got,) = store.list(session_id=wf.session_id)
        assert got.to_json() == wf.to_json()

    # -- list_stale ----------------------------------------------------------------------------

    def test_list_stale_by_status_and_heartbeat(self, store: Store) -> None:
        now = T0 + timedelta(hours=1)
        cutoff = now - timedelta(seconds=30)
        docs = {
            "fresh": make_workflow(name="fresh", status=WorkflowStatus.RUNNING),
            "old": make_workflow(name="old", status=WorkflowStatus.RUNNING),
            "never": make_workflow(name="never", status=WorkflowStatus.COMPENSATING),
            "at_cutoff": make_workflow(name="at_cutoff", status=WorkflowStatus.RUNNING),
            "in_doc": make_workflow(
                name="in_doc",
                status=WorkflowStatus.RUNNING,
                heartbeat_at=cutoff - timedelta(microseconds=1),
            ),
            "fresh_in_doc": make_workflow(
                name="fresh_in_doc", status=WorkflowStatus.RUNNING, heartbeat_at=now
            ),
            "done": make_workflow(name="done", status=WorkflowStatus.COMPLETED),
        }
        for minute, wf in enumerate(docs.values()):
            wf.created_at = T0 + timedelta(minutes=minute)
            store.create(wf)
        store.heartbeat(docs["fresh"].id, now - timedelta(seconds=1))
        store.heartbeat(docs["old"].id, cutoff - timedelta(seconds=60))
        store.heartbeat(docs["at_cutoff"].id, cutoff)  # "older than" is strict

        stale = store.list_stale(cutoff, [WorkflowStatus.RUNNING, WorkflowStatus.COMPENSATING])
        assert self._names(stale) == ["old", "never", "in_doc"]
        assert self._names(store.list_stale(cutoff, [WorkflowStatus.COMPENSATING])) == ["never"]
        assert self._names(store.list_stale(cutoff, iter([WorkflowStatus.COMPLETED]))) == ["done"]
        assert store.list_stale(cutoff, []) == []

    def test_list_stale_sees_a_heartbeat_made_after_the_last_save(self, store: Store) -> None:
        wf = make_workflow(status=WorkflowStatus.RUNNING, heartbeat_at=T0)
        store.create(wf)
        store.heartbeat(wf.id, T0 + timedelta(minutes=5))
        assert store.list_stale(T0 + timedelta(minutes=1), [WorkflowStatus.RUNNING]) == []
        (stale,) = store.list_stale(T0 + timedelta(minutes=6), [WorkflowStatus.RUNNING])
        assert stale.heartbeat_at == T0 + timedelta(minutes=5)

    # -- documents -----------------------------------------------------------------------------

    def test_json_round_trip_is_exact(self, store: Store) -> None:
        original = rich_workflow()
        expected = original.model_copy(deep=True)
        store.create(original)
        expected.revision = 1
        got = store.get(original.id)
        assert got == expected
        assert got.to_json() == expected.to_json()
        assert got.steps[0].first_started_at is not None
        assert got.steps[0].first_started_at.utcoffset() == timedelta(hours=1)

        got.steps[3].status = StepStatus.COMPENSATED
        store.save(got)
        again = store.get(original.id)
        assert again.to_json() == got.to_json()

    # -- concurrency ---------------------------------------------------------------------------

    def test_concurrent_load_modify_save_loses_no_update(self, store: Store) -> None:
        wf = make_workflow(input={"counter": 0})
        store.create(wf)
        errors: list[BaseException] = []
        start = threading.Barrier(self.concurrency_threads)

        def worker() -> None:
            try:
                start.wait()
                for _ in range(self.concurrency_rounds):
                    while True:
                        doc = store.get(wf.id)
                        doc.input["counter"] += 1
                        try:
                            store.save(doc)
                            break
                        except ConflictError:
                            continue
            except BaseException as exc:  # reported below; a thread's exception is otherwise lost
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(self.concurrency_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads), "a thread is stuck"
        assert errors == []
        expected = self.concurrency_threads * self.concurrency_rounds
        got = store.get(wf.id)
        assert got.input["counter"] == expected
        assert got.revision == expected + 1
