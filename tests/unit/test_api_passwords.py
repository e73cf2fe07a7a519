"""Password hashing: Argon2id for new hashes, old PBKDF2 hashes still accepted and upgraded at login."""

from __future__ import annotations

import hashlib
import logging

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from fleetpulse.alerts.api import create_app
from fleetpulse.alerts.api.passwords import (
    REFUSALS_LOGGED_EVERY_S,
    HashingAdmission,
    HashingBusy,
    hash_secret,
    needs_rehash,
    pbkdf2_hash,
    verify_secret,
)
from fleetpulse.alerts.settings import AlertSettings
from fleetpulse.alerts.store.logins import LoginRecords
from fleetpulse.alerts.store.repository import TicketStore
from tests.alerts_support import store_url

__all__ = ["store_url"]  # fixture

PASSWORD = "correct horse battery staple"


def test_new_hashes_are_argon2id_with_current_parameters() -> None:
    encoded = hash_secret(PASSWORD)
    assert encoded.startswith("$argon2id$v=19$m=12288,t=3,p=1$")
    assert verify_secret(PASSWORD, encoded)
    assert not verify_secret(PASSWORD + "\x00", encoded)
    assert not needs_rehash(encoded)
    assert hash_secret(PASSWORD) != encoded  # salted


def test_old_and_malformed_hashes() -> None:
    legacy = pbkdf2_hash(PASSWORD, 200_000)
    assert verify_secret(PASSWORD, legacy)
    assert not verify_secret("wrong", legacy)
    assert needs_rehash(legacy)
    weak_argon2 = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
    assert verify_secret(PASSWORD, weak_argon2)
    assert needs_rehash(weak_argon2)
    for garbage in ("md5$1$00$00", "garbage", "pbkdf2_sha256$99999999999$00$00", "pbkdf2_sha256$x$zz$00", ""):
        assert not verify_secret(PASSWORD, garbage)
        assert needs_rehash(garbage)


def test_hashing_admission_refuses_beyond_its_bound_and_logs_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [1000.0]
    admission = HashingAdmission(2, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="fleetpulse.alerts.api.passwords"):
        with admission.admit(), admission.admit():
            for _ in range(5):
                with pytest.raises(HashingBusy), admission.admit():
                    pytest.fail("admitted beyond the bound")
            now[0] += REFUSALS_LOGGED_EVERY_S
            with pytest.raises(HashingBusy), admission.admit():
                pass
        with pytest.raises(RuntimeError), admission.admit():  # a failed check gives its place back
            raise RuntimeError
        with admission.admit(), admission.admit():
            pass
    warnings = [record.__dict__["fields"]["refused_since_last_warning"] for record in caplog.records]
    assert warnings == [1, 5]  # the first refusal, then the rest of the interval and the next one


def settings_with(store_url: str, password_hash: str) -> AlertSettings:
    return AlertSettings.model_validate(
        {
            "store_url": store_url,
            "api": {
                "users": [{"name": "fm", "role": "fleet_manager", "password_hash": password_hash}],
                "local_login": True,
            },
        }
    )


def test_an_old_hash_is_upgraded_at_the_next_login(store_url: str) -> None:
    """A PBKDF2 hash from an existing configuration logs in, and the store keeps an Argon2id hash
    that every replica uses from then on; a new password in the configuration voids the upgrade."""
    legacy = pbkdf2_hash(PASSWORD, 200_000)
    store = TicketStore.open(store_url)
    records = LoginRecords(store)
    try:
        with TestClient(create_app(settings_with(store_url, legacy), store)) as client:
            assert client.get("/api/v1/me", auth=("fm", "wrong")).status_code == 401
            assert records.upgraded_hash("fm", _sha256(legacy)) is None  # only a successful login upgrades
            assert client.get("/api/v1/me", auth=("fm", PASSWORD)).status_code == 200
        upgraded = records.upgraded_hash("fm", _sha256(legacy))
        assert upgraded is not None
        assert upgraded.startswith("$argon2id$")
        assert verify_secret(PASSWORD, upgraded)

        with TestClient(create_app(settings_with(store_url, legacy), store)) as other_replica:
            assert other_replica.get("/api/v1/me", auth=("fm", PASSWORD)).status_code == 200
            assert other_replica.get("/api/v1/me", auth=("fm", "wrong")).status_code == 401
        assert records.upgraded_hash("fm", _sha256(legacy)) == upgraded  # not re-hashed again

        rotated = hash_secret("a new passphrase")
        with TestClient(create_app(settings_with(store_url, rotated), store)) as client:
            assert client.get("/api/v1/me", auth=("fm", PASSWORD)).status_code == 401
            assert client.get("/api/v1/me", auth=("fm", "a new passphrase")).status_code == 200
        assert records.upgraded_hash("fm", _sha256(rotated)) is None  # a current hash needs no upgrade
    finally:
        store.close()


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_attack_the_remembered_logins_in_memory_are_no_fast_password_oracle(store_url: str) -> None:
    """A verified login is remembered under an HMAC with a random key of the process: hashing candidate
    passwords with SHA-256 the way a plain cache key is made finds none of the keys read from memory, and
    another API instance remembers the same login under another key. Remembered logins still skip hashing."""
    password_hash = hash_secret(PASSWORD)
    store = TicketStore.open(store_url)
    try:
        remembered: list[str] = []
        checks: list[object] = []
        for _ in range(2):
            app = create_app(settings_with(store_url, password_hash), store)
            with TestClient(app) as client:
                assert client.get("/api/v1/me", auth=("fm", PASSWORD)).status_code == 200
                (key,) = app.state.authenticator._verified
                remembered.append(key)
                app.state.authenticator.verify_password = lambda *a: checks.append(a)  # hashing is not asked again
                assert client.get("/api/v1/me", auth=("fm", PASSWORD)).status_code == 200
        assert not checks
        candidates = ["123456", "password", "Winter2026!", "correct horse", PASSWORD]  # a wordlist holding it
        plain = {hashlib.sha256(f"fm\0{p}\0{password_hash}".encode()).hexdigest(): p for p in candidates}
        assert [plain[key] for key in remembered if key in plain] == []
        assert remembered[0] != remembered[1]
    finally:
        store.close()
