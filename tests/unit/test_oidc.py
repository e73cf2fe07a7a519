"""OpenID Connect relying party: every forged, replayed or mis-addressed ID token is refused.

The provider is played by an httpx mock transport serving a discovery document and a key set of
keys generated here; the same code runs against real Keycloak in tests/integration/test_oidc_keycloak.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from fleetpulse.alerts.oidc import (
    RETRY_AFTER_FAILURE_S,
    OidcBusy,
    OidcError,
    OidcProvider,
    OidcSettings,
    OidcUnavailable,
    identity_from_claims,
    refusal,
)

ISSUER = "https://id.example.org/realms/city"
NOW = 1_800_000_000


class FakeProvider:
    def __init__(self) -> None:
        self.keys = [RSAKey.generate_key(2048, parameters={"kid": "k1", "use": "sig", "alg": "RS256"})]
        self.jwks_fetches = 0
        self.issuer = ISSUER
        self.token_answer: tuple[int, dict[str, Any]] = (200, {})

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/.well-known/openid-configuration"):
            return httpx.Response(
                200,
                json={
                    "issuer": self.issuer,
                    "authorization_endpoint": f"{ISSUER}/auth",
                    "token_endpoint": f"{ISSUER}/token",
                    "jwks_uri": f"{ISSUER}/certs",
                    "end_session_endpoint": f"{ISSUER}/logout",
                },
            )
        if request.url.path.endswith("/certs"):
            self.jwks_fetches += 1
            return httpx.Response(200, json={"keys": [k.as_dict(private=False) for k in self.keys]})
        if request.url.path.endswith("/token"):
            return httpx.Response(self.token_answer[0], json=self.token_answer[1])
        return httpx.Response(404)

    def sign(self, claims: dict[str, Any], key: RSAKey | None = None) -> str:
        key = key or self.keys[0]
        return jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)


def settings(**overrides: Any) -> OidcSettings:
    values: dict[str, Any] = {
        "issuer": ISSUER,
        "client_id": "fleetpulse-page",
        "client_secret": "s3cret-client",
        "redirect_url": "https://fleet.example.org/auth/callback",
        "roles": {"fp-managers": "fleet_manager", "fp-support": "it_support", "fp-admins": "admin"},
        "sites": {"site-rathaus": "Rathaus", "site-all": "*"},
    }
    values.update(overrides)
    return OidcSettings.model_validate(values)


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "f3c1-subject",
        "aud": "fleetpulse-page",
        "exp": NOW + 300,
        "iat": NOW - 5,
        "nonce": "n-123",
        "name": "Anna Berger",
        "preferred_username": "anna",
        "groups": ["fp-managers", "site-rathaus"],
    }
    base.update(overrides)
    return base


@pytest.fixture
def provider() -> FakeProvider:
    return FakeProvider()


def rp(provider: FakeProvider, **overrides: Any) -> OidcProvider:
    http = httpx.Client(transport=httpx.MockTransport(provider.handler))
    return OidcProvider(settings(**overrides), http=http, clock=lambda: float(NOW))


def test_valid_token_gives_claims_and_identity(provider: FakeProvider) -> None:
    relying_party = rp(provider)
    validated = relying_party.validate_id_token(provider.sign(claims()), nonce="n-123")
    identity = identity_from_claims(validated, relying_party.settings)
    assert identity is not None
    assert (identity.issuer, identity.subject, identity.display_name) == (ISSUER, "f3c1-subject", "anna")
    assert identity.role == "fleet_manager"
    assert identity.sites == frozenset({"Rathaus"})
    assert not identity.all_sites


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"iss": "https://evil.example.org/realms/city"}, "iss"),
        ({"aud": "another-client"}, "another client"),
        ({"aud": ["fleetpulse-page", "other"], "azp": "other"}, "authorized party"),
        ({"exp": NOW - 3600}, "exp"),
        ({"nonce": "replayed-nonce"}, "nonce"),
        ({"iat": None}, "iat"),
    ],
)
def test_misaddressed_expired_or_replayed_tokens_are_refused(
    provider: FakeProvider, change: dict[str, Any], reason: str
) -> None:
    token_claims = {k: v for k, v in claims(**change).items() if v is not None}
    with pytest.raises(OidcError, match=reason):
        rp(provider).validate_id_token(provider.sign(token_claims), nonce="n-123")


def test_token_signed_by_another_key_is_refused(provider: FakeProvider) -> None:
    attacker = RSAKey.generate_key(2048, parameters={"kid": "k1", "use": "sig"})
    with pytest.raises(OidcError, match="not valid"):
        rp(provider).validate_id_token(provider.sign(claims(), key=attacker), nonce="n-123")


def test_unsigned_token_is_refused(provider: FakeProvider) -> None:
    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    unsigned = f"{b64({'alg': 'none', 'kid': 'k1'})}.{b64(claims())}."
    with pytest.raises(OidcError, match="not valid"):
        rp(provider).validate_id_token(unsigned, nonce="n-123")


def test_rotated_keys_are_fetched_once_without_restart(provider: FakeProvider) -> None:
    relying_party = rp(provider)
    relying_party.validate_id_token(provider.sign(claims()), nonce="n-123")
    assert provider.jwks_fetches == 1
    provider.keys = [RSAKey.generate_key(2048, parameters={"kid": "k2", "use": "sig", "alg": "RS256"})]
    relying_party.validate_id_token(provider.sign(claims()), nonce="n-123")
    assert provider.jwks_fetches == 2
    relying_party.validate_id_token(provider.sign(claims()), nonce="n-123")
    assert provider.jwks_fetches == 2


def test_discovery_document_naming_another_issuer_is_refused(provider: FakeProvider) -> None:
    provider.issuer = "https://evil.example.org"
    with pytest.raises(OidcError, match="another issuer"):
        rp(provider).authorization_request()


def test_authorization_request_uses_pkce_s256_state_and_nonce(provider: FakeProvider) -> None:
    request = rp(provider).authorization_request()
    query = {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}
    challenge = base64.urlsafe_b64encode(hashlib.sha256(request.code_verifier.encode()).digest()).rstrip(b"=")
    assert query["code_challenge"] == challenge.decode()
    assert query["code_challenge_method"] == "S256"
    assert query["state"] == request.state
    assert query["nonce"] == request.nonce
    assert query["response_type"] == "code"
    assert query["redirect_uri"] == "https://fleet.example.org/auth/callback"
    assert len({request.state, request.nonce, request.code_verifier}) == 3


def test_token_endpoint_refusal_does_not_echo_the_providers_text(provider: FakeProvider) -> None:
    provider.token_answer = (400, {"error": "invalid_grant", "error_description": "code=abc secret=s3cret-client"})
    with pytest.raises(OidcError) as refused:
        rp(provider).exchange("abc", "verifier")
    assert "invalid_grant" in str(refused.value)
    assert "s3cret" not in str(refused.value)
    assert "code=abc" not in str(refused.value)


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        ([], None),
        (["fp-managers"], None),  # a role but no site: no access
        (["site-rathaus"], None),  # a site but no role: no access
        (["fp-support", "fp-admins", "site-all"], ("admin", frozenset({"*"}))),
        (["fp-support", "site-rathaus", "unmapped"], ("it_support", frozenset({"Rathaus"}))),
    ],
)
def test_roles_and_sites_come_only_from_mapped_claims(
    groups: list[str], expected: tuple[str, frozenset[str]] | None
) -> None:
    identity = identity_from_claims(claims(groups=groups), settings())
    assert (identity and (identity.role, identity.sites)) == expected


SHARED = {"department_claim": "groups", "departments": {"dept-finance": "Finance"}}


@pytest.mark.parametrize(
    ("mapping", "department_claims", "departments"),
    [
        # the department claim is the groups claim that also holds the role and site groups
        (SHARED, {"groups": ["fp-support", "site-rathaus", "dept-culture"]}, None),  # unmapped: no access
        (SHARED, {"groups": ["fp-support", "site-rathaus", "dept-culture", "dept-finance"]}, {"Finance"}),
        (SHARED, {"groups": ["fp-support", "site-rathaus"]}, set()),  # no department: the whole site
        # with a prefix, the claim may carry any other group
        ({**SHARED, "department_prefix": "dept-"}, {"groups": ["fp-support", "site-rathaus", "vpn-users"]}, set()),
        ({**SHARED, "department_prefix": "dept-"}, {"groups": ["fp-support", "site-rathaus", "dept-culture"]}, None),
        # a claim of its own: every value is a department
        ({"department_claim": "dept", "departments": {"Finance": "Finance"}}, {"dept": "Culture"}, None),
        ({"department_claim": "dept", "departments": {"Finance": "Finance"}}, {"dept": ["Finance"]}, {"Finance"}),
        ({"department_claim": "dept", "departments": {"Finance": "Finance"}}, {}, set()),
    ],
)
def test_attack_an_unmapped_department_group_does_not_widen_to_the_whole_site(
    mapping: dict[str, Any], department_claims: dict[str, Any], departments: set[str] | None
) -> None:
    """A department group IT has not mapped (yet) grants nothing: read as "no department", it would be every
    department of the person's sites."""
    person = claims(**{"groups": ["fp-support", "site-rathaus"], **department_claims})
    identity = identity_from_claims(person, settings(**mapping))
    assert (identity and set(identity.departments)) == departments
    if departments is None:
        assert refusal(person, settings(**mapping)) == "no mapped department"


