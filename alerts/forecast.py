"""The parts forecast over the ticket store: each component's latest score within its scope.

Reads the downsampled risk history (the consumer records every scored component there, not
only alerting ones), the newest point per device component no older than
``forecast.max_score_age_days``, of the devices in IT's register (the inventory) with their
site, hardware model and device kind: an agent can enrol any new id and report anything
about it, but cannot register it, so ids minted by one PC order no parts (the fleet-wide
forecast logs how many unregistered devices it left out). The scope is applied in the query,
so a site lead's forecast never sums another site's devices.

The recalibration (:func:`fleet_calibration`) is learned from the same store at forecast
time rather than written by a training job: the evidence is the forecast the store *would
have made* at the start of each of the last ``calibration.history_windows`` 30-day windows
(the latest scores then) against the failures labelled since (ticket outcomes and failure
reports, :mod:`~fleetpulse.alerts.fleetlog`), so it follows the labels as they arrive with no
job to schedule or artefact to version, and a fleet without labels gets the Backblaze prior.
It is computed over the whole fleet (a factor is a rate per hardware model, no device's
data) and cached for ``calibration_cache_s``, since labels arrive by the day.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Collection
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import and_, func, select

from fleetpulse.alerts.store.models import Device, RiskPoint
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.contract.v1 import Component, DeviceKind
from fleetpulse.models.forecast_rows import (
    PARTS,
    UNKNOWN,
    WINDOWS,
    Calibration,
    ForecastRow,
    PartRisk,
    calibration_stratum,
)
from fleetpulse.models.forecast_settings import ForecastSettings
from fleetpulse.models.state import MAX_DISKS

if TYPE_CHECKING:
    from fleetpulse.alerts.api.auth import Principal
    from fleetpulse.models.forecast_calibration import WindowCount

log = logging.getLogger(__name__)


def latest_part_scores(
    store: TicketStore,
    since: datetime,
    sites: Collection[str] | None = None,
    departments: Collection[str] | None = None,
) -> list[PartRisk]:
    """The newest score since ``since`` of every replaceable part of a registered device; ``sites``/
    ``departments`` (None: all) restrict to devices whose inventory places them there (a device of unknown
    site then drops out)."""
    if sites is None and departments is None:
        unregistered = _unregistered_devices(store, since)
        if unregistered:
            log.info(
                "devices outside the register left out of the parts forecast",
                extra={"fields": {"devices": unregistered}},
            )
    return [part for _, part in _latest_parts(store, since, None, sites, departments)]


def _unregistered_devices(store: TicketStore, since: datetime) -> int:
    """How many devices scored since ``since`` are not in the register (the forecast leaves them out)."""
    query = select(func.count(func.distinct(RiskPoint.device_id))).where(
        RiskPoint.at >= since,
        RiskPoint.component.in_([c.value for c in PARTS]),
        RiskPoint.device_id.not_in(select(Device.device_id)),
    )
    with store.session() as session:
        return int(session.execute(query).scalar_one())


def _latest_parts(
    store: TicketStore,
    since: datetime,
    until: datetime | None,
    sites: Collection[str] | None = None,
    departments: Collection[str] | None = None,
) -> list[tuple[tuple[str, str, str], PartRisk]]:
    """(device id, component, component id) and part of the newest score in ``[since, until)``, of registered
    devices only (an inner join with the inventory).

    At most :data:`~fleetpulse.models.state.MAX_DISKS` parts of a kind per device, the most recently scored:
    the worker tracks no more, and a PC inventing fresh disk serials must not order parts by the thousand.
    """
    newer = [RiskPoint.at >= since] + ([RiskPoint.at < until] if until is not None else [])
    newest = (
        select(
            RiskPoint.device_id,
            RiskPoint.component,
            RiskPoint.component_id,
            func.max(RiskPoint.at).label("at"),
        )
        .where(*newer, RiskPoint.component.in_([c.value for c in PARTS]))
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
        .join(Device, Device.device_id == RiskPoint.device_id)
        .order_by(RiskPoint.at.desc())  # the most recently scored parts first: they are the ones a device keeps
    )
    if sites is not None:
        query = query.where(Device.site.in_(sorted(sites)))
    if departments is not None:
        query = query.where(Device.department.in_(sorted(departments)))
    seen: set[tuple[str, str, str]] = set()
    per_device: dict[tuple[str, str], int] = {}
    parts = []
    with store.session() as session:
        for point, device in session.execute(query):
            key = (point.device_id, point.component, point.component_id)
            if key in seen:  # two points at the same instant: count the part once
                continue
            seen.add(key)
            kind = (point.device_id, point.component)
            per_device[kind] = per_device.get(kind, 0) + 1
            if per_device[kind] > MAX_DISKS:
                continue
            parts.append(
                (
                    key,
                    PartRisk(
                        component=Component(point.component),
                        site=device.site or UNKNOWN,
                        hardware_model=device.model or UNKNOWN,
                        device_kind=DeviceKind(device.kind),
                        risk=point.risk,
                        horizon_days=point.horizon_days,
                        replace_in_days=point.replace_in_days,
                    ),
                )
            )
    return parts


CALIBRATION_WINDOW_DAYS = 30


def fleet_window_counts(store: TicketStore, settings: ForecastSettings, now: datetime) -> list[WindowCount]:
    """Per past 30-day window ended by ``now``, component, hardware model and stratum: the failures
    labelled in the window and those the uncorrected forecast at its start expected."""
    from fleetpulse.alerts.fleetlog import FleetLog
    from fleetpulse.models.forecast import window_probabilities
    from fleetpulse.models.forecast_calibration import WindowCount

    labels, _ = FleetLog(store).labels()
    failed_on = {key: label.failed_on for key, label in labels.items() if label.failed_on is not None}
    counts = []
    for back in range(1, settings.calibration.history_windows + 1):
        start = now - timedelta(days=CALIBRATION_WINDOW_DAYS * back)
        end = start + timedelta(days=CALIBRATION_WINDOW_DAYS)
        keyed = [
            (key, part)
            for key, part in _latest_parts(store, start - timedelta(days=settings.max_score_age_days), start)
            if key not in failed_on or failed_on[key] >= start.date()  # failed before: not forecast
        ]
        if not keyed:
            continue
        probability = window_probabilities([p for _, p in keyed], CALIBRATION_WINDOW_DAYS, settings)
        totals: dict[tuple[Component, str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
        for (key, part), p in zip(keyed, probability.tolist(), strict=True):
            total = totals[
                (part.component, part.hardware_model, calibration_stratum(part.component, part.replace_in_days))
            ]
            total[0] += p
            total[1] += key in failed_on and failed_on[key] < end.date()
        counts += [
            WindowCount(component, model, _days(start), _days(end), expected, observed, stratum)
            for (component, model, stratum), (expected, observed) in totals.items()
        ]
    return counts


def _days(at: datetime) -> float:
    return at.timestamp() / 86_400.0


def fleet_calibration(store: TicketStore, settings: ForecastSettings, now: datetime) -> Calibration:
    """The factors and dispersion the fleet's labelled outcomes give (the prior where they give none)."""
    from fleetpulse.models.forecast_calibration import calibrate

    return calibrate(fleet_window_counts(store, settings, now), _days(now), settings.calibration)


