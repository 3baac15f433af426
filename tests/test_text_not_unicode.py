"""Text no store can keep is refused where it comes in, in one line naming where, and nothing
is written.

Python reads bytes that are not UTF-8 (a file name, an argument, an environment variable) as
text with lone surrogates, which UTF-8 has no bytes for. Found by hand: `statesaga run
--session $'s\\xff'`, `signal --by`, `cancel` of such an id and `--input` with such a value
each ended in a traceback (the save's serialization error, or the store's lookup); the
Python API raised the same from `start(session_id=...)`, `signal(by=...)`, a definition's
params; an input key with one was saved with the surrogate silently replaced."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from statesaga import Registry
from statesaga.adapters.queues.inline import InlineQueue
from statesaga.adapters.stores.sqlite import SQLiteStore
from statesaga.definitions.load import load_definition
from statesaga.engine import Engine
from statesaga.errors import DefinitionError, InputError

NOT_UNICODE = "text that is not Unicode (a lone surrogate, e.g. bytes read as text)"
SAGA = {
    "workflow": "texts",
    "steps": [
        {"name": "a", "action": "noop"},
        {"name": "wait", "await_signal": "go", "timeout": 300},
    ],
}
YAML = """workflow: texts
steps:
  - name: a
    action: noop
  - name: wait
    await_signal: go
    timeout: 300
"""


def dump(db: Path) -> str:
    """What the database holds, row by row (a write that sits in the WAL counts)."""
    with sqlite3.connect(db) as conn:
        return hashlib.sha256("\n".join(conn.iterdump()).encode()).hexdigest()


@pytest.fixture
def waiting(tmp_path: Path) -> tuple[Engine, str]:
    registry = Registry()
    registry.register_handler("noop", lambda ctx: None)
    engine = Engine(SQLiteStore(tmp_path / "s.db"), InlineQueue(), registry, heartbeat_interval=0)
    wf = engine.start(load_definition(SAGA))
    engine.wait(wf.id, timeout=30)  # runs the inline queue's jobs up to the signal's wait
    assert engine.get(wf.id).step("wait").status.value == "WAITING"
    return engine, wf.id


def test_the_python_api_refuses_such_text_naming_the_field(
    waiting: tuple[Engine, str], tmp_path: Path
) -> None:
    engine, wf_id = waiting
    definition = load_definition(SAGA)
    before = dump(tmp_path / "s.db")
    refused: list[tuple[str, Any]] = [
        ("session_id", lambda: engine.start(definition, session_id="s\udcff")),
        ("by", lambda: engine.start(definition, by="b\udcff")),
        ("input", lambda: engine.start(definition, {"file": "r\udce9sum\udce9.txt"})),
        ("input", lambda: engine.start(definition, {"r\udce9": 1})),
        ("by", lambda: engine.signal(wf_id, "go", {"ok": True}, by="b\udcff")),
        ("payload", lambda: engine.signal(wf_id, "go", {"note": "\udcff"})),
        ("workflow_id", lambda: engine.cancel("WF-\udcff")),
        ("workflow_id", lambda: engine.get("WF-\udcff")),
        ("reason", lambda: engine.suspend(wf_id, reason="r\udcff")),
    ]
    for field, call in refused:
        with pytest.raises(InputError) as error:
            call()
        assert field in str(error.value) and NOT_UNICODE in str(error.value)
        str(error.value).encode("utf-8")  # the message itself prints
    assert dump(tmp_path / "s.db") == before
    assert engine.get(wf_id).step("wait").status.value == "WAITING"


def test_a_definition_given_as_a_dict_names_each_such_text() -> None:
    data: dict[str, Any] = {
        "workflow": "p",
        "steps": [{"name": "a", "action": "noop", "params": {"x": "\udcff", "y\udcff": 1}}],
    }
    with pytest.raises(DefinitionError) as error:
        load_definition(data)
    lines = str(error.value).splitlines()[1:]
    assert [line.strip() for line in lines] == [
        f"<dict>: [steps.0.params.x] {NOT_UNICODE}",
        f"<dict>: [steps.0.params.y\\udcff] {NOT_UNICODE}",
    ]


def _cli(args: list[str | bytes], cwd: Path, env: dict[str, str] | None = None) -> Any:
    """`statesaga ARGS` with arguments given as bytes, as a shell passes them."""
    argv = [os.fsencode(sys.executable), b"-P", b"-m", b"statesaga.cli"]
    argv += [a if isinstance(a, bytes) else a.encode() for a in args]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STATESAGA_")}
    environ |= {"PYTHONPATH": str(cwd), **(env or {})}
    return subprocess.run(argv, cwd=cwd, env=environ, capture_output=True, timeout=120)


def test_the_command_line_refuses_bytes_that_are_not_utf8_in_any_argument(
    tmp_path: Path,
) -> None:
    (tmp_path / "texts.yaml").write_text(YAML)
    (tmp_path / "texts_handlers.py").write_text(
        "from statesaga.registry import handler\n\n@handler()\ndef noop(ctx):\n    return None\n"
    )
    db = tmp_path / "s.db"
    store = ["--store", f"sqlite:///{db}"]
    started = _cli(["run", "texts.yaml", *store, "--handlers", "texts_handlers", "--timeout", "1"],
                   tmp_path)  # fmt: skip
    assert db.exists(), started.stderr.decode()
    wf_id = SQLiteStore(db).list()[0].id
    before = dump(db)
    run = ["run", "texts.yaml", *store, "--handlers", "texts_handlers", "--timeout", "1"]
    cases: list[tuple[list[str | bytes], str]] = [
        ([*run, "--session", b"s\xff"], "'--session'"),
        ([*run, "--input", b'{"file": "r\xe9sum\xe9.txt"}'], "'--input'"),
        (["signal", wf_id, "go", *store, "--by", b"b\xff"], "'--by'"),
        (["signal", wf_id, b"g\xff", *store], "'NAME'"),
        (["cancel", b"WF-\xff", *store], "'WORKFLOW_ID'"),
        (["status", b"WF-\xff", *store], "'WORKFLOW_ID'"),
        (["list", "--session", b"\xff", *store], "'--session'"),
        (["plan", "show", b"WF-\xff", *store], "'WORKFLOW_ID'"),
    ]
    for args, where in cases:
        done = _cli(args, tmp_path)
        err = done.stderr.decode("utf-8")  # what it says is UTF-8 itself
        assert done.returncode == 2, (args, err)
        assert "Traceback" not in err, (args, err)
        assert err.splitlines()[-1] == (
            f"Error: Invalid value for {where}: "
            "not UTF-8 text (bytes that are not UTF-8, as in some file names)"
        ), (args, err)
    # An environment variable is read as text too.
    done = _cli(["list"], tmp_path, env={"STATESAGA_STORE": "sqlite:///s\udcff.db"})
    assert done.returncode == 2 and b"(env var: 'STATESAGA_STORE')" in done.stderr
    assert dump(db) == before
