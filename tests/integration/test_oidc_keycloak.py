"""Single sign-on against a real Keycloak: the authorization code flow with PKCE, end to end.

A person's browser is played by an httpx client that opens the login page, submits the form and
stops at the redirect back to fleetpulse, so the code, state and tokens are exactly what a browser
would carry.
"""

from __future__ import annotations

import re
import time
from html import unescape
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from fleetpulse.alerts.oidc import OidcError, OidcProvider, OidcSettings, identity_from_claims
from tests.harness import STATE

pytestmark = pytest.mark.integration

CALLBACK = "http://127.0.0.1:8080/auth/callback"  # registered in fleetpulse-realm.json
PASSWORDS = {"anna": "anna-local-pw", "ben": "ben-local-pw", "carla": "carla-local-pw", "nobody": "nobody-local-pw"}


def oidc_settings(keycloak_url: str) -> OidcSettings:
    return OidcSettings(
        issuer=f"{keycloak_url}/realms/fleetpulse",
        client_id="fleetpulse-page",
        client_secret="local-test-client-secret",  # type: ignore[arg-type]
        redirect_url=CALLBACK,
        post_logout_redirect_url="http://127.0.0.1:8080/auth/logged-out",
        roles={
            "fleetpulse-fleet-managers": "fleet_manager",
            "fleetpulse-it-support": "it_support",
            "fleetpulse-admins": "admin",
        },
        sites={"site-rathaus": "Rathaus", "site-schule-nord": "Schule Nord", "fleetpulse-admins": "*"},
        allow_insecure_http=True,
    )


def browser_login(authorization_url: str, username: str) -> dict[str, str]:
    """Open the provider's login page, submit the form, return the query of the redirect back."""
    with httpx.Client(timeout=120, follow_redirects=False) as browser:
        page = browser.get(authorization_url)
        assert page.status_code == 200, page.text[:500]
        action = re.search(r'<form[^>]*id="kc-form-login"[^>]*action="([^"]+)"', page.text)
        assert action, page.text[:2000]
        # Browsers send Secure cookies to http://127.0.0.1 (a secure context); httpx does not, so send them by hand.
        cookies = "; ".join(f"{cookie.name}={cookie.value}" for cookie in browser.cookies.jar)
        answer = browser.post(
            unescape(action.group(1)),
            data={"username": username, "password": PASSWORDS[username]},
            headers={"Cookie": cookies},
        )
        assert answer.status_code == 302, answer.text[:500]
        location = answer.headers["location"]
    assert location.startswith(CALLBACK)
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


@pytest.fixture(scope="module")
def provider(keycloak_url: str) -> OidcProvider:
    return OidcProvider(oidc_settings(keycloak_url), http=httpx.Client(timeout=120))


def login(provider: OidcProvider, username: str) -> tuple[dict[str, str], str, str]:
    request = provider.authorization_request()
    back = browser_login(request.url, username)
    assert back["state"] == request.state
    return back, request.code_verifier, request.nonce


@pytest.mark.parametrize(
    ("username", "role", "sites"),
    [("anna", "fleet_manager", {"Rathaus"}), ("ben", "it_support", {"Schule Nord"}), ("carla", "admin", {"*"})],
)
def test_login_yields_the_mapped_role_and_sites(
    provider: OidcProvider, username: str, role: str, sites: set[str]
) -> None:
    back, verifier, nonce = login(provider, username)
    tokens = provider.exchange(back["code"], verifier)
    claims = provider.validate_id_token(tokens["id_token"], nonce)
    identity = identity_from_claims(claims, provider.settings)
    assert identity is not None
    assert identity.issuer == provider.settings.issuer
    assert identity.subject == claims["sub"]
    assert (identity.role, set(identity.sites)) == (role, sites)


def test_a_person_without_mapped_groups_gets_no_identity(provider: OidcProvider) -> None:
    back, verifier, nonce = login(provider, "nobody")
    claims = provider.validate_id_token(provider.exchange(back["code"], verifier)["id_token"], nonce)
    assert identity_from_claims(claims, provider.settings) is None


def test_code_without_the_matching_pkce_verifier_is_refused(provider: OidcProvider) -> None:
    back, _, _ = login(provider, "anna")
    with pytest.raises(OidcError, match="invalid_grant"):
        provider.exchange(back["code"], "an-intercepted-code-without-its-verifier-" + "x" * 20)


def test_a_code_works_once(provider: OidcProvider) -> None:
    back, verifier, _ = login(provider, "anna")
    provider.exchange(back["code"], verifier)
    with pytest.raises(OidcError, match="invalid_grant"):
        provider.exchange(back["code"], verifier)


def test_token_for_another_login_attempt_fails_the_nonce(provider: OidcProvider) -> None:
    back, verifier, _ = login(provider, "anna")
    tokens = provider.exchange(back["code"], verifier)
    with pytest.raises(OidcError, match="nonce"):
        provider.validate_id_token(tokens["id_token"], "nonce-of-another-login")


def test_rotated_signing_key_is_picked_up_without_restart(keycloak_url: str, provider: OidcProvider) -> None:
    back, verifier, nonce = login(provider, "anna")
    provider.validate_id_token(provider.exchange(back["code"], verifier)["id_token"], nonce)
    admin = (STATE / "keycloak" / "admin-password").read_text().strip()
    with httpx.Client(base_url=keycloak_url, timeout=120) as client:
        token = client.post(
            "/realms/master/protocol/openid-connect/token",
            data={"grant_type": "password", "client_id": "admin-cli", "username": "admin", "password": admin},
        ).json()["access_token"]
        created = client.post(
            "/admin/realms/fleetpulse/components",
            headers={"Authorization": f"Bearer {token}"},
            json={
                "name": f"rotated-{nonce[:8]}",
                "providerId": "rsa-generated",
                "providerType": "org.keycloak.keys.KeyProvider",
                # a priority above every key of earlier runs: the new key signs from now on
                "config": {"priority": [str(int(time.time()))], "keySize": ["2048"], "algorithm": ["RS256"]},
            },
        )
        assert created.status_code == 201, created.text
    back, verifier, nonce = login(provider, "anna")
    claims = provider.validate_id_token(provider.exchange(back["code"], verifier)["id_token"], nonce)
    assert claims["preferred_username"] == "anna"


def test_rp_initiated_logout_url_is_accepted_by_the_provider(provider: OidcProvider) -> None:
    back, verifier, _ = login(provider, "anna")
    tokens = provider.exchange(back["code"], verifier)
    url = provider.end_session_url(tokens["id_token"])
    assert url is not None
    answer = httpx.get(url, timeout=120)
    assert answer.status_code in (200, 302), answer.text[:500]
