"""Bad and hostile input, through the real command line against real SQLite files and the
real Redis: every case gets its one-line error (a substring of it is stated), its exit code
(0 ok, 1 invalid table / store / queue, 2 bad usage or input), no traceback, and the store
is the same after as before (same rows, same keys, no new files)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from statesaga.cli import main

ROOT = Path(__file__).resolve().parents[1]
PW = "s3cr3t-pw-7781"  # a password that must never be echoed

BASE = """\
workflow: hostile
handlers: statesaga.examples.trip_handlers
defaults:
  retry: {max_attempts: 2, initial_interval: 0.01}
steps:
  - name: first
    action: reserve_flight
    params: {origin: "${input.origin}", destination: NRT}
    compensation: {action: cancel_flight, params: {booking: "${result.booking}"}}
  - name: second
    action: reserve_hotel
    params: {city: NRT, nights: 1}
"""
GOOD_INPUT = '{"origin": "TPE"}'


def definition(**replace: str) -> str:
    """BASE with lines replaced (`old line` -> `new lines`), or extra text appended."""
    text = BASE
    for old, new in replace.items():
        old = old.replace("__", " ")
        assert old in text, old
        text = text.replace(old, new)
    return text


def with_step(extra: str) -> str:
    """BASE with keys added to the first step (indented as its keys)."""
    return BASE.replace("    action: reserve_flight\n", "    action: reserve_flight\n" + extra)


def with_retry(extra: str) -> str:
    return BASE.replace(
        "  retry: {max_attempts: 2, initial_interval: 0.01}", f"  retry: {{{extra}}}"
    )


def nested(depth: int) -> str:
    return "workflow: x\nsteps:\n" + "".join("  " * i + f"- k{i}:\n" for i in range(depth))


BOMB = (
    "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n"
        for p, c in zip("abcdef", "bcdefg", strict=True)
    )
    + "workflow: boom\nsteps: [*g]\n"
)

CHART_ON = """\
chart: switch
initial: OFF
states:
  - name: OFF
  - name: ON
    final: true
transitions:
  - {trigger: flip, source: OFF, dest: ON}