@pytest.mark.parametrize(
    ("mapping", "groups", "departments"),
    [
        (SHARED, ["fp-support", "site-rathaus"], None),  # no department value: no access, not the whole site
        (SHARED, ["fp-support", "site-rathaus", "dept-finance"], {"Finance"}),
        ({**SHARED, "department_prefix": "dept-"}, ["fp-support", "site-rathaus", "vpn-users"], None),
    ],
)
def test_attack_a_token_without_department_gets_no_access_when_one_is_required(
    mapping: dict[str, Any], groups: list[str], departments: set[str] | None
) -> None:
    person = claims(groups=groups)
    required = settings(**mapping, require_department=True)
    identity = identity_from_claims(person, required)
    assert (identity and set(identity.departments)) == departments
    if departments is None:
        assert refusal(person, required) == "no department value"
    assert identity_from_claims(person, settings(**mapping)) is not None  # the default: the whole site


def test_requiring_a_department_without_a_department_claim_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="require_department needs department_claim"):
        settings(require_department=True)


def test_plain_http_provider_needs_explicit_opt_in() -> None:
    with pytest.raises(ValueError, match="https"):
        settings(issuer="http://127.0.0.1:8180/realms/city")
    assert settings(issuer="http://127.0.0.1:8180/realms/city", allow_insecure_http=True).allow_insecure_http


