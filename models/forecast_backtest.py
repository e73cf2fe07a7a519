"""Backtest of the parts forecast on the 2013-2016 Backblaze survival table.

At the start of each 30-day window after the disk model's cut-off (2015-07-01), every
*test* drive still in service (the half of the drives the shipped model never saw) is
scored as the worker would score it that day: its history is replayed through the serving
state up to the window start, plus one report at the window start carrying its unchanged
counters and current power-on hours. The shipped champion's calibrated 30-day probability
of each drive, recalibrated per drive model from the windows that ended before the window
starts (:mod:`~fleetpulse.models.forecast_calibration`; ``HISTORY_WINDOWS`` windows before the
cut-off are forecast for that purpose only), is summed per drive model into the forecast and
its overdispersed interval; the observed count is the drives of that model that failed in
the window.

A drive the data stop following within a window without a failure (decommissioned, or the
table ends) counts only for the days it was followed: ``1 - (1 - p) ** (days / 30)``.
Time is on the table's power-on-hours scale (1 day = 24 POH), as in the model's evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import ValidationError

from fleetpulse.compat import UTC
from fleetpulse.contract import Component
from fleetpulse.models.data import (
    SURVIVAL_COLUMNS,
    SURVIVAL_FILE,
    Instants,
    _report,
    _snapshot,
    drive_group,
    file_digest,
)
from fleetpulse.models.features import DISK_FEATURES, disk_vector
from fleetpulse.models.forecast import count_interval, hazard_converted, poisson_binomial, shift_odds
from fleetpulse.models.forecast_calibration import (
    WindowCount,
    apply_factor,
    calibrate,
    convolve_all,
    mixed_count_pmf,
    mixing_variance,
    spread_shape,
    window_dispersion,
)
from fleetpulse.models.forecast_rows import calibration_key
from fleetpulse.models.forecast_settings import CalibrationPrior
from fleetpulse.models.state import DeviceState, apply_report_in_place
from fleetpulse.models.training import Split, labels

WINDOW_DAYS = 30
CUTOFF = date(2015, 7, 1)
HISTORY_WINDOWS = 6
"""Windows before the cut-off whose outcomes every forecast may learn from (the test drives only)."""
MIN_DRIVES = 1000
"""Drive models with fewer test drives in service at the cut-off are pooled as "other models"."""
OTHER = "other models"
ALL = "all models"

Progress = Callable[[int], None]


@dataclass
class Probes:
    """Feature rows of test drives at window starts, with the per-drive facts the outcome comes from."""

    features: np.ndarray  # (n, len(DISK_FEATURES))
    drive: np.ndarray  # (n,) index into the per-drive arrays
    window: np.ndarray  # (n,) window number k: the window starts at cutoff + 30 k
    models: list[str]
    end_day: np.ndarray  # (drives,) last observed day (POH-days)
    failed: np.ndarray  # (drives,) failure recorded at end_day

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path,
            features=self.features,
            drive=self.drive,
            window=self.window,
            models=np.array(self.models),
            end_day=self.end_day,
            failed=self.failed,
        )

    @classmethod
    def load(cls, path: Path) -> Probes:
        with np.load(path, allow_pickle=False) as z:
            return cls(z["features"], z["drive"], z["window"], [str(m) for m in z["models"]], z["end_day"], z["failed"])


def _day(at: datetime) -> float:
    return at.toordinal() + (at.hour + at.minute / 60.0) / 24.0


def _probe_drive(
    serial: str, model: str, group: pd.DataFrame, starts: list[float]
) -> tuple[list[list[float]], list[int], float]:
    """Replay one drive and take its feature row at every window start it is in service."""
    origin = datetime.fromisoformat(str(group["min_date"].iloc[0])).replace(hour=12, tzinfo=UTC)
    min_hours = float(group["min_hours"].iloc[0])
    raw = group[list(SURVIVAL_COLUMNS)].to_numpy(dtype=np.float64).tolist()
    hours = group["tstart"].to_numpy(dtype=np.float64).tolist()
    last_stop = float(group["tstop"].iloc[-1])
    events: list[tuple[float, int, list[float], int]] = []  # (hour, order, counters, window or -1)
    events += [(h, 0, row, -1) for h, row in zip(hours, raw, strict=True)]
    events.append((last_stop, 0, raw[-1], -1))
    first_day = _day(origin + timedelta(hours=max(0.0, hours[0] - min_hours)))
    end_day = _day(origin + timedelta(hours=max(0.0, last_stop - min_hours)))
    for k, start in enumerate(starts):
        if first_day <= start < end_day:
            events.append((min_hours + (start - _day(origin)) * 24.0, 1, [], k))
    events.sort(key=lambda e: (e[0], e[1]))
    state = DeviceState(device_id="backblaze")
    fields = list(SURVIVAL_COLUMNS.values())
    counters = raw[0]
    rows, windows = [], []
    for seq, (hour, _, row, window) in enumerate(events):
        counters = row if window < 0 else counters
        values: dict[str, object] = dict(zip(fields, counters, strict=True))
        values["power_on_hours"] = hour
        try:
            disk = _snapshot(serial, model, values)
        except ValidationError:
            continue
        at = origin + timedelta(hours=max(0.0, hour - min_hours))
        apply_report_in_place(state, _report(serial, seq, at, disk))
        if window >= 0:
            rows.append(disk_vector(state.disks[disk.serial_hash or disk.name]))
            windows.append(window)
    return rows, windows, end_day


def window_starts(windows: int, history: int = 0, cutoff: date = CUTOFF) -> list[float]:
    """Starts of ``history`` windows before the cut-off (calibration history only) and ``windows`` after it."""
    origin = datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=UTC)
    return [_day(origin + timedelta(days=WINDOW_DAYS * k)) for k in range(-history, windows)]


def survival_probes(
    path: Path, starts: list[float], progress: Progress | None = None, max_drives: int | None = None
) -> Probes:
    """Feature rows of the test drives (the model's held-out half) at each of ``starts``
    (the first ``max_drives`` test drives by serial, for a quick check)."""
    usecols = ["serial_number", "model", "min_date", "min_hours", "tstart", "tstop", "fails", *SURVIVAL_COLUMNS]
    frame = pd.read_csv(path, usecols=usecols, dtype={"serial_number": str, "model": str, "min_date": str})
    test_serials = sorted(s for s in frame["serial_number"].unique() if drive_group(str(s)) < 0.5)
    test_serials = test_serials[:max_drives] if max_drives is not None else test_serials
    frame = frame[frame["serial_number"].isin(test_serials)].sort_values(["serial_number", "tstart"], kind="stable")
    rows: list[list[float]] = []
    drive: list[int] = []
    window: list[int] = []
    models: list[str] = []
    end_days: list[float] = []
    failed: list[bool] = []
    for serial, group in frame.groupby("serial_number", sort=True):
        model = str(group["model"].iloc[0])
        probe = _probe_drive(str(serial), model, group, starts)
        if progress is not None:
            progress(len(group))
        drive_rows, drive_windows, end_day = probe
        if not drive_rows:
            continue
        rows += drive_rows
        drive += [len(models)] * len(drive_rows)
        window += drive_windows
        models.append(model)
        end_days.append(end_day)
        failed.append(bool(group["fails"].max() == 1))
    return Probes(
        features=np.asarray(rows, dtype=np.float32).reshape(-1, len(DISK_FEATURES)),
        drive=np.asarray(drive, dtype=np.int32),
        window=np.asarray(window, dtype=np.int32),
        models=models,
        end_day=np.asarray(end_days, dtype=np.float64),
        failed=np.asarray(failed, dtype=bool),
    )


def cached_probes(
    data_dir: Path, cache_dir: Path, windows: int, history: int, progress: Progress | None = None
) -> Probes:
    from fleetpulse.models.data import code_digest

    path = data_dir / SURVIVAL_FILE
    name = f"forecast-probes-{file_digest(path)[:12]}-{code_digest()}-{CUTOFF}-{history}-{windows}.npz"
    cache = cache_dir / name
    if cache.is_file():
        return Probes.load(cache)
    probes = survival_probes(path, window_starts(windows, history), progress)
    probes.save(cache)
    return probes


def disk_odds_factor(instants: Instants, cutoff: date = CUTOFF, horizon: int = WINDOW_DAYS) -> float:
    """Odds of failure within ``horizon`` days per drive-day over those per instant, on the training
    drives before ``cutoff`` only (what the model was fitted on, nothing of the backtest's data).

    Per instant: the share of labelled training instants followed by a failure within the horizon.
    Per drive-day: the training drives' failures over their days in service before the cut-off,
    as the probability of at least one failure in ``horizon`` days at that constant rate.
    """
    cutoff_day = float(cutoff.toordinal())
    split = Split(cutoff_day=cutoff_day)
    train, _ = split.masks(instants)
    per_instant = float(np.nanmean(labels(instants, horizon, cutoff_day)[train]))
    first = np.full(len(instants.serials), np.inf)
    np.minimum.at(first, instants.drive, instants.day)
    training_drive = ~split.test_drive(instants)
    days = np.clip(np.minimum(instants.end_day, cutoff_day) - first, 0.0, None)[training_drive].sum()
    failures = (instants.failed & (instants.end_day < cutoff_day))[training_drive].sum()
    per_day = 1.0 - math.exp(-failures / days * horizon)
    return (per_day / (1.0 - per_day)) / (per_instant / (1.0 - per_instant))


@dataclass(frozen=True)
class BacktestRow:
    group: str
    window: int
    drives: int
    expected: float
    low: int
    high: int
    observed: int

    @property
    def covered(self) -> bool:
        return self.low <= self.observed <= self.high


@dataclass(frozen=True)
class WindowOutcome:
    """Per drive in service at one window start: the forecast probability and whether it failed in the window."""

    probability: np.ndarray
    model: np.ndarray
    failed: np.ndarray


def window_outcomes(
    probes: Probes, risk_30d: np.ndarray, starts: list[float], odds_factor: float = 1.0
) -> list[WindowOutcome]:
    """The uncorrected forecast of every window: risks' odds multiplied by ``odds_factor``, a drive
    the data stop following counted for the days it was followed."""
    names = np.array(probes.models)
    out = []
    for k, start in enumerate(starts):
        here = probes.window == k
        drives = probes.drive[here]
        end = probes.end_day[drives]
        failed_in = probes.failed[drives] & (end < start + WINDOW_DAYS)
        followed = np.where(failed_in, WINDOW_DAYS, np.minimum(end - start, WINDOW_DAYS))
        p = np.array(
            [
                hazard_converted(shift_odds(r, odds_factor), WINDOW_DAYS, max(f, 0.0))
                for r, f in zip(risk_30d[here], followed, strict=True)
            ]
        )
        out.append(WindowOutcome(p, names[drives], failed_in))
    return out


def window_counts(outcomes: list[WindowOutcome], starts: list[float]) -> list[WindowCount]:
    """Observed and uncorrected expected failures per drive model and window (the calibration's evidence)."""
    counts = []
    for o, start in zip(outcomes, starts, strict=True):
        for model in np.unique(o.model).tolist():
            mine = o.model == model
            counts.append(
                WindowCount(
                    Component.DISK,
                    model,
                    start,
                    start + WINDOW_DAYS,
                    float(o.probability[mine].sum()),
                    int(o.failed[mine].sum()),
                )
            )
    return counts


def prior_from_history(counts: list[WindowCount]) -> CalibrationPrior:
    """The spread and dispersion measured on ``counts`` alone (no prior weight): what the shipped
    :class:`~fleetpulse.models.forecast_settings.CalibrationPrior` defaults are, from the windows
    before the cut-off."""
    blank = CalibrationPrior(spread_weight=0.0, dispersion_weight=0.0, pooled_strength=1e-9, half_life_days=None)
    end = max(c.end for c in counts)
    fitted = calibrate(counts, end, blank)
    factors = [fitted.of(c.component, c.hardware_model).factor for c in counts]
    totals: dict[str, list[float]] = {}
    for c in counts:
        t = totals.setdefault(c.hardware_model, [0.0, 0.0])
        t[0] += c.observed
        t[1] += c.expected
    pooled = fitted.pooled[calibration_key(Component.DISK, "")].factor
    shape = spread_shape(list(totals.values()), pooled, blank.model_copy(update={"spread_shape": 1.0}))
    dispersion = window_dispersion(
        [c.observed for c in counts], [f * c.expected for f, c in zip(factors, counts, strict=True)], 0.0, 0.0
    )
    return CalibrationPrior(spread_shape=shape, dispersion=dispersion)


def backtest(
    probes: Probes,
    risk_30d: np.ndarray,
    coverage: float,
    starts: list[float],
    odds_factor: float = 1.0,
    history: int = 0,
    prior: CalibrationPrior | None = None,
) -> list[BacktestRow]:
    """Forecast against outcome per drive model (those with ``MIN_DRIVES`` test drives at the
    cut-off, the rest pooled) and window after the ``history`` windows, plus the fleet total per
    window; the risks' odds multiplied by ``odds_factor`` first (1: as served).

    With a ``prior``, each window's forecast is recalibrated per drive model from the windows
    that ended before it starts (:func:`~fleetpulse.models.forecast_calibration.calibrate`) and
    its interval is the overdispersed one; without, it is the exact Poisson-binomial of the
    uncorrected probabilities. A group's interval is that of the sum of its models' counts.
    """
    at_cutoff = probes.drive[probes.window == history]
    counts: dict[str, int] = {}
    for d in at_cutoff:
        counts[probes.models[d]] = counts.get(probes.models[d], 0) + 1
    named = {m for m, n in counts.items() if n >= MIN_DRIVES}
    outcomes = window_outcomes(probes, risk_30d, starts, odds_factor)
    evidence = window_counts(outcomes, starts) if prior is not None else []
    rows = []
    for k in range(history, len(starts)):
        o = outcomes[k]
        fitted = calibrate(evidence, starts[k], prior) if prior is not None else None
        pmfs: dict[str, np.ndarray] = {}
        p = o.probability.copy()
        for model in np.unique(o.model).tolist():
            mine = o.model == model
            if fitted is None:
                pmfs[model] = poisson_binomial(p[mine])
                continue
            fit = fitted.of(Component.DISK, model)
            p[mine] = apply_factor(p[mine], fit.factor)
            pmfs[model] = mixed_count_pmf(p[mine], mixing_variance(fit, fitted.dispersion_of(Component.DISK)))
        groups = np.array([m if m in named else OTHER for m in o.model])
        for name in [*sorted(named), OTHER, ALL]:
            mask = np.ones(len(p), dtype=bool) if name == ALL else groups == name
            if not mask.any():
                continue
            pmf = convolve_all([pmfs[m] for m in np.unique(o.model[mask]).tolist()])
            low, high = count_interval(pmf, coverage)
            rows.append(
                BacktestRow(
                    name, k - history, int(mask.sum()), float(p[mask].sum()), low, high, int(o.failed[mask].sum())
                )
            )
    return rows


@dataclass(frozen=True)
class GroupSummary:
    """One drive model over all windows: how often the interval held the outcome, and the totals."""

    group: str
    windows: int
    covered: int
    expected: float
    observed: int

    @property
    def error_pct(self) -> float:
        """Error of the total forecast, relative to what happened."""
        return 100.0 * (self.expected - self.observed) / self.observed if self.observed else math.nan


def summary(rows: list[BacktestRow]) -> list[GroupSummary]:
    out = []
    for name in dict.fromkeys(r.group for r in rows):
        mine = [r for r in rows if r.group == name]
        out.append(
            GroupSummary(
                name,
                len(mine),
                sum(r.covered for r in mine),
                sum(r.expected for r in mine),
                sum(r.observed for r in mine),
            )
        )
    return out


def windows_in_data(cutoff: date = CUTOFF, last: date = date(2016, 9, 30)) -> int:
    """Whole 30-day windows between the cut-off and the table's last date."""
    return (last - cutoff).days // WINDOW_DAYS


def _iter_rows(rows: list[BacktestRow]) -> Iterator[str]:
    for r in rows:
        yield (
            f"| {r.group} | {r.window + 1} | {r.drives:,} | {r.expected:.1f} | {r.low}-{r.high} | {r.observed} | "
            f"{'yes' if r.covered else 'no'} |"
        )


def markdown(
    rows: list[BacktestRow],
    base: list[BacktestRow],
    served: list[BacktestRow],
    coverage: float,
    odds_factor: float,
    prior: CalibrationPrior,
    model_id: str,
    data_sha: str,
) -> str:
    """The disk section of the backtest report: per drive model the recalibrated forecast (``rows``,
    what ``fleetpulse forecast`` serves), the base-rate forecast alone (``base``) and the raw model
    risk (``served``)."""
    lines = [
        "# Parts forecast backtest",
        "",
        "## Disks on the 2013-2016 Backblaze survival table",
        "",
        f"Model: shipped champion `{model_id}` (30-day probability). Data: `{Path(SURVIVAL_FILE).name}` "
        f"(sha256 `{data_sha[:12]}`). A forecast is made at the start of each {WINDOW_DAYS}-day window after "
        f"the model's cut-off {CUTOFF}, for the held-out test drives in service then, and compared with the "
        f"failures of the window. Base-rate odds factor {odds_factor:.4f} (training drives before the cut-off). "
        f"Recalibrated: per drive model a rate factor shrunk toward the pooled one, learned from the "
        f"{HISTORY_WINDOWS} windows before the cut-off and every window that ended before the forecast's "
        "(never from the window scored), with the overdispersed interval; prior measured on the windows "
        f"before the cut-off: spread shape {prior.spread_shape:.2f}, dispersion {prior.dispersion:.3f}. "
        f"Nominal interval {100 * coverage:g} % (equal-tailed). "
        "Error of the total = (expected - observed) / observed over all windows.",
        "",
        "| drive model | windows | interval held | expected | observed | error of the total "
        "| base rate only: held | base rate only: error | raw risk: held | raw risk: error |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for g, b, raw in zip(summary(rows), summary(base), summary(served), strict=True):
        lines.append(
            f"| {g.group} | {g.windows} | {g.covered}/{g.windows} ({100 * g.covered / g.windows:.0f} %) | "
            f"{g.expected:.1f} | {g.observed} | {g.error_pct:+.0f} % | {b.covered}/{b.windows} | "
            f"{b.error_pct:+.0f} % | {raw.covered}/{raw.windows} | {raw.error_pct:+.0f} % |"
        )
    lines += [
        "",
        "Every window (recalibrated):",
        "",
        "| drive model | window | drives | expected | interval | observed | held |",
        "|---|---|---|---|---|---|---|",
        *_iter_rows(rows),
        "",
    ]
    return "\n".join(lines)


def simulated_markdown(
    rows: list[BacktestRow], base: list[BacktestRow], coverage: float, devices: int, seed: int, days: int
) -> str:
    """The batteries-and-fans section: the same comparison on the fleet simulator's ground truth,
    recalibrated (``rows``) and not (``base``)."""
    lines = [
        "## Batteries and fans on the fleet simulator",
        "",
        f"`fleetpulse.agents.simulator`, {devices:,} devices (default fleet mix), seed {seed}, {days} days; "
        f"forecasts at the start of each {WINDOW_DAYS}-day window after 180 days of history, from the served "
        "battery and thermal rule scores, for the parts not yet failed; observed = the simulator's ground-truth "
        "failures in the window. Recalibrated: a rate factor per part learned from the windows that ended "
        "before the forecast's (from day 90 on), with the overdispersed interval; uncorrected: the exact "
        f"Poisson-binomial of the scores' probabilities. Nominal interval {100 * coverage:g} %.",
        "",
        "| part | windows | interval held | expected | observed | error of the total "
        "| uncorrected: held | uncorrected: expected | uncorrected: error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for g, b in zip(summary(rows), summary(base), strict=True):
        lines.append(
            f"| {g.group} | {g.windows} | {g.covered}/{g.windows} ({100 * g.covered / g.windows:.0f} %) | "
            f"{g.expected:.1f} | {g.observed} | {g.error_pct:+.0f} % | {b.covered}/{b.windows} | "
            f"{b.expected:.1f} | {b.error_pct:+.0f} % |"
        )
    lines += [
        "",
        "Every window (recalibrated):",
        "",
        "| part | window | parts | expected | interval | observed | held |",
        "|---|---|---|---|---|---|---|",
        *_iter_rows(rows),
        "",
    ]
    return "\n".join(lines)