"""


@dataclass(frozen=True)
class Case:
    """One hostile input: the command (placeholders: {store} {dir} {def} {redis} {rq}
    {seeded}), the files it needs, the substring of its one error line, its exit code."""

    id: str
    args: tuple[str, ...]
    expect: str
    code: int
    files: dict[str, str | bytes] = field(default_factory=dict)
    stdin: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    backend: str = "sqlite"  # the store compared before and after: sqlite or redis
    setup: str | None = None  # "corrupt": one unreadable document is added to the store
    stdout: str | None = None  # something the command must still print (e.g. other rows)
    one_line: bool = True  # False: several located problems, each on its own line


def V(id: str, yaml: str | bytes, expect: str, **kw: Any) -> Case:  # noqa: N802
    """`validate` of a file: one located line, exit 1."""
    files = {"def.yaml": yaml, **kw.pop("files", {})}
    return Case(id, ("validate", "{def}"), expect, 1, files=files, **kw)


def R(id: str, yaml: str, expect: str, code: int = 1, **kw: Any) -> Case:  # noqa: N802
    """`run` of a definition against the seeded store: refused before anything is stored."""
    args = ("run", "{def}", "--store", "{store}", "--input", kw.pop("input", GOOD_INPUT))
    return Case(id, args, expect, code, files={"def.yaml": yaml, **kw.pop("files", {})}, **kw)


def I(id: str, value: str, expect: str, yaml: str = BASE, **kw: Any) -> Case:  # noqa: N802,E743
    """`run` with a bad `--input`: usage error (exit 2), nothing stored."""
    args = ("run", "{def}", "--store", "{store}", "--input", value)
    return Case(id, args, expect, 2, files={"def.yaml": yaml, **kw.pop("files", {})}, **kw)


def Q(id: str, queue: str, expect: str) -> Case:  # noqa: N802
    """`run` with a queue that cannot take the job: refused before the workflow is stored."""
    args = ("run", "{def}", "--store", "{store}", "--queue", queue, "--input", GOOD_INPUT)
    return Case(id, (*args, "--timeout", "5"), expect, 1, files={"def.yaml": BASE})


SCHEMA = definition(
    **{
        "steps:\n": "input:\n"
        "  additionalProperties: false\n"
        "  required: [origin, nights]\n"
        "  properties:\n"
        "    origin: {type: string, minLength: 3, maxLength: 3}\n"
        "    nights: {type: integer, minimum: 1, maximum: 30}\n"
        "    class: {enum: [economy, business]}\n"
        "    vip: {type: boolean}\n"
        "steps:\n"
    }
)
CHART_OK = "chart: step\nextends: step\n"

CASES: list[Case] = [
    # -- numbers that validate and break later: finite, bounded, never a bool ---------------
    V("max-interval-inf", with_retry("max_interval: .inf"), ".inf is not a finite number"),
    V("max-interval-nan", with_retry("max_interval: .nan"), "is not a finite number"),
    V("max-interval-huge", with_retry("max_interval: 1e300"), "less than or equal to"),
    V("initial-negative", with_retry("initial_interval: -1"), "greater than or equal to 0"),
    V("backoff-huge", with_retry("backoff_rate: 1e6"), "less than or equal to 1000"),
    V("backoff-below-one", with_retry("backoff_rate: 0.5"), "greater than or equal to 1"),
    V("backoff-bool", with_retry("backoff_rate: true"), "valid number"),
    V("attempts-float", with_retry("max_attempts: 2.5"), "valid integer"),
    V("attempts-bool", with_retry("max_attempts: true"), "valid integer"),
    V("attempts-huge", with_retry("max_attempts: 100000000"), "less than or equal to 100000"),
    V("attempts-text", with_retry("max_attempts: three"), "valid integer"),
    V("jitter-above-one", with_retry("jitter: 2"), "less than or equal to 1"),
    V("deadline-overflow", with_retry("deadline: 1e400"), "1e400 is not a finite number"),
    V("deadline-zero", with_retry("deadline: 0"), "greater than 0"),
    V("timeout-yes", with_step("    timeout: yes\n"), "[steps.0.timeout] Input should be"),
    V("timeout-true", with_step("    timeout: true\n"), "valid number"),
    V("timeout-quoted", with_step('    timeout: "30"\n'), "valid number"),
    V("timeout-zero", with_step("    timeout: 0\n"), "greater than 0"),
    V("timeout-inf", with_step("    timeout: .inf\n"), "not a finite number"),
    V(
        "default-timeout-huge",
        definition(**{"defaults:\n": "defaults:\n  timeout: 1e12\n"}),
        "less than or equal to",
    ),
    V(
        "sleep-1e308",
        definition(
            **{"  - name: second\n": "  - {name: nap, duration: 1e308}\n  - name: second\n"}
        ),
        "[steps.1.duration] Input should be less than or equal to",
    ),
    V(
        "sleep-inf",
        definition(**{"  - name: second\n": "  - {name: nap, duration: .inf}\n  - name: second\n"}),
        "not a finite number",
    ),
    V(
        "sleep-negative",
        definition(**{"  - name: second\n": "  - {name: nap, duration: -1}\n  - name: second\n"}),
        "greater than or equal to 0",
    ),
    V(
        "sleep-bool",
        definition(**{"  - name: second\n": "  - {name: nap, duration: yes}\n  - name: second\n"}),
        "valid number",
    ),
    V(
        "until-not-a-time",
        definition(**{"  - name: second\n": "  - {name: nap, until: soon}\n  - name: second\n"}),
        "datetime",
    ),
    V("pivot-yes", with_step("    pivot: yes\n"), "YAML 1.2: write true or false, not yes"),
    V("pivot-on", with_step("    pivot: On\n"), "not On"),
    V("params-nan", with_step("    timeout: 5\n").replace("NRT}", "NRT, x: .nan}"), "finite"),
    V("params-inf-deep", BASE.replace("nights: 1}", "nights: [1, {a: -.inf}]}"), "finite"),
    # -- references that validate and fail at run time ----------------------------------
    V(
        "ref-unknown-step",
        BASE.replace("city: NRT,", 'city: "${steps.unknown.x}",'),
        "there is no step 'unknown'",
    ),
    V(
        "ref-forward",
        BASE.replace('origin: "${input.origin}"', 'origin: "${steps.second.x}"'),
        "does not finish before 'first' starts",
    ),
    V(
        "ref-parallel-sibling",
        BASE.replace(
            "    action: reserve_hotel\n", "    action: reserve_hotel\n    depends_on: []\n"
        ).replace("city: NRT,", 'city: "${steps.first.booking}",'),
        "add it to depends_on",
    ),
    V(
        "ref-self",
        BASE.replace("city: NRT,", 'city: "${steps.second.x}",'),
        "has no result while it runs",
    ),
    V(
        "ref-result-in-action",
        BASE.replace("city: NRT,", 'city: "${result.booking}",'),
        "only known to its compensation",
    ),
    V("ref-unknown-root", BASE.replace("city: NRT,", 'city: "${env.HOME}",'), "starts with input."),
    V(
        "ref-undeclared-input",
        SCHEMA.replace("city: NRT,", 'city: "${input.city}",'),
        "the input declares no 'city'",
    ),
    # -- definition structure -------------------------------------------------------------
    V(
        "step-lifecycle-missing",
        definition(**{"steps:\n": "step_lifecycle: nowhere.yaml\nsteps:\n"}),
        "no such chart file",
    ),
    V(
        "step-lifecycle-not-step",
        definition(**{"steps:\n": "step_lifecycle: wf.yaml\nsteps:\n"}),
        "the chart must be named 'step'",
        one_line=False,
        files={"wf.yaml": "chart: workflow\nextends: workflow\n"},
    ),
    V(
        "step-lifecycle-bad-yaml",
        definition(**{"steps:\n": "step_lifecycle: bad.yaml\nsteps:\n"}),
        "YAML syntax error",
        files={"bad.yaml": "chart: [\n"},
    ),
    V("input-schema-unknown-keyword", SCHEMA.replace("maxLength: 3", "pattern: x"), "unknown key"),
    V("input-schema-bad-type", SCHEMA.replace("type: boolean", "type: date"), "Input should be"),
    V("depends-on-unknown", with_step("    depends_on: [ghost]\n"), "unknown step 'ghost'"),
    V(
        "duplicate-step",
        BASE.replace("name: second", "name: first"),
        "duplicate step name 'first'",
    ),
    V(
        "dependency-cycle",
        with_step("    depends_on: [second]\n"),
        "dependency cycle",
    ),
    V("no-steps", "workflow: x\nsteps: []\n", "at least 1 item"),
    V("unknown-top-key", BASE + "colour: red\n", "unknown key 'colour'"),
    V("bad-step-name", BASE.replace("name: second", "name: two words"), "String should match"),
    V("not-a-mapping", "- workflow: x\n", "must be a mapping"),
    # -- YAML itself ------------------------------------------------------------------------
    V("alias-bomb", BOMB, "aliases are expanded"),
    V("deep-flow", "workflow: x\nsteps: " + "[" * 3000 + "]" * 3000 + "\n", "nested deeper than"),
    V("deep-block", nested(200), "nested deeper than"),
    V("recursive-alias-seq", "workflow: x\nsteps: &s [*s]\n", "recursive alias"),
    V("recursive-alias-map", "workflow: x\nsteps:\n  - &m {name: a, x: *m}\n", "recursive alias"),
    V(
        "python-apply-tag",
        "workflow: !!python/object/apply:os.system ['touch pwned']\nsteps: []\n",
        "!!python/object/apply:os.system is not allowed",
    ),
    V("python-name-tag", "workflow: !!python/name:os.system ''\n", "!!python/name:os.system"),
    V(
        "python-object-on-mapping",
        "workflow: x\nsteps: !!python/object:os.Foo {a: 1}\n",
        "!!python/object:os.Foo is not allowed",
    ),
    V("custom-tag", "workflow: !custom x\n", "the tag !custom is not allowed"),
    V("binary-tag", "workflow: !!binary aGk=\n", "!!binary is not allowed"),
    V("set-tag", "workflow: x\nsteps: !!set {a, b}\n", "!!set is not allowed"),
    V("not-utf8", b"workflow: caf\xe9\nsteps: []\n", "not UTF-8 text (byte 0xe9)"),
    V("utf16", "workflow: x\n".encode("utf-16"), "not UTF-8 text"),
    V("nul-character", "workflow: a\x00b\n", "U+0000 is not allowed"),
    V("two-documents", "workflow: a\n---\nworkflow: b\n", "another document"),
    V("empty-file", "", "the file is empty"),
    V("only-comments", "# nothing\n", "the file is empty"),
    V("unclosed-bracket", "workflow: [x\n", "YAML syntax error"),
    V("tab-indent", "workflow: x\nsteps:\n\t- name: a\n", "YAML syntax error"),
    V("duplicate-key", BASE + "workflow: again\n", "duplicate key 'workflow'"),
    V("complex-key", "? [a, b]\n: c\nworkflow: x\n", "is not a scalar"),
    V("merge-key", BASE + "<<: {colour: red}\n", "unknown key '<<'"),
    V(
        "too-large",
        BASE + "#" * 3000 + "\n",
        "larger than 2000 bytes",
        env={"STATESAGA_MAX_YAML_BYTES": "2000"},
    ),
    V("int-overflow-float", with_retry("max_interval: 1e999"), "1e999 is not a finite number"),
    V("depth-limit-env", BASE, "nested deeper than 3", env={"STATESAGA_MAX_YAML_DEPTH": "3"}),
    V("values-limit-env", BASE, "more than 20 values", env={"STATESAGA_MAX_YAML_NODES": "20"}),
    V("int-5000-digits", with_retry("max_attempts: " + "9" * 5000), "not a valid int"),
    V("bad-explicit-timestamp", with_step("    timeout: !!timestamp soon\n"), "not a valid"),
    V("octal-yaml11", with_retry("max_attempts: 0o7777777"), "less than or equal to 100000"),
    V("chart-final-yes", CHART_ON.replace("final: true", "final: yes"), "write true or false"),
    V(
        "extends-cycle",
        "chart: a\nextends: b.yaml\n",
        "extends cycle: def.yaml -> b.yaml -> def.yaml",
        files={"b.yaml": "chart: b\nextends: def.yaml\n"},
    ),
    V("extends-self", "chart: a\nextends: def.yaml\n", "extends cycle: def.yaml -> def.yaml"),
    V("extends-missing", "chart: a\nextends: gone.yaml\n", "no such chart file"),
    V("extends-unknown-lifecycle", "chart: a\nextends: saga\n", "no such chart file"),
    Case("validate-directory", ("validate", "{dir}"), "is a directory", 2),
    Case("validate-missing", ("validate", "{dir}/nope.yaml"), "nope.yaml", 1),
    # -- run: what validate refuses, run refuses, and nothing is stored --------------------
    R("run-max-interval-inf", with_retry("max_interval: .inf"), "not a finite number"),
    R("run-timeout-yes", with_step("    timeout: yes\n"), "valid number"),
    R("run-forward-ref", BASE.replace("city: NRT,", 'city: "${steps.nope.x}",'), "no step"),
    R("run-alias-bomb", BOMB, "aliases are expanded"),
    R("run-python-tag", "workflow: !!python/object/apply:os.system ['x']\n", "is not allowed"),
    R(
        "run-step-lifecycle-missing",
        definition(**{"steps:\n": "step_lifecycle: nowhere.yaml\nsteps:\n"}),
        "no such chart file",
    ),
    # -- --input: strict JSON, bounded, readable; the input fits the definition -----------
    I("input-nan", '{"origin": NaN}', "NaN is not JSON"),
    I("input-infinity", '{"origin": Infinity}', "Infinity is not JSON"),
    I("input-minus-infinity", '{"origin": -Infinity}', "-Infinity is not JSON"),
    I("input-1e400", '{"origin": "TPE", "x": 1e400}', "x: 1e400 is not a finite number"),
    I(
        "input-integer-too-long-to-read-back",
        '{"origin": "TPE", "x": [1, -' + "9" * 4301 + "]}",
        "x[1]: an integer of more than 4300 digits cannot be stored",
    ),
    I("input-escaped-lone-surrogate", '{"origin": "\\udcff"}', "origin: text that is not Unicode"),
    I("input-list", '["TPE"]', "must be a JSON object"),
    I("input-string", '"TPE"', "must be a JSON object"),
    I("input-not-json", "{origin: TPE}", "not JSON"),
    I("input-trailing-garbage", '{"origin": "TPE"} x', "not JSON"),
    I("input-missing-file", "@missing.json", "cannot read missing.json"),
    I("input-directory", "@.", "cannot read ."),
    I("input-not-utf8", "@bad.json", "bad.json is not UTF-8", files={"bad.json": b'{"a": "\xff"}'}),
    I("input-stdin-not-json", "@-", "not JSON", stdin="nope"),
    I("input-stdin-nan", "@-", "NaN is not JSON", stdin='{"origin": NaN}'),
    I("input-stdin-empty", "@-", "not JSON", stdin=""),
    I(
        "input-too-large",
        "@big.json",
        "larger than 1048576 bytes",
        files={"big.json": json.dumps({"origin": "TPE", "blob": "x" * (20 * 1024 * 1024)})},
    ),
    I(
        "input-too-large-small-limit",
        '{"origin": "TPE", "blob": "' + "x" * 200 + '"}',
        "larger than 100 bytes",
        env={"STATESAGA_MAX_INPUT_BYTES": "100"},
    ),
    I("input-deep", "[" * 100_000 + "]" * 100_000, "not JSON"),
    I(
        "input-missing-reference",
        '{"destination": "NRT"}',
        "missing: ${input.origin} is referenced by 'first' params",
    ),
    I(
        "input-missing-nested-ref",
        '{"origin": {}}',
        "${input.origin.code}",
        yaml=BASE.replace("${input.origin}", "${input.origin.code}"),
    ),
    I("schema-required", '{"origin": "TPE"}', "[nights] missing required value", yaml=SCHEMA),
    I("schema-type", '{"origin": "TPE", "nights": "2"}', "must be integer", yaml=SCHEMA),
    I("schema-bool-not-int", '{"origin": "TPE", "nights": true}', "must be integer", yaml=SCHEMA),
    I("schema-minimum", '{"origin": "TPE", "nights": 0}', "at least 1", yaml=SCHEMA),
    I("schema-maximum", '{"origin": "TPE", "nights": 31}', "at most 30", yaml=SCHEMA),
    I("schema-enum", '{"origin": "TPE", "nights": 2, "class": "first"}', "one of", yaml=SCHEMA),
    I(
        "schema-extra",
        '{"origin": "TPE", "nights": 2, "pet": "cat"}',
        "not a declared",
        yaml=SCHEMA,
    ),
    I("schema-length", '{"origin": "TAIPEI", "nights": 2}', "at most 3 characters", yaml=SCHEMA),
    Case(
        "timeout-nan",
        ("run", "{def}", "--store", "{store}", "--input", GOOD_INPUT, "--timeout", "nan"),
        "must be from 0",
        2,
        files={"def.yaml": BASE},
    ),
    Case(
        "timeout-negative",
        ("run", "{def}", "--store", "{store}", "--input", GOOD_INPUT, "--timeout", "-1"),
        "must be from 0",
        2,
        files={"def.yaml": BASE},
    ),
    Case(
        "recover-every-inf",
        ("recover", "--store", "{store}", "--every", "inf"),
        "must be from 0",
        2,
    ),
    # -- --payload ----------------------------------------------------------------------------
    Case(
        "payload-missing-file",
        ("signal", "WF-20260101-00000000", "go", "--store", "{store}", "--payload", "@missing"),
        "cannot read missing",
        2,
    ),
    Case(
        "payload-nan",
        ("signal", "WF-20260101-00000000", "go", "--store", "{store}", "--payload", "NaN"),
        "NaN is not JSON",
        2,
    ),
    Case(
        "payload-stdin",
        ("signal", "WF-20260101-00000000", "go", "--store", "{store}", "--payload", "@-"),
        "not JSON",
        2,
        stdin="{",
    ),
    # -- store and queue URLs -------------------------------------------------------------
    Case("store-unknown-scheme", ("list", "--store", "nope://x"), "no statesaga.stores plugin", 1),
    Case("store-no-scheme", ("list", "--store", "statesaga.db"), "not an adapter URL", 1),
    Case("store-bad-ipv6", ("list", "--store", "redis://[::1/0"), "Invalid IPv6 URL", 1),
    Case("sqlite-host", ("list", "--store", "sqlite://host/x.db"), "not a sqlite store URL", 1),
    Case("sqlite-no-file", ("list", "--store", "sqlite:///"), "names no file", 1),
    Case("sqlite-option", ("list", "--store", "{store}?bogus=1"), "unknown sqlite URL option", 1),
    Case("sqlite-timeout-nan", ("list", "--store", "{store}?timeout=nan"), "timeout must be", 1),
    Case("sqlite-sync", ("list", "--store", "{store}?synchronous=off"), "not supported", 1),
    Case(
        "sqlite-under-a-file",
        ("run", "{def}", "--store", "sqlite:///{dir}/seed.db/x.db", "--input", GOOD_INPUT),
        "cannot be opened",
        1,
        files={"def.yaml": BASE},
    ),
    Case(
        "sqlite-in-proc",
        ("run", "{def}", "--store", "sqlite:////proc/statesaga/x.db", "--input", GOOD_INPUT),
        "cannot be opened",
        1,
        files={"def.yaml": BASE},
    ),
    Case(
        "sqlite-not-a-database",
        ("list", "--store", "sqlite:///{dir}/garbage.db"),
        "not a database",
        1,
        files={"garbage.db": b"this is not sqlite" * 100},
    ),
    Case("redis-unreachable", ("list", "--store", "redis://127.0.0.1:1/0"), "Connection", 1),
    Case("redis-notadb", ("list", "--store", "{redis_base}/notadb"), "must be a number", 1),
    Case("redis-db-negative", ("list", "--store", "{redis_base}/-1"), "must be a number", 1),
    Case("redis-db-out-of-range", ("list", "--store", "{redis_base}/99999"), "out of range", 1),
    Case("redis-bad-port", ("list", "--store", "redis://127.0.0.1:port/0"), "Port", 1),
    Case("redis-port-range", ("list", "--store", "redis://127.0.0.1:99999/0"), "out of range", 1),
    Case("redis-option", ("list", "--store", "{redis}?bogus=1"), "unknown redis store URL", 1),
    Case(
        "redis-option-value", ("list", "--store", "{redis}?socket_timeout=x"), "socket_timeout", 1
    ),
    Case("redis-db-option", ("list", "--store", "{redis}?db=x"), "db must be a number", 1),
    Case("redis-no-host", ("list", "--store", "redis:///0"), "no host", 1),
    Case(
        "redis-wrong-password",
        ("list", "--store", "{redis_auth}"),
        "invalid username-password pair",
        1,
        backend="redis",
    ),
    Q("rq-unreachable", "rq://127.0.0.1:1/0", "rq queue cannot reach redis"),
    Q("rq-wrong-password", "{rq_auth}", "invalid username-password pair"),
    Q("rq-notadb", "rq://h:1/x?queue=q", "must be a number"),
    Q("rq-option", "{rq}&colour=red", "unknown rq queue URL option"),
    Q("rq-empty-queue-name", "rq://h:1/0?queue=", "empty queue"),
    Q("rq-bad-port", "rq://h:port/0", "Port could not be cast"),
    Q("queue-unknown-scheme", "kafka://x", "no statesaga.queues plugin"),
    # -- read-only commands never create a store ---------------------------------------------
    Case(
        "status-no-store", ("status", "WF-1", "--store", "sqlite:///{dir}/new/x.db"), "no sqlite", 1
    ),
    Case("list-no-store", ("list", "--store", "sqlite:///{dir}/a/b/c.db"), "no sqlite store", 1),
    Case(
        "diagram-no-store",
        ("diagram", "--instance", "WF-1", "--store", "sqlite:///{dir}/d.db"),
        "no sqlite store",
        1,
    ),
    Case(
        "check-upgrade-no-store",
        ("check-upgrade", "{def}", "--store", "sqlite:///{dir}/u.db"),
        "no sqlite store",
        1,
        files={"def.yaml": BASE},
    ),
    Case("status-default-store", ("status", "WF-1"), "no sqlite store at statesaga.db", 1),
    Case(
        "status-unknown-id",
        ("status", "WF-20990101-00000000", "--store", "{store}"),
        "not found",
        1,
    ),
    Case(
        "list-bad-status",
        ("list", "--store", "{store}", "--status", "DONE"),
        "'DONE' is not one of 'pending'",
        2,
    ),
    Case(
        "list-limit-negative",
        ("list", "--store", "{store}", "--limit", "-1"),
        "not in the range",
        2,
    ),
    Case(
        "list-limit-zero",
        ("list", "--store", "{redis}", "--limit", "0"),
        "not in the range",
        2,
        backend="redis",
    ),
    # -- the same refusals against the Redis store: nothing written there either ----------
    Case(
        "redis-run-input-nan",
        ("run", "{def}", "--store", "{redis}", "--input", '{"origin": NaN}'),
        "NaN is not JSON",
        2,
        files={"def.yaml": BASE},
        backend="redis",
    ),
    Case(
        "redis-run-missing-input",
        ("run", "{def}", "--store", "{redis}", "--input", "{}"),
        "missing: ${input.origin}",
        2,
        files={"def.yaml": BASE},
        backend="redis",
    ),
    Case(
        "redis-run-schema",
        ("run", "{def}", "--store", "{redis}", "--input", '{"origin": "TPE"}'),
        "[nights] missing required value",
        2,
        files={"def.yaml": SCHEMA},
        backend="redis",
    ),
    Case(
        "redis-run-rq-unreachable",
        (
            "run",
            "{def}",
            "--store",
            "{redis}",
            "--queue",
            "rq://127.0.0.1:1/0",
            "--input",
            GOOD_INPUT,
        ),
        "rq queue cannot reach redis",
        1,
        files={"def.yaml": BASE},
        backend="redis",
    ),
    Case(
        "redis-run-bad-definition",
        ("run", "{def}", "--store", "{redis}", "--input", GOOD_INPUT),
        "not a finite number",
        1,
        files={"def.yaml": with_retry("max_interval: .inf")},
        backend="redis",
    ),
    # -- one unreadable stored document: named by id, the others still listed --------------
    Case(
        "list-corrupt-sqlite",
        ("list", "--store", "{store}"),
        "stored workflow WF-20260101-badbad01 cannot be read",
        1,
        setup="corrupt",
        stdout="COMPLETED",
    ),
    Case(
        "list-corrupt-sqlite-json",
        ("list", "--store", "{store}", "--json"),
        "WF-20260101-badbad01",
        1,
        setup="corrupt",
        stdout='"status": "COMPLETED"',
    ),
    Case(
        "status-corrupt-sqlite",
        ("status", "WF-20260101-badbad01", "--store", "{store}"),
        "stored WF-20260101-badbad01",
        1,
        setup="corrupt",
    ),
    Case(
        "recover-corrupt-sqlite",
        ("recover", "--store", "{store}"),
        "WF-20260101-badbad01 cannot be read",
        1,  # as list and check-upgrade: the others are recovered, the exit says one is not
        setup="corrupt",
    ),
    Case(
        "check-upgrade-corrupt-sqlite",
        ("check-upgrade", "{def}", "--store", "{store}"),
        "WF-20260101-badbad01 cannot be read",
        1,
        files={"def.yaml": BASE},
        setup="corrupt",
        stdout="0 in-flight instances",
    ),
    Case(
        "list-corrupt-redis",
        ("list", "--store", "{redis}"),
        "stored workflow WF-20260101-badbad01 cannot be read",
        1,
        backend="redis",
        setup="corrupt",
        stdout="COMPLETED",
    ),
    Case(
        "status-corrupt-redis",
        ("status", "WF-20260101-badbad01", "--store", "{redis}"),
        "stored WF-20260101-badbad01",
        1,
        backend="redis",
        setup="corrupt",
    ),
    Case(
        "recover-corrupt-redis",
        ("recover", "--store", "{redis}"),
        "WF-20260101-badbad01 cannot be read",
        1,  # as list and check-upgrade: the others are recovered, the exit says one is not
        backend="redis",
        setup="corrupt",
    ),
]


# -- the store before and after --------------------------------------------------------------
def _files(folder: Path) -> set[str]:
    # SQLite's own -wal/-shm files appear when a database is opened; they are not data.
    return {
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if not p.name.endswith(("-wal", "-shm", "-journal"))
    }


def _rows(db: Path) -> list[tuple[Any, ...]]:
    if not db.is_file():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return list(conn.execute("SELECT id, revision, status, doc FROM workflows ORDER BY id"))


def snapshot(case: Case, folder: Path, redis_client: Any) -> Any:
    if case.backend == "redis":
        return {k: redis_client.dump(k) for k in sorted(redis_client.keys("*"))}
    return (_files(folder), _rows(folder / "seed.db"))


# -- fixtures -----------------------------------------------------------------------------
def _seed_store(url: str) -> None:
    """One finished trip in the store, so "nothing changed" has something to keep."""
    from statesaga import Engine, load_definition, open_queue, open_store
    from statesaga.registry import Registry

    registry = Registry()
    registry.register_module("statesaga.examples.trip_handlers")
    store = open_store(url)
    engine = Engine(store, open_queue("inline://"), registry)
    trip = load_definition(ROOT / "examples" / "trip.yaml")
    inp = {"origin": "TPE", "destination": "NRT", "nights": 1, "amount": 1, "email": "a@b.c"}
    assert engine.run(trip, inp).status.value == "COMPLETED"
    store.close()


@pytest.fixture(scope="module")
def seed_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("seed")
    _seed_store(f"sqlite:///{folder / 'seed.db'}")
    return folder / "seed.db"


def _corrupt(case: Case, folder: Path, redis_client: Any, redis_url: str) -> None:
    """A RUNNING workflow whose document is cut short, next to the good one."""
    bad = "WF-20260101-badbad01"
    if case.backend == "redis":
        redis_client.hset(
            "statesaga:wf:" + bad, mapping={"doc": '{"id": "x", "steps": [', "rev": 1}
        )
        for index in ("all", "status:RUNNING"):
            redis_client.zadd("statesaga:" + index, {bad: 1})
        return
    # Well-formed JSON that no model reads (the store's name index refuses malformed JSON at
    # write time): written by hand, or by a version that stored what this one rejects.
    with sqlite3.connect(folder / "seed.db") as conn:
        conn.execute(
            "INSERT INTO workflows (id, revision, session_id, status, heartbeat_at, created_at,"
            " doc) VALUES (?, 1, NULL, 'RUNNING', NULL, 1, ?)",
            (bad, '{"id": "' + bad + '", "name": "x", "steps": [{"retry": {"x": 1}}]}'),
        )
    conn.close()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(
    case: Case,
    tmp_path: Path,
    seed_db: Path,
    redis_url: str,
    redis_password_url: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import redis

    folder = tmp_path / "case"
    folder.mkdir()
    shutil.copy(seed_db, folder / "seed.db")
    for name, content in case.files.items():
        target = folder / name
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")
    redis_base = redis_url.rsplit("/", 1)[0]
    redis5 = redis_base + "/5"
    client = redis.Redis.from_url(redis5)
    client.flushdb()
    if case.backend == "redis":
        _seed_store(redis5)
    if case.setup == "corrupt":
        _corrupt(case, folder, client, redis5)
    auth_host = redis_password_url[0].split("://", 1)[1].rsplit("/", 1)[0]
    values = {
        "store": f"sqlite:///{folder / 'seed.db'}",
        "dir": str(folder),
        "def": str(folder / "def.yaml"),
        "redis": redis5,
        "redis_base": redis_base,
        "redis_auth": f"redis://:wrong-{PW}@{auth_host}/0",
        "rq": f"rq://{redis_base.split('://', 1)[1]}/5?queue=hostile",
        "rq_auth": f"rq://:wrong-{PW}@{auth_host}/0?queue=hostile",
    }
    args = []
    for arg in case.args:  # not str.format: JSON arguments have braces of their own
        for name, value in values.items():
            arg = arg.replace("{" + name + "}", value)
        args.append(arg)
    for name in ("STATESAGA_STORE", "STATESAGA_QUEUE", "STATESAGA_MAX_INPUT_BYTES"):
        monkeypatch.delenv(name, raising=False)
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(folder)
    before = snapshot(case, folder, client)
    queued_before = client.dbsize() if case.backend == "sqlite" else None

    result = CliRunner().invoke(main, args, input=case.stdin)

    try:
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            f"traceback: {result.exception!r}\n{result.output}"
        )
        assert result.exit_code == case.code, result.output
        message = (result.stderr or result.stdout).strip().splitlines()
        hits = [line for line in message if case.expect in line]
        assert len(hits) == 1, f"{case.expect!r} not in exactly one line of:\n{result.output}"
        if case.code == 1 and case.stdout is None and case.one_line:
            assert len(message) == 1, f"more than one line:\n{result.output}"
        if case.stdout is not None:
            assert case.stdout in result.stdout
        assert "Traceback" not in result.output
        assert PW not in result.output
        assert snapshot(case, folder, client) == before, "the store changed"
        if queued_before is not None:
            assert client.dbsize() == queued_before, "something was written to redis"
    finally:
        client.flushdb()
        client.close()


def test_the_table_has_at_least_100_cases() -> None:
    assert len(CASES) >= 100
    assert len({c.id for c in CASES}) == len(CASES)


# -- what must keep working -------------------------------------------------------------------
def test_yaml_12_reads_on_off_yes_no_as_text(tmp_path: Path) -> None:
    """A state named ON (YAML 1.1 read it as a boolean) is a state named ON."""
    from statesaga.charts.chart import load_chart

    path = tmp_path / "switch.yaml"
    path.write_text(CHART_ON, encoding="utf-8")
    chart = load_chart(path)
    assert set(chart.states) == {"OFF", "ON"}
    assert chart.allowed_triggers("OFF") == ["flip"]
    res = CliRunner().invoke(main, ["validate", str(path)])
    assert res.exit_code == 0 and res.stdout.strip() == f"ok {path}"


def test_backoff_never_overflows() -> None:
    from statesaga.models import RetryPolicy

    policy = RetryPolicy(
        max_attempts=100_000, initial_interval=1, backoff_rate=1000, max_interval=60
    )
    assert policy.delay(10_000) == 60
    assert RetryPolicy(backoff_rate=2, max_interval=3600).delay(5000) == 3600


def test_input_at_stdin_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--input @-` reads the input from standard input, and the run completes."""
    (tmp_path / "def.yaml").write_text(BASE, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path / 's.db'}"
    res = CliRunner().invoke(
        main, ["run", "def.yaml", "--store", store, "--input", "@-", "--json"], input=GOOD_INPUT
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["status"] == "COMPLETED" and doc["input"] == {"origin": "TPE"}


def test_input_schema_is_shown_and_a_fitting_input_runs(tmp_path: Path) -> None:
    (tmp_path / "def.yaml").write_text(SCHEMA, encoding="utf-8")
    res = CliRunner().invoke(main, ["schema", "--input", str(tmp_path / "def.yaml")])
    assert res.exit_code == 0, res.output
    shown = json.loads(res.stdout)
    assert shown["required"] == ["origin", "nights"]
    assert shown["properties"]["nights"] == {"type": "integer", "minimum": 1.0, "maximum": 30.0}
    assert shown["additionalProperties"] is False
    store = f"sqlite:///{tmp_path / 's.db'}"
    res = CliRunner().invoke(
        main,
        [
            "run",
            str(tmp_path / "def.yaml"),
            "--store",
            store,
            "--input",
            '{"origin": "TPE", "nights": 2, "class": "economy"}',
        ],
    )
    assert res.exit_code == 0, res.output
    assert _rows(tmp_path / "s.db")[0][2] == "COMPLETED"


@pytest.mark.slow
def test_history_is_bounded_and_keeps_what_diagrams_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step retried 400 times with a history limit of 100: the stored history stays near
    the limit, counts what it folded, and still holds every distinct transition (so the
    live diagram numbers every edge taken) and the final attempts."""
    from statesaga import Engine, load_definition, open_queue, open_store
    from statesaga.diagram import from_instance
    from statesaga.registry import Registry

    monkeypatch.setenv("STATESAGA_MAX_HISTORY", "100")
    calls = {"n": 0}

    def flaky(ctx: Any) -> dict[str, Any]:
        calls["n"] += 1
        if ctx.attempt < 400:
            raise ConnectionError("not yet")
        return {"ok": ctx.attempt}

    registry = Registry()
    registry.register_handler("flaky", flaky)
    registry.register_handler("after", lambda ctx: {"done": True})
    d = load_definition(
        {
            "workflow": "retries",
            "defaults": {"retry": {"max_attempts": 1000, "initial_interval": 0}},
            "steps": [{"name": "a", "action": "flaky"}, {"name": "b", "action": "after"}],
        }
    )
    store = open_store(f"sqlite:///{tmp_path / 'h.db'}")
    engine = Engine(store, open_queue("inline://"), registry, heartbeat_interval=0)
    wf = engine.run(d, {})
    assert wf.status.value == "COMPLETED" and calls["n"] == 400
    stored = store.get(wf.id)
    assert len(stored.history) <= 100 + 20  # the limit plus the distinct transitions
    total = stored.history_dropped + len(stored.history)
    assert total >= 800  # 400 attempts, two transitions each: most were folded
    kinds = {(h.step, h.trigger, h.source, h.dest) for h in stored.history}
    assert ("a", "dispatch", "QUEUED", "EXECUTING") in kinds
    assert ("b", "succeed", "EXECUTING", "COMPLETED") in kinds
    assert stored.history[-1].dest == "COMPLETED" and stored.history[-1].step is None
    assert max(h.attempt or 0 for h in stored.history if h.step == "a") == 400
    drawing = from_instance(stored)
    taken = [e for e in drawing.edges if e.taken is not None]
    assert {(e.src, e.dst) for e in taken} >= {("a", "b")}
    size = len(stored.to_json())
    assert size < 60_000, size


def test_a_definition_dict_with_non_finite_params_is_refused() -> None:
    from statesaga import load_definition
    from statesaga.errors import DefinitionError

    with pytest.raises(DefinitionError, match="timeout"):
        load_definition(
            {"workflow": "w", "steps": [{"name": "a", "action": "x", "timeout": float("inf")}]}
        )
    d = load_definition({"workflow": "w", "steps": [{"name": "a", "action": "x"}]})
    with pytest.raises(DefinitionError, match="not a finite number"):
        d.check_input({"x": float("nan")})


def test_the_yaml_loader_keeps_nothing_alive() -> None:
    """Each load's node graph goes with it (the old module-level loader cached every node)."""
    import gc
    import weakref

    import yaml
    from statesaga._yaml import load_yaml_text

    seen: list[weakref.ref[Any]] = []
    original = yaml.SafeLoader.construct_object

    def spy(self: Any, node: Any, deep: bool = False) -> Any:
        seen.append(weakref.ref(node))
        return original(self, node, deep)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(yaml.SafeLoader, "construct_object", spy)
        for _ in range(3):
            load_yaml_text(BASE, "x.yaml")
    gc.collect()
    assert seen and all(r() is None for r in seen)


def test_env_limits_ignore_nonsense(monkeypatch: pytest.MonkeyPatch) -> None:
    from statesaga.security import limits

    monkeypatch.setenv("STATESAGA_MAX_INPUT_BYTES", "lots")
    assert limits.max_input_bytes() == 1024 * 1024
    monkeypatch.setenv("STATESAGA_MAX_INPUT_BYTES", "-5")
    assert limits.max_input_bytes() == 1024 * 1024
    monkeypatch.setenv("STATESAGA_MAX_INPUT_BYTES", "2048")
    assert limits.max_input_bytes() == 2048


if os.environ.get("STATESAGA_HOSTILE_LIST"):  # print the table (for the report)
    for c in CASES:
        print(f"{c.id:32} exit {c.code}  {c.expect}")


def test_engine_start_refuses_an_input_missing_a_reference_and_stores_nothing() -> None:
    from statesaga import Engine, load_definition, open_queue, open_store
    from statesaga.errors import InputError
    from statesaga.registry import Registry

    registry = Registry()
    registry.register_module("statesaga.examples.trip_handlers")
    store = open_store("memory://")
    engine = Engine(store, open_queue("inline://"), registry)
    d = load_definition(ROOT / "examples" / "trip.yaml")
    with pytest.raises(InputError) as caught:
        engine.start(d, {"origin": "TPE"})
    fields = {p.field for p in caught.value.problems}
    assert fields == {"destination", "nights", "amount", "email"}
    assert store.list() == []


def test_memory_store_lists_around_an_unreadable_document() -> None:
    from statesaga import load_definition, open_store

    store = open_store("memory://")
    good = load_definition(ROOT / "examples" / "trip.yaml").instantiate({})
    store.create(good)
    bad = load_definition(ROOT / "examples" / "trip.yaml").instantiate({})
    bad.id = "WF-20260101-badbad01"
    store.create(bad)
    store.write_raw(bad.id, '{"id": "WF-20260101-badbad01", "steps": 3}')  # type: ignore[attr-defined]
    assert [wf.id for wf in store.list()] == [good.id]
    assert list(store.unreadable) == ["WF-20260101-badbad01"]  # type: ignore[attr-defined]
    assert "Field required" in store.unreadable["WF-20260101-badbad01"]  # type: ignore[attr-defined]
