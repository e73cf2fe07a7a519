"""Who is calling, with which role and which sites: a page session, a bearer token, or HTTP basic.

People use the page through a session (single sign-on or the local login form,
:mod:`fleetpulse.alerts.api.sessions`); machines send a bearer token (stored as its SHA-256);
HTTP basic with Argon2id-hashed passwords is accepted only where local login is switched on.
Authentication runs from the request headers alone, before any body is read
(:mod:`fleetpulse.alerts.api.gate`), and leaves the :class:`Principal` on the request;
routes check its role (:func:`require`) and keep to its scope (:meth:`Principal.scoped`,
:meth:`Principal.sees`). Another login scheme is another :class:`Authenticates` implementation
handed to the gate; routes stay as they are.

Secrets never sit in the configuration in clear text. Hashing is deliberately slow, so a
successful check is remembered in memory under an HMAC of the credentials (never the
password itself) to keep page loads fast. Only a bounded number of password checks wait for
the hashing threads (:class:`HashingAdmission`); beyond it a login is refused with 503, unchecked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Literal, Protocol

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBasic, HTTPBasicCredentials, HTTPBearer
from pydantic import IPvAnyNetwork

from fleetpulse.alerts.api.passwords import HashingAdmission, HashingBusy, hash_secret, needs_rehash, verify_secret
from fleetpulse.alerts.api.sessions import CSRF_HEADER, UNSAFE_METHODS, PageSessions, SessionCookies
from fleetpulse.alerts.settings import ALL_SITES, ApiLimits, ApiSettings, Role
from fleetpulse.alerts.store.logins import Attempt, LoginRecords
from fleetpulse.alerts.store.repository import TicketFilter
from fleetpulse.compat import UTC
from fleetpulse.retry import RetryPolicy

__all__ = ["hash_secret", "verify_secret"]  # re-exported: `fleetpulse tickets hash-secret`, demo, tests

READ_ROLES: tuple[Role, ...] = ("fleet_manager", "it_support", "admin")
WRITE_ROLES: tuple[Role, ...] = ("fleet_manager", "admin")
ADMIN_ROLES: tuple[Role, ...] = ("admin",)
PRINCIPAL_STATE = "principal"
"""Key under which the gate leaves the authenticated caller in the request's state."""
USE_RECORDED_EVERY = timedelta(hours=1)
"""A token's or basic login's use is recorded at most this often per address: a busy integration would fill the trail."""

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]

# Declared as dependencies only so the OpenAPI document names both schemes; the gate has
# already authenticated the request when they run.
basic_scheme = HTTPBasic(auto_error=False, realm="fleetpulse")
bearer_scheme = HTTPBearer(auto_error=False)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: one role, and the sites (``*`` = all) and departments (empty = all) it may see."""

    name: str
    role: Role
    sites: frozenset[str]
    departments: frozenset[str] = frozenset()
    via: Literal["session", "bearer", "basic"] = "bearer"
    csrf_token: str | None = None
    issuer: str | None = None
    subject: str | None = None

    @property
    def all_sites(self) -> bool:
        return ALL_SITES in self.sites

    @property
    def unrestricted(self) -> bool:
        """Sees everything, including devices without inventory (no site known)."""
        return self.all_sites and not self.departments

    def sees(self, site: str | None, department: str | None) -> bool:
        """Whether a device at ``site``/``department`` is in scope; a device of unknown site only for unrestricted."""
        if self.unrestricted:
            return True
        if site is None or not (self.all_sites or site in self.sites):
            return False
        return not self.departments or department in self.departments

    def scoped(self, flt: TicketFilter) -> TicketFilter:
        """``flt`` narrowed to this caller's scope (the database does the filtering: counts and pages stay right)."""
        return flt.model_copy(
            update={
                "in_sites": None if self.all_sites else self.sites,
                "in_departments": self.departments or None,
            }
        )


@dataclass(frozen=True)
class RequestHead:
    """What a login scheme may look at: the request line and headers, never the body."""

    method: str
    authorization: str | None
    cookie: str | None
    csrf_token: str | None
    address: str
    request_id: str = ""


class Authenticates(Protocol):
    """What the gate needs of a login scheme: a caller from the headers, or :class:`AuthFailure`."""

    def authenticate(self, head: RequestHead) -> Principal:
        """Blocking (hashing, store): the gate runs it on a worker thread."""
        ...


class AuthTrail(Protocol):
    """Where the authenticator reports what the audit trail keeps (``access.HeaderTrail``)."""

    def login_failed(self, head: RequestHead, method: Literal["basic", "bearer"], login: str | None) -> None:
        """Credentials the throttle admitted were wrong (``login``: the name given, never the secret)."""
        ...

    def credentials_used(self, head: RequestHead, principal: Principal) -> None:
        """A bearer token or HTTP basic credentials (``principal.via``) authenticated the request."""
        ...


