"""Page sessions: a signed cookie naming a session kept in the ticket store.

The cookie is ``HttpOnly`` (scripts never see it), ``Secure`` (HTTPS only, unless turned off for
a local http install) and ``SameSite=Lax`` (not sent on another site's sub-requests and form
posts). It carries a random id and an HMAC of it: a forged or altered cookie is refused before
the database is asked. Each session has its own CSRF token, which the page sends in the
``X-CSRF-Token`` header (fetch) or a form field, and which a cookie-authenticated write must carry.

A local account's session lasts only while the account is configured as it was at login: its
CSRF token is a nonce and an HMAC of the nonce and the account (name, role, sites, departments,
password hash), checked at every request, so removing the account, changing its role or scope,
or setting a new password ends its sessions at their next request (the token needs no column of
its own). A single sign-on session keeps the role and scope the provider gave at login until it
times out.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from datetime import datetime

from fastapi import Response
from starlette.requests import cookie_parser

from fleetpulse.alerts.settings import ApiUser, SessionSettings
from fleetpulse.alerts.store.sessions import StoredPendingLogin, StoredSession, WebSessions
from fleetpulse.logs import RefusalWarnings

SESSION_COOKIE = "fleetpulse_session"
LOGIN_COOKIE = "fleetpulse_login"
"""The pending login (OIDC) or the login form's CSRF token (local): binds a login to the browser that began it."""
CSRF_HEADER = "x-csrf-token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOGIN_PATH = "/auth"
"""Where the login cookie is sent: the login and callback routes only."""
FULL_LOGGED_EVERY_S = 60.0
"""A flood of logins refused for ``max_pending_logins`` logs one warning per this interval, not one per request."""
LOCAL_METHOD = "local"
"""The login method of sessions opened by the local login form (single sign-on: ``oidc``)."""

log = logging.getLogger(__name__)


class SessionCookies:
    """Signs, reads, sets and clears the session and login cookies."""

    def __init__(self, settings: SessionSettings) -> None:
        self.settings = settings
        if settings.secret_key is None:
            log.warning(
                "alerts.api.session.secret_key is not set: a random key signs the session cookies and keys the login "
                "throttle, so sessions and failed-login counts end at a restart and are not shared across replicas"
            )
            self._key = secrets.token_bytes(32)
        else:
            self._key = settings.secret_key.get_secret_value().encode()

    def sign(self, value: str) -> str:
        return f"{value}.{self.mac(value)}"

    def unsign(self, signed: str | None) -> str | None:
        """The value of a cookie this service signed, or None (absent, forged, altered)."""
        if not signed or len(signed) > 512:
            return None
        value, _, mac = signed.rpartition(".")
        return value if value and hmac.compare_digest(mac, self.mac(value)) else None

    def mac(self, value: str) -> str:
        """HMAC-SHA256 of ``value`` under the session key (base64url): the same on every replica sharing the key."""
        digest = hmac.new(self._key, value.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    @staticmethod
    def read(cookie_header: str | None, name: str) -> str | None:
        return cookie_parser(cookie_header).get(name) if cookie_header else None

    def set(self, response: Response, name: str, value: str, max_age_s: int, path: str = "/") -> None:
        response.set_cookie(
            name,
            self.sign(value),
            max_age=max_age_s,
            path=path,
            secure=self.settings.cookie_secure,
            httponly=True,
            samesite="lax",
        )

    def clear(self, response: Response, name: str, path: str = "/") -> None:
        response.delete_cookie(name, path=path, secure=self.settings.cookie_secure, httponly=True, samesite="lax")


class PageSessions:
    """Opens, finds (timeouts and the local account check applied) and ends page sessions."""

    def __init__(
        self,
        store: WebSessions,
        cookies: SessionCookies,
        clock: Callable[[], datetime],
        accounts: Sequence[ApiUser] = (),
        prune_every_s: float = 60.0,
    ) -> None:
        self.store = store
        self.cookies = cookies
        self.settings = cookies.settings
        self.clock = clock
        self._accounts = {user.name: user for user in accounts}
        self._prune_every_s = prune_every_s
        self._last_prune = float("-inf")
        self._full_refusals = RefusalWarnings(
            log, "logins refused: too many single sign-on logins in progress", FULL_LOGGED_EVERY_S
        )

    def open(self, response: Response, record: StoredSession) -> None:
        """A new session (a new id at every login: no session fixation), its cookie set on ``response``.
        A local account's CSRF token becomes the given one's start bound to the account as configured now."""
        user = self._accounts.get(record.name) if record.method == LOCAL_METHOD else None
        if user is not None:
            record = dataclasses.replace(record, csrf_token=self._account_token(record.csrf_token[:24], user))
        session_id = secrets.token_urlsafe(32)
        self.store.create(session_id, record, self.clock(), self.settings.absolute_timeout)
        self.cookies.set(response, SESSION_COOKIE, session_id, int(self.settings.absolute_timeout.total_seconds()))

    def start_login(
        self, response: Response, pending: StoredPendingLogin, source: str, per_source: int, total: int
    ) -> bool:
        """Keep a pending login for ``source`` (the caller's throttle scope) and set its cookie on ``response``;
        False when ``total`` logins are pending already, with one warning per :data:`FULL_LOGGED_EVERY_S`.

        The store keeps an HMAC of the source under the cookie key, never the address: it counts the logins
        one source holds, and a copy of the database does not say who began them."""
        login_id = secrets.token_urlsafe(32)
        now, timeout = self.clock(), self.settings.login_timeout
        source_key = self.cookies.mac("pending-login\0" + source)
        if not self.store.start_login(login_id, pending, now, now + timeout, source_key, per_source, total):
            self._full_refusals.refused({"max_pending_logins": total})
            return False
        self.cookies.set(response, LOGIN_COOKIE, login_id, int(timeout.total_seconds()), LOGIN_PATH)
        return True

    def find(self, cookie_header: str | None) -> StoredSession | None:
        """The live session the request's cookie names, or None. A local account's session whose account
        was removed or changed since its login is ended here."""
        session_id = self.cookies.unsign(self.cookies.read(cookie_header, SESSION_COOKIE))
        if session_id is None:
            return None
        now = self.clock()
        if time.monotonic() - self._last_prune >= self._prune_every_s:
            self._last_prune = time.monotonic()
            self.store.prune(now, self.settings.idle_timeout)
        found = self.store.find(session_id, now, self.settings.idle_timeout)
        if found is None or found.method != LOCAL_METHOD:
            return found
        user = self._accounts.get(found.name)
        nonce = found.csrf_token.partition(".")[0]
        if user is not None and hmac.compare_digest(found.csrf_token, self._account_token(nonce, user)):
            return found
        self.store.end(session_id)
        log.info("session ended: its local account was removed or changed", extra={"fields": {"user": found.name}})
        return None

    def _account_token(self, nonce: str, user: ApiUser) -> str:
        """``nonce.HMAC(nonce, account as configured)``: 57 characters, within the CSRF token's column."""
        account = json.dumps([user.name, user.role, sorted(user.sites), sorted(user.departments), user.password_hash])
        return f"{nonce}.{self.cookies.mac(nonce + chr(0) + account)[:32]}"

    def end(self, cookie_header: str | None, response: Response) -> StoredSession | None:
        """Logout: the session is deleted in the store (every replica) and its cookie cleared."""
        self.cookies.clear(response, SESSION_COOKIE)
        session_id = self.cookies.unsign(self.cookies.read(cookie_header, SESSION_COOKIE))
        return self.store.end(session_id) if session_id is not None else None
