"""The ticket API (JSON, OpenAPI at /openapi.json) and the fleet-manager page, from one app factory.

Every route needs a role except ``/healthz``, the login pages and the static files; credentials
are checked before a request body is read, and bodies are bounded (:mod:`fleetpulse.alerts.api.gate`).
Every route keeps to the caller's scope: lists and exports are filtered to its sites, another
site's ticket or device is "not found" (its existence is not revealed), and a bulk action
naming any ticket outside the scope fails as a whole with 404, applying nothing.
Writes need a JSON body (no cross-site form can send one without a CORS preflight, which this
app never grants) and, from a page session, the session's CSRF token.
"""

from __future__ import annotations

import io
import logging
import queue
import re
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import date, datetime
from typing import IO, Annotated, Any, Literal

import anyio
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from starlette.types import Receive, Scope, Send

from fleetpulse.alerts.api import access
from fleetpulse.alerts.api.auth import ADMIN_ROLES, READ_ROLES, WRITE_ROLES, Authenticator, Principal, require
from fleetpulse.alerts.api.gate import RequestGate
from fleetpulse.alerts.api.sessions import PageSessions, SessionCookies
from fleetpulse.alerts.fleetlog import FleetLog
from fleetpulse.alerts.forecast import ForecastCache, scoped_forecast
from fleetpulse.alerts.oidc import OidcProvider
from fleetpulse.alerts.settings import AlertSettings
from fleetpulse.alerts.store.audit import spreadsheet_safe
from fleetpulse.alerts.store.logins import LoginRecords
from fleetpulse.alerts.store.repository import (
    EventView,
    HistoryPoint,
    OutboxView,
    StormView,
    TicketFilter,
    TicketStore,
    TicketView,
)
from fleetpulse.alerts.store.sessions import WebSessions
from fleetpulse.alerts.tickets import TicketService, TransitionError
from fleetpulse.alerts.web.login import router as login_router
from fleetpulse.alerts.web.pages import STATIC_PATHS, visible_storms
from fleetpulse.alerts.web.pages import router as web_router
from fleetpulse.compat import UTC, SpooledTemporaryFile, csv_writer
from fleetpulse.contract.v1 import Component, DeviceInventory, TicketState
from fleetpulse.models.forecast_rows import ForecastRow

Clock = Callable[[], datetime]
log = logging.getLogger(__name__)
TicketId = Annotated[int, Path(ge=1, le=2**31 - 1)]
FilterText = Annotated[str | None, Query(max_length=128)]
Reader = Annotated[Principal, Depends(require(*READ_ROLES))]
Writer = Annotated[Principal, Depends(require(*WRITE_ROLES))]
Admin = Annotated[Principal, Depends(require(*ADMIN_ROLES))]
LOGIN_PATHS = frozenset({"/auth/login", "/auth/callback", "/auth/logout", "/auth/logout-provider", "/auth/logged-out"})
FORM_PATHS = frozenset({"/auth/login", "/auth/logout"})
"""Plain HTML form posts, each checking its own CSRF token (every other write must be JSON)."""
JSON_ONLY: dict[int | str, dict[str, Any]] = {
    400: {"description": "body is not valid JSON"},
    415: {"description": "writes need Content-Type: application/json"},
}
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
NO_CONTROL = "must not contain control characters"


def _one_line(value: str) -> str:
    """Refuse control characters: PostgreSQL cannot store NUL, and the rest garble logs, pages and exports."""
    if CONTROL.search(value):
        raise ValueError(NO_CONTROL)
    return value


def _lines(value: str) -> str:
    """Free text: tabs and line breaks, but no other control character (see :func:`_one_line`)."""
    if CONTROL_BUT_LINES.search(value):
        raise ValueError(f"{NO_CONTROL} other than tabs and line breaks")
    return value


