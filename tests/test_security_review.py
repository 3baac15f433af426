"""The security review of issue #16's work: attacks its author had not tried.

Each test is one class of attack, run against the real thing (a real `statesaga worker` on a
real Redis, real SQLite files, the real CLI), and fails on the code before its fix.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from security_helpers import EXAMPLES, TRIP_INPUT, statesaga  # registered by conftest.py
from statesaga import plugins
from statesaga.definitions.load import load_definition
from statesaga.engine import Engine
from statesaga.models import WorkflowStatus
from statesaga.ports import Job


@pytest.fixture
def listener() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on localhost that records every request made to it."""
    hits: list[str] = []

    class Record(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            hits.append(f"GET {self.path}")
            self.send_response(204)
            self.end_headers()

        def do_POST(self) -> None:  # noqa: N802
            hits.append(f"POST {self.path}")
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Record)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", hits
    finally:
        server.shutdown()
        server.server_close()


# -- forged jobs: no request to a URL a job names, on any of RQ's paths -----------------------
@pytest.mark.slow
def test_a_worker_sends_no_webhook_a_forged_job_names(
    redis_url: str, redis_client: Any, tmp_path: Path, listener: tuple[str, list[str]]
) -> None:
    """RQ sends a failed job's webhooks from its clean-up of abandoned jobs (StartedJobRegistry)
    and of jobs stuck in the intermediate queue: neither path goes through the job guard."""
    from rq import Queue
    from rq.job import Job as RQJob
    from rq.job import JobStatus
    from rq.registry import FailedJobRegistry
    from rq.serializers import JSONSerializer
    from rq.webhook import Webhook
    from statesaga.adapters.queues.rq.queue import RQQueue

    url, hits = listener
    name = f"hook-{uuid.uuid4().hex[:8]}"
    queue_url = redis_url.replace("redis://", "rq://", 1) + f"?queue={name}"
    good = Job("step", "WF-20260101-00000000", "x", 1).to_dict()

    def forged(func: str, args: tuple[Any, ...], path: str, status: JobStatus) -> RQJob:
        job = RQJob.create(
            func,
            args=args,
            connection=redis_client,
            serializer=JSONSerializer,
            origin=name,
            status=status,
            webhooks=[Webhook(url + path, "failed", method="POST"), Webhook(url + path, "failed")],
        )
        job.save()
        return job

    # An "abandoned" job: in the StartedJobRegistry with an execution long expired.
    abandoned = forged("statesaga.worker.run_job", (good,), "/abandoned", JobStatus.STARTED)
    redis_client.zadd(f"rq:wip:{name}", {f"{abandoned.id}:forged": 1})
    # A job "stuck" between the queue and a worker for an hour.
    stuck = forged("os.system", ("true",), "/stuck", JobStatus.QUEUED)
    intermediate = Queue(name, connection=redis_client).intermediate_queue_key
    redis_client.lpush(intermediate, stuck.id)
    redis_client.set(f"{intermediate}:first_seen:{stuck.id}", time.time() - 3600)
    # An ordinary forged job on the queue (refused by the guard).
    queued = Queue(name, connection=redis_client, serializer=JSONSerializer).enqueue(
        "os.system", "true", webhooks=[Webhook(url + "/queued", "failed")]
    )

    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    store = plugins.open_store(store_url)
    wf = Engine(store, RQQueue.from_url(queue_url)).start(
        load_definition(EXAMPLES / "trip.yaml"), TRIP_INPUT
    )
    work = statesaga("worker", "--queue", queue_url, "--store", store_url, "--burst", cwd=tmp_path)
    assert work.returncode == 0, work.stderr
    assert store.get(wf.id).status is WorkflowStatus.COMPLETED
    time.sleep(0.2)  # a request in flight would have arrived by now
    assert hits == [], "the worker made a request to a URL a forged job named"
    failed = set(FailedJobRegistry(name, connection=redis_client).get_job_ids())
    assert {abandoned.id, stuck.id, queued.id} <= failed
    assert work.stderr.count("webhooks were not sent") == 2


