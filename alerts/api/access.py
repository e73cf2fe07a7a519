"""Access events the audit trail records: one function per event, called from exactly one place each.

Each appends a record to the ticket store's hash-chained audit log (who, as the identity
provider asserted them, from which address, in which request) and writes a structured log line.
Ticket transitions are recorded by the ticket service itself, in the transaction of the change,
with the context :func:`audit_context` builds.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Sequence
from typing import Any, Literal

from fastapi import Request

from fleetpulse.alerts.api.auth import Principal, RequestHead, client_address
from fleetpulse.alerts.settings import ApiSettings
from fleetpulse.alerts.store.audit import AuditActor, AuditContext, AuditKind
from fleetpulse.alerts.store.repository import TicketFilter, TicketStore
from fleetpulse.alerts.store.sessions import StoredSession

log = logging.getLogger("fleetpulse.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
PASSWORD_METHODS = frozenset({"local", "basic"})
"""Logins naming an account: a failure keeps the name only if it is a configured account."""


def source_address(request: Request) -> str:
    """The caller's address as the login throttle sees it (behind trusted proxies: the client's)."""
    api: ApiSettings = request.app.state.api_settings
    peer = request.client.host if request.client else None
    return client_address(peer, request.headers.get("x-forwarded-for"), api.limits.trusted_proxies)


def request_id(request: Request) -> str:
    """The proxy's ``X-Request-ID`` when it is a plain token, else one made here (kept for the request)."""
    existing = getattr(request.state, "request_id", None)
    if isinstance(existing, str):
        return existing
    offered = request.headers.get("x-request-id", "")
    rid = offered if _REQUEST_ID.match(offered) else uuid.uuid4().hex
    request.state.request_id = rid
    return rid


def actor(principal: Principal) -> AuditActor:
    """The identity as asserted: the provider's issuer and subject for single sign-on, else a local account."""
    if principal.issuer and principal.subject:
        return AuditActor(principal.issuer, principal.subject, principal.name, principal.role)
    return AuditActor.local(principal.name, principal.role)


def audit_context(request: Request, principal: Principal) -> AuditContext:
    return AuditContext(actor(principal), request_id(request), source_address(request))


def _record(request: Request, kind: AuditKind, who: AuditActor, payload: dict[str, Any]) -> None:
    store: TicketStore = request.app.state.store
    store.audit.record(kind, who, request_id(request), source_address(request), payload)


def login_succeeded(request: Request, principal: Principal, method: str) -> None:
    """A page session was opened (``method``: ``oidc`` or ``local``)."""
    payload = {"method": method, "sites": sorted(principal.sites), "departments": sorted(principal.departments)}
    _record(request, AuditKind.LOGIN_SUCCESS, actor(principal), payload)
    log.info("login", extra={"fields": {"outcome": "success", "user": principal.name, **payload}})


def login_failed(request: Request, method: str, reason: str, login: str | None = None) -> None:
    """A login that opened no session: its credentials or token were refused, or it could not even be checked
    (an expired form, a callback without a pending login).

    Throttled attempts (429) never reach here, so spraying cannot flood the trail: the page counts
    the failures no password check counts against the caller's address. A typed name that is no
    configured account is not kept: people type their password into the name field.
    """
    store: TicketStore = request.app.state.store
    api: ApiSettings = request.app.state.api_settings
    _login_failed(store, api, request_id(request), source_address(request), method, reason, login)


def _login_failed(
    store: TicketStore, api: ApiSettings, rid: str, source: str, method: str, reason: str, login: str | None
) -> None:
    known = method not in PASSWORD_METHODS or any(user.name == login for user in api.users)
    name = login[:128] if login and known else "(unknown)"
    payload = {"method": method, "reason": reason[:300]}
    store.audit.record(AuditKind.LOGIN_FAILURE, AuditActor.local(name), rid, source, payload)
    log.warning("login", extra={"fields": {"outcome": "failure", "user": name, **payload}})


class HeaderTrail:
    """The records of API clients' logins, which are checked from the request headers alone
    (:class:`~fleetpulse.alerts.api.auth.Authenticator`, on behalf of the gate): refused HTTP basic
    logins and bearer tokens, and the use of both. Never the password or token itself."""

    def __init__(self, store: TicketStore, api: ApiSettings) -> None:
        self.store = store
        self.api = api

    def login_failed(self, head: RequestHead, method: Literal["basic", "bearer"], login: str | None) -> None:
        reason = "password" if method == "basic" else "token"
        _login_failed(self.store, self.api, head.request_id, head.address, method, reason, login)

    def credentials_used(self, head: RequestHead, principal: Principal) -> None:
        """A bearer token or HTTP basic login authenticated a request (the authenticator calls this once an hour
        per login and address)."""
        token = principal.via == "bearer"
        kind = AuditKind.TOKEN_USE if token else AuditKind.BASIC_USE
        payload = {
            "method": principal.via,
            "sites": sorted(principal.sites),
            "departments": sorted(principal.departments),
        }
        self.store.audit.record(kind, actor(principal), head.request_id, head.address, payload)
        log.info("token use" if token else "basic use", extra={"fields": {"user": principal.name, **payload}})


def logged_out(request: Request, session: StoredSession) -> None:
    """A page session ended at its owner's request (expired sessions just lapse)."""
    if session.issuer and session.subject:
        who = AuditActor(session.issuer, session.subject, session.name, session.role)
    else:
        who = AuditActor.local(session.name, session.role)
    payload = {"method": session.method}
    _record(request, AuditKind.LOGOUT, who, payload)
    log.info("logout", extra={"fields": {"user": session.name, **payload}})


def outbox_retried(request: Request, principal: Principal, ids: Sequence[int] | None, rescheduled: int) -> None:
    """An administrator made owed messages due now: deliveries to ITSMs (and their personal data) go out."""
    payload = {"ids": list(ids) if ids is not None else "all pending", "rescheduled": rescheduled}
    _record(request, AuditKind.OUTBOX_RETRY, actor(principal), payload)
    log.info("outbox retry", extra={"fields": {"user": principal.name, **payload}})


def csv_exported(request: Request, principal: Principal, flt: TicketFilter, rows: int) -> None:
    """Personal data leaves the system: who exported which filter (scope included) and how many rows."""
    payload = {"filter": flt.model_dump(mode="json"), "rows": rows}
    _record(request, AuditKind.CSV_EXPORT, actor(principal), payload)
    log.info("csv export", extra={"fields": {"user": principal.name, **payload}})


def bulk_transitioned(principal: Principal, ticket_ids: Sequence[int], to_state: str) -> None:
    """A bulk action that was applied; the ticket service recorded it in the trail with the change."""
    fields = {"user": principal.name, "tickets": list(ticket_ids), "to": to_state}
    log.info("bulk transition", extra={"fields": fields})
