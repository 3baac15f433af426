"""Calling a step's handler: found by name, given its context, run sync or async with the
step's timeout, its outcome returned as data (never raised) for the job to settle."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import copy
import json
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pydantic_core

from ..context import StepContext
from ..definitions.params import resolve_params
from ..errors import RegistryError
from ..models import SagaStep, StepError, StepStatus, WorkflowState
from ..ports import Job
from ..registry import Handler
from ..security.limits import NOT_UNICODE, json_problems, marked_json_loads

if TYPE_CHECKING:
    from .runtime import Runtime

#: What a call came to: ("ok", result), or ("error" | "timeout", StepError).
Outcome = tuple[str, Any]
#: The progress command a handler's `ctx.progress` reaches: (workflow id, step, attempt,
#: trigger, detail).
Progress = Callable[[str, str, int, str, "str | None"], object]


class HandlerTimeout(Exception):
    """Raised (internally) when a handler overruns its step's timeout."""


def invoke(
    func: Callable[..., Any], is_async: bool, ctx: StepContext, timeout: float | None
) -> Any:
    """Call a sync or async handler with an optional timeout.

    A sync handler that overruns cannot be killed from Python; its thread is abandoned and its
    late result discarded (the RQ worker enforces hard timeouts by killing the work horse).
    """
    # In this caller's context: the step's span and log scope (statesaga.observability).
    context = contextvars.copy_context()
    if is_async:
        coro = func(ctx)
        if timeout is not None:
            coro = asyncio.wait_for(coro, timeout)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            try:
                return asyncio.run(coro)
            except TimeoutError:
                raise HandlerTimeout() from None
        # Called from inside an event loop (e.g. the async managers): run on a fresh loop.
        try:
            return _in_thread(lambda: context.run(asyncio.run, coro)).result()
        except TimeoutError:
            raise HandlerTimeout() from None
    if timeout is None:
        return func(ctx)
    future = _in_thread(lambda: context.run(func, ctx))
    try:
        return future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        raise HandlerTimeout() from None


def _in_thread(fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
    """Run `fn` in a daemon thread. Not an executor's: Python joins those at exit, so a
    worker stopped at once (a second SIGTERM) or a `run` interrupted with Ctrl+C would wait
    for the handler to end; a daemon thread is abandoned, its attempt left to recovery."""
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn())
        except BaseException as exc:  # the caller's to see, as an executor would hand it
            future.set_exception(exc)

    threading.Thread(target=run, daemon=True, name="statesaga-step").start()
    return future


def resolve(rt: Runtime, wf: WorkflowState, name: str) -> Handler:
    """A step's handler; one not yet registered may come from the workflow's `handlers`
    hint, only when the allow-list allows that module."""
    if not rt.registry.has_handler(name) and wf.handlers:
        refused = rt.allow_list().load(rt.registry, wf.handlers)
        if refused and not rt.registry.has_handler(name):
            raise RegistryError(f"no handler registered as {name!r}: {refused[0][1]}")
    return rt.registry.get_handler(name)


def call(
    rt: Runtime,
    wf: WorkflowState,
    step: SagaStep,
    job: Job,
    progress: Progress,
    *,
    compensating: bool,
) -> Outcome:
    """Run the step's handler (or its compensation's) for a claimed job; its heartbeat beats
    while it runs, and its `ctx.progress` calls `progress`."""
    comp = step.compensation
    action = comp.action_type if compensating and comp is not None else step.action_type
    # Copies: the settle saves the document these come from, so what a handler does to
    # its arguments must not reach the store.
    given_input, given_results, given_result = _copied((wf.input, wf.results, step.result))
    scope = {"input": given_input, "steps": given_results, "result": given_result}
    try:
        handler = resolve(rt, wf, action)
        raw = comp.params if compensating and comp is not None else step.params
        # An action whose outcome is unknown (its worker was lost) is undone without a
        # result: its `${result...}` references resolve to None and the compensation finds
        # the effect by its idempotency key instead.
        lenient = {"result"} if compensating and step.result is None else set()
        params = resolve_params(raw, scope, missing_ok=lenient)
    except (RegistryError, KeyError) as exc:
        return "error", StepError(type=type(exc).__name__, message=str(exc), attempt=job.attempt)
    operation = f"{wf.id}:{step.name}{':undo' if compensating else ''}"
    ctx = StepContext(
        workflow_id=wf.id,
        step=step.name,
        attempt=job.attempt,
        params=params,
        input=given_input,
        results=given_results,
        idempotency_key=operation,
        attempt_key=f"{operation}:{job.attempt}",
        session_id=wf.session_id,
        compensating=compensating,
        result=given_result,
        resumed_from=_last_substate(wf, step, job.attempt)
        if rt.step_chart.hierarchical and not compensating
        else None,
        _beat=lambda: rt.store.heartbeat(wf.id, rt.clock.now()),
        _progress=None
        if compensating
        else lambda trigger, detail=None: progress(
            wf.id, step.name, job.attempt, trigger, _detail(detail)
        ),
    )
    timeout = None if compensating else step.timeout
    if rt.heartbeat_interval > 0:
        rt.heartbeats.add(wf.id)
    try:
        return stored(invoke(handler.func, handler.is_async, ctx, timeout), job.attempt)
    except HandlerTimeout:
        return "timeout", StepError(
            type="TimeoutError",
            message=f"{step.name} timed out after {timeout}s",
            attempt=job.attempt,
        )
    except Exception as exc:
        return "error", failure(exc, job.attempt)
    finally:
        rt.heartbeats.discard(wf.id)