# -- a definition's folder supplies the allowed module and nothing it imports -----------------
@pytest.mark.slow
def test_a_file_next_to_a_definition_never_stands_in_for_an_optional_import(
    tmp_path: Path,
) -> None:
    """An allowed handler module (installed) probes an optional dependency that is not
    installed; whoever writes next to the YAML plants a module by that name. It must not run,
    for the allowed module or the definition's own handler package next to it."""
    marker = tmp_path / "planted.marker"
    site, defs, work = (tmp_path / d for d in ("site", "defs", "work"))
    for folder in (site, defs / "beside", work):
        folder.mkdir(parents=True)
    probe = (
        "from statesaga import handler\n"
        "try:\n    import review_optional_speedup as fast\nexcept ImportError:\n    fast = None\n"
        "\n@handler()\ndef {name}(ctx):\n    return {{'fast': fast is not None}}\n"
    )
    (site / "probing_handlers.py").write_text(probe.format(name="hello"), encoding="utf-8")
    (defs / "beside" / "__init__.py").write_text("", encoding="utf-8")
    (defs / "beside" / "handlers.py").write_text(probe.format(name="hi"), encoding="utf-8")
    (defs / "review_optional_speedup.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n", encoding="utf-8"
    )
    (defs / "saga.yaml").write_text(
        "workflow: w\nhandlers: [probing_handlers, beside.handlers]\nsteps:\n"
        "  - {name: a, action: hello}\n  - {name: b, action: hi}\n",
        encoding="utf-8",
    )
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)}
    store = f"sqlite:///{tmp_path / 's.db'}"
    allow = ("--handlers", "probing_handlers,beside.handlers")
    ok = statesaga("validate", "../defs/saga.yaml", *allow, cwd=work, env=env)
    assert ok.stdout == "ok ../defs/saga.yaml\n", ok.stderr
    ran = statesaga(
        "run", "../defs/saga.yaml", "--store", store, *allow, "--json", cwd=work, env=env
    )
    assert ran.returncode == 0, ran.stderr
    assert not marker.exists(), "a module planted next to the definition ran"
    assert '"fast": false' in ran.stdout


# -- no secret in anything printed, logged or stored, in any syntax a message quotes it -------
SECRET = "Rev1ew-s3cret"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        # redis-py percent-decodes query keys: both name the password option
        (f"redis://h:1/0?pass%77ord={SECRET}", "redis://h:1/0?pass%77ord=***"),
        (f"redis://h:1/0?%70assword={SECRET}&db=1", "redis://h:1/0?%70assword=***&db=1"),
        # keyword DSNs and environment lines
        (f"host=db user=app password={SECRET} dbname=x", "host=db user=app password=*** dbname=x"),
        (f"DB_PASSWORD={SECRET}", "DB_PASSWORD=***"),
        (f"export API_KEY={SECRET}", "export API_KEY=***"),
        (f"KeyError: 'password={SECRET} x'", "KeyError: 'password=*** x'"),
        (f"f(token={SECRET}, n=1)", "f(token=***, n=1)"),
        # dict reprs and JSON, also inside a JSON string
        (f"{{'db_password': '{SECRET}', 'user': 'bob'}}", "{'db_password': '***', 'user': 'bob'}"),
        (f'{{"accessToken": "{SECRET}", "n": 1}}', '{"accessToken": "***", "n": 1}'),
        (f'"{{\\"secret\\": \\"{SECRET}\\"}}"', '"{\\"secret\\": \\"***\\"}"'),
        (f"Authorization: Bearer {SECRET}", "Authorization: Bearer ***"),
        # a quote inside a password is part of it (redis-py takes `:pa'ss@` as given)
        (f"bad URL: 'redis://:x'{SECRET}@h:1/0'", "bad URL: 'redis://:***@h:1/0'"),
        (f'redis://h/0?password=x"{SECRET}&db=1', "redis://h/0?password=***&db=1"),
        # a secret inside the value of an option that is not one
        (f"STORE=redis://h/0?password={SECRET} x", "STORE=redis://h/0?password=*** x"),
        (f"{{'config': \"{{'token': '{SECRET}'}}\"}}", "{'config': \"{'token': '***'}\"}"),
        # what must stay readable
        ("redis://h/0?db=1&socket_timeout=5&queue=q", None),
        ("passwordless=1 tokens=3 monkey=5 key=6 prefix=sec:", None),
        ("password= and password=***", None),
    ],
)
def test_redact_masks_a_secret_in_every_syntax_a_message_quotes_it(
    text: str, shown: str | None
) -> None:
    from statesaga.security.redact import redact

    out = redact(text)
    assert SECRET not in out
    assert out == (text if shown is None else shown)
    assert redact(out) == out


