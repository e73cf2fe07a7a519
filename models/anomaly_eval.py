"""How well the unlabelled anomaly score anticipates failures it was never trained on.

Only the fleet simulator has ground truth for crashes before a main-board death and
overheating before a fan failure, so this is a check of the mechanism, not of real-world
accuracy. The simulated PCs report daily; every ``every_days`` the cohort baselines are
refitted on all states and every device is scored, as the worker does. A failure
(main board or fan, announced by the simulator as predictable) is detected if the device
scored at or above the threshold in the ``horizon`` days before it; healthy devices are
those without any failure in the window, and the threshold is set per false-alarm cap on
them, as for disks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from fleetpulse.compat import UTC
from fleetpulse.contract import Component
from fleetpulse.models.anomaly import AnomalyScorer
from fleetpulse.models.evaluation import CAPS, threshold_at_cap
from fleetpulse.models.state import DeviceState, apply_inventory, apply_report_in_place

START = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class AnomalyResult:
    devices: int
    failures: dict[str, int]
    healthy: int
    detection: dict[str, dict[str, float]]  # cap -> cause -> detection rate
    false_alarm: dict[str, float]


def evaluate_simulated_anomaly(
    devices: int,
    seed: int,
    alert_threshold: float,
    days: int = 90,
    every_days: int = 3,
    horizon: int = 14,
    failure_scale: float = 10.0,
) -> AnomalyResult:
    """``failure_scale`` multiplies the simulator's hazards so a small fleet has failures to count;
    ``alert_threshold`` (the worker's raise threshold) is reported beside the false-alarm caps,
    because it, not a cap, decides which devices get tickets."""
    from fleetpulse.agents.simulator import FleetMix, FleetSimulator

    mix = FleetMix(laptop=0.6, desktop=0.4, phone=0.0, tablet=0.0)
    sim = FleetSimulator(devices=devices, seed=seed, start=START, days=days, mix=mix, failure_scale=failure_scale)
    truth = [g for g in sim.ground_truth() if g.predictable and g.component in (Component.DEVICE, Component.THERMAL)]
    any_failure = {g.device_id for g in sim.ground_truth()}
    fails_at = {(g.device_id, g.component.value): g.fails_at for g in truth}
    states: dict[str, DeviceState] = {inv.device_id: apply_inventory(None, inv) for inv in sim.inventory()}
    scorer = AnomalyScorer()
    best_healthy: dict[str, float] = {}
    best_before: dict[tuple[str, str], float] = {}
    next_scoring = START + timedelta(days=every_days)

    def score(now: datetime) -> None:
        population = [s for s in states.values() if s.last_collected_at is not None]
        scorer.fit_baseline(population)
        for s in scorer.score_batch(population, now):
            if s.device_id not in any_failure:
                best_healthy[s.device_id] = max(best_healthy.get(s.device_id, 0.0), s.risk)
            for key, when in fails_at.items():
                if key[0] == s.device_id and timedelta(0) <= when - now <= timedelta(days=horizon):
                    best_before[key] = max(best_before.get(key, 0.0), s.risk)

    for report in sim.reports():
        if report.collected_at >= next_scoring:
            score(next_scoring)
            next_scoring += timedelta(days=every_days)
        apply_report_in_place(states[report.device_id], report)
    healthy = np.array(list(best_healthy.values()))
    detection: dict[str, dict[str, float]] = {}
    false_alarm: dict[str, float] = {}
    causes = {"device": "main board", "thermal": "fan"}
    thresholds = {f"cap {100 * cap:g}%": threshold_at_cap(healthy, cap) for cap in CAPS}
    thresholds[f"alert threshold {alert_threshold:g}"] = alert_threshold
    for label, thr in thresholds.items():
        false_alarm[label] = float((healthy >= thr).mean()) if len(healthy) else 0.0
        detection[label] = {}
        for component, name in causes.items():
            keys = [k for k in fails_at if k[1] == component]
            hits = [best_before.get(k, 0.0) >= thr for k in keys]
            detection[label][name] = float(np.mean(hits)) if hits else float("nan")
    counts = {name: sum(1 for k in fails_at if k[1] == component) for component, name in causes.items()}
    return AnomalyResult(
        devices=devices, failures=counts, healthy=len(healthy), detection=detection, false_alarm=false_alarm
    )
