"""Nothing runs that the operator did not allow; no secret in anything statesaga prints.

- A real `statesaga worker` process on real Redis refuses forged jobs (another function, a
  pickle, callbacks, a `claimed` payload) without importing or unpickling anything, moves
  them to RQ's FailedJobRegistry, and goes on running statesaga's own jobs.
- A definition naming a module not on the operator's allow-list causes no import (checked
  with sys.modules and a side-effect file); allowed modules come from --handlers,
  STATESAGA_HANDLERS, [tool.statesaga] and installed packages' entry points.
- A `redis.py` / `rq.py` next to a definition or in the working directory never shadows
  the installed library, for any command.
- A password in every URL never appears in stdout, stderr or a log.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ops_redis import RedisServer  # registered by conftest.py
from security_helpers import EXAMPLES, TRIP_INPUT, statesaga  # registered by conftest.py
from statesaga import plugins
from statesaga.definitions.load import load_definition
from statesaga.engine import Engine
from statesaga.errors import DefinitionError
from statesaga.models import StepStatus, WorkflowStatus
from statesaga.ports import Job
from statesaga.registry import handler
from statesaga.security.allowlist import AllowList
from statesaga.security.redact import redact


def plant(folder: Path, name: str, marker: Path, body: str = "") -> None:
    """A module that leaves a marker file when imported (then `body`)."""
    (folder / f"{name}.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text({name!r})\n{body}",
        encoding="utf-8",
    )


# -- forged jobs on a real worker ------------------------------------------------------------
class _Boom:
    """Unpickling this writes a marker file: proof that a pickle was read back."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('unpickled')",))


@pytest.mark.slow
def test_a_real_worker_refuses_forged_jobs_and_runs_only_statesagas(
    redis_url: str, redis_client: Any, tmp_path: Path
) -> None:
    from rq import Callback, Queue
    from rq.job import Job as RQJob
    from rq.job import JobStatus
    from rq.registry import FailedJobRegistry
    from rq.serializers import DefaultSerializer, JSONSerializer
    from statesaga.adapters.queues.rq.queue import RQQueue

    name = f"sec-{uuid.uuid4().hex[:8]}"
    queue_url = redis_url.replace("redis://", "rq://", 1) + f"?queue={name}"
    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    # evilmod is importable by the worker (PYTHONPATH): a plain RQ worker would import it.
    markers = {k: tmp_path / f"{k}.marker" for k in ("import", "system", "pickle", "callback")}
    plant(tmp_path, "evilmod", markers["import"], "def boom(*a, **k):\n    pass\n")

    json_q = Queue(name, connection=redis_client, serializer=JSONSerializer)
    pickle_q = Queue(name, connection=redis_client, serializer=DefaultSerializer)
    good = Job("step", "WF-20260101-00000000", "x", 1).to_dict()
    forged = {
        "another function": json_q.enqueue("evilmod.boom", 1),
        "os.system": json_q.enqueue("os.system", f"touch {markers['system']}"),
        "a pickle": pickle_q.enqueue("statesaga.worker.run_job", _Boom(markers["pickle"])),
        "a failure callback": json_q.enqueue(
            "statesaga.worker.run_job", good, on_failure=Callback("evilmod.boom")
        ),
        "a claimed payload": json_q.enqueue("statesaga.worker.run_job", {**good, "claimed": True}),
        "extra kwargs": json_q.enqueue("statesaga.worker.run_job", good, extra=1),
        "an unknown field": json_q.enqueue("statesaga.worker.run_job", {**good, "run": "x"}),
    }
    # A forged "abandoned" job in RQ's StartedJobRegistry: RQ's clean-up calls its failure
    # callback, which a plain RQ worker imports by name.
    markers["cleanup"] = tmp_path / "cleanup.marker"
    plant(tmp_path, "evilcleanup", markers["cleanup"], "def boom(*a, **k):\n    pass\n")
    abandoned = RQJob.create(
        "statesaga.worker.run_job",
        args=(good,),
        connection=redis_client,
        serializer=JSONSerializer,
        origin=name,
        status=JobStatus.STARTED,
        on_failure=Callback("evilcleanup.boom"),
    )
    abandoned.save()
    redis_client.zadd(f"rq:wip:{name}", {f"{abandoned.id}:forged": 1})  # long expired
    unreadable = json_q.enqueue("statesaga.worker.run_job", good)
    redis_client.hset(f"rq:job:{unreadable.id}", "created_at", "not a time")  # RQ cannot read it
    # ... and statesaga's own job after them: the worker goes on and completes the saga.
    store = plugins.open_store(store_url)
    engine = Engine(store, RQQueue.from_url(queue_url))
    wf = engine.start(load_definition(EXAMPLES / "trip.yaml"), TRIP_INPUT)

    path = [str(tmp_path), os.environ.get("PYTHONPATH")]
    env = {"PYTHONPATH": os.pathsep.join(p for p in path if p)}
    work = statesaga(
        "worker", "--queue", queue_url, "--store", store_url, "--burst", cwd=tmp_path, env=env
    )
    assert work.returncode == 0, work.stderr
    assert not any(m.exists() for m in markers.values()), "a forged job ran code"
    assert store.get(wf.id).status is WorkflowStatus.COMPLETED

    failed = FailedJobRegistry(name, connection=redis_client)
    assert set(failed.get_job_ids()) == {j.id for j in forged.values()} | {abandoned.id}
    log = work.stdout + work.stderr
    for why, job in forged.items():
        stored = RQJob.fetch(job.id, connection=redis_client, serializer=JSONSerializer)
        assert stored.get_status() == "failed", why
        result = stored.latest_result()
        assert result is not None and "refused by statesaga" in (result.exc_string or ""), why
        assert f"refused job '{job.id}'" in log, why
    pickled = RQJob.fetch(forged["a pickle"].id, connection=redis_client).latest_result()
    assert pickled is not None and "is not JSON" in (pickled.exc_string or "")
    assert len(json_q) == 0
    assert f"refused job '{unreadable.id}'" in log and "cannot be read" in log
    assert redis_client.lrange(f"statesaga:quarantine:{name}", 0, -1) == [unreadable.id.encode()]
    assert redis_client.llen(json_q.intermediate_queue_key) == 0