def test_redact_reads_a_hostile_text_in_linear_time() -> None:
    """Every log record is redacted, and a forger chooses some (a job's description): a text
    of near-matches must not make a pattern backtrack over the rest of it at every place it
    could start (each of these took from 20 s to minutes before; linear, it is milliseconds)."""
    from statesaga.security.redact import redact

    hostile = ["a=" * 50_000, "redis://:" * 20_000, "=a:b" * 30_000, "password=" * 20_000]
    started = time.perf_counter()
    for text in hostile:
        assert redact(text)
    assert time.perf_counter() - started < 10


@pytest.mark.slow
def test_no_secret_a_handler_raises_reaches_any_output(
    redis_url: str, redis_client: Any, tmp_path: Path
) -> None:
    """Handler errors quote credentials as a keyword DSN or a dict; one raises a
    BaseException, which no engine catches: a CLI traceback, a worker's log, RQ's failed job
    in Redis, the stored document, DEBUG logs as text and JSON, and OpenTelemetry console
    spans must all show them masked."""
    from rq.job import Job as RQJob
    from rq.registry import FailedJobRegistry
    from rq.serializers import JSONSerializer

    (tmp_path / "leaky.py").write_text(
        "from statesaga import handler\n\n"
        "class Lost(BaseException):\n    pass\n\n"
        "@handler()\ndef dsn(ctx):\n"
        f"    raise ConnectionError('cannot connect: host=db password={SECRET} dbname=app')\n\n"
        "@handler()\ndef conf(ctx):\n"
        f'    return {{}}["password={SECRET}"]\n\n'
        "@handler()\ndef lost(ctx):\n"
        f"    raise Lost(str({{'user': 'app', 'api_key': '{SECRET}'}}))\n",
        encoding="utf-8",
    )
    for name, action in (("dsn", "dsn"), ("conf", "conf"), ("lost", "lost")):
        (tmp_path / f"{name}.yaml").write_text(
            f"workflow: {name}\nhandlers: leaky\nsteps:\n"
            f"  - {{name: a, action: {action}, retry: {{max_attempts: 1}}}}\n",
            encoding="utf-8",
        )
    db = tmp_path / "s.db"
    store = f"sqlite:///{db}"
    queue = redis_url.replace("redis://", "rq://", 1) + "?queue=leaky"
    otel = {"OTEL_TRACES_EXPORTER": "console", "OTEL_LOGS_EXPORTER": "console"}
    printed: list[str] = []
    for fmt in ("text", "json"):
        for name in ("dsn", "conf", "lost"):
            res = statesaga(
                "--log-level",
                "debug",
                "--log-format",
                fmt,
                "run",
                f"{name}.yaml",
                "--store",
                store,
                "--handlers",
                "leaky",
                cwd=tmp_path,
                env=otel,
            )
            printed.append(res.stdout + res.stderr)
    assert "Lost: {'user': 'app', 'api_key': '***'}" in printed[2]  # the traceback, masked
    submitted = statesaga(
        "run",
        "lost.yaml",
        "--store",
        store,
        "--queue",
        queue,
        "--timeout",
        "0.2",
        "--handlers",
        "leaky",
        cwd=tmp_path,
    )
    work = statesaga(
        "--log-level",
        "debug",
        "worker",
        "--store",
        store,
        "--queue",
        queue,
        "--handlers",
        "leaky",
        "--burst",
        cwd=tmp_path,
        env=otel,
    )
    printed += [submitted.stdout + submitted.stderr, work.stdout + work.stderr]
    assert work.returncode == 0, work.stderr
    for i, text in enumerate(printed):
        assert SECRET not in text, f"output {i} shows the secret"
    assert SECRET.encode() not in db.read_bytes()
    failed = FailedJobRegistry("leaky", connection=redis_client).get_job_ids()
    assert len(failed) == 1
    job = RQJob.fetch(failed[0], connection=redis_client, serializer=JSONSerializer)
    result = job.latest_result()
    assert result is not None and "'api_key': '***'" in (result.exc_string or "")
    assert SECRET not in (result.exc_string or "")


