"""Access events the audit trail records: one function per event, called from exactly one place each.

Each writes a structured log line now; the audit log hooks in here, so the routes never change.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from fleetpulse.alerts.api.auth import Principal
from fleetpulse.alerts.store.repository import TicketFilter

log = logging.getLogger("fleetpulse.access")


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


def csv_exported(principal: Principal, flt: TicketFilter, rows: int) -> None:
    """Personal data leaves the system: who exported which filter (scope included) and how many rows."""
    log.info(
        "csv export",
        extra={"fields": {"user": principal.name, "filter": flt.model_dump(mode="json"), "rows": rows}},
    )


def bulk_transitioned(principal: Principal, ticket_ids: Sequence[int], to_state: str) -> None:
    """A bulk action that was applied (all of ``ticket_ids``)."""
    log.info(
        "bulk transition",
        extra={"fields": {"user": principal.name, "tickets": list(ticket_ids), "to": to_state}},
    )