def fleet_forecast(
    store: TicketStore,
    settings: ForecastSettings,
    now: datetime,
    sites: Collection[str] | None = None,
    departments: Collection[str] | None = None,
    windows: tuple[int, ...] = WINDOWS,
    calibration: Calibration | None = None,
) -> list[ForecastRow]:
    """The forecast of the parts in scope, recalibrated by ``calibration`` (None: learned from the store now)."""
    from fleetpulse.models.forecast import forecast  # numpy and scipy: loaded by the first forecast asked for

    since = now - timedelta(days=settings.max_score_age_days)
    if calibration is None:
        calibration = fleet_calibration(store, settings, now)
    return forecast(latest_part_scores(store, since, sites, departments), settings, windows, calibration)


class ForecastCache:
    """Computed forecasts per scope, reused for ``ForecastSettings.cache_s``.

    The queue page shows the forecast on every load; at 100,000 devices computing it takes
    seconds, while the scores under it change with the report interval (15 minutes). Entries
    are keyed by the sites and departments summed, so one scope never sees another's rows.
    """

    MAX_ENTRIES = 256

    def __init__(self, ttl_s: int, calibration_ttl_s: int = 3600) -> None:
        self.ttl = timedelta(seconds=ttl_s)
        self.calibration_ttl = timedelta(seconds=calibration_ttl_s)
        self._entries: dict[tuple[frozenset[str] | None, frozenset[str]], tuple[datetime, list[ForecastRow]]] = {}
        self._calibration: tuple[datetime, Calibration] | None = None

    def calibration(self, now: datetime, compute: Callable[[], Calibration]) -> Calibration:
        """The fleet-wide recalibration, recomputed after ``calibration_ttl``."""
        cached = self._calibration
        if cached is not None and timedelta(0) <= now - cached[0] < self.calibration_ttl:
            return cached[1]
        fitted = compute()
        if self.calibration_ttl > timedelta(0):
            self._calibration = (now, fitted)
        return fitted

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
        def learn() -> Calibration:
            return fleet_calibration(store, settings, now)

        calibration = learn() if cache is None else cache.calibration(now, learn)
        return fleet_forecast(store, settings, now, sites, departments, calibration=calibration)

    rows = compute() if cache is None else cache.get(sites, principal.departments, now, compute)
    return [
        r
        for r in rows
        if (component is None or r.component is component)
        and (hardware_model is None or r.hardware_model == hardware_model)
    ]