def test_logout_url_is_rp_initiated(provider: FakeProvider) -> None:
    url = rp(provider, post_logout_redirect_url="https://fleet.example.org/auth/logged-out").end_session_url("tok")
    assert url is not None
    query = parse_qs(urlsplit(url).query)
    assert query["id_token_hint"] == ["tok"]
    assert query["post_logout_redirect_uri"] == ["https://fleet.example.org/auth/logged-out"]


def test_a_token_endpoint_answering_html_is_unavailable_not_a_crash(provider: FakeProvider) -> None:
    """A maintenance page in front of the provider answers 200 with HTML: the login page says 'try later'."""
    relying_party = rp(provider)
    html = httpx.Response(200, text="<html>maintenance</html>")
    relying_party._http = httpx.Client(
        transport=httpx.MockTransport(lambda r: html if r.url.path.endswith("/token") else provider.handler(r))
    )
    with pytest.raises(OidcUnavailable, match="did not answer with JSON"):
        relying_party.exchange("code", "verifier")


@pytest.mark.parametrize("keys", [{"kid": "k1"}, 7, None, "keys"])
def test_a_key_set_that_is_no_list_is_refused(provider: FakeProvider, keys: object) -> None:
    relying_party = rp(provider)
    relying_party._http = httpx.Client(
        transport=httpx.MockTransport(
            lambda r: httpx.Response(200, json={"keys": keys}) if r.url.path.endswith("/certs") else provider.handler(r)
        )
    )
    with pytest.raises(OidcError, match="not a key set"):
        relying_party.validate_id_token(provider.sign(claims()), nonce="n-123")