Note = Annotated[str, Field(max_length=1000), AfterValidator(_lines)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class TransitionIn(_In):
    to: TicketState
    note: Note = ""
    outcome: Literal["confirmed_fault", "no_fault_found", "false_alarm"] | None = None


class BulkTransitionIn(_In):
    ticket_ids: Annotated[list[Annotated[int, Field(ge=1, le=2**31 - 1)]], Field(min_length=1, max_length=500)]
    to: TicketState
    note: Note = ""


class FailureReportIn(_In):
    """A failure no ticket predicted, or a retired device: labels the feature log needs for recall."""

    device_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")]
    component: Component
    component_id: Annotated[str, Field(max_length=128), AfterValidator(_one_line)] = ""
    on_day: date = Field(description="the day the component failed or the device was retired (UTC)")
    outcome: Literal["failed", "retired"]
    note: Note = ""


class FailureReportOut(BaseModel):
    device_id: str
    component: Component
    component_id: str
    on_day: date
    outcome: str


class RetryIn(_In):
    ids: Annotated[list[Annotated[int, Field(ge=1, le=2**31 - 1)]], Field(max_length=10_000)] | None = None


class TicketPage(BaseModel):
    total: int
    items: list[TicketView]


class TicketDetail(BaseModel):
    ticket: TicketView
    events: list[EventView]


class DeviceDetail(BaseModel):
    device_id: str
    inventory: DeviceInventory | None
    tickets: list[TicketView]
    history: list[HistoryPoint]


class Me(BaseModel):
    name: str
    role: str
    sites: list[str]
    departments: list[str]


def ticket_filter(
    state: Annotated[list[TicketState] | None, Query(max_length=5)] = None,
    site: FilterText = None,
    department: FilterText = None,
    component: Component | None = None,
    model: FilterText = None,
    device_id: FilterText = None,
    storm_group: FilterText = None,
) -> TicketFilter:
    return TicketFilter(
        states=tuple(state or ()),
        site=site or None,
        department=department or None,
        component=component,
        device_model=model or None,
        device_id=device_id or None,
        storm_group=storm_group or None,
    )


Filter = Annotated[TicketFilter, Depends(ticket_filter)]

CSV_COLUMNS = [
    "id",
    "state",
    "urgency",
    "device_id",
    "component",
    "component_id",
    "risk",
    "days_to_failure",
    "days_to_failure_low",
    "days_to_failure_high",
    "recommended_action",
    "co2e_avoided_kg",
    "site",
    "department",
    "device_model",
    "warranty_end",
    "model_version",
    "storm_group",
    "opened_at",
    "updated_at",
]


def _csv_cell(value: object) -> str:
    """The ticket field as spreadsheet-safe text (:func:`~fleetpulse.alerts.store.audit.spreadsheet_safe`)."""
    if value is None:
        return ""
    if isinstance(value, datetime | date):
        return value.isoformat()
    return spreadsheet_safe(str(value.value if hasattr(value, "value") else value))


def write_tickets_csv(tickets: Iterable[TicketView], out: IO[str]) -> int:
    """The header and one row per ticket, written as they come (an export never holds the whole queue);
    returns how many tickets."""
    writer = csv_writer(out)
    writer.writerow(CSV_COLUMNS)
    rows = 0
    for ticket in tickets:
        writer.writerow([_csv_cell(getattr(ticket, c)) for c in CSV_COLUMNS])
        rows += 1
    return rows


EXPORT_SPOOL_BYTES = 4 * 1024 * 1024
"""An export's CSV stays in memory up to this size, then moves to a temporary file."""
EXPORT_CHUNK_BYTES = 64 * 1024
EXPORT_RETRY_AFTER = {"Retry-After": "10"}
ExportHolder = tuple[str, str]
"""Whose export: the issuer and subject the audit trail records (a local login or token: ``local`` and its name)."""


def export_holder(principal: Principal) -> ExportHolder:
    """The caller's stable identity, not its display name: a single sign-on name can change between logins."""
    who = access.actor(principal)
    return who.issuer, who.subject


class ExportPlaces:
    """The exports being written or sent, each holding a temporary file: at most ``most`` at once, and at
    most ``most_per_holder`` of one caller's, so one caller downloading slowly cannot hold every place and
    shut everyone else out. Endpoints run on a thread pool: both counts change under one lock."""

    def __init__(self, most: int, most_per_holder: int) -> None:
        self._free = threading.BoundedSemaphore(most)
        self._most_per_holder = most_per_holder
        self._held: dict[ExportHolder, int] = {}  # holders with a place only: a key goes with its last place
        self._lock = threading.Lock()
        self._finalized: queue.SimpleQueue[ExportPlace] = queue.SimpleQueue()  # given back by the collector

    def take(self, holder: ExportHolder) -> ExportPlace:
        """A place for one export; 429 if the caller already has its share (taking none of everyone's),
        503 if every place is taken."""
        with self._lock:
            self._settle_finalized()
            if self._held.get(holder, 0) >= self._most_per_holder:
                raise HTTPException(
                    status.HTTP_429_TOO_MANY_REQUESTS,
                    f"you already have an export in progress (at most {self._most_per_holder} at once per caller):"
                    " let it finish, then try again",
                    headers=EXPORT_RETRY_AFTER,
                )
            if not self._free.acquire(blocking=False):
                raise HTTPException(
                    status.HTTP_503_SERVICE_UNAVAILABLE,
                    "too many exports in progress; try again shortly",
                    headers=EXPORT_RETRY_AFTER,
                )
            self._held[holder] = self._held.get(holder, 0) + 1
        return ExportPlace(self, holder)

    @property
    def holders(self) -> int:
        """Callers holding a place now."""
        with self._lock:
            self._settle_finalized()
            return len(self._held)

    def give_back(self, place: ExportPlace, *, finalizing: bool = False) -> None:
        """Once per place: a second call (another way the same export ended) changes nothing.

        A finalizer never waits for the lock: the garbage collector runs it on whatever allocation crosses
        its threshold, possibly in this very thread inside :meth:`take` with the lock held, where waiting
        would hang every export for good. It queues the place instead, settled by whoever holds the lock next.
        """
        if finalizing:
            self._finalized.put(place)  # SimpleQueue.put is safe to call from a finalizer
            if not self._lock.acquire(blocking=False):
                return
        else:
            self._lock.acquire()
        try:
            if not finalizing:
                self._settle(place)
            self._settle_finalized()
        finally:
            self._lock.release()

    def _settle_finalized(self) -> None:
        while True:
            try:
                place = self._finalized.get_nowait()
            except queue.Empty:
                return
            self._settle(place)

    def _settle(self, place: ExportPlace) -> None:
        """With the lock held."""
        if not place.held:
            return
        place.held = False
        left = self._held[place.holder] - 1
        if left:
            self._held[place.holder] = left
        else:
            del self._held[place.holder]
        self._free.release()


class ExportPlace:
    """One export's place, given back once however many of the ways an export ends call :meth:`release`
    (sent, client gone, dropped unsent, failed while written)."""

    def __init__(self, places: ExportPlaces, holder: ExportHolder) -> None:
        self.places, self.holder, self.held = places, holder, True

    def release(self, *, finalizing: bool = False) -> None:
        self.places.give_back(self, finalizing=finalizing)


class SpooledExport(Iterator[bytes]):
    """The spooled export in pieces; closed (a file on disk is deleted) and its place among the exports
    given back once sent, or once dropped unsent (a client gone before the first piece: a generator's
    ``finally`` would never run, and the place would be lost for good)."""

    def __init__(self, spool: IO[bytes], place: ExportPlace) -> None:
        self._spool, self._place, self._open = spool, place, True

    @property
    def holder(self) -> ExportHolder:
        return self._place.holder

    def __next__(self) -> bytes:
        chunk = self._spool.read(EXPORT_CHUNK_BYTES) if self._open else b""
        if not chunk:
            self.close()
            raise StopIteration
        return chunk

    def close(self, *, finalizing: bool = False) -> None:
        if self._open:
            self._open = False
            self._spool.close()
            self._place.release(finalizing=finalizing)

    def __del__(self) -> None:
        self.close(finalizing=True)


class ExportResponse(StreamingResponse):
    """Sends a :class:`SpooledExport` and closes it however sending ends (a client gone mid-download
    included), not only once the garbage collector drops it.

    Sending is bounded by ``deadline_s``: a client that stops reading leaves the server waiting for its
    socket to drain for as long as it keeps the connection open, holding an export place all that time.
    Cut, the response ends short of its ``Content-Length``, so the client cannot take the truncated file
    for the whole export; what the server had already queued for the socket stays there until the client
    reads or goes (the ingress's own send timeout bounds that in production)."""

    def __init__(self, export: SpooledExport, headers: dict[str, str], deadline_s: float) -> None:
        super().__init__(export, media_type="text/csv; charset=utf-8", headers=headers)
        self.export, self.deadline_s = export, deadline_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            with anyio.fail_after(self.deadline_s):
                await super().__call__(scope, receive, send)
        except TimeoutError:
            holder = self.export.holder
            log.warning(
                "CSV export cut: not sent within the deadline",
                extra={"fields": {"issuer": holder[0], "subject": holder[1], "deadline_s": self.deadline_s}},
            )
        finally:
            self.export.close()


def _too_many(most: int) -> HTTPException:
    return HTTPException(
        422, f"more than {most} tickets match, the most an export holds: narrow the filter (state, site, ...)"
    )


NOT_FOUND = "ticket not found"


def create_app(
    settings: AlertSettings,
    store: TicketStore | None = None,
    clock: Clock = lambda: datetime.now(UTC),
    oidc: OidcProvider | None = None,
) -> FastAPI:
    """The whole web service. Pass ``store`` to share one (tests, demo); otherwise it opens ``store_url``.
    ``oidc`` replaces the provider client built from ``api.oidc`` (tests)."""
    own_store = store is None
    ticket_store = store or TicketStore.open(settings.store_url)
    service = TicketService(ticket_store, settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if own_store:
            ticket_store.close()

    app = FastAPI(
        title="fleetpulse tickets",
        version="1",
        description="Replacement and repair tickets from predicted hardware failures. "
        "Roles: fleet_manager (read, approve, close), it_support (read only), admin (everything).",
        lifespan=lifespan,
        # the Swagger/ReDoc pages load scripts from a CDN (no internet here, and CSP forbids it) and
        # FastAPI serves them and the spec without a role; the spec is served below, behind a role
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        responses={
            401: {"description": "no or invalid credentials"},
            403: {"description": "role may not do this"},
            413: {"description": "request body larger than alerts.api.limits.max_body_bytes"},
            429: {"description": "too many failed logins, retry later"},
            503: {"description": "ticket store unreachable, retry later"},
        },
    )
    page_sessions = PageSessions(
        WebSessions(ticket_store), SessionCookies(settings.api.session), clock, settings.api.users
    )
    authenticator = Authenticator(
        settings.api,
        LoginRecords(ticket_store),
        page_sessions,
        clock,
        trail=access.HeaderTrail(ticket_store, settings.api),
    )
    app.state.authenticator = authenticator
    app.state.page_sessions = page_sessions
    app.state.api_settings = settings.api
    app.state.forecast_settings = settings.forecast
    app.state.forecast_cache = ForecastCache(settings.forecast.cache_s, settings.forecast.calibration_cache_s)
    app.state.clock = clock
    app.state.oidc = oidc or (OidcProvider(settings.api.oidc) if settings.api.oidc is not None else None)
    app.state.store = ticket_store
    app.state.service = service

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        # query parameters (the API's and the pages' filters) end up in queries of the ticket store
        hostile = [name for name, value in request.query_params.multi_items() if CONTROL.search(name + value)]
        if hostile:
            where = [("query", name) if name.isidentifier() else ("query",) for name in hostile]
            return JSONResponse({"detail": [_invalid(loc, NO_CONTROL, "value_error") for loc in where]}, 422)
        if request.method in ("POST", "PUT", "PATCH", "DELETE") and request.url.path not in FORM_PATHS:
            content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type != "application/json":
                return JSONResponse({"detail": "writes need Content-Type: application/json"}, status_code=415)
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"
        )
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(OperationalError)
    async def store_down(_: Request, exc: OperationalError) -> JSONResponse:
        """The database is unreachable: say so (503, retry later) instead of a bare server error."""
        log.error("ticket store unavailable", extra={"fields": {"error": str(exc.orig)[:300]}})
        return JSONResponse({"detail": "ticket store unavailable, retry later"}, status_code=503)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        """422 naming each invalid field and what is wrong with it, never the value sent: FastAPI's own
        answer echoes it, and a lone surrogate in it (valid JSON, not encodable as UTF-8) made that a 500."""
        errors = [_invalid(error["loc"], str(error["msg"]), str(error["type"])) for error in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        """Readiness for load balancers; the only route without a role, and it reveals nothing."""
        with ticket_store.session() as session:
            session.execute(text("SELECT 1"))
        return {"status": "ok"}

    @app.get("/openapi.json", include_in_schema=False)
    def openapi_spec(_: Reader) -> JSONResponse:
        """The OpenAPI document, for any role (clients and the schemathesis run)."""
        return JSONResponse(app.openapi())

    @app.get("/api/v1/me", tags=["auth"])
    def me(principal: Reader) -> Me:
        return Me(
            name=principal.name,
            role=principal.role,
            sites=sorted(principal.sites),
            departments=sorted(principal.departments),
        )

    def visible_ticket(principal: Principal, ticket_id: int) -> TicketView:
        """The ticket, or 404 alike for a missing one and one outside the caller's scope."""
        ticket = ticket_store.get_ticket(ticket_id)
        if ticket is None or not principal.sees(ticket.site, ticket.department):
            raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND)
        return ticket

    @app.get("/api/v1/tickets", tags=["tickets"])
    def list_tickets(
        principal: Reader,
        flt: Filter,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    ) -> TicketPage:
        """The queue within the caller's scope, most urgent first."""
        flt = principal.scoped(flt)
        return TicketPage(total=ticket_store.count_tickets(flt), items=ticket_store.list_tickets(flt, limit, offset))

    # exports being written or sent, each holding up to max_export_rows tickets in a temporary file
    export_places = ExportPlaces(
        settings.api.limits.max_concurrent_exports, settings.api.limits.max_concurrent_exports_per_user
    )
    app.state.export_places = export_places

    @app.get(
        "/api/v1/tickets.csv",
        tags=["tickets"],
        response_class=Response,
        responses={
            422: {"description": "more tickets match than alerts.api.limits.max_export_rows"},
            429: {
                "description": "the caller already has alerts.api.limits.max_concurrent_exports_per_user exports "
                "in progress, or too many failed logins; retry later"
            },
            503: {"description": "alerts.api.limits.max_concurrent_exports exports are in progress"},
        },
    )
    def export_csv(request: Request, principal: Reader, flt: Filter) -> Response:
        """The filtered queue as CSV (all matching tickets within the caller's scope, refused above the limit).

        The store streams the rows into a spooled file (memory up to a few MiB, then disk), which is sent
        only after the store's connection is back in the pool: however large the queue and however slow
        the client, an export holds one fetch chunk in memory and no connection while it is sent. A caller
        already running its share of the export places gets 429, so one slow downloader cannot take them all.
        """
        flt = principal.scoped(flt)
        most = settings.api.limits.max_export_rows
        if ticket_store.count_tickets(flt) > most:
            raise _too_many(most)
        place = export_places.take(export_holder(principal))
        spool = SpooledTemporaryFile(max_size=EXPORT_SPOOL_BYTES)  # closed once sent
        try:
            out = io.TextIOWrapper(spool, encoding="utf-8", newline="")
            with ticket_store.stream_tickets(flt, limit=most + 1) as tickets:
                rows = write_tickets_csv(tickets, out)
            out.detach()  # flushed; the spool stays open
            if rows > most:  # tickets opened since the count
                raise _too_many(most)
            access.csv_exported(request, principal, flt, rows)
            size = spool.tell()
            spool.seek(0)
        except BaseException:
            spool.close()
            place.release()
            raise
        return ExportResponse(
            SpooledExport(spool, place),
            headers={
                "Content-Disposition": 'attachment; filename="fleetpulse-tickets.csv"',
                "Content-Length": str(size),
            },
            deadline_s=settings.api.limits.export_send_timeout.total_seconds(),
        )

    @app.get("/api/v1/tickets/{ticket_id}", tags=["tickets"], responses={404: {"description": "no such ticket"}})
    def get_ticket(principal: Reader, ticket_id: TicketId) -> TicketDetail:
        ticket = visible_ticket(principal, ticket_id)
        return TicketDetail(ticket=ticket, events=ticket_store.ticket_events(ticket_id))

    @app.post(
        "/api/v1/tickets/{ticket_id}/transition",
        tags=["tickets"],
        responses={404: {"description": "no such ticket"}, 409: {"description": "transition not allowed"}, **JSON_ONLY},
    )
    def transition(request: Request, principal: Writer, ticket_id: TicketId, body: TransitionIn) -> TicketView:
        """open -> approved -> ordered -> done, or dismissed; closing records the outcome as a training label."""
        visible_ticket(principal, ticket_id)
        context = access.audit_context(request, principal)
        try:
            return service.transition(
                [ticket_id], body.to, principal.name, clock(), body.note, body.outcome, context=context
            )[0]
        except TransitionError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None

    @app.post(
        "/api/v1/tickets/bulk-transition",
        tags=["tickets"],
        responses={
            404: {"description": "a ticket does not exist or is outside your scope (none are named)"},
            409: {"description": "not allowed"},
            **JSON_ONLY,
        },
    )
    def bulk_transition(request: Request, principal: Writer, body: BulkTransitionIn) -> list[TicketView]:
        """All or nothing: one ticket that cannot move, does not exist or is outside the caller's scope
        stops the whole batch (404 names no ticket, so it reveals nothing about other sites)."""
        ids = list(dict.fromkeys(body.ticket_ids))
        if not principal.unrestricted:
            for ticket_id in ids:
                ticket = ticket_store.get_ticket(ticket_id)
                if ticket is None or not principal.sees(ticket.site, ticket.department):
                    raise HTTPException(
                        status.HTTP_404_NOT_FOUND, "some tickets do not exist or are outside your scope; none changed"
                    )
        try:
            moved = service.transition(
                ids, body.to, principal.name, clock(), body.note, context=access.audit_context(request, principal)
            )
        except TransitionError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
        access.bulk_transitioned(principal, ids, body.to.value)
        return moved

    @app.get("/api/v1/devices/{device_id}", tags=["devices"], responses={404: {"description": "unknown device"}})
    def device(
        principal: Reader, device_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")]
    ) -> DeviceDetail:
        inventory = ticket_store.get_device(device_id)
        tickets = ticket_store.list_tickets(principal.scoped(TicketFilter(device_id=device_id)))
        if not tickets and (inventory is None or not principal.sees(inventory.site, inventory.department)):
            raise HTTPException(status.HTTP_404_NOT_FOUND, "device not found")
        return DeviceDetail(
            device_id=device_id, inventory=inventory, tickets=tickets, history=ticket_store.history(device_id)
        )

    @app.post(
        "/api/v1/failure-reports",
        tags=["labels"],
        status_code=status.HTTP_201_CREATED,
        responses={
            404: {"description": "unknown device, or outside your scope"},
            409: {"description": "this report is already recorded"},
            422: {"description": "invalid report (e.g. a day in the future)"},
            **JSON_ONLY,
        },
    )
    def failure_report(request: Request, principal: Writer, body: FailureReportIn) -> FailureReportOut:
        """Record a failure no ticket predicted (``failed``) or a retired device (``retired``) as a training
        label; audited. Only devices in the caller's scope (404 alike for unknown and out-of-scope ones)."""
        inventory = ticket_store.get_device(body.device_id)
        if inventory is None or not principal.sees(inventory.site, inventory.department):
            raise HTTPException(status.HTTP_404_NOT_FOUND, "device not found")
        now = clock()
        if not date(2000, 1, 1) <= body.on_day <= now.date():
            raise HTTPException(422, "on_day must be a past day (UTC), not the future")
        recorded = FleetLog(ticket_store).record_failure(
            body.device_id,
            body.component,
            body.component_id,
            body.on_day,
            body.outcome,
            body.note,
            access.audit_context(request, principal),
            now,
        )
        if not recorded:
            raise HTTPException(status.HTTP_409_CONFLICT, "this failure report is already recorded")
        return FailureReportOut(**body.model_dump(exclude={"note"}))

    @app.get("/api/v1/storms", tags=["tickets"])
    def storms(principal: Reader) -> list[StormView]:
        """Fleet-wide spikes grouped into one problem each (a scoped caller: those touching its scope)."""
        return visible_storms(ticket_store, principal)

    @app.get("/api/v1/forecast", tags=["forecast"])
    def parts_forecast(
        principal: Reader, site: FilterText = None, component: Component | None = None, model: FilterText = None
    ) -> list[ForecastRow]:
        """Expected part replacements per component, hardware model and site in the next 30 and 90 days,
        with a prediction interval, over the devices in the caller's scope only."""
        return scoped_forecast(
            ticket_store, settings.forecast, principal, clock(), site, component, model, app.state.forecast_cache
        )

    @app.get("/api/v1/outbox", tags=["admin"])
    def outbox(principal: Admin, pending: bool = False) -> list[OutboxView]:
        """Messages owed to connectors and the labels topic, newest first (admins of every site only)."""
        fleet_wide(principal)
        return ticket_store.outbox(pending_only=pending)

    @app.post("/api/v1/outbox/retry", tags=["admin"], responses=JSON_ONLY)
    def retry(request: Request, principal: Admin, body: RetryIn) -> dict[str, int]:
        """Make pending messages due now (e.g. after an ITSM outage); recorded in the audit trail."""
        fleet_wide(principal)
        rescheduled = ticket_store.retry_now(clock(), body.ids)
        access.outbox_retried(request, principal, body.ids, rescheduled)
        return {"rescheduled": rescheduled}

    app.include_router(web_router)
    app.include_router(login_router)
    # outermost: nothing below it runs, and no body is read, before the caller is known
    app.add_middleware(
        RequestGate,
        authenticator=authenticator,
        limits=settings.api.limits,
        open_paths={"/healthz", *LOGIN_PATHS, *STATIC_PATHS},
    )
    return app


def _invalid(loc: Sequence[object], msg: str, kind: str) -> dict[str, object]:
    """One validation error as FastAPI documents it (``loc``, ``msg``, ``type``); a field name the request
    chose (an unknown JSON key) is cut short."""
    return {"loc": [part if isinstance(part, int) else str(part)[:64] for part in loc], "msg": msg, "type": kind}


def fleet_wide(principal: Principal) -> None:
    """The outbox holds every site's tickets: only for a caller who sees every site."""
    if not principal.unrestricted:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the outbox is for admins of every site")
