"""OpenID Connect relying party for the fleet-manager page: authorization code flow with PKCE.

People log in with their organisation account (Keycloak, Entra ID, ADFS); fleetpulse keeps no
passwords for them. The provider's discovery document and signing keys are fetched and cached;
an ID token whose key id is unknown triggers one key refresh, so the provider can rotate keys
without a restart. Token signatures and claims are checked by joserfc (Authlib's JOSE library),
PKCE values come from Authlib. Roles and site scope come from the token's claims through a
configured mapping (:func:`identity_from_claims`): no mapped role or site, only department
groups that are not mapped, or (with ``require_department``) no department at all, means no access.

Anyone can start a login, so no login waits for the provider on another's behalf: the discovery
document and the keys are fetched by one request at a time (:class:`_Fetched`), a failed fetch is
remembered for :data:`RETRY_AFTER_FAILURE_S`, and at most ``max_pending_exchanges`` code exchanges
run at once. A slow or unreachable provider holds a few of the API's request threads, never the
ones tokens and sessions need.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import urlencode

import httpx
from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from fleetpulse.alerts import bounded_http
from fleetpulse.alerts.settings import ALL_SITES, OidcSettings, Role
from fleetpulse.logs import RefusalWarnings

__all__ = ["ALL_SITES", "OidcSettings"]  # re-exported: the RP's settings live with the API's

# Highest first: a person in several mapped groups gets the most capable role.
ROLE_ORDER: tuple[Role, ...] = ("admin", "fleet_manager", "it_support")
ANSWER_DEADLINE_S = 30.0
"""A whole answer of the provider, however steadily its bytes come (each network wait has its own 10 s timeout)."""
MAX_SUBJECT_CHARS = 255
"""OpenID Connect Core 1.0 §2: ``sub`` "MUST NOT exceed 255 ASCII characters"; sessions and the audit trail keep it whole."""
MAX_NAME_CHARS = 128
"""What a ticket history's actor column holds: a longer name would be cut short, and could then read as someone else's."""
RETRY_AFTER_FAILURE_S = 10.0
"""A failed fetch of the discovery document or the keys is answered from memory this long: while the provider is down,
logins fail at once instead of each waiting for it."""
BUSY_LOGGED_EVERY_S = 60.0
"""A flood of logins refused for ``max_pending_exchanges`` logs one warning per this interval, not one per request."""
NO_ROLE_OR_SITE = "no mapped role or site"
NO_DEPARTMENT = "no mapped department"
NO_DEPARTMENT_VALUE = "no department value"
"""The refusal under ``require_department``: the token names no department at all."""
SIGNING_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]


class OidcError(Exception):
    """A login that cannot complete; the message is safe to show (no tokens, no secrets)."""


class OidcUnavailable(OidcError):
    """The provider cannot be reached or answers with an error page: try again later, nothing is wrong with the login."""


class OidcBusy(OidcUnavailable):
    """``max_pending_exchanges`` logins are already waiting for the provider: this one was refused unchecked."""


log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Identity:
    """A person as the provider asserted them, with the role and scope fleetpulse grants."""

    issuer: str
    subject: str
    display_name: str
    role: Role
    sites: frozenset[str]
    departments: frozenset[str] = frozenset()

    @property
    def all_sites(self) -> bool:
        return ALL_SITES in self.sites


def _claim_values(claims: Mapping[str, Any], name: str) -> list[str]:
    """A claim as a list of strings; nested names ("realm_access.roles") follow objects."""
    value: Any = claims
    for part in name.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def identity_from_claims(claims: Mapping[str, Any], settings: OidcSettings) -> Identity | None:
    """The role and scope the mapping grants, or None when it grants no access (:func:`refusal` says why)."""
    role, sites, departments = _role(claims, settings), _sites(claims, settings), _departments(claims, settings)
    if role is None or not sites or departments is None:
        return None
    return Identity(str(claims["iss"]), str(claims["sub"]), display_name(claims, settings), role, sites, departments)


def refusal(claims: Mapping[str, Any], settings: OidcSettings) -> str:
    """Why :func:`identity_from_claims` grants no access, as the audit trail records it."""
    if _role(claims, settings) is None or not _sites(claims, settings):
        return NO_ROLE_OR_SITE
    return NO_DEPARTMENT if _department_values(claims, settings) else NO_DEPARTMENT_VALUE


def _role(claims: Mapping[str, Any], settings: OidcSettings) -> Role | None:
    granted = {settings.roles[v] for v in _claim_values(claims, settings.role_claim) if v in settings.roles}
    return next((r for r in ROLE_ORDER if r in granted), None)


def _sites(claims: Mapping[str, Any], settings: OidcSettings) -> frozenset[str]:
    return frozenset(settings.sites[v] for v in _claim_values(claims, settings.site_claim) if v in settings.sites)


def _departments(claims: Mapping[str, Any], settings: OidcSettings) -> frozenset[str] | None:
    """The mapped departments (none: every department of the person's sites), or None when the person carries
    department values and none of them is mapped: a department group IT has not mapped yet grants nothing,
    rather than every department of the site. With ``require_department``, no department value is None too.
    """
    if settings.department_claim is None:
        return frozenset()
    values = _department_values(claims, settings)
    if not values:
        return None if settings.require_department else frozenset()
    departments = frozenset(settings.departments[v] for v in values if v in settings.departments)
    return departments or None


def _department_values(claims: Mapping[str, Any], settings: OidcSettings) -> list[str]:
    """The person's department values, mapped or not. Where ``department_claim`` also carries the role or site
    groups, those are no department values; with ``department_prefix``, only values with the prefix are (the
    claim may hold any other group too)."""
    if settings.department_claim is None:
        return []
    others = set(settings.roles) if settings.department_claim == settings.role_claim else set()
    others |= set(settings.sites) if settings.department_claim == settings.site_claim else set()
    prefix = settings.department_prefix or ""
    return [
        v
        for v in _claim_values(claims, settings.department_claim)
        if v in settings.departments or (v not in others and v.startswith(prefix))
    ]


def display_name(claims: Mapping[str, Any], settings: OidcSettings) -> str:
    """The person as ticket histories and the login pages name them: the first of ``name_claims`` present
    (provider-controlled by default), else the subject, shown as :func:`visible_text`."""
    names = (visible_text(claims[k]) for k in settings.name_claims if isinstance(claims.get(k), str))
    return next((n for n in names if n), visible_text(str(claims["sub"])))


def visible_text(value: str) -> str:
    """``value`` without control, format and unassigned characters, whitespace collapsed: a name shown on a
    ticket history cannot reorder itself (U+202E) or hide characters to pass for someone else's."""
    kept = "".join(c if unicodedata.category(c)[0] != "C" else " " for c in value)
    return " ".join(kept.split())


@dataclass(frozen=True)
class AuthorizationRequest:
    """What the page keeps in the pending login until the provider redirects back."""

    url: str
    state: str
    nonce: str
    code_verifier: str


class _Fetched(Generic[T]):
    """One document the provider serves (discovery, signing keys), fetched by one request at a time.

    No request waits for another's fetch: while one runs, or for :data:`RETRY_AFTER_FAILURE_S` after one
    failed, the others get the copy held (past its age, unless a refresh was asked) or, without one, the
    failure at once.
    """

    def __init__(self, what: str, clock: Callable[[], float]) -> None:
        self.what = what
        self._clock = clock
        self._lock = threading.Lock()
        self._value: T | None = None
        self._fetched_at = 0.0
        self._fetching = False
        self._failure: tuple[type[OidcError], str] | None = None
        self._failed_at = 0.0

    def get(self, fetch: Callable[[], T], max_age: float = math.inf, refresh: bool = False) -> T:
        """The copy held if younger than ``max_age`` and no ``refresh`` is asked; else a fresh one, or OidcError."""
        with self._lock:
            now = self._clock()
            if self._value is not None and not refresh and now - self._fetched_at <= max_age:
                return self._value
            stale = None if refresh else self._value
            failed = self._failure is not None and 0 <= now - self._failed_at < RETRY_AFTER_FAILURE_S
            if failed or self._fetching:
                if stale is not None:
                    return stale
                if self._failure is not None and failed:
                    kind, message = self._failure
                    raise kind(message)  # a new exception each time: one raised by many threads grows its traceback
                raise OidcUnavailable(f"the provider's {self.what} is still being fetched for another login")
            self._fetching = True
        try:
            value = fetch()
        except OidcError as exc:
            log.error("single sign-on provider unavailable", extra={"fields": {"error": str(exc)}})
            with self._lock:
                self._fetching, self._failure, self._failed_at = False, (type(exc), str(exc)), self._clock()
            if stale is None:
                raise
            return stale
        except BaseException:
            with self._lock:
                self._fetching = False
            raise
        with self._lock:
            self._value, self._fetched_at, self._fetching, self._failure = value, self._clock(), False, None
        return value

    def clear(self) -> None:
        with self._lock:
            self._value = None


class OidcProvider:
    """Discovery, the authorization URL, the code exchange and ID-token validation for one provider."""

    def __init__(
        self, settings: OidcSettings, http: httpx.Client | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self._http = http or httpx.Client(timeout=10.0)
        self._clock = clock
        self._metadata: _Fetched[dict[str, Any]] = _Fetched("discovery document", clock)
        self._keys: _Fetched[KeySet] = _Fetched("signing keys", clock)
        self._exchanges = threading.BoundedSemaphore(settings.max_pending_exchanges)
        self._busy_refusals = RefusalWarnings(
            log, "logins refused: too many waiting for the provider's token endpoint", BUSY_LOGGED_EVERY_S
        )

    def metadata(self) -> dict[str, Any]:
        return self._metadata.get(self._fetch_metadata, max_age=self.settings.metadata_cache_s)

    def _fetch_metadata(self) -> dict[str, Any]:
        url = self.settings.issuer.rstrip("/") + "/.well-known/openid-configuration"
        document = self._get_json(url, "discovery document")
        if document.get("issuer") != self.settings.issuer:
            raise OidcError("the provider's discovery document names another issuer")
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(document.get(key), str):
                raise OidcError(f"the provider's discovery document has no {key}")
        self._keys.clear()  # the new document may name other keys
        return document

    def authorization_request(self) -> AuthorizationRequest:
        state, nonce, verifier = generate_token(32), generate_token(32), generate_token(64)
        query = {
            "response_type": "code",
            "client_id": self.settings.client_id,
            "redirect_uri": self.settings.redirect_url,
            "scope": " ".join(self.settings.scopes),
            "state": state,
            "nonce": nonce,
            "code_challenge": create_s256_code_challenge(verifier),
            "code_challenge_method": "S256",
        }
        return AuthorizationRequest(
            f"{self.metadata()['authorization_endpoint']}?{urlencode(query)}", state, nonce, verifier
        )

    def exchange(self, code: str, code_verifier: str) -> dict[str, Any]:
        """Trade the authorization code for tokens at the provider's token endpoint."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.settings.redirect_url,
            "code_verifier": code_verifier,
            "client_id": self.settings.client_id,
        }
        secret = self.settings.client_secret
        auth = None if secret is None else httpx.BasicAuth(self.settings.client_id, secret.get_secret_value())
        endpoint = self.metadata()["token_endpoint"]
        if not self._exchanges.acquire(blocking=False):
            raise self._busy()
        try:
            response = bounded_http.request(
                "POST", endpoint, client=self._http, data=form, auth=auth, deadline_s=ANSWER_DEADLINE_S
            )
        except httpx.HTTPError as exc:
            raise OidcUnavailable(f"the provider's token endpoint is unreachable ({type(exc).__name__})") from None
        finally:
            self._exchanges.release()
        if response.status_code != 200:
            error = _safe_error(response)
            raise OidcError(f"the provider refused the login (HTTP {response.status_code}{error})")
        try:
            tokens = response.json()
        except ValueError:
            # a maintenance page or a proxy's error page in front of the provider, answered with 200
            raise OidcUnavailable("the provider's token endpoint did not answer with JSON") from None
        if not isinstance(tokens, dict) or not isinstance(tokens.get("id_token"), str):
            raise OidcError("the provider's answer holds no ID token")
        return tokens

    def validate_id_token(self, id_token: str, nonce: str) -> dict[str, Any]:
        """Signature (provider's keys), issuer, audience, expiry, issued-at and nonce, or OidcError."""
        try:
            token = self._decode(id_token)
        except JoseError as exc:
            raise OidcError(f"the ID token is not valid ({exc.error})") from None
        claims = dict(token.claims)
        registry = jwt.JWTClaimsRegistry(
            now=int(self._clock()),
            leeway=self.settings.clock_skew_s,
            iss={"essential": True, "value": self.settings.issuer},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            nonce={"essential": True, "value": nonce},
        )
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise OidcError(
                f"the ID token is not valid ({exc.error}: {exc.description or ''})".rstrip(": )") + ")"
            ) from None
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if self.settings.client_id not in audiences:
            raise OidcError("the ID token was issued for another client")
        if len(audiences) > 1 and claims.get("azp") != self.settings.client_id:
            raise OidcError("the ID token's authorized party is another client")
        _check_stored_claims(claims, self.settings)
        return claims

    def end_session_url(self, id_token_hint: str | None) -> str | None:
        """The provider's logout URL (RP-initiated logout), or None if it offers none."""
        endpoint = self.metadata().get("end_session_endpoint")
        if not isinstance(endpoint, str):
            return None
        query = {"client_id": self.settings.client_id}
        if id_token_hint:
            query["id_token_hint"] = id_token_hint
        if self.settings.post_logout_redirect_url:
            query["post_logout_redirect_uri"] = self.settings.post_logout_redirect_url
        return f"{endpoint}?{urlencode(query)}"

    def _decode(self, id_token: str) -> jwt.Token:
        try:
            return jwt.decode(id_token, self._key_set(refresh=False), algorithms=SIGNING_ALGORITHMS)
        except InvalidKeyIdError:
            # The provider may have rotated its keys since they were fetched: refetch once.
            return jwt.decode(id_token, self._key_set(refresh=True), algorithms=SIGNING_ALGORITHMS)

    def _key_set(self, refresh: bool) -> KeySet:
        uri = self.metadata()["jwks_uri"]
        return self._keys.get(lambda: self._fetch_keys(uri), refresh=refresh)

    def _fetch_keys(self, uri: str) -> KeySet:
        keys = self._get_json(uri, "signing keys").get("keys")
        if not isinstance(keys, list):
            raise OidcError("the provider's signing keys are not a key set")
        usable = [k for k in keys if isinstance(k, dict) and k.get("use", "sig") == "sig"]
        try:
            return KeySet.import_key_set({"keys": usable})
        except (JoseError, ValueError, TypeError) as exc:
            raise OidcError(f"the provider's signing keys cannot be read ({type(exc).__name__})") from None

    def _busy(self) -> OidcBusy:
        """The refusal, with one warning per :data:`BUSY_LOGGED_EVERY_S` however many there are."""
        self._busy_refusals.refused({"max_pending_exchanges": self.settings.max_pending_exchanges})
        return OidcBusy("too many logins are waiting for the provider")

    def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            response = bounded_http.request("GET", url, client=self._http, deadline_s=ANSWER_DEADLINE_S)
        except httpx.HTTPError as exc:
            raise OidcUnavailable(f"the provider's {what} cannot be fetched ({type(exc).__name__})") from None
        if not 200 <= response.status_code < 300:
            raise OidcUnavailable(f"the provider's {what} cannot be fetched (HTTP {response.status_code})")
        try:
            document = response.json()
        except ValueError as exc:
            raise OidcError(f"the provider's {what} cannot be read ({type(exc).__name__})") from None
        if not isinstance(document, dict):
            raise OidcError(f"the provider's {what} is not a JSON object")
        return document


def _check_stored_claims(claims: Mapping[str, Any], settings: OidcSettings) -> None:
    """The subject and the name fleetpulse stores must fit their columns whole: refused here, a login
    fails with a reason instead of a database error, and nothing is stored cut short."""
    subject = claims.get("sub")
    if (
        not isinstance(subject, str)
        or not 0 < len(subject) <= MAX_SUBJECT_CHARS
        or any(unicodedata.category(c)[0] == "C" for c in subject)
    ):
        raise OidcError(f"the ID token's subject is not 1 to {MAX_SUBJECT_CHARS} printable characters")
    if len(display_name(claims, settings)) > MAX_NAME_CHARS:
        raise OidcError(f"the ID token names the person with more than {MAX_NAME_CHARS} characters")


def _safe_error(response: bounded_http.Answer) -> str:
    """The OAuth error code only: a provider's description may echo what was sent."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return ""
    return f": {error}" if isinstance(error, str) and error.isascii() and len(error) < 64 else ""
