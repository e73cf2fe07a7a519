"""Login and logout of the page: single sign-on (OIDC code flow with PKCE) or the local login form.

Both end in the same server-side session (:mod:`fleetpulse.alerts.api.sessions`). A login that
cannot complete ends on a page that says why and offers a new start; it never redirects back
into another login, so a person without a role cannot end up in a loop.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from fleetpulse.alerts.api import access
from fleetpulse.alerts.api.auth import Authenticator, AuthFailure, Principal, throttle_scope
from fleetpulse.alerts.api.sessions import LOGIN_COOKIE, LOGIN_PATH, PageSessions
from fleetpulse.alerts.oidc import (
    NO_DEPARTMENT,
    NO_DEPARTMENT_VALUE,
    OidcBusy,
    OidcError,
    OidcProvider,
    OidcUnavailable,
    display_name,
    identity_from_claims,
    refusal,
)
from fleetpulse.alerts.settings import ApiSettings
from fleetpulse.alerts.store.sessions import StoredPendingLogin, StoredSession
from fleetpulse.alerts.web.templating import render

router = APIRouter(tags=["login"], include_in_schema=False)
log = logging.getLogger(__name__)
Text = Annotated[str, Form(max_length=256)]
ACTOR_MAX = 128
"""A display name longer than the audit trail's actor column is cut (the subject identifies the person)."""
_FORM_ERRORS = {
    429: "Too many failed logins; try again later.",
    503: "Too many logins are being checked right now; try again in a moment.",
}


def safe_next(target: str | None) -> str:
    """Only a path of this site: an attacker's ``next=https://evil`` or ``//evil`` becomes ``/``."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")) or len(target) > 500:
        return "/"
    return target if target.isprintable() else "/"


def _message(title: str, text: str, status_code: int, action: tuple[str, str] | None = None) -> HTMLResponse:
    return render("message.html", status_code, title=title, text=text, action=action)


def _open_session(
    request: Request, response: Response, principal: Principal, method: str, id_token: str | None
) -> None:
    sessions: PageSessions = request.app.state.page_sessions
    record = StoredSession(
        secrets.token_urlsafe(32),
        principal.name,
        principal.role,
        principal.sites,
        principal.departments,
        method,
        principal.issuer,
        principal.subject,
        id_token,
    )
    sessions.open(response, record)
    access.login_succeeded(request, principal, method)


@router.get("/auth/login", response_class=HTMLResponse)
def login_page(
    request: Request,
    next_path: Annotated[str | None, Query(alias="next", max_length=500)] = None,
    sso: bool = False,
) -> Response:
    """Single sign-on starts at once; with the local login form enabled, the form (and a single sign-on button)."""
    api: ApiSettings = request.app.state.api_settings
    provider: OidcProvider | None = request.app.state.oidc
    target = safe_next(next_path)
    if provider is not None and (sso or not api.login_form):
        return _start_sso(request, provider, target)
    if not api.login_form:
        return _message("No login for people", "This service is configured for machine access only.", 404)
    csrf = secrets.token_urlsafe(32)
    response = render("login.html", 200, csrf=csrf, next_path=target, sso=provider is not None, error=None)
    sessions: PageSessions = request.app.state.page_sessions
    sessions.cookies.set(response, LOGIN_COOKIE, csrf, int(api.session.login_timeout.total_seconds()), LOGIN_PATH)
    return response


def _start_sso(request: Request, provider: OidcProvider, target: str) -> Response:
    """A pending login and the redirect to the provider; none for an address blocked for failed logins, and
    none while ``max_pending_logins`` are in progress (a 503 page: the table stays bounded)."""
    throttled = _throttled(request)
    if throttled is not None:
        return throttled
    sessions: PageSessions = request.app.state.page_sessions
    try:
        authorization = provider.authorization_request()
    except OidcError as exc:  # logged where the fetch failed: anyone may ask here, as often as they like
        return _unavailable(str(exc))
    response = RedirectResponse(authorization.url, status_code=302)
    pending = StoredPendingLogin(authorization.state, authorization.nonce, authorization.code_verifier, target)
    limits = provider.settings
    source = throttle_scope(access.source_address(request))
    if not sessions.start_login(
        response, pending, source, limits.max_pending_logins_per_address, limits.max_pending_logins
    ):
        busy = _message(
            "Too many logins in progress",
            "Too many logins are in progress right now. Please try again in a minute.",
            503,
            ("/auth/login", "Try again"),
        )
        busy.headers["Retry-After"] = "60"
        return busy
    return response


def _throttled(request: Request) -> Response | None:
    """429 while the caller's address is blocked for failed logins: nothing is checked, asked or recorded then."""
    authenticator: Authenticator = request.app.state.authenticator
    try:
        authenticator.throttle.check(None, access.source_address(request), authenticator.clock())
    except AuthFailure as failure:
        response = _message("Too many failed logins", "Too many failed logins; try again later.", 429)
        response.headers.update(failure.headers)
        return response
    return None


