"""Calling a handler: sync or async, with the step's timeout."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
from collections.abc import Callable
from typing import Any

from ..context import StepContext


class HandlerTimeout(Exception):
    """Raised (internally) when a handler overruns its step's timeout."""


def invoke(
    func: Callable[..., Any], is_async: bool, ctx: StepContext, timeout: float | None
) -> Any:
    """Call a sync or async handler with an optional timeout.

    A sync handler that overruns cannot be killed from Python; its thread is abandoned and its
    late result discarded (the RQ worker enforces hard timeouts by killing the work horse).
    """
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
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            try:
                return pool.submit(contextvars.copy_context().run, asyncio.run, coro).result()
            except TimeoutError:
                raise HandlerTimeout() from None
    if timeout is None:
        return func(ctx)
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="statesaga-step")
    # In this caller's context: the step's span and log scope (statesaga.observability).
    future = pool.submit(contextvars.copy_context().run, func, ctx)
    try:
        return future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        raise HandlerTimeout() from None
    finally:
        pool.shutdown(wait=False)
