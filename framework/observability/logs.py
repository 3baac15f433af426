"""Logs a person can read: the CLI's logging set-up, and the step every record belongs to.

While a worker runs a job, `set_scope` names the workflow, the step and the attempt in a
ContextVar; `StepFilter` copies them (and the trace id, when a span is recording) onto every
log record, whichever logger wrote it: the engine's, RQ's or a handler's own. As a library,
statesaga configures no logging; an application that wants these fields adds `StepFilter` to
its own handlers.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from opentelemetry import trace

from ..security.redact import install_excepthook, redact

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class StepScope:
    """The job a log record was written under."""

    workflow_id: str
    step: str
    attempt: int
    kind: str = "step"


_scope: ContextVar[StepScope | None] = ContextVar("statesaga_step_scope", default=None)


def set_scope(scope: StepScope) -> Token[StepScope | None]:
    """Log records written from here on belong to this step, until `reset_scope`."""
    return _scope.set(scope)


def reset_scope(token: Token[StepScope | None]) -> None:
    _scope.reset(token)


#: The record attributes StepFilter sets (None outside a step, or with tracing off).
FIELDS = ("workflow_id", "step", "attempt", "trace_id", "span_id")


class StepFilter(logging.Filter):
    """Adds workflow_id, step, attempt (and trace_id, span_id while a span records)."""

    def filter(self, record: logging.LogRecord) -> bool:
        scope = _scope.get()
        record.workflow_id = scope.workflow_id if scope else None
        record.step = scope.step if scope else None
        record.attempt = scope.attempt if scope else None
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            record.trace_id = format(ctx.trace_id, "032x")
            record.span_id = format(ctx.span_id, "016x")
        else:
            record.trace_id = record.span_id = None
        return True


# Control characters but a tab and RQ's own colours (SGR sequences, on a terminal).
_CONTROL = re.compile(r"\x1b(?!\[[0-9;]*m)|[\x00-\x08\x0a-\x1a\x1c-\x1f\x7f]")


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message [wf=… step=… attempt=… trace=…]`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        # One record, one line: what a forged job names (its id, its description, which RQ
        # logs) cannot write log lines of its own or send escape sequences to a terminal.
        line = super().formatMessage(record)
        return _CONTROL.sub(lambda m: m[0].encode("unicode_escape").decode("ascii"), line)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        tags = [
            f"{label}={value}"
            for label, value in (
                ("wf", getattr(record, "workflow_id", None)),
                ("step", getattr(record, "step", None)),
                ("attempt", getattr(record, "attempt", None)),
                ("trace", getattr(record, "trace_id", None)),
            )
            if value is not None
        ]
        if not tags:
            return redact(line)
        head, sep, rest = line.partition("\n")  # keep a traceback below the tagged line
        return redact(f"{head} [{' '.join(tags)}]{sep}{rest}")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, default=str)


def configure_logging(level: str = "INFO", fmt: LogFormat = "text") -> logging.Handler:
    """The CLI's logging: one handler on stderr for the root logger, with StepFilter.

    Called again, it replaces its own handler only. Every record (whichever logger wrote
    it: RQ's, redis-py's, a handler's) and an uncaught traceback has its secrets masked.
    """
    install_excepthook()
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_statesaga", False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler._statesaga = True  # type: ignore[attr-defined]
    handler.addFilter(StepFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    set_level(level)
    return handler


def set_level(level: str) -> None:
    """The root logger's level (what a worker's own --log-level changes)."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    # `transitions` logs every state's enter and exit at INFO: the history says it better.
    logging.getLogger("transitions").setLevel(max(logging.WARNING, root.level))


__all__ = [
    "LOG_FORMATS",
    "LOG_LEVELS",
    "JsonFormatter",
    "StepFilter",
    "StepScope",
    "TextFormatter",
    "configure_logging",
    "set_level",
    "reset_scope",
    "set_scope",
]