def _counted_failure(request: Request, method: str, reason: str, login: str | None = None) -> None:
    """Record a failed login, counted against the caller's address like a wrong token.

    Anyone can send what fails here (an expired form, a callback without a pending login, a made-up
    code with the state of a login they started), so past the address's free failures
    :func:`_throttled` refuses it unrecorded: a script cannot fill the audit trail, which keeps every
    record for years.
    """
    authenticator: Authenticator = request.app.state.authenticator
    if authenticator.throttle.token_failed(access.source_address(request), authenticator.clock()):
        access.login_failed(request, method, reason, login)


def _unchecked_failure(request: Request, method: str, reason: str, login: str | None = None) -> Response | None:
    """A login that failed before any credential was checked: 429 if throttled, else counted and recorded."""
    throttled = _throttled(request)
    if throttled is None:
        _counted_failure(request, method, reason, login)
    return throttled


def _unavailable(reason: str) -> HTMLResponse:
    return _message(
        "Login service unavailable",
        f"The organisation's login service cannot be reached right now ({reason}). Please try again in a few minutes.",
        503,
        ("/auth/login", "Try again"),
    )


@router.post("/auth/login", response_class=HTMLResponse)
def login_form(
    request: Request,
    username: Text,
    password: Text,
    csrf: Text,
    next_path: Annotated[str, Form(alias="next", max_length=500)] = "/",
) -> Response:
    """The local login form: CSRF-checked, throttled like HTTP basic, then the same session as single sign-on."""
    api: ApiSettings = request.app.state.api_settings
    sessions: PageSessions = request.app.state.page_sessions
    authenticator: Authenticator = request.app.state.authenticator
    if not api.login_form:
        return _message("No login form", "Log in with your organisation account.", 404, ("/auth/login", "Log in"))
    expected = sessions.cookies.unsign(sessions.cookies.read(request.headers.get("cookie"), LOGIN_COOKIE))
    if expected is None or not hmac.compare_digest(expected.encode(), csrf.encode()):
        throttled = _unchecked_failure(request, "local", "csrf", username)
        return throttled or _message("Login form expired", "Open the login page again.", 403, ("/auth/login", "Log in"))
    try:
        principal = authenticator.password_login(username, password, access.source_address(request))
    except AuthFailure as failure:
        unchecked = failure.status_code in (429, 503)  # throttled or busy: no password checked, nothing to record
        if not unchecked:
            access.login_failed(request, "local", "password", username)
        error = _FORM_ERRORS.get(failure.status_code, "Wrong name or password.")
        fresh = secrets.token_urlsafe(32)
        response = render(
            "login.html", failure.status_code, csrf=fresh, next_path=safe_next(next_path), sso=False, error=error
        )
        if unchecked:
            response.headers.update(failure.headers)
        sessions.cookies.set(response, LOGIN_COOKIE, fresh, int(api.session.login_timeout.total_seconds()), LOGIN_PATH)
        return response
    redirect = RedirectResponse(safe_next(next_path), status_code=303)
    sessions.cookies.clear(redirect, LOGIN_COOKIE, LOGIN_PATH)
    _open_session(request, redirect, principal, "local", None)
    return redirect


