"""HTML routes of the fleet-manager page; they read the same store as the JSON API and need the same roles.

Everything shown keeps to the caller's scope: the queue, the filter choices, the fleet-wide
problems and the device page (another site's device is "not found", as if it did not exist).
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from fastapi.responses import HTMLResponse, Response

from fleetpulse.alerts.api.auth import READ_ROLES, WRITE_ROLES, Principal, require
from fleetpulse.alerts.forecast import scoped_forecast
from fleetpulse.alerts.policy import AlertPolicy
from fleetpulse.alerts.store.repository import OPEN_STATES, StormView, TicketFilter, TicketStore
from fleetpulse.alerts.tickets import TRANSITIONS
from fleetpulse.alerts.web.plot import risk_svg
from fleetpulse.alerts.web.templating import HERE, render
from fleetpulse.contract.v1 import Component, TicketState

STATIC = {"app.js": "text/javascript", "app.css": "text/css"}
STATIC_PATHS = frozenset(f"/static/{name}" for name in STATIC)
"""Served without a login: the login page needs its style sheet, and the files are public anyway."""
Reader = Annotated[Principal, Depends(require(*READ_ROLES))]
FilterText = Annotated[str | None, Query(max_length=128)]
router = APIRouter(tags=["web"])
FORECAST_ROWS = 40
"""Rows of the parts forecast on the page (most expected first); the API and CLI give all."""


def visible_storms(store: TicketStore, principal: Principal) -> list[StormView]:
    """Fleet-wide problems; a scoped caller sees only those with tickets in their scope."""
    storms = store.storms()
    if principal.unrestricted:
        return storms
    groups = store.storm_groups_of(principal.scoped(TicketFilter()))
    return [g for g in storms if g.group_id in groups]


def visible_facets(store: TicketStore, principal: Principal) -> dict[str, list[str]]:
    """Filter choices from the caller's scope only: no other site's, department's or hardware model's name."""
    return store.facets(principal.scoped(TicketFilter()))


@router.get("/", response_class=HTMLResponse)
def queue(
    request: Request,
    principal: Reader,
    state: Literal["active", "all", "open", "approved", "ordered", "done", "dismissed"] = "active",
    site: FilterText = None,
    department: FilterText = None,
    component: Component | None = None,
    model: FilterText = None,
    storm_group: FilterText = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> HTMLResponse:
    """The ticket queue, most urgent first, with filters, bulk approve and CSV export."""
    store: TicketStore = request.app.state.store
    states = (
        tuple(TicketState(s) for s in OPEN_STATES)
        if state == "active"
        else ()
        if state == "all"
        else (TicketState(state),)
    )
    flt = principal.scoped(
        TicketFilter(
            states=states,
            site=site or None,
            department=department or None,
            component=component,
            device_model=model or None,
            storm_group=storm_group or None,
        )
    )
    query = {
        "site": site,
        "department": department,
        "component": component.value if component else None,
        "model": model,
        "storm_group": storm_group,
    }
    export_query = [(k, v) for k, v in query.items() if v] + [("state", s.value) for s in states]
    return render(
        "queue.html",
        principal=principal,
        can_write=principal.role in WRITE_ROLES,
        tickets=store.list_tickets(flt, limit=limit),
        total=store.count_tickets(flt),
        facets=visible_facets(store, principal),
        components=[c.value for c in Component],
        selected={**query, "state": state},
        export_url="/api/v1/tickets.csv?" + urlencode(export_query),
        storms=visible_storms(store, principal)[:10],
        forecast=scoped_forecast(
            store,
            request.app.state.forecast_settings,
            principal,
            request.app.state.clock(),
            site or None,
            component,
            model or None,
            request.app.state.forecast_cache,
        )[:FORECAST_ROWS],
    )


@router.get("/devices/{device_id}", response_class=HTMLResponse, responses={404: {"description": "unknown device"}})
def device_page(
    request: Request,
    principal: Reader,
    device_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")],
) -> HTMLResponse:
    """One device: inventory facts, risk history plot, its tickets with evidence and audit trail."""
    store: TicketStore = request.app.state.store
    inventory = store.get_device(device_id)
    tickets = store.list_tickets(principal.scoped(TicketFilter(device_id=device_id)))
    if not tickets and (inventory is None or not principal.sees(inventory.site, inventory.department)):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "device not found")
    # the policy the worker serves (with the champions' operating points) when the server knows it
    policy: AlertPolicy = (
        getattr(request.app.state, "serving_policy", None) or request.app.state.service.settings.policy
    )
    markers = [(t.opened_at, f"ticket #{t.id} opened") for t in tickets]
    return render(
        "device.html",
        principal=principal,
        can_write=principal.role in WRITE_ROLES,
        device_id=device_id,
        inventory=inventory,
        tickets=tickets,
        events={t.id: store.ticket_events(t.id) for t in tickets},
        next_states={t.id: [s.value for s in TicketState if s in TRANSITIONS[t.state]] for t in tickets},
        plot=risk_svg(store.history(device_id), lambda c: _raise_threshold(policy, c), markers),
    )


def _raise_threshold(policy: AlertPolicy, component: str) -> float:
    try:
        return policy.thresholds(Component(component)).raise_threshold
    except ValueError:  # a component this server does not know: the fleet-wide level
        return policy.raise_threshold


@router.get("/static/{name}", responses={404: {"description": "no such file"}})
def static(name: Annotated[str, Path(max_length=32)]) -> Response:
    if name not in STATIC:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "not found")
    return Response((HERE / "static" / name).read_bytes(), media_type=STATIC[name])
