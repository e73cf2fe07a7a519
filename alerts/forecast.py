"""The parts forecast over the ticket store: each component's latest score within its scope.

Reads the downsampled risk history (the consumer records every scored component there, not
only alerting ones), the newest point per device component no older than
``forecast.max_score_age_days``, joined with the inventory for site, hardware model and
device kind. The scope is applied in the query, so a site lead's forecast never sums
another site's devices.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime, timedelta

from sqlalchemy import and_, func, select

from fleetpulse.alerts.api.auth import Principal
from fleetpulse.alerts.store.models import Device, RiskPoint
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.contract.v1 import Component, DeviceKind
from fleetpulse.models.forecast_rows import PARTS, UNKNOWN, WINDOWS, ForecastRow, PartRisk
from fleetpulse.models.forecast_settings import ForecastSettings


def latest_part_scores(
    store: TicketStore,
    since: datetime,
    sites: Collection[str] | None = None,
    departments: Collection[str] | None = None,
) -> list[PartRisk]:
    """The newest score since ``since`` of every replaceable part; ``sites``/``departments`` (None: all)
    restrict to devices whose inventory places them there (a device of unknown site then drops out)."""
    newest = (
        select(
            RiskPoint.device_id,
            RiskPoint.component,
            RiskPoint.component_id,
            func.max(RiskPoint.at).label("at"),
        )
        .where(RiskPoint.at >= since, RiskPoint.component.in_([c.value for c in PARTS]))
        .group_by(RiskPoint.device_id, RiskPoint.component, RiskPoint.component_id)
        .subquery()
    )
    query = (
        select(RiskPoint, Device)
        .join(
            newest,
            and_(
                RiskPoint.device_id == newest.c.device_id,
                RiskPoint.component == newest.c.component,
                RiskPoint.component_id == newest.c.component_id,
                RiskPoint.at == newest.c.at,
            ),
        )
        .join(Device, Device.device_id == RiskPoint.device_id, isouter=True)
    )
    if sites is not None:
        query = query.where(Device.site.in_(sorted(sites)))
    if departments is not None:
        query = query.where(Device.department.in_(sorted(departments)))
    seen: set[tuple[str, str, str]] = set()
    parts = []
    with store.session() as session:
        for point, device in session.execute(query):
            key = (point.device_id, point.component, point.component_id)
            if key in seen:  # two points at the same instant: count the part once
                continue
            seen.add(key)
            parts.append(
                PartRisk(
                    component=Component(point.component),
                    site=(device.site if device is not None else None) or UNKNOWN,
                    hardware_model=(device.model if device is not None else None) or UNKNOWN,
                    device_kind=DeviceKind(device.kind) if device is not None else None,
                    risk=point.risk,
                    horizon_days=point.horizon_days,
                    replace_in_days=point.replace_in_days,
                )
            )
    return parts


def fleet_forecast(
    store: TicketStore,
    settings: ForecastSettings,
    now: datetime,
    sites: Collection[str] | None = None,
    departments: Collection[str] | None = None,
    windows: tuple[int, ...] = WINDOWS,
) -> list[ForecastRow]:
    from fleetpulse.models.forecast import forecast  # numpy and scipy: loaded by the first forecast asked for

    since = now - timedelta(days=settings.max_score_age_days)
    return forecast(latest_part_scores(store, since, sites, departments), settings, windows)


class ForecastCache:
    """Computed forecasts per scope, reused for ``ForecastSettings.cache_s``.

    The queue page shows the forecast on every load; at 100,000 devices computing it takes
    seconds, while the scores under it change with the report interval (15 minutes). Entries
    are keyed by the sites and departments summed, so one scope never sees another's rows.
    """

    MAX_ENTRIES = 256

    def __init__(self, ttl_s: int) -> None:
        self.ttl = timedelta(seconds=ttl_s)
        self._entries: dict[tuple[frozenset[str] | None, frozenset[str]], tuple[datetime, list[ForecastRow]]] = {}

    def get(
        self,
        sites: set[str] | None,
        departments: frozenset[str],
        now: datetime,
        compute: Callable[[], list[ForecastRow]],
    ) -> list[ForecastRow]:
        key = (None if sites is None else frozenset(sites), departments)
        cached = self._entries.get(key)
        if cached is not None and timedelta(0) <= now - cached[0] < self.ttl:
            return cached[1]
        rows = compute()
        if self.ttl > timedelta(0):
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = (now, rows)
        return rows


def scoped_forecast(
    store: TicketStore,
    settings: ForecastSettings,
    principal: Principal,
    now: datetime,
    site: str | None = None,
    component: Component | None = None,
    hardware_model: str | None = None,
    cache: ForecastCache | None = None,
) -> list[ForecastRow]:
    """The forecast over ``principal``'s scope, optionally narrowed to one site, component or model.

    A site outside the scope gives an empty forecast, like a ticket filter for it: the
    scope is intersected, never widened by a parameter.
    """
    sites: set[str] | None = None if principal.all_sites else set(principal.sites)
    if site is not None:
        sites = {site} if sites is None or site in sites else set()
    departments = principal.departments or None

    def compute() -> list[ForecastRow]:
        return fleet_forecast(store, settings, now, sites, departments)

    rows = compute() if cache is None else cache.get(sites, principal.departments, now, compute)
    return [
        r
        for r in rows
        if (component is None or r.component is component)
        and (hardware_model is None or r.hardware_model == hardware_model)
    ]
