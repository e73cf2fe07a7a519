"""Access events the audit trail records: one function per event, called from exactly one place each.

Each writes a structured log line now; the audit log hooks in here, so the routes never change.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from fastapi import Request

from fleetpulse.alerts.api.auth import Principal, client_address
from fleetpulse.alerts.settings import ApiSettings
from fleetpulse.alerts.store.repository import TicketFilter

log = logging.getLogger("fleetpulse.access")


def source_address(request: Request) -> str:
    """The caller's address as the login throttle sees it (behind trusted proxies: the client's)."""
    api: ApiSettings = request.app.state.api_settings
    peer = request.client.host if request.client else None
    return client_address(peer, request.headers.get("x-forwarded-for"), api.limits.trusted_proxies)


def login_succeeded(principal: Principal, method: str, address: str) -> None:
    """A page session was opened (``method``: ``oidc`` or ``local``)."""
    log.info(
        "login",
        extra={
            "fields": {
                "outcome": "success",
                "method": method,
                "user": principal.name,
                "issuer": principal.issuer,
                "subject": principal.subject,
                "role": principal.role,
                "sites": sorted(principal.sites),
                "address": address,
            }
        },
    )


def login_failed(method: str, reason: str, address: str, login: str | None = None) -> None:
    """A login that opened no session: wrong password, provider refusal, bad token, no role or site."""
    fields = {"outcome": "failure", "method": method, "reason": reason, "address": address, "user": login}
    log.warning("login", extra={"fields": fields})


def csv_exported(principal: Principal, flt: TicketFilter, rows: int, address: str) -> None:
    """Personal data leaves the system: who exported which filter (scope included) and how many rows."""
    fields = {"user": principal.name, "filter": flt.model_dump(mode="json"), "rows": rows, "address": address}
    log.info("csv export", extra={"fields": fields})


def bulk_transitioned(principal: Principal, ticket_ids: Sequence[int], to_state: str, address: str) -> None:
    """A bulk action that was applied (all of ``ticket_ids``)."""
    fields = {"user": principal.name, "tickets": list(ticket_ids), "to": to_state, "address": address}
    log.info("bulk transition", extra={"fields": fields})