class AuthFailure(Exception):
    """The request is refused before its body is read: 401 (no or bad credentials), 429 (throttled) or
    503 (too many password checks pending)."""

    def __init__(self, status_code: int, detail: str, headers: dict[str, str]) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = headers


BEARER_CHALLENGE = 'Bearer realm="fleetpulse"'


def unauthorized() -> AuthFailure:
    """401 with a bearer challenge: a basic challenge would make browsers show their password pop-up."""
    return AuthFailure(status.HTTP_401_UNAUTHORIZED, "authentication required", {"WWW-Authenticate": BEARER_CHALLENGE})


def client_address(peer: str | None, forwarded_for: str | None, trusted_proxies: Sequence[IPvAnyNetwork]) -> str:
    """The caller's address: the TCP peer, or, when the peer is a trusted proxy, the right-most
    X-Forwarded-For entry not added by a trusted proxy (entries further left are the client's to forge)."""
    if peer is None:
        return "unknown"
    hops = [peer]
    if forwarded_for and trusted_proxies:
        hops = [hop.strip() for hop in forwarded_for.split(",")] + [peer]
    for hop in reversed(hops):
        try:
            address = ipaddress.ip_address(hop)
        except ValueError:
            return hop[:64]  # garbage from a trusted proxy's client: still a stable key for that client
        if not any(address in network for network in trusted_proxies):
            return str(address)
    return hops[0][:64]