#: Characters of a handler's error message kept (in the step's error and its history entry):
#: a message is read by people; a megabyte of it would be saved with every attempt.
MESSAGE_KEPT = 4000


def failure(exc: Exception, attempt: int) -> StepError:
    """The StepError a handler's exception is, in text the store can keep: an exception's
    message can be anything its author made it (a `__str__` that raises, a file name with
    bytes that are not UTF-8, which Python carries as lone surrogates, megabytes), and a save
    that cannot encode it would fail and leave the step claimed with nothing settled."""
    try:
        message = str(exc)
    except Exception:
        message = f"({type(exc).__name__} whose message could not be read)"
    return StepError(
        type=_storable(type(exc).__name__, 200),
        message=_storable(message, MESSAGE_KEPT),
        traceback=_storable("".join(traceback.format_exception(exc)[-3:])[-2000:], 2000),
        attempt=attempt,
    )


def _detail(detail: Any) -> Any:
    """A progress detail as the history keeps it: the same rule as an error's message."""
    return _storable(detail, MESSAGE_KEPT) if isinstance(detail, str) else detail


def _storable(text: str, limit: int) -> str:
    """`text` with lone surrogates written as escapes (\\udc80), cut to `limit` characters."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def stored(value: Any, attempt: int) -> Outcome:
    """A handler's result as the store will keep it, or the error it is when the store
    cannot keep it. The settle keeps working on the document it saves (the next step run here
    reads its results from it), so it must hold what a read of the store would give: a tuple
    is a list, a datetime its ISO text, as the document's JSON has them. A value JSON cannot
    carry fails the call like an exception would (the step's retry policy applies), instead of
    failing the save and leaving the step claimed with nothing settled."""
    if (
        value is None
        or isinstance(value, bool)
        or (isinstance(value, int) and value.bit_length() <= 64)
        or (isinstance(value, str) and value.isascii())
    ):
        return "ok", value
    try:
        # NaN and the infinities written as JSON has none of them, so that reading the text
        # back finds them (the document itself would silently say null).
        text = pydantic_core.to_json(value, inf_nan_mode="constants")
    except ValueError as exc:  # PydanticSerializationError, or a circular reference
        problem = _unserializable(value, "result") or f"result: {exc}"
        error = "TypeError"
    else:
        try:
            return "ok", json.loads(text, parse_constant=_refuse_constant)
        except (_NotFinite, ValueError):
            # NaN, an infinity or an integer too long to read back. Only now walk it, for
            # where: json_problems names the path of what the marked read left in place.
            problem = next(json_problems(marked_json_loads(text, as_written=False), "result"))
            error = "ValueError"
    return "error", StepError(
        type=error,
        message=f"the handler returned a result the store cannot keep as JSON: {problem}",
        attempt=attempt,
    )


class _NotFinite(Exception):
    """NaN or an infinity met while reading a result back."""


def _refuse_constant(name: str) -> Any:
    raise _NotFinite(name)


def _unserializable(value: Any, path: str) -> str | None:
    """Where `value` holds something the document's JSON cannot carry, and what it is."""
    for where, v in _leaves(value, path):
        if v is _CIRCULAR:
            return f"{where}: refers back to itself"
        if isinstance(v, str):
            if _storable(v, len(v)) != v:
                return f"{where}: {NOT_UNICODE}"
            continue
        try:
            pydantic_core.to_json(v)
        except ValueError:
            return f"{where}: {type(v).__name__} is not a JSON value"
    return None


_CIRCULAR = object()


def _leaves(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    """The values inside containers (dicts, lists, tuples, sets) with their paths; a container
    met again inside itself is yielded as `_CIRCULAR` and not entered."""
    stack: list[tuple[str, Any, frozenset[int]]] = [(path, value, frozenset())]
    while stack:
        where, v, inside = stack.pop()
        if isinstance(v, dict | list | tuple | set | frozenset):
            if id(v) in inside:
                yield where, _CIRCULAR
                continue
            within = inside | {id(v)}
            items = v.items() if isinstance(v, dict) else enumerate(v)
            fmt = "{}.{}" if isinstance(v, dict) else "{}[{}]"
            stack.extend((fmt.format(where, k), item, within) for k, item in items)
        else:
            yield where, v


def _last_substate(wf: WorkflowState, step: SagaStep, attempt: int) -> str | None:
    """Where an earlier attempt of this step got to inside EXECUTING, if anywhere."""
    prefix = f"{StepStatus.EXECUTING.value}."
    for entry in reversed(wf.history):
        if entry.step == step.name and (entry.attempt or 0) < attempt:
            if entry.dest.startswith(prefix):
                return entry.dest[len(prefix) :]
    return None


def _copied(value: Any) -> Any:
    """A deep copy of JSON-shaped data (dicts, lists, tuples, scalars), faster than
    copy.deepcopy for the small documents handlers get; anything else is deep-copied."""
    if isinstance(value, dict):
        return {k: _copied(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [_copied(v) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return copy.deepcopy(value)
