"""What the core is told of redis-py's and RQ's errors: they are backend errors (shown as one
line naming the library), a lost connection is an outage and a timeout a pause of the server
(statesaga.errors.BackendError and its subclasses; statesaga.runtime.outage reads them). The
core never names these libraries: importing a Redis adapter declares them."""

from __future__ import annotations

import inspect

import redis
import rq.exceptions
from statesaga.errors import BackendError, BackendPaused, BackendUnreachable

BackendError.declare(redis.exceptions.RedisError, "redis", show_type=True)
# AuthenticationError and BusyLoadingError are ConnectionErrors too: the server is not
# usable yet, which a long-running process waits out like any outage.
BackendUnreachable.declare(redis.exceptions.ConnectionError, "redis", show_type=True)
BackendPaused.declare(redis.exceptions.TimeoutError, "redis", show_type=True)
for _name, _kind in inspect.getmembers(rq.exceptions, inspect.isclass):
    if issubclass(_kind, Exception) and _kind.__module__ == rq.exceptions.__name__:
        BackendError.declare(_kind, "rq", show_type=True)
