"""Attack: a provider (or whoever controls an account's attributes there) asserts a subject or a name longer
than the columns that keep them. A 300-character ``sub`` made the login callback fail with HTTP 500 on
PostgreSQL (``web_sessions.subject`` is VARCHAR(256)); a NUL in it does the same, and a name longer than a
ticket history's actor column would be stored cut short. Such a token is refused as a login failure with a
reason, before anything is stored.

Runs on SQLite here; tests/integration/test_store_limits_postgres.py sends the same callbacks to PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jws
from sqlalchemy import func, select

from fleetpulse.alerts.oidc import MAX_NAME_CHARS, MAX_SUBJECT_CHARS, OidcError, identity_from_claims
from fleetpulse.alerts.store.models import WebSession
from fleetpulse.alerts.store.repository import TicketStore
from tests.unit.test_api_sso import ANNA, App, Provider
from tests.unit.test_oidc import FakeProvider, claims, rp


@pytest.mark.parametrize(
    "subject",
    ["s" * (MAX_SUBJECT_CHARS + 1), "s" * 300, "anna\x00admin", "anna\u202e", "anna\ud800"],
    ids=["256-chars", "300-chars", "nul", "bidi-override", "lone-surrogate"],
)
def test_attack_an_oversized_or_unprintable_subject_is_refused(subject: str) -> None:
    provider = FakeProvider()
    # signed as JSON text, as a provider would send it: "\\ud800" escaped, decoded to a lone surrogate
    key = provider.keys[0]
    token = jws.serialize_compact({"alg": "RS256", "kid": key.kid}, json.dumps(claims(sub=subject)).encode(), key)
    with pytest.raises(OidcError, match=f"subject is not 1 to {MAX_SUBJECT_CHARS} printable characters"):
        rp(provider).validate_id_token(token, nonce="n-123")


@pytest.mark.parametrize("claim", ["preferred_username", "email"])
def test_attack_an_oversized_name_is_refused_not_cut(claim: str) -> None:
    provider = FakeProvider()
    long_name = {"preferred_username": None, "email": None, claim: "n" * (MAX_NAME_CHARS + 1)}
    token = provider.sign({k: v for k, v in claims(**long_name).items() if v is not None})
    with pytest.raises(OidcError, match=f"more than {MAX_NAME_CHARS} characters"):
        rp(provider).validate_id_token(token, nonce="n-123")


def test_the_longest_allowed_subject_and_name_are_kept_whole() -> None:
    provider = FakeProvider()
    relying_party = rp(provider)
    subject, name = "s" * MAX_SUBJECT_CHARS, "n" * MAX_NAME_CHARS
    validated = relying_party.validate_id_token(
        provider.sign(claims(sub=subject, preferred_username=name)), nonce="n-123"
    )
    identity = identity_from_claims(validated, relying_party.settings)
    assert identity is not None
    assert (identity.subject, identity.display_name) == (subject, name)


def callback(store: TicketStore, **token_claims: Any) -> httpx.Response:
    """A browser's whole login through the app; the provider's ID token carries ``token_claims``."""
    app = App(store, Provider())
    browser = app.browser()
    app.provider.claims = {"groups": ANNA, **token_claims}
    query = app.start_login(browser)
    back: httpx.Response = browser.get("/auth/callback", params={"code": "good-code", "state": query["state"]})
    return back


def sessions(store: TicketStore) -> int:
    with store.session() as session:
        return session.scalar(select(func.count()).select_from(WebSession)) or 0


def login_failures(store: TicketStore) -> list[object]:
    return [r.payload for r in store.audit.records() if r.kind == "login.failure"]


def attack_oversized_subject_callback(store: TicketStore) -> None:
    back = callback(store, sub="s" * 300)
    assert back.status_code == 403, back.text
    assert f"subject is not 1 to {MAX_SUBJECT_CHARS} printable characters" in back.text
    assert "s" * 100 not in back.text  # the refused value is not echoed
    assert sessions(store) == 0
    assert len(login_failures(store)) == 1


def longest_subject_logs_in(store: TicketStore) -> None:
    back = callback(store, sub="s" * MAX_SUBJECT_CHARS)
    assert back.status_code == 303, back.text
    with store.session() as session:
        assert session.scalars(select(WebSession.subject)).all() == ["s" * MAX_SUBJECT_CHARS]


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[TicketStore]:
    store = TicketStore.open(f"sqlite:///{tmp_path}/tickets.db")
    yield store
    store.close()


def test_attack_the_callback_refuses_an_oversized_subject(sqlite_store: TicketStore) -> None:
    attack_oversized_subject_callback(sqlite_store)


def test_the_callback_keeps_the_longest_allowed_subject_whole(sqlite_store: TicketStore) -> None:
    longest_subject_logs_in(sqlite_store)
