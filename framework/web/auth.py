"""Who may change things: the API with `Authorization: Bearer TOKEN`, the pages with a session
cookie from the login form and a CSRF field in every form.

With no token configured the server is read-only. The token is compared in constant time and
never echoed; the session cookie is signed with a key made at start-up (sessions end when the
server restarts), holds the name given at login (recorded as `by` in the history) and the
session's CSRF value, and is HttpOnly and SameSite=Strict.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass

COOKIE = "statesaga_session"
SESSION_SECONDS = 8 * 3600
_NAME = re.compile(r"[\w.@+-]{1,40}")
#: What a name kept in the history (`by`) may be, from the login form or the API.
NAME_RULE = "letters, digits, . @ + - _; up to 40"


def valid_name(name: str) -> bool:
    """A name for the history: one word, so a log line or a page cannot be forged with it."""
    return _NAME.fullmatch(name) is not None


class AuthRefused(Exception):
    """Raised when a change is not allowed; `status` is 401 (no credentials) or 403."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Session:
    user: str
    csrf: str
    expires: int


class Gate:
    """Checks the token and signs/reads session cookies."""

    def __init__(self, token: str | None) -> None:
        self._token = token.encode() if token else None
        self._key = secrets.token_bytes(32)

    def __repr__(self) -> str:  # the token must not show up in a log or a traceback
        return f"Gate(writable={self.writable})"

    @property
    def writable(self) -> bool:
        return self._token is not None

    def token_ok(self, offered: str) -> bool:
        if self._token is None:
            return False
        return hmac.compare_digest(
            hashlib.sha256(offered.encode()).digest(), hashlib.sha256(self._token).digest()
        )

    def check_bearer(self, header: str | None) -> None:
        """The API's check of `Authorization: Bearer TOKEN`."""
        if self._token is None:
            raise AuthRefused(403, "this server is read-only (start it with --token)")
        if not header or not header.lower().startswith("bearer "):
            raise AuthRefused(401, "this needs the header Authorization: Bearer TOKEN")
        if not self.token_ok(header[7:].strip()):
            raise AuthRefused(403, "the token is not valid")

    # -- the pages' session -----------------------------------------------------------------
    def login(self, user: str, token: str) -> str:
        """A signed cookie value for `user`, if `token` is right; else AuthRefused."""
        if self._token is None:
            raise AuthRefused(403, "this server is read-only (start it with --token)")
        if not valid_name(user):
            raise AuthRefused(401, f"give your name ({NAME_RULE})")
        if not self.token_ok(token):
            raise AuthRefused(401, "the token is not valid")
        body = json.dumps(
            {"u": user, "c": secrets.token_urlsafe(24), "e": int(time.time()) + SESSION_SECONDS}
        ).encode()
        return _b64(body) + "." + _b64(self._sign(body))

    def session(self, cookie: str | None) -> Session | None:
        """The session a cookie holds, or None when absent, forged or expired."""
        if not cookie or "." not in cookie or self._token is None:
            return None
        body_text, sig_text = cookie.split(".", 1)
        try:
            body, sig = _unb64(body_text), _unb64(sig_text)
        except ValueError:
            return None
        if not hmac.compare_digest(sig, self._sign(body)):
            return None
        data = json.loads(body)
        if data["e"] < time.time():
            return None
        return Session(data["u"], data["c"], data["e"])

    def check_form(self, cookie: str | None, csrf: str | None) -> Session:
        """A page's change: a live session and the session's CSRF value in the form."""
        if self._token is None:
            raise AuthRefused(403, "this server is read-only (start it with --token)")
        s = self.session(cookie)
        if s is None:
            raise AuthRefused(401, "log in first")
        if not csrf or not hmac.compare_digest(csrf.encode(), s.csrf.encode()):
            raise AuthRefused(403, "the form is stale or forged (CSRF check); reload the page")
        return s

    def _sign(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError("not base64") from exc