def test_the_job_guard_reads_no_name_and_no_pickle() -> None:
    """The job class itself resolves only statesaga's function and never a callback."""
    import redis as redis_py
    from rq import Callback
    from rq.serializers import JSONSerializer
    from statesaga.adapters.queues.rq.jobguard import StatesagaJob, refusal
    from statesaga.worker import run_job

    conn = redis_py.Redis()  # never connected: nothing here touches Redis
    ok = StatesagaJob.create(
        "statesaga.worker.run_job",
        args=(Job("step", "WF-1", "s", 1).to_dict(),),
        connection=conn,
        serializer=JSONSerializer,
    )
    assert refusal(ok) is None and ok.func is run_job
    bad = StatesagaJob.create(
        "os.system", args=("true",), connection=conn, serializer=JSONSerializer
    )
    assert "os.system" in str(refusal(bad))
    with pytest.raises(PermissionError):
        bad.func  # noqa: B018
    reread = StatesagaJob(connection=conn, serializer=JSONSerializer)
    reread.data = pickle.dumps(("statesaga.worker.run_job", None, ({},), {}))
    assert "not JSON" in str(refusal(reread))
    hooked = StatesagaJob.create(
        "statesaga.worker.run_job",
        args=(Job("step", "WF-1", "s", 1).to_dict(),),
        connection=conn,
        serializer=JSONSerializer,
        on_success=Callback("no_such_module_anywhere.f"),
        on_failure=Callback("no_such_module_anywhere.f"),
        on_stopped=Callback("no_such_module_anywhere.f"),
    )
    assert "callbacks" in str(refusal(hooked))
    # Resolving them would import (and fail); the guarded job class never does.
    assert (hooked.success_callback, hooked.failure_callback, hooked.stopped_callback) == (
        None,
        None,
        None,
    )