def throttle_scope(address: str) -> str:
    """What the throttle counts as one source: an IPv4 address, or an IPv6 address's /64, since
    every host gets a whole /64 and can pick a fresh address from it for each guess. An
    IPv4-mapped IPv6 address (a dual-stack listener's IPv4 peer) is its IPv4 address, not the
    /64 that holds every IPv4 client."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip)
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))


@dataclass
class LoginThrottle:
    """Slows down guessing without locking the owner out.

    Each password attempt is counted twice: for the login name from this address, and for the
    address across all names (spraying); an IPv6 address counts as its /64 (:func:`throttle_scope`).
    Past the free failures each further failure blocks its key for a doubling delay (capped). An
    attempt is counted before its password is checked and uncounted if it succeeds, so concurrent
    guesses are admitted one at a time, and a throttled request is refused without checking its
    password: it teaches the attacker nothing. The owner logging in from another address is never
    slowed down by someone else's guesses.

    The stored keys are HMACs under the session cookie key (``mac``, :meth:`SessionCookies.mac`), never
    plain digests: hashing all 2^32 IPv4 addresses would recover the address behind a plain one from a
    copy of the table. Replicas with the same key count together.
    """

    records: LoginRecords
    limits: ApiLimits
    mac: Callable[[str], str]
    prune_every_s: float = 60.0
    _backoff: RetryPolicy = field(init=False)
    _last_prune: float = field(default=float("-inf"), init=False)

    def __post_init__(self) -> None:
        self._backoff = RetryPolicy(self.limits.backoff_base.total_seconds(), self.limits.backoff_max.total_seconds())

    def login_key(self, login: str, address: str) -> str:
        return self.mac(f"login-throttle\0login\0{throttle_scope(address)}\0{login}")

    def address_key(self, address: str) -> str:
        return self.mac(f"login-throttle\0address\0{throttle_scope(address)}")

    def check(self, login: str | None, address: str, now: datetime) -> None:
        """Raise 429 while the address, or the login at this address, is blocked (read only: for
        credentials already verified, and tokens). A login with failures here has them cleared."""
        keys = [self.address_key(address)] + ([self.login_key(login, address)] if login is not None else [])
        found = self.records.failures(keys)
        until = max((blocked for _, blocked in found.values()), default=now)
        if until > now:
            raise _too_many(until, now)
        if login is not None and self.login_key(login, address) in found:
            self.records.clear(self.login_key(login, address))

    def begin(self, login: str, address: str, now: datetime) -> Attempt:
        """Count a password attempt as failed up front (429 if blocked); :meth:`succeeded` uncounts it."""
        limits = self.limits
        self._prune(now)
        spray = self._count(self.address_key(address), now, limits.free_failures_per_address)
        if spray.failures == limits.free_failures_per_address + 1:
            log.warning("login failures for many names from one address", extra={"fields": {"address": address}})
        if not spray.allowed:
            raise _too_many(spray.blocked_until, now)
        guess = self._count(self.login_key(login, address), now, limits.free_failures_per_login)
        if not guess.allowed:
            self.records.cancel(spray)
            raise _too_many(guess.blocked_until, now)
        return spray

    def succeeded(self, login: str, address: str, spray: Attempt) -> None:
        self.records.clear(self.login_key(login, address))
        self.records.cancel(spray)

    def token_failed(self, address: str, now: datetime) -> bool:
        """A wrong bearer token: counted against the address (tokens are random: guessing one is hopeless).
        False if the address was blocked meanwhile: the failure is not counted, nor worth recording."""
        return self._count(self.address_key(address), now, self.limits.free_failures_per_address).allowed

    def _count(self, key: str, now: datetime, free: int) -> Attempt:
        return self.records.record_failure(
            key,
            now,
            self.limits.forget_after,
            lambda failures: timedelta(seconds=self._backoff.ceiling(failures - free)),
        )

    def _prune(self, now: datetime) -> None:
        if time.monotonic() - self._last_prune >= self.prune_every_s:
            self._last_prune = time.monotonic()
            self.records.prune(now, self.limits.forget_after)


def _hashing_busy() -> AuthFailure:
    return AuthFailure(
        status.HTTP_503_SERVICE_UNAVAILABLE, "too many logins being checked; try again shortly", {"Retry-After": "1"}
    )


def _too_many(until: datetime, now: datetime) -> AuthFailure:
    wait = math.ceil((until - now).total_seconds())
    return AuthFailure(
        status.HTTP_429_TOO_MANY_REQUESTS, "too many failed logins; try again later", {"Retry-After": str(max(wait, 1))}
    )


class Authenticator:
    """Checks the Authorization header of a request from a given address, throttled (:class:`LoginThrottle`).

    Refused credentials the throttle admitted, and each token's and basic login's use (once an hour per
    address), go to ``trail``: throttled attempts are refused unchecked and unrecorded, so guessing cannot
    flood the audit trail beyond the throttle's budget.
    """

    def __init__(
        self,
        settings: ApiSettings,
        records: LoginRecords,
        sessions: PageSessions | None = None,
        clock: Clock = lambda: datetime.now(UTC),
        cache_size: int = 1024,
        trail: AuthTrail | None = None,
    ) -> None:
        self.users = {u.name: u for u in settings.users}
        self.tokens = [
            (t.token_sha256, Principal(t.name, t.role, frozenset(t.sites), frozenset(t.departments)))
            for t in settings.tokens
        ]
        self.basic_enabled = settings.basic_auth
        self.sessions = sessions
        self.records = records
        cookies = sessions.cookies if sessions is not None else SessionCookies(settings.session)
        self.throttle = LoginThrottle(records, settings.limits, cookies.mac)
        self.hashing = HashingAdmission(settings.limits.max_pending_password_checks)
        self.clock = clock
        self._verified: OrderedDict[str, Principal] = OrderedDict()
        self._verified_key = secrets.token_bytes(32)  # see _basic
        self._verified_lock = threading.Lock()  # requests authenticate on several worker threads
        self._decoy = hash_secret(secrets.token_urlsafe(16))
        self._cache_size = cache_size
        self.trail = trail
        self._uses_recorded: OrderedDict[tuple[Principal, str], datetime] = OrderedDict()
        self._uses_lock = threading.Lock()
        weak = sorted(u.name for u in settings.users if needs_rehash(u.password_hash))
        if weak:
            log.warning(
                "configured password hashes use an old scheme; they are upgraded in the store at the next login, "
                "replace them in the configuration with `fleetpulse tickets hash-secret`",
                extra={"fields": {"users": weak}},
            )

    def authenticate(self, head: RequestHead) -> Principal:
        """The caller named by the ``Authorization`` header or the session cookie; :class:`AuthFailure` if none
        (blocking: hashes, store). A cookie-authenticated write must carry the session's CSRF token."""
        if head.authorization is None and head.cookie is not None and self.sessions is not None:
            return self._session(head)
        address = head.address
        scheme, _, value = (head.authorization or "").partition(" ")
        scheme, value = scheme.lower(), value.strip()
        credentials = _basic_credentials(value) if scheme == "basic" and self.basic_enabled else None
        if credentials is not None:
            principal = self._basic(*credentials, address)
            if principal is None:
                if self.trail is not None:
                    self.trail.login_failed(head, "basic", credentials[0])
                raise unauthorized()
            self._used(head, principal)
            return principal
        if scheme == "bearer" and value:
            self.throttle.check(None, address, self.clock())
            principal = self.bearer(value)
            if principal is None:
                if self.throttle.token_failed(address, self.clock()) and self.trail is not None:
                    self.trail.login_failed(head, "bearer", None)
                raise unauthorized()
            self._used(head, principal)
            return principal
        raise unauthorized()  # no credentials at all is not a failed login

    def _used(self, head: RequestHead, principal: Principal) -> None:
        """Record a token's or basic login's use once an hour per address (IPv6: per /64), not at every request."""
        if self.trail is None:
            return
        key, now = (principal, throttle_scope(head.address)), self.clock()
        with self._uses_lock:
            last = self._uses_recorded.get(key)
            if last is not None and now - last < USE_RECORDED_EVERY:
                return
            self._uses_recorded[key] = now
            self._uses_recorded.move_to_end(key)
            if len(self._uses_recorded) > self._cache_size:
                self._uses_recorded.popitem(last=False)
        self.trail.credentials_used(head, principal)

    def _session(self, head: RequestHead) -> Principal:
        assert self.sessions is not None
        found = self.sessions.find(head.cookie)
        if found is None:
            raise unauthorized()
        if head.method in UNSAFE_METHODS and not hmac.compare_digest(
            (head.csrf_token or "").encode(), found.csrf_token.encode()
        ):
            raise AuthFailure(
                status.HTTP_403_FORBIDDEN, f"missing or wrong CSRF token (the page sends it in {CSRF_HEADER})", {}
            )
        return Principal(
            found.name,
            _role(found.role),
            found.sites,
            found.departments,
            via="session",
            csrf_token=found.csrf_token,
            issuer=found.issuer,
            subject=found.subject,
        )

    def password_login(self, login: str, password: str, address: str) -> Principal:
        """The login form's check: the same hashes and throttle as HTTP basic (:class:`AuthFailure` 401/429/503)."""
        principal = self._basic(login, password, address)
        if principal is None:
            raise unauthorized()
        return principal

    def _basic(self, login: str, password: str, address: str) -> Principal | None:
        """The configured user, or None for a wrong name or password; :class:`AuthFailure` 429 while throttled,
        503 while the hashing admission is full. The throttle counts the attempt before admission: a refused,
        unchecked guess must still cost a try, or an attacker filling the admission from many addresses could
        guess freely from one and learn the password from the one answer the cache gives without hashing.

        The cache is keyed by an HMAC under a random key of this process: its keys alone (a core dump's or swap's
        fragment) are no fast oracle for guessing the password, as a plain SHA-256 of it would be."""
        configured = self.users[login].password_hash if login in self.users else ""
        credentials = f"{login}\0{password}\0{configured}".encode()
        cache_key = hmac.new(self._verified_key, credentials, hashlib.sha256).hexdigest()
        with self._verified_lock:
            cached = self._verified.get(cache_key)
            if cached is not None:
                self._verified.move_to_end(cache_key)
        if cached is not None:
            self.throttle.check(login, address, self.clock())  # still refused while throttled: no oracle
            return cached
        spray = self.throttle.begin(login, address, self.clock())
        try:
            with self.hashing.admit():
                principal = self.verify_password(login, password)
        except HashingBusy:
            raise _hashing_busy() from None  # stays counted
        if principal is None:
            return None
        self.throttle.succeeded(login, address, spray)
        with self._verified_lock:
            self._verified[cache_key] = principal
            if len(self._verified) > self._cache_size:
                self._verified.popitem(last=False)
        return principal

    def verify_password(self, username: str, password: str) -> Principal | None:
        """Check against the configured hash (or its upgrade in the store), upgrading an old hash."""
        user = self.users.get(username)
        if user is None:
            verify_secret(password, self._decoy)  # same work as a real user: no username probing by timing
            return None
        configured = hashlib.sha256(user.password_hash.encode()).hexdigest()
        current = self.records.upgraded_hash(user.name, configured) or user.password_hash
        if not verify_secret(password, current):
            return None
        if needs_rehash(current):
            self.records.save_upgraded_hash(user.name, configured, hash_secret(password), self.clock())
            log.info("password hash upgraded to the current scheme", extra={"fields": {"user": user.name}})
        return Principal(user.name, user.role, frozenset(user.sites), frozenset(user.departments), via="basic")

    def bearer(self, token: str) -> Principal | None:
        digest = token_sha256(token)
        found = None
        for expected, principal in self.tokens:
            if hmac.compare_digest(digest, expected):
                found = principal
        return found


def _role(value: str) -> Role:
    for role in READ_ROLES:
        if role == value:
            return role
    raise unauthorized()  # a session row with a role this version does not know grants nothing


def _basic_credentials(value: str) -> tuple[str, str] | None:
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    login, colon, password = decoded.partition(":")
    return (login, password) if colon else None


def current_principal(
    request: Request,
    _basic: Annotated[HTTPBasicCredentials | None, Depends(basic_scheme)],
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    """The caller the gate authenticated (401 if the app runs without the gate, which never happens in service)."""
    principal = getattr(request.state, PRINCIPAL_STATE, None)
    if not isinstance(principal, Principal):
        failure = unauthorized()
        raise HTTPException(failure.status_code, failure.detail, headers=failure.headers)
    return principal


def require(*roles: Role) -> Callable[[Principal], Principal]:
    """Dependency: the caller must have one of ``roles`` (401 without credentials, 403 with the wrong role)."""

    def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if principal.role not in roles:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"role {principal.role!r} may not do this")
        return principal

    return check
