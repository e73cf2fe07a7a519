"""The feature log: which scores the worker records with their features, for fleet retraining.

Pure functions; :class:`~fleetpulse.streams.processing.Processor` calls them after each
scoring generation. A component is logged on the device's first scoring of a UTC day
(``daily``: one row per device, component and day is enough to learn from, and bounds the
volume at ~3 records per device and day) and whenever its champion score is at or above
the component's raise threshold (``threshold``: the scores that open tickets, which a ticket
outcome later labels). Both are keyed by day (:meth:`FeatureLogRecord.log_key`): the store
keeps a component's first daily and first threshold record of each day, so no device, however
often it is scored, adds more than two rows per component and day.

"First scoring of the day" needs no state beyond what the worker keeps anyway: the
processor scores a device on its first report of a new day (``Processor._due``), and
the previous scoring time is ``DeviceRecord.scored_at``. A record repeated by a replay or a
rescore has the same key and lands on the same row of the ticket store's ``feature_log`` table.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from itertools import islice
from operator import itemgetter

from fleetpulse.contract import Component, FeatureLogReason, FeatureLogRecord, RiskScore, ScorerRole
from fleetpulse.contract.v1 import FEATURE_LOG_MAX_FEATURES
from fleetpulse.models.feature_cache import (
    battery_features,
    device_features,
    disk_features,
    memory_features,
    thermal_features,
)
from fleetpulse.models.state import DeviceState


def log_reason(score: RiskScore, first_of_day: bool, at_raise_level: bool) -> FeatureLogReason | None:
    """Why ``score`` is logged, or None. Only champion scores: they are what tickets were opened on."""
    if score.role is not ScorerRole.CHAMPION:
        return None
    if first_of_day:
        return FeatureLogReason.DAILY
    if at_raise_level:
        return FeatureLogReason.THRESHOLD
    return None


def component_features(state: DeviceState, component: Component, component_id: str) -> dict[str, float]:
    """The feature values the scorers of ``component`` computed, finite ones only (absent = unknown)."""
    raw: dict[str, float]
    if component is Component.DISK:
        disk = state.disks.get(component_id)
        raw = disk_features(disk) if disk is not None else {}
    elif component is Component.BATTERY:
        raw = battery_features(state.battery) if state.battery is not None else {}
    elif component is Component.THERMAL:
        raw = thermal_features(state)
    elif component is Component.MEMORY:
        raw = memory_features(state)
    else:
        raw = device_features(state)
    return logged_values(raw)


def logged_values(raw: dict[str, float]) -> dict[str, float]:
    """The finite values of ``raw`` as floats, by name, the first ``FEATURE_LOG_MAX_FEATURES`` of them."""
    names, values = _log_order(tuple(raw))
    finite = {name: float(value) for name, value in zip(names, values(raw), strict=True) if math.isfinite(value)}
    return finite if len(finite) <= FEATURE_LOG_MAX_FEATURES else dict(islice(finite.items(), FEATURE_LOG_MAX_FEATURES))


_LOG_ORDER: dict[tuple[str, ...], tuple[tuple[str, ...], Callable[[dict[str, float]], tuple[float, ...]]]] = {}
"""Per feature-name set: the names in log (sorted) order and a getter of their values in that order. Each
scorer's name set is fixed by the code, so the sort happens once per component, not once per record."""


def _log_order(names: tuple[str, ...]) -> tuple[tuple[str, ...], Callable[[dict[str, float]], tuple[float, ...]]]:
    known = _LOG_ORDER.get(names)
    if known is None:
        if len(_LOG_ORDER) >= 64:  # name sets come from code: a handful; never let it grow without bound
            _LOG_ORDER.clear()
        ordered = tuple(sorted(names))
        getter = itemgetter(*ordered) if len(ordered) > 1 else (lambda raw: tuple(raw[n] for n in ordered))
        known = _LOG_ORDER[names] = (ordered, getter)
    return known


def feature_records(
    scores: list[RiskScore],
    states: dict[str, DeviceState],
    first_of_day: set[str],
    at_raise_level: Callable[[RiskScore], bool],
    now: datetime,
) -> list[FeatureLogRecord]:
    """The feature-log records of one scoring generation (``states``: device id -> scored state)."""
    out = []
    for score in scores:
        if score.role is not ScorerRole.CHAMPION:  # only champions are logged (log_reason); skip the threshold look-up
            continue
        reason = log_reason(score, score.device_id in first_of_day, at_raise_level(score))
        state = states.get(score.device_id)
        if reason is None or state is None:
            continue
        out.append(
            FeatureLogRecord(
                device_id=score.device_id,
                component=score.component,
                component_id=score.component_id,
                hardware_model=state.model,
                day=score.collected_at.date(),
                reason=reason,
                features=component_features(state, score.component, score.component_id),
                risk=score.risk,
                model_name=score.model_name,
                model_version=score.model_version,
                collected_at=score.collected_at,
                scored_at=now,
                report_seq=score.report_seq,
            )
        )
    return out