# -- a job payload never widens what it may do ------------------------------------------------
def test_a_claimed_payload_cannot_run_a_running_step_again() -> None:
    from statesaga.adapters.queues.inline import InlineQueue
    from statesaga.adapters.stores.memory import MemoryStore

    calls: list[int] = []
    engine: Engine

    def once(ctx: Any) -> dict[str, int]:
        calls.append(ctx.attempt)
        if len(calls) == 1:  # while this attempt runs, a duplicate of its job arrives
            engine.run_job(Job("step", ctx.workflow_id, ctx.step, ctx.attempt))
            assert engine.get(ctx.workflow_id).step(ctx.step).status is StepStatus.EXECUTING
        return {"n": len(calls)}

    engine = Engine(MemoryStore(), InlineQueue(), handlers=[handler("once")(once)])
    d = load_definition({"workflow": "w", "steps": [{"name": "a", "action": "once"}]})
    wf = engine.run(d, {})
    assert wf.status is WorkflowStatus.COMPLETED
    assert calls == [1], "the step ran a second time"
    with pytest.raises(ValueError, match="claimed"):
        Job.from_dict({**Job("step", wf.id, "a", 1).to_dict(), "claimed": True})
    assert "claimed" not in Job("step", wf.id, "a", 1).to_dict()  # no job can say it


def test_eager_dispatch_still_runs_its_own_claims() -> None:
    from statesaga.adapters.queues.inline import InlineQueue
    from statesaga.adapters.stores.memory import MemoryStore

    ran: list[str] = []

    @handler()
    def step(ctx: Any) -> None:
        ran.append(ctx.step)

    engine = Engine(MemoryStore(), InlineQueue(), handlers=[step], eager=True)
    steps = [{"name": n, "action": "step"} for n in "abc"]
    wf = engine.run(load_definition({"workflow": "w", "steps": steps}), {})
    assert wf.status is WorkflowStatus.COMPLETED and ran == ["a", "b", "c"]
    assert sum(e.trigger == "dispatch" and "claimed" in (e.detail or "") for e in wf.history) == 2


# -- handler modules come from the operator's allow-list ------------------------------------
@pytest.fixture
def planted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder (the working directory) with a handler module that marks its import."""
    plant(
        tmp_path,
        "sec_handlers",
        tmp_path / "imported.marker",
        "from statesaga import handler\n\n@handler()\ndef hello(ctx):\n    return {'hi': 1}\n",
    )
    (tmp_path / "saga.yaml").write_text(
        "workflow: sec\nhandlers: sec_handlers\nsteps:\n  - {name: a, action: hello}\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop("sec_handlers", None)


def test_a_definition_cannot_make_the_engine_import_a_module(planted: Path) -> None:
    from statesaga.adapters.queues.inline import InlineQueue
    from statesaga.adapters.stores.memory import MemoryStore

    d = load_definition(planted / "saga.yaml")
    engine = Engine(MemoryStore(), InlineQueue())
    with pytest.raises(DefinitionError) as err:
        engine.start(d, {})
    assert "saga.yaml:2: [handlers.0] handler module 'sec_handlers' is not on" in str(err.value)
    assert "sec_handlers" not in sys.modules
    assert not (planted / "imported.marker").exists()
    assert engine.store.list() == []
    # The stdlib is no exception: a table cannot import `antigravity` either.
    evil = load_definition(
        {"workflow": "w", "handlers": ["antigravity"], "steps": [{"name": "a", "action": "a"}]}
    )
    with pytest.raises(DefinitionError, match="'antigravity' is not on the operator's allow"):
        engine.start(evil, {})
    assert "antigravity" not in sys.modules

    path = list(sys.path)
    allowed = Engine(MemoryStore(), InlineQueue(), allowed=AllowList.of(["sec_handlers"]))
    assert allowed.run(d, {}).status is WorkflowStatus.COMPLETED
    assert (planted / "imported.marker").exists()
    assert sys.path == path, "the working directory was left on sys.path"


def test_a_stored_workflow_cannot_make_a_worker_import_a_module(planted: Path) -> None:
    """A stored document's `handlers` hint is matched against the allow-list too."""
    from statesaga.adapters.queues.inline import InlineQueue
    from statesaga.adapters.stores.memory import MemoryStore

    store = MemoryStore()
    submitter = Engine(store, InlineQueue(), allowed=AllowList.of(["sec_handlers"]))
    wf = submitter.start(load_definition(planted / "saga.yaml"), {})
    sys.modules.pop("sec_handlers")
    (planted / "imported.marker").unlink()
    worker = Engine(store, InlineQueue())  # installed packages' modules only
    worker.run_job(Job("step", wf.id, "a", 1))
    step = store.get(wf.id).step("a")
    assert step.error is not None and "not on the operator's allow-list" in step.error.message
    assert "sec_handlers" not in sys.modules and not (planted / "imported.marker").exists()


