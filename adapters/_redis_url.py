"""Checks shared by the Redis-based adapters' URLs (`redis://` store, `rq://` queue), so a
mistake is refused when the URL is read, in one line, instead of surfacing as a TypeError
from inside redis-py at the first command, or being silently ignored (`/notadb` read as 0)."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from statesaga.errors import AdapterError

#: Query options redis-py passes on to its connection class (anything else is a TypeError
#: there, at the first command).
_REDIS_OPTIONS = frozenset(
    {
        "client_name",
        "db",
        "health_check_interval",
        "max_connections",
        "password",
        "protocol",
        "retry_on_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "socket_timeout",
        "ssl_ca_certs",
        "ssl_ca_data",
        "ssl_ca_path",
        "ssl_cert_reqs",
        "ssl_certfile",
        "ssl_check_hostname",
        "ssl_keyfile",
        "ssl_min_version",
        "ssl_password",
        "timeout",
        "username",
    }
)


#: The socket options of every Redis client statesaga builds, unless its URL gives its own:
#: the same on every redis-py version. redis-py 8 changed its defaults (a 5 s read timeout
#: and TCP keepalive, where 5 to 7 waited forever), and RQ's idle worker, whose blocking wait
#: for a job outlasted 5 s, logged an error and backed off for up to a minute.
#: statesaga.adapters.queues.rq.jobguard keeps that wait under the read timeout, whatever it is.
CLIENT_DEFAULTS: dict[str, Any] = {
    "socket_connect_timeout": 5.0,
    "socket_timeout": 10.0,
    "socket_keepalive": True,
}


def read_timeout(client: Any) -> float | None:
    """The read timeout (`socket_timeout`) of `client`'s connections: the one given to its
    pool, else its connection class's default (None, waiting forever, before redis-py 8)."""
    pool = client.connection_pool
    if "socket_timeout" in pool.connection_kwargs:
        given = pool.connection_kwargs["socket_timeout"]
        return None if given is None else float(given)
    for cls in pool.connection_class.__mro__:
        init = cls.__dict__.get("__init__")
        param = inspect.signature(init).parameters.get("socket_timeout") if init else None
        if param is not None and param.default is not inspect.Parameter.empty:
            return None if param.default is None else float(param.default)
    return None


#: Sentinel URLs (`redis+sentinel://`, and `rq+sentinel://` for the queue): the convention
#: other Python tools share, since redis-py has Sentinel clients but no URL for them.
SENTINEL_SCHEMES = frozenset({"redis+sentinel", "rq+sentinel"})
SENTINEL_PORT = 26379
#: Options of a Sentinel URL for the Sentinels themselves (the others are the primary's).
_SENTINEL_OPTIONS = frozenset({"sentinel_password", "sentinel_username"})


def is_sentinel(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SENTINEL_SCHEMES


def sentinel_parts(url: str, kind: str) -> tuple[list[tuple[str, int]], str, str]:
    """Split `SCHEME://[[user]:password@]host[:port][,host[:port]...]/SERVICE[/DB][?opts]`
    into the Sentinels' addresses, the service (the primary's name) and a `redis://` URL of
    the primary's own options (credentials, db, query), for redis-py to parse."""
    scheme, _, rest = url.partition("://")
    netloc, _, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    auth, _, hosts = netloc.rpartition("@")
    sentinels: list[tuple[str, int]] = []
    for member in filter(None, hosts.split(",")):
        host, _, port = member.partition(":")
        if not host or (port and not port.isdigit()):
            raise AdapterError(f"bad {kind} URL: a Sentinel must be HOST[:PORT], not {member!r}")
        sentinels.append((host, int(port or SENTINEL_PORT)))
    service, _, db = unquote(path).partition("/")
    if not sentinels or not service:
        raise AdapterError(
            f"bad {kind} URL: expected {scheme}://HOST:PORT[,HOST:PORT...]/SERVICE[/DB]"
        )
    if db.strip("/") and not db.strip("/").isdigit():
        raise AdapterError(f"bad {kind} URL: the database after the service must be a number")
    primary = f"redis://{auth + '@' if auth else ''}localhost/{db.strip('/') or 0}"
    return sentinels, service, primary + (f"?{query}" if query else "")


def sentinel_client(url: str, kind: str, **options: Any) -> Any:
    """A redis-py client on the primary that the Sentinels of `url` name; after a failover
    its next connection goes to the new primary (redis-py asks the Sentinels again)."""
    from redis.connection import parse_url
    from redis.sentinel import Sentinel

    sentinels, service, primary = sentinel_parts(url, kind)
    query = parse_qs(urlsplit(primary).query)
    to_sentinels = {
        k[len("sentinel_") :]: query.pop(k)[-1] for k in _SENTINEL_OPTIONS if k in query
    }
    primary = urlsplit(primary)._replace(query=urlencode(query, doseq=True)).geturl()
    kwargs = {**options, **parse_url(primary)}  # type: ignore[no-untyped-call]
    kwargs.pop("host", None)
    kwargs.pop("port", None)
    timeouts = {k: v for k, v in kwargs.items() if k.startswith("socket_")}
    sentinel = Sentinel(sentinels, sentinel_kwargs={**timeouts, **to_sentinels})
    return sentinel.master_for(service, **kwargs)


def check_redis_url(url: str, kind: str, own: Iterable[str] = ()) -> None:
    """Raise AdapterError naming what is wrong with a redis-style URL: its port, its db
    (a number after the host), or an option neither redis-py nor the adapter (`own`) knows.
    The message never repeats the URL (it may carry a password)."""
    if is_sentinel(url):
        _, _, primary = sentinel_parts(url, kind)
        return check_redis_url(primary, kind, (*own, *_SENTINEL_OPTIONS))
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (urlsplit checks the port only when it is read)
    except ValueError as exc:
        raise AdapterError(f"bad {kind} URL: {exc}") from None
    if parts.scheme != "unix":
        db = unquote(parts.path).strip("/")
        if db and not db.isdigit():
            raise AdapterError(
                f"bad {kind} URL: the database after the host must be a number "
                f"(e.g. /0), not {db!r}"
            )
        if not parts.hostname:
            raise AdapterError(f"bad {kind} URL: no host (expected {parts.scheme}://HOST:PORT/DB)")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - _REDIS_OPTIONS - set(own))
    if unknown:
        known = ", ".join(sorted(_REDIS_OPTIONS | set(own)))
        raise AdapterError(f"unknown {kind} URL option(s) {unknown} (known: {known})")
    db_option = query.get("db", [""])[-1]
    if "db" in query and not db_option.isdigit():
        raise AdapterError(f"bad {kind} URL: db must be a number, not {db_option!r}")
