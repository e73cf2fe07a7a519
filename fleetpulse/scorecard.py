"""How well raised alerts anticipated the simulator's ground-truth failures (pure).

A failure counts as caught when an alert for the same device and component was
raised before the component died; the lead time is the gap between the two.
An alert on a component that did not fail inside the simulated window is a
false alarm *within the window*: it may still be an early warning of a failure
after the window ends, so the number is an upper bound on false alarms.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from fleetpulse.contract import Alert, AlertState, Component


@dataclass(frozen=True, slots=True)
class Failure:
    device_id: str
    component: Component
    fails_at: datetime
    predictable: bool


@dataclass(frozen=True, slots=True)
class ComponentScore:
    component: Component
    failures: int
    predictable_failures: int
    caught: int
    caught_predictable: int
    alerted_components: int
    false_alarms: int
    lead_days: list[float] = field(default_factory=list)

    @property
    def recall(self) -> float | None:
        return self.caught / self.failures if self.failures else None

    @property
    def recall_predictable(self) -> float | None:
        return self.caught_predictable / self.predictable_failures if self.predictable_failures else None

    @property
    def precision(self) -> float | None:
        return (
            (self.alerted_components - self.false_alarms) / self.alerted_components if self.alerted_components else None
        )

    @property
    def median_lead_days(self) -> float | None:
        return statistics.median(self.lead_days) if self.lead_days else None


def first_raises(alerts: Iterable[Alert]) -> dict[tuple[str, Component], datetime]:
    """Earliest raise per device and component (replayed alerts collapse to one)."""
    first: dict[tuple[str, Component], datetime] = {}
    for alert in alerts:
        if alert.state is not AlertState.RAISED:
            continue
        key = (alert.device_id, alert.component)
        if key not in first or alert.at < first[key]:
            first[key] = alert.at
    return first


def score(failures: Iterable[Failure], raised: dict[tuple[str, Component], datetime]) -> list[ComponentScore]:
    """One row per component that either failed or was alerted on."""
    failed: dict[tuple[str, Component], Failure] = {}
    for failure in failures:
        key = (failure.device_id, failure.component)
        if key not in failed or failure.fails_at < failed[key].fails_at:
            failed[key] = failure
    components = sorted({c for _, c in failed} | {c for _, c in raised}, key=lambda c: c.value)
    rows = []
    for component in components:
        comp_failures = [f for k, f in failed.items() if k[1] is component]
        comp_raised = {k: t for k, t in raised.items() if k[1] is component}
        leads: list[float] = []
        caught = caught_predictable = 0
        for f in comp_failures:
            at = comp_raised.get((f.device_id, component))
            if at is not None and at < f.fails_at:
                caught += 1
                caught_predictable += f.predictable
                leads.append((f.fails_at - at).total_seconds() / 86400.0)
        false_alarms = sum(1 for k in comp_raised if k not in failed)
        rows.append(
            ComponentScore(
                component=component,
                failures=len(comp_failures),
                predictable_failures=sum(f.predictable for f in comp_failures),
                caught=caught,
                caught_predictable=caught_predictable,
                alerted_components=len(comp_raised),
                false_alarms=false_alarms,
                lead_days=sorted(leads),
            )
        )
    return rows