def test_the_python_api_takes_handlers_or_modules_directly() -> None:
    """The plain-script case: @handler functions are registered by giving them to the engine."""
    from statesaga.adapters.queues.inline import InlineQueue
    from statesaga.adapters.stores.memory import MemoryStore

    @handler("greet")
    def greet_someone(ctx: Any) -> dict[str, str]:
        return {"hello": ctx.input["who"]}

    d = load_definition({"workflow": "w", "steps": [{"name": "a", "action": "greet"}]})
    with pytest.raises(DefinitionError, match=r"unknown handler 'greet' \(register it: Engine"):
        Engine(MemoryStore(), InlineQueue()).start(d, {})
    wf = Engine(MemoryStore(), InlineQueue(), handlers=[greet_someone]).run(d, {"who": "bob"})
    assert wf.results == {"a": {"hello": "bob"}}


def test_the_readme_python_example_runs_as_written() -> None:
    """The examples' handler modules are allowed by statesaga's own entry points."""
    from statesaga import open_queue

    engine = Engine(plugins.open_store("memory://"), open_queue("inline://"))
    wf = engine.run(load_definition(EXAMPLES / "trip.yaml"), TRIP_INPUT)
    assert wf.status is WorkflowStatus.COMPLETED
    assert AllowList.installed().resolve("trip") == "statesaga.examples.trip_handlers"


@pytest.mark.slow
def test_the_cli_imports_only_allowed_modules(planted: Path) -> None:
    store = f"sqlite:///{planted / 's.db'}"
    marker = planted / "imported.marker"
    refused = statesaga("run", "saga.yaml", "--store", store, cwd=planted)
    assert refused.returncode == 1
    assert "saga.yaml:2: [handlers.0] handler module 'sec_handlers' is not on" in refused.stderr
    assert not marker.exists()
    assert "WF-" not in statesaga("list", "--store", store, cwd=planted).stdout  # none started

    bad = statesaga("validate", "saga.yaml", cwd=planted)
    assert bad.returncode == 1
    assert "'sec_handlers' is not on the operator's allow-list" in bad.stdout
    assert not marker.exists()
    missing = statesaga("validate", "saga.yaml", "--handlers", "sec_handlers,gone", cwd=planted)
    assert missing.returncode == 1
    assert "allowed handler module 'gone' (--handlers) is missing" in missing.stdout

    # Each way an operator allows it: --handlers, the variable, pyproject.toml.
    ok = statesaga("run", "saga.yaml", "--store", store, "--handlers", "sec_handlers", cwd=planted)
    assert ok.returncode == 0, ok.stderr
    assert marker.exists()
    marker.unlink()
    env = {"STATESAGA_HANDLERS": "sec_handlers"}
    assert statesaga("run", "saga.yaml", "--store", store, cwd=planted, env=env).returncode == 0
    assert statesaga("validate", "saga.yaml", cwd=planted, env=env).stdout == "ok saga.yaml\n"
    (planted / "pyproject.toml").write_text(
        '[tool.statesaga]\nhandlers = ["sec_handlers"]\n', encoding="utf-8"
    )
    assert statesaga("run", "saga.yaml", "--store", store, cwd=planted).returncode == 0


