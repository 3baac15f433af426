"""Secrets out of everything statesaga prints, logs, raises or reprs.

One helper, used wherever a URL (or text that may hold one) leaves the process: CLI errors,
every log record the CLI writes, a traceback it prints, exception messages, stored step errors,
`repr()` of stores and queues. It masks the password of every `scheme://user:password@host`
in a text and the value of secret-looking options (`password=`, `?pass%77ord=`, `DB_TOKEN=`,
`'api_key': '...'`, `Bearer ...`), and leaves the rest readable, so an operator still sees
which host, port and database a message is about.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import threading
import traceback
from types import TracebackType
from urllib.parse import unquote

MASK = "***"

# user:password@ in the authority part of any URL-like text; the user may be empty
# (`redis://:PW@host`). The password runs up to the last `@` before the host, so a password
# with an unescaped `@`, `/` or quote is masked whole rather than half shown. Every pattern
# here reads a bounded stretch from each place it starts (a password stops at the next
# `scheme://`, a bare user at the next `=` and its password at the next `:`), so a long text
# of near-matches costs linear time: every log record, a forged job's description among
# them, passes through here.
_USERINFO = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s'\"]*):"
    r"(?P<password>(?:(?!://)[^\s'\"]|['\"](?=[^\s'\"@]))*)@"
    r"(?=[^@\s'\"]*(?:[\s'\"]|$))"
)
# The same without a scheme (`:PW@host:6379`, a URL missing its `redis://`), as a word of
# its own (a `/` in it means a URL the pattern above has handled).
_BARE = re.compile(
    r"(?P<pre>^|[\s'\"(=,])(?P<user>[^\s:/@'\"(=,]*):(?P<password>[^\s'\"@/:]+)@(?=[\w\[])"
)
# A secret-looking option, in each syntax a message quotes credentials in: URL queries
# (`?password=PW&db=1`, whose keys redis-py percent-decodes: `?pass%77ord=PW`), keyword DSNs
# and environment lines (`host=db password=PW`), and dict reprs or JSON (`'token': 'PW'`).
_KEY = r"[A-Za-z0-9_.%\-]+"
# a value runs to a delimiter or the next `=` (so that reading ahead from every key stays
# linear); a quote inside it (`pa'ss`) is part of it, one ending it is not
_VALUE = r"[^&;#=\s'\",)\]}]"
# The value is read ahead, not consumed: an option that is not a secret (`STORE=redis://h/0?
# password=PW`, `'url': "{'token': 'PW'}"`) must leave the secret inside its value to be found.
_ASSIGNED = re.compile(
    rf"(?P<pre>^|[\s?&;,(\[{{'\"]|\\n)(?P<key>{_KEY})="
    rf"(?=(?P<value>(?:{_VALUE}|['\"](?={_VALUE}))*))"
)
_QUOTED = re.compile(
    rf"(?P<q>\\?['\"])(?P<key>{_KEY})(?P=q)\s*[:=]\s*(?P<vq>\\?['\"])(?=(?P<value>.*?)(?P=vq))"
)
_BEARER = re.compile(r"(?P<key>\bBearer\s+)(?P<value>[A-Za-z0-9._~+/=\-]{8,})", re.IGNORECASE)
# an option's name, lower-cased, `-` and `.` read as `_`: `password`, `DB_PASSWORD`,
# `api-key`, `dbPassword`, `accessToken`, `pass%77ord` (decoded first)
_SECRET_NAME = re.compile(
    r"(?:^|_)(?:pass|passphrase|pwd|auth|authorization|credentials?|api_?key|private_?key"
    r"|access_?key)$|(?:password|passwd|secret|token|apikey)$"
)


def _secret_key(key: str) -> bool:
    """Whether an option named `key` holds a secret."""
    return bool(_SECRET_NAME.search(re.sub(r"[.\-]", "_", unquote(key).lower())))


def _mask_values(pattern: re.Pattern[str], text: str) -> str:
    """`text` with the value of every secret option `pattern` finds masked."""
    out, done = [], 0
    for m in pattern.finditer(text):
        start, end = m.span("value")
        if m.start() < done or start == end or not _secret_key(m["key"]) or m["value"] == MASK:
            continue
        out += [text[done:start], MASK]
        done = end
    return "".join(out) + text[done:]


def redact(text: object) -> str:
    """`text` (any object, as `str()` shows it) with every password and token masked."""
    out = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", str(text))
    out = _BARE.sub(lambda m: f"{m['pre']}{m['user']}:{MASK}@", out)
    out = _mask_values(_ASSIGNED, out)
    out = _mask_values(_QUOTED, out)
    return _BEARER.sub(lambda m: f"{m['key']}{MASK}", out)


def mask_secrets(value: object) -> object:
    """JSON-like data as a page may show it: the value of every secret-looking key masked
    (`{"card_token": "tok_1"}`), and every string redacted as text."""
    if isinstance(value, dict):
        return {
            k: MASK if isinstance(k, str) and _secret_key(k) else mask_secrets(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask_secrets(v) for v in value]
    return redact(value) if isinstance(value, str) else value


class RedactedRepr:
    """For a dataclass that holds URLs (settings): its repr() masks their passwords. Declare
    it `@dataclass(repr=False)` so that the dataclass keeps this repr."""

    def __repr__(self) -> str:
        fields = dataclasses.fields(self)  # type: ignore[arg-type]
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields if f.repr)
        return redact(f"{type(self).__name__}({shown})")


def install_excepthook() -> None:
    """Print an uncaught exception's traceback (a handler's BaseException, say, which no
    engine catches) with its secrets masked, in this process and its threads."""

    def hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        sys.stderr.write(redact("".join(traceback.format_exception(kind, exc, tb))))

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is not SystemExit and args.exc_value is not None:
            name = args.thread.name if args.thread is not None else "?"
            sys.stderr.write(f"Exception in thread {name}:\n")
            hook(args.exc_type, args.exc_value, args.exc_traceback)

    sys.excepthook = hook
    threading.excepthook = thread_hook


__all__ = ["MASK", "RedactedRepr", "install_excepthook", "mask_secrets", "redact"]