def test_the_dashboard_shows_no_password_of_any_url_form(tmp_path: Path) -> None:
    """Every page names the store and the queue: a password given as a query option (plain
    or with a percent-encoded key, as redis-py accepts) must be masked like `:PW@`."""
    import socket
    import urllib.error
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = f"redis://127.0.0.1:1/0?pass%77ord={SECRET}&prefix=web:"  # nothing listens there
    queue = f"rq://127.0.0.1:1/0?password={SECRET}&queue=web"
    script = Path(sys.executable).with_name("statesaga")
    log = tmp_path / "serve.log"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STATESAGA_")}
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(script), "serve", "--store", store, "--queue", queue, "--port", str(port)],
            cwd=tmp_path,
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    pages: dict[str, str] = {}
    try:
        for path in ("/definitions", "/", "/api/workflows", "/workflows/WF-20260101-00000000"):
            deadline = time.monotonic() + 20
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
                        pages[path] = r.read().decode()
                    break
                except urllib.error.HTTPError as err:
                    pages[path] = err.read().decode()
                    break
                except OSError:
                    assert server.poll() is None and time.monotonic() < deadline, log.read_text()
                    time.sleep(0.1)
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert "rq://127.0.0.1:1/0?password=***&amp;queue=web" in pages["/definitions"]
    assert "pass%77ord=***" in pages["/definitions"]
    for path, body in pages.items():
        assert SECRET not in body, path
    assert SECRET not in log.read_text()


def test_an_unreadable_scheduled_job_does_not_stop_the_scheduler(
    redis_url: str, redis_client: Any, tmp_path: Path
) -> None:
    """RQ's scheduler stops on a scheduled job it cannot read, and with it every delayed job
    of the queue: the guarded one sets it aside and promotes the rest (a forged one is then
    refused by the worker like any other)."""
    from datetime import UTC, datetime, timedelta

    from rq import Queue
    from rq.job import Job as RQJob
    from rq.registry import FailedJobRegistry
    from rq.serializers import JSONSerializer
    from statesaga.adapters.queues.rq.queue import RQQueue

    name = f"sched-{uuid.uuid4().hex[:8]}"
    queue_url = redis_url.replace("redis://", "rq://", 1) + f"?queue={name}"
    q = Queue(name, connection=redis_client, serializer=JSONSerializer)
    due = datetime.now(UTC) - timedelta(seconds=5)
    good = Job("step", "WF-20260101-00000000", "x", 1).to_dict()
    unreadable = q.enqueue_at(due, "statesaga.worker.run_job", good)
    redis_client.hset(f"rq:job:{unreadable.id}", "created_at", "not a time")
    forged = q.enqueue_at(due, "os.system", f"touch {tmp_path / 'ran.marker'}")
    # A saga whose first job waits in the scheduled registry, as a retry's would.
    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    store = plugins.open_store(store_url)
    wf = Engine(store, RQQueue.from_url(queue_url)).start(
        load_definition(EXAMPLES / "trip.yaml"), TRIP_INPUT
    )
    (first,) = q.get_job_ids()
    q.remove(first)
    q.scheduled_job_registry.schedule(
        RQJob.fetch(first, connection=redis_client, serializer=JSONSerializer), due
    )
    work = statesaga(
        "worker",
        "--queue",
        queue_url,
        "--store",
        store_url,
        "--burst",
        "--with-scheduler",
        cwd=tmp_path,
    )
    assert work.returncode == 0, work.stderr
    assert store.get(wf.id).status is WorkflowStatus.COMPLETED
    assert f"refused job '{unreadable.id}'" in work.stderr and "cannot be read" in work.stderr
    assert redis_client.lrange(f"statesaga:quarantine:{name}", 0, -1) == [unreadable.id.encode()]
    assert q.scheduled_job_registry.get_job_ids() == []
    assert FailedJobRegistry(name, connection=redis_client).get_job_ids() == [forged.id]
    assert not (tmp_path / "ran.marker").exists()


