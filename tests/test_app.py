"""statesaga.app: every process builds its engine through EngineOptions, so the differences
between them (where URLs and handler modules come from) are options these tests pin down; and
the recovery loop the CLI's `recover --every` runs (statesaga.runtime.recovery.recover_every)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from statesaga.app import EngineOptions, operator_handlers
from statesaga.compat.managers import WorkflowExecutor
from statesaga.errors import StatesagaError
from statesaga.plugins import open_store
from statesaga.runtime.recovery import recover_every
from statesaga.worker import WorkerSettings, build_engine

HANDLERS = "ops_handlers"  # tests/ops_handlers.py, importable by name (conftest)


def test_urls_default_to_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STATESAGA_STORE", f"sqlite:///{tmp_path / 'env.db'}")
    monkeypatch.setenv("STATESAGA_QUEUE", "inline://")
    engine = EngineOptions().build()
    engine.store.initialize()
    assert (tmp_path / "env.db").exists()
    assert getattr(engine.queue, "in_process", False)
    given = EngineOptions(store=f"sqlite:///{tmp_path / 'given.db'}").build()
    given.store.initialize()
    assert (tmp_path / "given.db").exists()


def test_an_open_store_is_shared_not_reopened(tmp_path: Path) -> None:
    store = open_store("memory://")
    first = EngineOptions(store=store, queue="inline://").build()
    second = EngineOptions(store=store, queue="inline://").build()
    assert first.store is store and second.store is store
    assert first.queue is not second.queue  # each engine's queue is bound to its run_job


def test_the_operator_allow_list_reads_the_environment_a_listed_one_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STATESAGA_HANDLERS", HANDLERS)
    operator = EngineOptions(store="memory://", allow="operator").build()
    assert operator.allowed.modules[HANDLERS] == "$STATESAGA_HANDLERS"
    assert operator.registry.has_module(HANDLERS)  # named modules are imported at build

    listed = EngineOptions(store="memory://", allow="listed").build()
    assert HANDLERS not in listed.allowed.modules
    assert not listed.registry.has_module(HANDLERS)

    # The Python API's default: installed packages' modules only, nothing imported.
    plain = EngineOptions(store="memory://").build()
    assert HANDLERS not in plain.allowed.modules


def test_given_handlers_replace_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATESAGA_HANDLERS", "not_this_one")
    engine = EngineOptions(store="memory://", handlers=[HANDLERS], allow="operator").build()
    assert engine.allowed.modules[HANDLERS] == "--handlers"
    assert "not_this_one" not in engine.allowed.modules


def test_an_unimportable_module_fails_before_the_store_is_opened(tmp_path: Path) -> None:
    db = tmp_path / "never.db"
    with pytest.raises(StatesagaError, match="cannot be imported"):
        EngineOptions(
            store=f"sqlite:///{db}", handlers=["no_such_module_x"], allow="listed"
        ).build()
    assert not db.exists()


def test_the_worker_builds_through_the_same_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATESAGA_HANDLERS", "not_this_one")
    settings = WorkerSettings(queue_url="inline://", store_url="memory://", handlers=[HANDLERS])
    engine = build_engine(settings, "w1")
    assert engine.worker == "w1"
    assert engine.registry.has_module(HANDLERS)
    assert "not_this_one" not in engine.allowed.modules
    operator, _ = operator_handlers([HANDLERS])
    given = build_engine(WorkerSettings("inline://", "memory://", allowed=operator), "w2")
    assert given.allowed is operator


def test_the_executor_shim_reads_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATESAGA_QUEUE", "rq://127.0.0.1:1/0?queue=nope")
    executor = WorkflowExecutor(open_store("memory://"))
    assert getattr(executor.engine.queue, "in_process", False)
    assert executor.engine.eager is False


def test_options_repr_masks_passwords() -> None:
    options = EngineOptions(store="redis://:hunter2secret@db:6379/0")
    assert "hunter2secret" not in repr(options)


# -- recover_every -------------------------------------------------------------------------
class _Recovery:
    timeout = 0.0

    def __init__(self) -> None:
        self.scans = 0

    def scan(self, session_id: str | None = None) -> list[Any]:
        self.scans += 1
        return []


def _loop(scan_once: Any, **kwargs: Any) -> threading.Event:
    stop = threading.Event()
    recover_every(_Recovery(), scan_once, 0.001, stop=stop, **kwargs)  # type: ignore[arg-type]
    return stop


def test_the_loop_rides_out_outages_and_bugs_until_stopped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []
    stop = threading.Event()
    recovery = _Recovery()

    def scan_once() -> None:
        calls.append("scan")
        if len(calls) == 1:
            raise ConnectionError("store down")
        if len(calls) == 2:
            raise KeyError("a bug in one scan")
        if len(calls) == 3:
            stop.set()

    recover_every(recovery, scan_once, 0.001, stop=stop)  # type: ignore[arg-type]
    assert calls == ["scan"] * 3
    assert recovery.scans == 1  # after the outage: one read-only scan to see it is back
    assert "recovery scan failed" in caplog.text


def test_bad_settings_and_the_callers_fatal_errors_end_the_loop() -> None:
    def refused() -> None:
        raise StatesagaError("store refused")

    with pytest.raises(StatesagaError, match="store refused"):
        _loop(refused)

    class Usage(Exception):
        pass

    def usage() -> None:
        raise Usage("pass --handlers")

    with pytest.raises(Usage):
        _loop(usage, fatal=(Usage,))