@router.get("/auth/callback", response_class=HTMLResponse)
def callback(
    request: Request,
    code: Annotated[str | None, Query(max_length=4096)] = None,
    state: Annotated[str | None, Query(max_length=512)] = None,
    error: Annotated[str | None, Query(max_length=128)] = None,
) -> Response:
    """The provider sends the browser back here: the pending login must be this browser's, and used once."""
    provider: OidcProvider | None = request.app.state.oidc
    sessions: PageSessions = request.app.state.page_sessions
    if provider is None:
        return _message("No single sign-on", "Single sign-on is not configured here.", 404)
    login_id = sessions.cookies.unsign(sessions.cookies.read(request.headers.get("cookie"), LOGIN_COOKIE))
    pending = sessions.store.take_login(login_id, sessions.clock()) if login_id else None
    restart = ("/auth/login", "Log in again")
    if pending is None:
        throttled = _unchecked_failure(request, "oidc", "no pending login in this browser")
        expired = "This login was not started in this browser or took too long."
        return throttled or _message("Login expired", expired, 400, restart)
    if state is None or not hmac.compare_digest(state.encode(), pending.state.encode()):
        throttled = _unchecked_failure(request, "oidc", "state mismatch")
        mismatch = "The answer from the login service does not match this login."
        return throttled or _message("Login refused", mismatch, 400, restart)
    if error is not None or code is None:
        reason = error if error and error.replace("_", "").isalnum() else "no code"
        throttled = _unchecked_failure(request, "oidc", f"provider: {reason}")
        return throttled or _message("Login refused", f"The login service refused the login ({reason}).", 403, restart)
    throttled = _throttled(request)  # before the provider is asked: a made-up code costs it a request
    if throttled is not None:
        return throttled
    try:
        tokens = provider.exchange(code, pending.code_verifier)
        claims = provider.validate_id_token(tokens["id_token"], pending.nonce)
    except OidcBusy as exc:  # refused before the provider was asked: nothing was checked
        return _unavailable(str(exc))
    except OidcUnavailable as exc:
        _counted_failure(request, "oidc", str(exc))
        return _unavailable(str(exc))
    except OidcError as exc:
        _counted_failure(request, "oidc", str(exc))
        return _message("Login refused", f"The login could not be completed: {exc}.", 403, restart)
    identity = identity_from_claims(claims, provider.settings)
    if identity is None:
        name, reason = display_name(claims, provider.settings), refusal(claims, provider.settings)
        _counted_failure(request, "oidc", reason, name)
        groups = ", ".join(sorted(provider.settings.roles)) or "a fleetpulse group"
        advice = {
            NO_DEPARTMENT: "your department group is not one fleetpulse knows, so it cannot tell which devices are "
            "yours. Ask IT to map your department group",
            NO_DEPARTMENT_VALUE: "your account names no department, and fleetpulse gives access only to people "
            "with one. Ask IT to add you to your department group",
        }.get(
            reason,
            "your account has no fleetpulse role or site. "
            f"Ask IT to add you to a fleetpulse role group ({groups}) and a site group",
        )
        response = _message(
            "No access to fleetpulse",
            f"You are logged in as {name}, but {advice}.",
            403,
            ("/auth/logout-provider", "Log out"),
        )
        sessions.cookies.clear(response, LOGIN_COOKIE, LOGIN_PATH)
        return response
    principal = Principal(
        identity.display_name[:ACTOR_MAX],
        identity.role,
        identity.sites,
        identity.departments,
        via="session",
        issuer=identity.issuer,
        subject=identity.subject,
    )
    redirect = RedirectResponse(safe_next(pending.next_path), status_code=303)
    sessions.cookies.clear(redirect, LOGIN_COOKIE, LOGIN_PATH)
    _open_session(request, redirect, principal, "oidc", tokens["id_token"])
    return redirect


@router.post("/auth/logout")
def logout(request: Request, csrf: Text) -> Response:
    """Ends the session here and, for single sign-on, at the provider (RP-initiated logout)."""
    sessions: PageSessions = request.app.state.page_sessions
    provider: OidcProvider | None = request.app.state.oidc
    found = sessions.find(request.headers.get("cookie"))
    if found is None:
        return RedirectResponse("/auth/logged-out", status_code=303)
    if not hmac.compare_digest(found.csrf_token.encode(), csrf.encode()):
        return _message("Logout refused", "The logout form is not from this page.", 403, ("/", "Back"))
    response: Response = RedirectResponse("/auth/logged-out", status_code=303)
    ended = sessions.end(request.headers.get("cookie"), response)
    if ended is not None:
        access.logged_out(request, ended)
    if provider is not None and ended is not None and ended.method == "oidc":
        try:
            end_session = provider.end_session_url(ended.id_token)
        except OidcError as exc:
            log.warning("provider logout unavailable", extra={"fields": {"error": str(exc)}})
            end_session = None
        if end_session is not None:
            response.headers["location"] = end_session
    return response


@router.get("/auth/logout-provider")
def logout_provider(request: Request) -> Response:
    """For a person the provider knows but fleetpulse does not (no role): end the provider's session."""
    provider: OidcProvider | None = request.app.state.oidc
    try:
        target = provider.end_session_url(None) if provider is not None else None
    except OidcError:
        target = None
    return RedirectResponse(target or "/auth/logged-out", status_code=303)


@router.get("/auth/logged-out", response_class=HTMLResponse)
def logged_out() -> HTMLResponse:
    return _message("Logged out", "You are logged out of fleetpulse.", 200, ("/auth/login", "Log in again"))
