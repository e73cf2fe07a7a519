"""Backtest of the parts forecast for batteries and fans on the fleet simulator.

No public fleet data has battery or fan failures per device, so these parts are checked on
:mod:`fleetpulse.agents.simulator`, whose ground truth is the day each battery reaches 60 %
of design capacity (or a cell fails) and each fan dies. The simulated reports go through
the serving state and the served rule scorers exactly as in the worker; at the start of
each 30-day window every part not yet failed is forecast from its score (through the same
:func:`~fleetpulse.alerts.tickets.replacement_days` the ticket store records), and the
forecast is compared with the failures of the window.

What this checks is the method on data whose physics the simulator fixes (linear-to-knee
capacity fade, fan onset weeks ahead), not the real world: the fan AFR of the simulator
and the forecast's default annual rate are both 2 %, so "clear" fans are right by design.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from fleetpulse.alerts.tickets import replacement_days
from fleetpulse.compat import UTC
from fleetpulse.contract import Component
from fleetpulse.models.device_rules import ThermalRuleScorer
from fleetpulse.models.forecast import count_interval, poisson_binomial, window_probability
from fleetpulse.models.forecast_backtest import WINDOW_DAYS, BacktestRow
from fleetpulse.models.forecast_calibration import WindowCount, calibrate, calibrated_count
from fleetpulse.models.forecast_rows import PartRisk, calibration_stratum
from fleetpulse.models.forecast_settings import ForecastSettings
from fleetpulse.models.rules import BatteryRuleScorer
from fleetpulse.models.state import DeviceState, apply_report_in_place

EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
WARM_UP_DAYS = 180
"""History before the first scored forecast: the battery trend needs months of readings."""
HISTORY_WINDOWS = 3
"""Windows before the warm-up's end that are forecast only for their outcomes (the calibration's evidence)."""
SIMULATED = "simulated"


@dataclass(frozen=True)
class SimulatedBacktest:
    rows: list[BacktestRow]
    uncorrected: list[BacktestRow]
    devices: int
    seed: int
    days: int


def simulated_backtest(
    devices: int,
    seed: int,
    days: int = WARM_UP_DAYS + 6 * WINDOW_DAYS,
    settings: ForecastSettings | None = None,
) -> SimulatedBacktest:
    """Forecast vs simulated truth per part (battery, thermal) and 30-day window after the warm-up.

    ``rows``: each window's forecast corrected by the windows that ended before it (from
    ``HISTORY_WINDOWS`` windows before the warm-up's end on), as ``fleetpulse forecast`` does with
    the fleet's outcomes; ``uncorrected``: the exact Poisson-binomial of the scores' probabilities."""
    from fleetpulse.agents.simulator import FleetSimulator

    settings = settings or ForecastSettings()
    sim = FleetSimulator(devices=devices, seed=seed, start=EPOCH, days=days)
    truth = {(g.device_id, g.component): g.fails_at for g in sim.ground_truth()}
    first = WARM_UP_DAYS - HISTORY_WINDOWS * WINDOW_DAYS
    starts = [EPOCH + timedelta(days=first + WINDOW_DAYS * k) for k in range((days - first) // WINDOW_DAYS)]
    scorers = (BatteryRuleScorer(), ThermalRuleScorer())
    states: dict[str, DeviceState] = {}
    forecasts: list[dict[Component, list[tuple[float, bool, str]]]] = []
    pending = list(starts)
    for report in [*sim.reports(), None]:
        while pending and (report is None or report.collected_at >= pending[0]):
            forecasts.append(_forecast_at(pending.pop(0), list(states.values()), scorers, truth, settings))
        if report is None:
            break
        state = states.setdefault(report.device_id, DeviceState(device_id=report.device_id))
        apply_report_in_place(state, report)
    day = [(s - EPOCH).total_seconds() / 86_400.0 for s in starts]
    evidence = [
        WindowCount(
            component,
            SIMULATED,
            day[k],
            day[k] + WINDOW_DAYS,
            sum(o[0] for o in outs if o[2] == stratum),
            sum(o[1] for o in outs if o[2] == stratum),
            stratum,
        )
        for k, per_part in enumerate(forecasts)
        for component, outs in per_part.items()
        for stratum in {o[2] for o in outs}
    ]
    rows: dict[bool, list[BacktestRow]] = {True: [], False: []}
    for k, per_part in enumerate(forecasts[HISTORY_WINDOWS:], start=HISTORY_WINDOWS):
        fitted = calibrate(evidence, day[k], settings.calibration)
        for component, outcomes in per_part.items():
            observed = sum(o[1] for o in outcomes)
            for recalibrated in (True, False):
                p = np.array([o[0] for o in outcomes])
                if recalibrated:
                    strata = np.array([o[2] for o in outcomes], dtype=object)
                    p, pmf = calibrated_count(p, strata, component, SIMULATED, fitted)
                else:
                    pmf = poisson_binomial(p)
                low, high = count_interval(pmf, settings.coverage)
                rows[recalibrated].append(
                    BacktestRow(
                        component.value, k - HISTORY_WINDOWS, len(outcomes), float(p.sum()), low, high, observed
                    )
                )
    return SimulatedBacktest(rows[True], rows[False], devices, seed, days)


def _forecast_at(
    start: datetime,
    states: list[DeviceState],
    scorers: tuple[BatteryRuleScorer, ThermalRuleScorer],
    truth: dict[tuple[str, Component], datetime],
    settings: ForecastSettings,
) -> dict[Component, list[tuple[float, bool, str]]]:
    """(probability, failed in the window, calibration stratum) of every part still working at ``start``."""
    end = start + timedelta(days=WINDOW_DAYS)
    out: dict[Component, list[tuple[float, bool, str]]] = {Component.BATTERY: [], Component.THERMAL: []}
    for scorer in scorers:
        for score in scorer.score_batch(states, start):
            fails_at = truth.get((score.device_id, score.component))
            if fails_at is not None and fails_at < start:
                continue  # failed before the window: already due, not a forecast
            part = PartRisk(
                component=score.component,
                site="simulated",
                hardware_model=SIMULATED,
                device_kind=None,
                risk=score.risk,
                horizon_days=score.horizon_days,
                replace_in_days=replacement_days(score),
            )
            failed = fails_at is not None and fails_at < end
            stratum = calibration_stratum(part.component, part.replace_in_days)
            out[score.component].append((window_probability(part, WINDOW_DAYS, settings), failed, stratum))
    return out
