"""The arango:// URL and what it sets: where the server is, who connects, and how.

    arango://user:password@host:8529/dbname?collection_prefix=statesaga_&tls=0&initialize=1
           &connect_retries=0&timeout=5&long_timeout=300&replication_factor=3&write_concern=2

Credentials come from the URL or from STATESAGA_ARANGO_USER / STATESAGA_ARANGO_PASSWORD. The
password is never put in a repr, a log line or an error message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from statesaga.errors import AdapterError

ENV_USER = "STATESAGA_ARANGO_USER"
ENV_PASSWORD = "STATESAGA_ARANGO_PASSWORD"

# ArangoDB's document-key alphabet (max 254 bytes) less `%`, which python-arango would put
# into a URL path unescaped. Workflow ids (WF-20260208-5b193f0d) fit; anything else is
# refused here rather than turned into a confusing URL or server error.
KEY_RE = re.compile(r"^[A-Za-z0-9_\-:.@()+,=;$!*']{1,254}$")
# Traditional database and collection names (the ones every ArangoDB version accepts).
_DB_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")
_COLLECTION_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,255}$")
_BOOL = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
_PARAMS = (
    "collection_prefix",
    "tls",
    "tls_verify",
    "tls_ca",
    "initialize",
    "connect_retries",
    "backoff",
    "timeout",
    "long_timeout",
    "replication_factor",
    "write_concern",
)


def _flag(name: str, text: str) -> bool:
    try:
        return _BOOL[text.strip().lower()]
    except KeyError:
        raise AdapterError(f"arango URL: {name} must be 0 or 1, not {text!r}") from None


def _number(name: str, text: str, kind: type[int] | type[float]) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise AdapterError(f"arango URL: {name} must be a number, not {text!r}") from None
    if value < 0:
        raise AdapterError(f"arango URL: {name} must not be negative")
    return value


@dataclass(frozen=True)
class ArangoSettings:
    """Where and how to connect; the password is left out of repr()."""

    host: str = "127.0.0.1"
    port: int = 8529
    database: str = "statesaga"
    username: str = "root"
    password: str = field(default="", repr=False)
    collection_prefix: str = "statesaga_"
    tls: bool = False
    tls_verify: bool = True
    tls_ca: str | None = None
    initialize: bool = True
    # Fail fast by default: python-arango's own defaults (3 resolver tries x 3 urllib3 retries
    # with exponential backoff) take ~18 s to report a server that is down.
    connect_retries: int = 0
    backoff: float = 0.5
    # `timeout` bounds connecting and every one-document request (get, create, save,
    # heartbeat); `long_timeout` bounds what grows with the collection: index builds,
    # listings, creating or dropping the collection or database.
    timeout: float = 5.0
    long_timeout: float = 300.0
    # On a cluster: copies of each shard, and how many must have a write before it is
    # acknowledged. None leaves the server's defaults (a single server ignores both).
    replication_factor: int | None = None
    write_concern: int | None = None

    @classmethod
    def from_url(cls, url: str, env: Mapping[str, str] | None = None) -> ArangoSettings:
        """Parse `arango://user:password@host:port/db?...`; credentials fall back to the env.

        Error messages are built from the parts, never from `url`, so they cannot echo the
        password.
        """
        env = os.environ if env is None else env
        parts = urlsplit(url)
        if parts.scheme != "arango":
            raise AdapterError(f"not an arango:// URL (scheme {parts.scheme!r})")
        try:
            port = parts.port
        except ValueError:
            raise AdapterError("arango URL: the port must be a number from 0 to 65535") from None
        username = unquote(parts.username) if parts.username else env.get(ENV_USER, "root")
        if parts.password is not None:
            password = unquote(parts.password)
        else:
            password = env.get(ENV_PASSWORD, "")
        database = unquote(parts.path.lstrip("/")) or "statesaga"
        if "/" in database or not _DB_RE.match(database):
            raise AdapterError(
                f"arango URL: {database!r} is not a valid database name "
                "(a letter, then letters, digits, _ or -; at most 64)"
            )
        values: dict[str, Any] = {}
        for key, text in parse_qsl(parts.query, keep_blank_values=True):
            if key not in _PARAMS:
                raise AdapterError(
                    f"arango URL: unknown parameter {key!r} (known: {', '.join(_PARAMS)})"
                )
            if key in ("tls", "initialize", "tls_verify"):
                values[key] = _flag(key, text)
            elif key in ("connect_retries", "replication_factor", "write_concern"):
                values[key] = _number(key, text, int)
            elif key in ("backoff", "timeout", "long_timeout"):
                values[key] = _number(key, text, float)
            elif key == "tls_ca":
                values[key] = text or None
            else:
                values[key] = text
        ca = values.get("tls_ca")
        if ca and not os.path.exists(ca):
            raise AdapterError(f"arango URL: tls_ca {ca!r} does not exist")
        if not values.get("tls", False) and ("tls_verify" in values or "tls_ca" in values):
            raise AdapterError(
                "arango URL: tls_verify and tls_ca apply to https only; add tls=1 (or drop them)"
            )
        settings = cls(
            host=parts.hostname or "127.0.0.1",
            port=port if port is not None else 8529,
            database=database,
            username=username,
            password=password,
            **values,
        )
        settings.check()
        return settings

    def check(self) -> None:
        if not _COLLECTION_RE.match(self.collection):
            raise AdapterError(
                f"arango: collection_prefix {self.collection_prefix!r} gives an invalid "
                f"collection name {self.collection!r} (a letter, then letters, digits, _ or -)"
            )
        for name in ("timeout", "long_timeout"):
            if getattr(self, name) <= 0:
                raise AdapterError(f"arango URL: {name} must be more than 0 seconds")
        if self.tls_ca and not self.tls_verify:
            # requests would verify against the CA and ignore tls_verify=0: say so instead.
            raise AdapterError(
                "arango URL: tls_ca and tls_verify=0 contradict each other (a CA is for "
                "verifying); keep one"
            )
        for name in ("replication_factor", "write_concern"):
            if getattr(self, name) == 0:
                raise AdapterError(f"arango URL: {name} must be at least 1")
        rf, wc = self.replication_factor, self.write_concern
        if rf is not None and wc is not None and wc > rf:
            raise AdapterError(
                f"arango URL: write_concern ({wc}) cannot be more than replication_factor ({rf})"
            )

    @property
    def collection(self) -> str:
        return f"{self.collection_prefix}workflows"

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}"

    @property
    def where(self) -> str:
        """How error messages name the server: host:port and database, no credentials."""
        return f"ArangoDB at {self.address} (database {self.database!r})"

    def verify(self, env: Mapping[str, str] | None = None) -> bool | str:
        """What requests checks the server's certificate with. tls_ca and tls_verify=0 are
        final; only when neither is given does the environment's bundle (REQUESTS_CA_BUNDLE,
        then CURL_CA_BUNDLE, requests' own convention) stand in for the default store."""
        if self.tls_ca:
            return self.tls_ca
        if not self.tls_verify:
            return False
        env = os.environ if env is None else env
        return env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE") or True

    def redacted_url(self) -> str:
        user = quote(self.username, safe="")
        secret = ":***" if self.password else ""
        query = f"collection_prefix={quote(self.collection_prefix, safe='')}"
        if self.tls:
            query += "&tls=1"
        return f"arango://{user}{secret}@{self.address}/{self.database}?{query}"


__all__ = ["ENV_PASSWORD", "ENV_USER", "KEY_RE", "ArangoSettings"]