def test_an_endless_provider_answer_is_cut_off(provider: FakeProvider) -> None:
    """A hostile discovery endpoint answers with gigabytes: the read stops at the cap, the login is 'unavailable'."""

    def endless() -> Iterator[bytes]:
        while True:
            yield b" " * 65536

    relying_party = rp(provider)
    relying_party._http = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, content=endless())))
    with pytest.raises(OidcUnavailable, match="AnswerTooLarge"):
        relying_party.metadata()


def test_attack_a_self_edited_display_name_does_not_become_the_actor(provider: FakeProvider) -> None:
    """Many providers let people edit their own ``name``: Anna renames herself "Carla Novak" and approves
    tickets. Histories name her by the provider-controlled username unless IT opts into ``name``, and no
    claim can reorder or hide characters to pass for someone else."""
    relying_party = rp(provider)
    spoofed = claims(name="Carla Novak")
    assert identity_from_claims(spoofed, relying_party.settings).display_name == "anna"  # type: ignore[union-attr]
    reordered = claims(preferred_username="\u202eallrac\u200b\n", email="anna@rathaus.example")
    assert identity_from_claims(reordered, relying_party.settings).display_name == "allrac"  # type: ignore[union-attr]
    hidden = claims(preferred_username="\u200b\u202e\x00", email="anna@rathaus.example")
    assert identity_from_claims(hidden, relying_party.settings).display_name == "anna@rathaus.example"  # type: ignore[union-attr]
    bare = {k: v for k, v in claims().items() if k not in ("preferred_username", "email")}
    assert identity_from_claims(bare, relying_party.settings).display_name == "f3c1-subject"  # type: ignore[union-attr]
    directory_names = rp(provider, name_claims=["name", "preferred_username"]).settings
    assert identity_from_claims(spoofed, directory_names).display_name == "Carla Novak"  # type: ignore[union-attr]


# --- a slow or unreachable provider: no login waits for another's request --------------------------


