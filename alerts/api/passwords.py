"""Password hashes of API logins: Argon2id (argon2-cffi) for new hashes, PBKDF2 still verified.

Argon2id parameters are one of OWASP's equivalent password-storage settings (12 MiB, 3 passes,
1 lane): memory-hard against GPU guessing, and small enough for the API's memory budget. All
hashing runs on :data:`HASHING_THREADS` dedicated threads, so however many logins arrive at once,
at most that many 12 MiB blocks exist, and only those threads' malloc arenas ever hold one.
Callers that anyone can trigger (logins) go through a :class:`HashingAdmission`, which refuses
checks beyond a bound instead of queueing them.
Older hashes (``pbkdf2_sha256$...`` at any iteration count, Argon2 with weaker parameters)
keep working; :func:`needs_rehash` tells the login path to replace them after a successful login.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from fleetpulse.logs import RefusalWarnings

_ARGON2 = PasswordHasher(time_cost=3, memory_cost=12 * 1024, parallelism=1, hash_len=32, salt_len=16)
HASHING_THREADS = 2
_HASHING = ThreadPoolExecutor(max_workers=HASHING_THREADS, thread_name_prefix="password-hash")
PBKDF2_PREFIX = "pbkdf2_sha256$"
REFUSALS_LOGGED_EVERY_S = 60.0
"""A flood of refused checks logs one warning per this interval, not one per request."""

log = logging.getLogger(__name__)


def hash_secret(secret: str) -> str:
    """The value for ``password_hash`` in the configuration (``$argon2id$...``)."""
    return _HASHING.submit(_ARGON2.hash, secret).result()


def verify_secret(secret: str, encoded: str) -> bool:
    """True if ``secret`` matches ``encoded`` (Argon2 or legacy PBKDF2); malformed hashes never match."""
    return _HASHING.submit(_verify, secret, encoded).result()


class HashingBusy(Exception):
    """A password check was refused unchecked: :class:`HashingAdmission` has no free place."""


class HashingAdmission:
    """At most ``limit`` password checks pending or running at once; one more is refused at once.

    Each check waits for one of :data:`HASHING_THREADS`, holding the request thread that asked for it.
    Unbounded, wrong passwords sent from many addresses (each within its throttle budget) would queue
    faster than they are hashed and take every request thread of the API; refused, they cost no hashing
    (the login throttle still counts them), and requests that need no hashing (tokens, sessions,
    remembered credentials) keep being served.
    """

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._free = threading.BoundedSemaphore(limit)
        self._refusals = RefusalWarnings(
            log, "password checks refused: too many logins being checked at once", REFUSALS_LOGGED_EVERY_S, clock
        )

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Hold a place for the checks (and hash upgrade) inside; :class:`HashingBusy` if none is free."""
        if not self._free.acquire(blocking=False):
            self._refusals.refused({"max_pending_password_checks": self.limit})
            raise HashingBusy
        try:
            yield
        finally:
            self._free.release()


def _verify(secret: str, encoded: str) -> bool:
    if encoded.startswith(PBKDF2_PREFIX):
        return _verify_pbkdf2(secret, encoded)
    try:
        return _ARGON2.verify(encoded, secret)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(encoded: str) -> bool:
    """True for hashes weaker than what :func:`hash_secret` makes now (PBKDF2, older Argon2 parameters)."""
    if encoded.startswith(PBKDF2_PREFIX):
        return True
    try:
        return _ARGON2.check_needs_rehash(encoded)
    except InvalidHashError:
        return True


def pbkdf2_hash(secret: str, iterations: int) -> str:
    """A hash in the legacy ``pbkdf2_sha256$<iterations>$<salt>$<hash>`` format (existing configurations)."""
    salt = secrets.token_bytes(16)
    return f"{PBKDF2_PREFIX}{iterations}${salt.hex()}${_pbkdf2(secret, salt, iterations).hex()}"


def _pbkdf2(secret: str, salt: bytes, iterations: int) -> bytes:
    """PBKDF2-HMAC-SHA256 over SHA-256(secret): HMAC zero-pads short keys and hashes long ones,
    so without the pre-hash "pw" and "pw\\0" (or a long password and its digest) would be equal."""
    return hashlib.pbkdf2_hmac("sha256", hashlib.sha256(secret.encode()).digest(), salt, iterations)


def _verify_pbkdf2(secret: str, encoded: str) -> bool:
    try:
        _, iterations, salt, expected = encoded.split("$")
        rounds = int(iterations)
        if not 1 <= rounds <= 10_000_000:  # a hostile config must not pin a CPU for hours
            return False
        digest = _pbkdf2(secret, bytes.fromhex(salt), rounds)
    except ValueError:
        return False
    return hmac.compare_digest(digest.hex(), expected)