@pytest.mark.slow
def test_signal_runs_only_allowed_handlers(planted: Path) -> None:
    (planted / "wait.yaml").write_text(
        "workflow: wait\nhandlers: sec_handlers\nsteps:\n"
        "  - {name: ok, await_signal: go}\n  - {name: a, action: hello}\n",
        encoding="utf-8",
    )
    store = f"sqlite:///{planted / 'w.db'}"
    run = statesaga("run", "wait.yaml", "--store", store, "--handlers", "sec_handlers", cwd=planted)
    assert run.returncode == 0, run.stderr
    wf_id = next(w for w in run.stdout.split() if w.startswith("WF-"))
    (planted / "imported.marker").unlink()
    refused = statesaga("signal", wf_id, "go", "--store", store, cwd=planted)
    assert refused.returncode == 2 and "--handlers sec_handlers" in refused.stderr
    assert not (planted / "imported.marker").exists()
    sent = statesaga(
        "signal", wf_id, "go", "--store", store, "--handlers", "sec_handlers", cwd=planted
    )
    assert sent.returncode == 0 and f"{wf_id} COMPLETED" in sent.stdout


# -- nothing next to a definition shadows an installed package --------------------------------
@pytest.mark.slow
def test_a_planted_redis_or_rq_module_never_shadows_the_library(
    redis_url: str, redis_client: Any, tmp_path: Path
) -> None:
    here = tmp_path / "defs"
    here.mkdir()
    for folder in (tmp_path, here):
        for name in ("redis", "rq", "click", "json"):
            plant(folder, name, tmp_path / f"shadow-{name}.marker", "raise SystemExit(3)\n")
    shutil.copy(EXAMPLES / "trip.yaml", here / "trip.yaml")
    shutil.copy(EXAMPLES / "expense.yaml", here / "expense.yaml")
    store = redis_url + "?prefix=shadow:"
    queue = redis_url.replace("redis://", "rq://", 1) + "?queue=shadow"
    inp = json.dumps({**TRIP_INPUT, "fail_at": "send_confirmation"})
    claim = json.dumps({"employee": "bob", "amount": 120})

    def ok(*args: str, code: int = 0) -> str:
        res = statesaga(*args, cwd=tmp_path)
        assert res.returncode == code, (args, res.stdout, res.stderr)
        return res.stdout

    failed = ok("run", "defs/trip.yaml", "--store", store, "--input", inp, "--json", code=1)
    wf_id = json.loads(failed)["id"]
    ok("restart", wf_id, "--from", "send_confirmation", "--reason", "r", "--store", store, code=1)
    waiting = ok("run", "defs/expense.yaml", "--store", store, "--input", claim)
    waiting_id = next(w for w in waiting.split() if w.startswith("WF-"))
    # With an approver the claim is paid and `signal` exits 0 (without, it unwinds: exit 1).
    ok("signal", waiting_id, "approve", "--payload", '{"by": "alice"}', "--store", store)
    submitted = ok(
        "run",
        "defs/trip.yaml",
        "--store",
        store,
        "--queue",
        queue,
        "--timeout",
        "0.5",
        "--input",
        json.dumps(TRIP_INPUT),
        code=1,
    )
    ok("worker", "--queue", queue, "--store", store, "--burst")
    ok("recover", "--store", store)
    pending = next(w for w in submitted.split() if w.startswith("WF-"))
    ok("cancel", waiting_id, "--store", store, code=1)  # already completed: refused, cleanly
    assert plugins.open_store(store).get(pending).status is WorkflowStatus.COMPLETED
    # `python -m` puts the working directory first on sys.path: the CLI takes it off before
    # it imports redis or rq (what Python imports to start the module, the CLI cannot guard:
    # `python -P -m` or the `statesaga` script can).
    lazy = tmp_path / "lazy"
    lazy.mkdir()
    for name in ("redis", "rq"):
        plant(lazy, name, tmp_path / f"shadow-{name}.marker", "raise SystemExit(3)\n")
    module_run = subprocess.run(
        [sys.executable, "-m", "statesaga.cli", "list", "--store", store],
        cwd=lazy,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert module_run.returncode == 0 and pending in module_run.stdout, module_run.stderr
    assert not list(tmp_path.glob("shadow-*.marker"))


# -- no secret in anything printed ------------------------------------------------------------
PASSWORD = "Sup3r-s3cret-PW"


@pytest.fixture(scope="module")
def secret_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A password-protected server that keeps nothing on disk (the store accepts it only when
    told so)."""
    server = RedisServer(
        tmp_path_factory.mktemp("secret-redis"),
        "--save", "", "--appendonly", "no", "--requirepass", PASSWORD,
    )  # fmt: skip
    server.start()
    try:
        yield "127.0.0.1", server.port
    finally:
        server.stop(kill=False)


@pytest.mark.slow
def test_no_password_in_anything_printed(secret_redis: tuple[str, int], tmp_path: Path) -> None:
    host, port = secret_redis
    # This test's server keeps nothing on disk: the store accepts it only when told so.
    store = f"redis://:{PASSWORD}@{host}:{port}/0?prefix=sec:&durability=none"
    queue = f"rq://:{PASSWORD}@{host}:{port}/0?queue=sec"
    wrong = f"redis://:{PASSWORD}x@{host}:{port}/0"
    inp = json.dumps(TRIP_INPUT)
    outputs: list[str] = []

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        res = statesaga(*args, cwd=tmp_path, env=env)
        outputs.append(f"{res.stdout}\n{res.stderr}")
        return res

    assert run("demo", "--store", store).returncode == 0
    submitted = run(
        "run",
        str(EXAMPLES / "trip.yaml"),
        "--store",
        store,
        "--queue",
        queue,
        "--input",
        inp,
        "--timeout",
        "0.5",
    )
    wf_id = next(w for w in submitted.stdout.split() if w.startswith("WF-"))
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        subprocess.run(
            [
                str(Path(sys.executable).with_name("statesaga")),
                "worker",
                "--queue",
                queue,
                "--store",
                store,
                "--burst",
                "--log-level",
                "DEBUG",
            ],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=90,
            check=False,
        )
    outputs.append(log.read_text())
    assert f"{wf_id}" in run("status", wf_id, "--store", store, "--history").stdout
    run("list", "--store", store)
    run("recover", "--store", store, "--queue", queue)
    run("cancel", wf_id, "--store", store)
    run("diagram", "--instance", wf_id, "--store", store)
    # Errors: a wrong password, a malformed URL, an unreachable server, options and env.
    run("status", wf_id, "--store", wrong)
    run("list", "--store", f"redis://:{PASSWORD}@{host}:{port}/notadb")
    run("list", "--store", f"redis://:{PASSWORD}@{host}:1/0")
    run(
        "run",
        str(EXAMPLES / "trip.yaml"),
        "--store",
        store,
        "--input",
        inp,
        "--queue",
        f"rq://:{PASSWORD}@{host}:{port}/x?queue=",
    )
    run(
        "run",
        str(EXAMPLES / "trip.yaml"),
        "--store",
        store,
        "--input",
        inp,
        "--queue",
        f"rq://:{PASSWORD}@{host}:{port}/0?timeout_margin=soon",
    )
    run("worker", "--queue", f"redis://:{PASSWORD}@{host}:{port}/0", "--store", store, "--burst")
    run("list", env={"STATESAGA_STORE": f"redis://:{PASSWORD}@{host}:1/0"})
    everything = "\n".join(outputs)
    assert "COMPLETED" in everything
    assert PASSWORD not in everything
    assert ":***@" in everything  # the URLs are still shown, masked


def test_store_and_queue_reprs_and_errors_hide_passwords() -> None:
    from statesaga.errors import AdapterError

    for url in (
        f"redis://:{PASSWORD}@127.0.0.1:6379/0",
        f"rediss://user:{PASSWORD}@127.0.0.1:6380/0",
        f"rq://:{PASSWORD}@127.0.0.1:6379/0?queue=q",
        f"rqs://:{PASSWORD}@127.0.0.1:6380/0",
    ):
        opened = plugins.open_store(url) if url.startswith("redis") else plugins.open_queue(url)
        assert PASSWORD not in repr(opened) and ":***@" in repr(opened), repr(opened)
    with pytest.raises(AdapterError) as err:
        plugins.open_queue(f"rq://:{PASSWORD}@127.0.0.1:6379/0?queue=")
    assert PASSWORD not in str(err.value)
    assert redact(f"x redis://u:{PASSWORD}@h/0 y") == "x redis://u:***@h/0 y"
    assert redact(f"redis://h/0?password={PASSWORD}&db=1") == "redis://h/0?password=***&db=1"


def test_rediss_is_a_registered_store_scheme() -> None:
    from statesaga.adapters.stores.redis import RedisStore

    store = plugins.open_store("rediss://127.0.0.1:6380/0?prefix=t:")
    assert isinstance(store, RedisStore)
    assert store.client.connection_pool.connection_class.__name__ == "SSLConnection"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("redis://:PW@h:6379/0", "redis://:***@h:6379/0"),
        ("arango://root:PW@db:8529/x and rq://u:PW@h/0?queue=q", None),
        ("rediss://:a@b@host:1/0 then", "rediss://:***@host:1/0 then"),
        ("not an adapter URL: ':PW@host:6379/0'", "not an adapter URL: ':***@host:6379/0'"),
        ("redis://h/0?password=PW&db=1", "redis://h/0?password=***&db=1"),
        ("redis://h:6379/0 at 10:30 @noon", "redis://h:6379/0 at 10:30 @noon"),
        ("sqlite:///var/x.db", "sqlite:///var/x.db"),
    ],
)
def test_redact_masks_every_password_and_keeps_the_rest(text: str, shown: str | None) -> None:
    out = redact(text)
    assert "PW" not in out and "a@b" not in out
    if shown is not None:
        assert out == shown
    assert redact(out) == out


def test_operator_lists_and_job_payloads_are_checked_field_by_field(tmp_path: Path) -> None:
    from statesaga.errors import RegistryError

    with pytest.raises(RegistryError, match=r"not a module name \(--handlers\): '\.\./evil'"):
        AllowList.for_operator(["ok_mod,../evil"])
    with pytest.raises(RegistryError, match=r"\$STATESAGA_HANDLERS"):
        AllowList.for_operator([], environ={"STATESAGA_HANDLERS": "a b /tmp/x.py"})
    (tmp_path / "pyproject.toml").write_text(
        '[tool.statesaga]\nhandlers = ["mine.handlers"]\n', encoding="utf-8"
    )
    allowed = AllowList.for_operator(
        ["cli_mod"], environ={"STATESAGA_HANDLERS": "env_mod"}, project=tmp_path
    )
    assert allowed.eager == ("cli_mod", "mine.handlers")  # --handlers wins over the variable
    assert allowed.resolve("trip") == "statesaga.examples.trip_handlers"
    good = Job("step", "WF-1", "s", 1).to_dict()
    for bad in (
        {**good, "attempt": "1"},
        {**good, "attempt": True},
        {**good, "kind": "shell"},
        {**good, "timeout": float("nan")},
        {**good, "timeout": -1},
        {k: v for k, v in good.items() if k != "step"},
        [good],
    ):
        with pytest.raises((TypeError, ValueError)):
            Job.from_dict(bad)  # type: ignore[arg-type]
    assert Job.from_dict({**good, "claimed": False}) == Job("step", "WF-1", "s", 1)


def test_a_handlers_error_is_stored_without_its_password() -> None:
    from statesaga.adapters.queues.inline import InlineQueue
    from statesaga.adapters.stores.memory import MemoryStore

    @handler()
    def connect(ctx: Any) -> None:
        raise ConnectionError(f"cannot reach postgres://app:{PASSWORD}@db:5432/app")

    engine = Engine(MemoryStore(), InlineQueue(), handlers=[connect])
    steps = [{"name": "a", "action": "connect", "retry": {"max_attempts": 1}}]
    wf = engine.run(load_definition({"workflow": "w", "steps": steps}), {})
    assert wf.status is WorkflowStatus.COMPENSATED  # the saga unwound (nothing to undo)
    stored = engine.store.get(wf.id).model_dump_json()
    assert PASSWORD not in stored and "postgres://app:***@db:5432/app" in stored


@pytest.mark.slow
def test_an_installed_package_allows_its_handlers_by_entry_point(tmp_path: Path) -> None:
    """A third-party distribution (its metadata as pip leaves it) registers a handler module
    under `statesaga.handlers`: installing it is what allows it."""
    site = tmp_path / "site"
    (site / "greeter_pkg").mkdir(parents=True)
    (site / "greeter_pkg" / "__init__.py").write_text("", encoding="utf-8")
    (site / "greeter_pkg" / "handlers.py").write_text(
        "from statesaga import handler\n\n@handler()\ndef greet(ctx):\n"
        "    return {'hello': ctx.input['who']}\n",
        encoding="utf-8",
    )
    info = site / "greeter-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: greeter\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[statesaga.handlers]\ngreeter = greeter_pkg.handlers\n")
    work = tmp_path / "work"
    work.mkdir()
    (work / "hello.yaml").write_text(
        "workflow: hello\nhandlers: greeter\nsteps:\n  - {name: a, action: greet}\n",
        encoding="utf-8",
    )
    path = [str(site), os.environ.get("PYTHONPATH")]
    env = {"PYTHONPATH": os.pathsep.join(p for p in path if p)}
    store = f"sqlite:///{tmp_path / 'h.db'}"
    ran = statesaga(
        "run",
        "hello.yaml",
        "--store",
        store,
        "--input",
        '{"who": "ann"}',
        "--json",
        cwd=work,
        env=env,
    )
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["results"] == {"a": {"hello": "ann"}}
    listed = statesaga("plugins", "--group", "statesaga.handlers", cwd=work, env=env)
    row = next(line.split() for line in listed.stdout.splitlines() if "greeter" in line)
    assert row == ["statesaga.handlers", "greeter", "greeter_pkg.handlers", "1.0", "ok"]
    # Uninstalled, the same definition is refused and nothing is imported.
    refused = statesaga("run", "hello.yaml", "--store", store, cwd=work)
    assert refused.returncode == 1 and "'greeter' is not on the operator's allow" in refused.stderr
    # A name two packages claim for different modules stands for neither.
    other = site / "other-1.0.dist-info"
    other.mkdir()
    (other / "METADATA").write_text("Metadata-Version: 2.1\nName: other\nVersion: 1.0\n")
    (other / "entry_points.txt").write_text("[statesaga.handlers]\ngreeter = other_pkg.mod\n")
    clash = statesaga("run", "hello.yaml", "--store", store, cwd=work, env=env)
    assert clash.returncode == 1 and "'greeter' is not on the operator's allow" in clash.stderr
    (work / "hello.yaml").write_text(
        (work / "hello.yaml").read_text().replace("greeter", "greeter_pkg.handlers")
    )
    by_module = statesaga(
        "run", "hello.yaml", "--store", store, "--input", '{"who": "bo"}', cwd=work, env=env
    )
    assert by_module.returncode == 0, by_module.stderr
