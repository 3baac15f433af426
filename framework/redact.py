"""Secrets out of everything statesaga prints, logs, raises or reprs.

One helper, used wherever a URL (or text that may hold one) leaves the process: CLI errors,
log lines, exception messages, `repr()` of stores and queues. It masks the password of every
`scheme://user:password@host` in a text and the value of secret-looking query options
(`password=`, `token=`, ...), and leaves the rest readable, so an operator still sees which
host, port and database a message is about.
"""

from __future__ import annotations

import re

MASK = "***"

# user:password@ in the authority part of any URL-like text; the user may be empty
# (`redis://:PW@host`). The password runs up to the last `@` before the host, so a password
# with an unescaped `@` or `/` is masked whole rather than half shown.
_USERINFO = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s'\"]*):(?P<password>[^\s'\"]*)@"
    r"(?=[^@\s'\"]*(?:[\s'\"]|$))"
)
# The same without a scheme (`:PW@host:6379`, a URL missing its `redis://`), as a word of
# its own (a `/` in it means a URL the pattern above has handled).
_BARE = re.compile(
    r"(?P<pre>^|[\s'\"(=,])(?P<user>[^\s:/@'\"]*):(?P<password>[^\s'\"@/]+)@(?=[\w\[])"
)
# ?password=...&token=... (redis-py and others accept credentials as query options)
_QUERY = re.compile(
    r"(?P<key>[?&;](?:password|passwd|pwd|token|secret|api_key|apikey|access_token)=)"
    r"(?P<value>[^&;#\s'\"]*)",
    re.IGNORECASE,
)


def redact(text: object) -> str:
    """`text` (any object, as `str()` shows it) with every password and token masked."""
    out = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", str(text))
    out = _BARE.sub(lambda m: f"{m['pre']}{m['user']}:{MASK}@", out)
    return _QUERY.sub(lambda m: f"{m['key']}{MASK}" if m["value"] else m[0], out)


__all__ = ["MASK", "redact"]