class Held:
    """A provider whose endpoints ending in ``paths`` hang until :attr:`release` is set, then fail as an
    unreachable provider does; :attr:`reached` is released once per request that arrived there."""

    def __init__(self, serve: Callable[[httpx.Request], httpx.Response], *paths: str) -> None:
        self.serve, self.paths = serve, paths
        self.release = threading.Event()
        self.reached = threading.Semaphore(0)
        self.requests = 0
        self._lock = threading.Lock()

    def handler(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith(self.paths):
            return self.serve(request)
        with self._lock:
            self.requests += 1
        self.reached.release()
        self.release.wait()
        raise httpx.ConnectTimeout("provider unreachable")

    def await_request(self) -> None:
        assert self.reached.acquire(timeout=30), "no request reached the provider"


class Clock:
    def __init__(self) -> None:
        self.now = float(NOW)

    def __call__(self) -> float:
        return self.now


def held_rp(held: Held, clock: Callable[[], float] = lambda: float(NOW), **overrides: Any) -> OidcProvider:
    return OidcProvider(
        settings(**overrides), http=httpx.Client(transport=httpx.MockTransport(held.handler)), clock=clock
    )


def answered(future: Future[Any]) -> BaseException | None:
    """What ``future`` raised, once it is done (the timeout only turns a hang into a failure)."""
    return future.exception(timeout=30)


def test_attack_logins_do_not_wait_for_another_logins_discovery_fetch(provider: FakeProvider) -> None:
    """While one login waits for a hanging provider, every other login is answered at once instead of
    queueing behind it for a request thread each; the provider is asked once."""
    held = Held(provider.handler, "/openid-configuration")
    relying_party = held_rp(held)
    with ThreadPoolExecutor(4) as pool:
        try:
            first = pool.submit(relying_party.authorization_request)
            held.await_request()
            others = [pool.submit(relying_party.authorization_request) for _ in range(3)]
            refused = [answered(f) for f in others]
            assert all(isinstance(e, OidcUnavailable) for e in refused), refused
            assert "still being fetched" in str(refused[0])
            assert held.requests == 1
        finally:
            held.release.set()
        assert isinstance(answered(first), OidcUnavailable)


def test_a_failed_fetch_is_remembered_briefly_then_tried_again(provider: FakeProvider) -> None:
    held, clock = Held(provider.handler, "/openid-configuration"), Clock()
    held.release.set()  # the provider refuses connections at once
    relying_party = held_rp(held, clock)
    for _ in range(5):
        with pytest.raises(OidcUnavailable, match="ConnectTimeout"):
            relying_party.authorization_request()
    assert held.requests == 1
    clock.now += RETRY_AFTER_FAILURE_S
    held.paths = ()  # the provider is back
    assert relying_party.authorization_request().url.startswith(f"{ISSUER}/auth?")


def test_an_expired_discovery_document_is_served_while_it_is_refetched_and_when_that_fails(
    provider: FakeProvider,
) -> None:
    held, clock = Held(provider.handler), Clock()
    relying_party = held_rp(held, clock)
    relying_party.authorization_request()
    clock.now += relying_party.settings.metadata_cache_s + 1
    held.paths = ("/openid-configuration",)
    with ThreadPoolExecutor(2) as pool:
        try:
            refresh = pool.submit(relying_party.metadata)
            held.await_request()
            assert pool.submit(relying_party.metadata).result(timeout=30)["issuer"] == ISSUER  # the held copy, at once
        finally:
            held.release.set()
        assert refresh.result(timeout=30)["issuer"] == ISSUER
    assert relying_party.authorization_request().url.startswith(f"{ISSUER}/auth?")
    assert held.requests == 1


def test_attack_logins_do_not_wait_for_another_logins_key_fetch(provider: FakeProvider) -> None:
    held = Held(provider.handler, "/certs")
    relying_party = held_rp(held)
    token = provider.sign(claims())
    with ThreadPoolExecutor(3) as pool:
        try:
            first = pool.submit(relying_party.validate_id_token, token, "n-123")
            held.await_request()
            others = [answered(pool.submit(relying_party.validate_id_token, token, "n-123")) for _ in range(2)]
            assert all(isinstance(e, OidcUnavailable) and "still being fetched" in str(e) for e in others), others
        finally:
            held.release.set()
        assert isinstance(answered(first), OidcUnavailable)
    assert held.requests == 1


def test_attack_code_exchanges_beyond_the_bound_are_refused_at_once(provider: FakeProvider) -> None:
    """Anyone can send a callback: with the token endpoint hanging, only ``max_pending_exchanges`` of them wait
    for it (each on a request thread); the next is refused unchecked."""
    held = Held(provider.handler, "/token")
    relying_party = held_rp(held, max_pending_exchanges=2)
    relying_party.metadata()
    with ThreadPoolExecutor(3) as pool:
        try:
            waiting = [pool.submit(relying_party.exchange, f"code-{i}", "verifier") for i in range(2)]
            held.await_request()
            held.await_request()
            assert isinstance(answered(pool.submit(relying_party.exchange, "code-3", "verifier")), OidcBusy)
            assert held.requests == 2
        finally:
            held.release.set()
        assert all(type(answered(f)) is OidcUnavailable for f in waiting)
    provider.token_answer = (200, {"id_token": "x.y.z"})
    held.paths = ()
    assert relying_party.exchange("code-4", "verifier")["id_token"] == "x.y.z"  # places are given back