def test_a_garbage_worker_command_leaves_the_worker_listening(
    redis_url: str, redis_client: Any, tmp_path: Path
) -> None:
    """Anyone who can publish on Redis can send RQ's worker commands (a documented denial of
    service); a message RQ cannot parse must not end the listener, so that the operator's
    own `shutdown` still works."""
    from rq.command import send_shutdown_command

    name = f"cmd-{uuid.uuid4().hex[:8]}"
    queue_url = redis_url.replace("redis://", "rq://", 1) + f"?queue={name}"
    script = Path(sys.executable).with_name("statesaga")
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen(
            [
                str(script),
                "worker",
                "--queue",
                queue_url,
                "--store",
                f"sqlite:///{tmp_path / 's.db'}",
                "--name",
                name,
            ],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while "subscribing to channel" not in log.read_text():
            assert worker.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        time.sleep(0.3)  # the subscription is made just after the line is logged
        for garbage in (b"not json", b'["x"]', b'{"no": "command"}'):
            assert redis_client.publish(f"rq:pubsub:{name}", garbage) == 1
        time.sleep(0.3)
        send_shutdown_command(redis_client, name)
        assert worker.wait(timeout=20) == 0, log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert log.read_text().count("ignored a worker command") == 3


def test_a_forged_job_writes_no_log_line_of_its_own(
    redis_url: str, redis_client: Any, tmp_path: Path
) -> None:
    """RQ logs each job's description, which a forger chooses: a newline must not start a
    fake log line, nor an escape sequence reach the operator's terminal. (RQ refuses to read
    an id that is not a plain word, and the guard logs that one with repr().)"""
    from rq import Queue
    from rq.serializers import JSONSerializer

    name = f"inj-{uuid.uuid4().hex[:8]}"
    queue_url = redis_url.replace("redis://", "rq://", 1) + f"?queue={name}"
    fake = "2026-01-01 00:00:00,000 INFO    statesaga.worker: all clear"
    q = Queue(name, connection=redis_client, serializer=JSONSerializer)
    q.enqueue("os.system", "true", description=f"x\n{fake}\r\x1b]0;owned\x07\x1b[2J")
    work = statesaga(
        "worker",
        "--queue",
        queue_url,
        "--store",
        f"sqlite:///{tmp_path / 's.db'}",
        "--burst",
        cwd=tmp_path,
    )
    assert work.returncode == 0, work.stderr
    assert "refused job" in work.stderr
    assert not any(line.startswith(fake) for line in work.stderr.splitlines())
    assert "\x1b]" not in work.stderr and "\x1b[2J" not in work.stderr and "\r" not in work.stderr


def test_settings_reprs_hide_every_password() -> None:
    """The settings a worker and the dashboard start with hold the store and queue URLs: a
    repr() (in a debugger, a log line, a traceback's locals) must not show their passwords."""
    from statesaga.web.actions import ServeSettings
    from statesaga.worker import WorkerSettings

    shown = [
        repr(
            WorkerSettings(
                queue_url=f"rq://:{SECRET}@h:6379/0?queue=q",
                store_url=f"redis://h:6379/0?password={SECRET}",
            )
        ),
        repr(
            ServeSettings(
                store=f"redis://u:{SECRET}@h/0", queue=f"rq://h/0?pass%77ord={SECRET}", token=SECRET
            )
        ),
    ]
    for text in shown:
        assert SECRET not in text and "***" in text, text
    assert "queue_url='rq://:***@h:6379/0?queue=q'" in shown[0]
