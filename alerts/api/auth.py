"""Who is calling: HTTP basic (PBKDF2-hashed passwords) or bearer tokens (SHA-256), each with one role.

Secrets never sit in the configuration in clear text. PBKDF2 is deliberately slow, so a
successful check is remembered in memory under a SHA-256 of the credentials (never the
password itself) to keep page loads fast.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBasic, HTTPBasicCredentials, HTTPBearer

from fleetpulse.alerts.settings import ApiSettings, Role

PBKDF2_ITERATIONS = 200_000
READ_ROLES: tuple[Role, ...] = ("fleet_manager", "it_support", "admin")
WRITE_ROLES: tuple[Role, ...] = ("fleet_manager", "admin")
ADMIN_ROLES: tuple[Role, ...] = ("admin",)

basic_scheme = HTTPBasic(auto_error=False, realm="fleetpulse")
bearer_scheme = HTTPBearer(auto_error=False)


def _pbkdf2(secret: str, salt: bytes, iterations: int) -> bytes:
    """PBKDF2-HMAC-SHA256 over SHA-256(secret): HMAC zero-pads short keys and hashes long ones,
    so without the pre-hash "pw" and "pw\\0" (or a long password and its digest) would be equal."""
    return hashlib.pbkdf2_hmac("sha256", hashlib.sha256(secret.encode()).digest(), salt, iterations)


def hash_secret(secret: str, iterations: int = PBKDF2_ITERATIONS) -> str:
    """The value for ``password_hash`` in the configuration."""
    salt = secrets.token_bytes(16)
    return f"pbkdf2_sha256${iterations}${salt.hex()}${_pbkdf2(secret, salt, iterations).hex()}"


def verify_secret(secret: str, encoded: str) -> bool:
    try:
        scheme, iterations, salt, expected = encoded.split("$")
        if scheme != "pbkdf2_sha256":
            return False
        digest = _pbkdf2(secret, bytes.fromhex(salt), int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(digest.hex(), expected)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role


class Authenticator:
    def __init__(self, settings: ApiSettings, cache_size: int = 1024) -> None:
        self.users = {u.name: u for u in settings.users}
        self.tokens = [(t.token_sha256, Principal(t.name, t.role)) for t in settings.tokens]
        self._verified: OrderedDict[str, Principal] = OrderedDict()
        self._decoy = hash_secret(secrets.token_urlsafe(16))
        self._cache_size = cache_size
        self.throttle = FailureThrottle(settings.login_failure_limit, settings.login_failure_window.total_seconds())

    def basic(self, username: str, password: str) -> Principal | None:
        user = self.users.get(username)
        if user is None:
            verify_secret(password, self._decoy)  # same work as a real user: no username probing by timing
            return None
        key = hashlib.sha256(f"{username}\0{password}\0{user.password_hash}".encode()).hexdigest()
        if key in self._verified:
            self._verified.move_to_end(key)
            return self._verified[key]
        if not verify_secret(password, user.password_hash):
            return None
        principal = Principal(user.name, user.role)
        self._verified[key] = principal
        if len(self._verified) > self._cache_size:
            self._verified.popitem(last=False)
        return principal

    def bearer(self, token: str) -> Principal | None:
        digest = token_sha256(token)
        found = None
        for expected, principal in self.tokens:
            if hmac.compare_digest(digest, expected):
                found = principal
        return found


class FailureThrottle:
    """After ``limit`` failed logins of one client (address + login) within ``window_s``, refuse its
    attempts until the oldest failure ages out: online guessing gets ~limit tries per window."""

    def __init__(
        self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic, max_clients: int = 10_000
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.clock = clock
        self.max_clients = max_clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def blocked_for(self, client: str) -> float:
        with self._lock:
            failures = self._failures.get(client)
            if not failures:
                return 0.0
            now = self.clock()
            while failures and failures[0] <= now - self.window_s:
                failures.popleft()
            if len(failures) < self.limit:
                return 0.0
            return failures[0] + self.window_s - now

    def failed(self, client: str) -> None:
        with self._lock:
            self._failures.setdefault(client, deque(maxlen=self.limit)).append(self.clock())
            self._failures.move_to_end(client)
            while len(self._failures) > self.max_clients:
                self._failures.popitem(last=False)


def _unauthorized() -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        "authentication required",
        headers={"WWW-Authenticate": 'Basic realm="fleetpulse", charset="UTF-8"'},
    )


def current_principal(
    request: Request,
    basic: Annotated[HTTPBasicCredentials | None, Depends(basic_scheme)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    auth: Authenticator = request.app.state.authenticator
    if bearer is None and basic is None:
        raise _unauthorized()
    # keyed by address AND login: behind a reverse proxy every user shares one address, and one
    # user's typos must not lock out the whole office
    address = request.client.host if request.client else "unknown"
    client = f"{address}|{basic.username if basic is not None and bearer is None else 'bearer'}"
    wait = auth.throttle.blocked_for(client)
    if wait > 0:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "too many failed logins; try again later",
            headers={"Retry-After": str(int(wait) + 1)},
        )
    principal = auth.bearer(bearer.credentials) if bearer is not None else None
    if principal is None and basic is not None:
        principal = auth.basic(basic.username, basic.password)
    if principal is None:
        auth.throttle.failed(client)
        raise _unauthorized()
    return principal


def require(*roles: Role) -> Callable[[Principal], Principal]:
    """Dependency: the caller must have one of ``roles`` (401 without credentials, 403 with the wrong role)."""

    def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if principal.role not in roles:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"role {principal.role!r} may not do this")
        return principal

    return check
