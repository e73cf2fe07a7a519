"""The evaluation report: Markdown + PNG plots + a machine-readable metrics.json."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from fleetpulse.compat import UTC
from fleetpulse.models.anomaly_eval import AnomalyResult
from fleetpulse.models.battery_eval import CALIBRATED, LEAVE_ONE_OUT, OTHER_HALF, SLOPE_SPREAD, BatteryResult
from fleetpulse.models.battery_interval import FACTORS, NOMINAL_COVERAGE
from fleetpulse.models.disk_model import ALARM_SECTORS
from fleetpulse.models.evaluation import CAPS, TICKETS_PER_WEEK, PairedDifference, threshold_at_cap
from fleetpulse.models.pipeline import RULE_NAME, ExperimentResult, HorizonResult
from fleetpulse.models.thresholds import COVERAGE, MIN_MODELS
from fleetpulse.models.transfer import MIN_FAILED_DRIVES, MODEL, SINGLE, HeldOut, TransferResult


def _pct(value: float | None) -> str:
    return "-" if value is None or value != value else f"{100 * value:.1f}%"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _finite(scores: np.ndarray, floor: float) -> np.ndarray:
    return np.where(np.isfinite(scores), scores, floor)


def _plots(result: ExperimentResult, horizon: HorizonResult, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    stem = f"{result.experiment.kind}_{horizon.horizon}d"
    files = []
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for scorer in horizon.scorers:
        d = scorer.drives
        all_scores = np.concatenate([d.positive, d.negative])
        floor = float(np.min(all_scores[np.isfinite(all_scores)])) - 1.0 if np.isfinite(all_scores).any() else 0.0
        y = np.concatenate([np.ones(len(d.positive)), np.zeros(len(d.negative))])
        precision, recall, _ = precision_recall_curve(y, _finite(all_scores, floor))
        ax.step(recall, precision, where="post", label=f"{scorer.name} (AP {scorer.pr_auc:.3f})")
    ax.set_xlabel("recall (failed drives detected)")
    ax.set_ylabel("precision (drives)")
    ax.set_title(f"{result.experiment.name}, {horizon.horizon}-day horizon")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / f"pr_{stem}.png", dpi=110)
    plt.close(fig)
    files.append(f"pr_{stem}.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    model = horizon.scorers[0]
    for cap in CAPS:
        thr = threshold_at_cap(model.drives.negative, cap)
        lead = [
            float(days[s >= thr].max())
            for days, s in zip(model.drives.pos_days, model.drives.pos_scores, strict=True)
            if len(s) and (s >= thr).any()
        ]
        ax.hist(
            lead,
            bins=list(range(horizon.horizon + 2)),
            alpha=0.6,
            label=f"model at {100 * cap:g}% false alarms (n={len(lead)})",
        )
    ax.set_xlabel("lead time (days from first alarm to failure)")
    ax.set_ylabel("failed drives")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"lead_{stem}.png", dpi=110)
    plt.close(fig)
    files.append(f"lead_{stem}.png")

    if horizon.calibration is not None:
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        cal = horizon.calibration
        shown = (cal.predicted > 0) & (cal.observed > 0)  # log axes
        low = (
            max(1e-4, float(min(cal.predicted[shown].min(), cal.observed[shown].min())) / 1.5) if shown.any() else 1e-4
        )
        ax.plot([low, 1.0], [low, 1.0], "k--", lw=1, label="perfect")
        ax.plot(cal.predicted[shown], cal.observed[shown], "o-", label="model")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("predicted probability (tail-split bins)")
        ax.set_ylabel("observed failure fraction")
        ax.set_title(f"calibration, {horizon.horizon}-day")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / f"calibration_{stem}.png", dpi=110)
        plt.close(fig)
        files.append(f"calibration_{stem}.png")
    return files


def _verdict(horizon: HorizonResult) -> list[str]:
    """Does the model beat each baseline at each operating point? Stated plainly, no spin."""
    model = horizon.scorers[0]
    lines = []
    for baseline in horizon.scorers[1:]:
        for point, stats in baseline.points.items():
            b, m = stats["detection_rate"], model.points[point]["detection_rate"]
            if b is None or m is None:
                continue
            word = "beats" if m > b else "ties" if m == b else "does NOT beat"
            line = f"- {point}: model {word} {baseline.name} ({_pct(m)} vs {_pct(b)} of failed drives detected"
            exact = model.points[point].get("detection_rate_at_exact_far")
            if exact is not None and exact != m:
                word = "beats" if exact > b else "ties" if exact == b else "does NOT beat"
                line += (
                    f"; with ties split to reach exactly the same false-alarm rate the model {word} it: {_pct(exact)}"
                )
            diff = horizon.differences.get(baseline.name, {}).get(point)
            if diff is not None:
                line += (
                    f"; paired, ties split for both: {100 * diff.difference:+.1f} points, 95% CI "
                    f"{100 * diff.low:+.1f} to {100 * diff.high:+.1f}{_interval_word(diff)}"
                )
            lines.append(line + ")")
    return lines


def _interval_word(diff: PairedDifference) -> str:
    if diff.low == diff.high == 0.0:
        return " (equal in every resample)"
    return " (within sampling error)" if diff.low <= 0.0 <= diff.high else ""


_PAIRED_NOTE = (
    "Each line compares detection at the same false-alarm rate. The paired difference alarms on a random part of "
    "a tied score's drives to reach exactly that rate, for both scorers (for the rule below its own rate that "
    "means a random part of the drives it flags), and its 95% interval comes from 1,000 resamples of the test "
    "drives, the same drives for both scorers."
)


def _headroom(horizon: HorizonResult) -> tuple[list[str], dict[str, Any]]:
    """Whether the data leaves any room to beat the rule at its own rate, in numbers."""
    if not horizon.headroom:
        return [], {}
    md = [
        "",
        "Can any ranking beat the Backblaze rule at its own false-alarm rate? Only by alarming on some drives the "
        "rule leaves alone instead of some it flags, which pays only if the riskiest unflagged drives fail more "
        "often than the least risky flagged ones. Failure shares, drives ranked by the model:",
        "",
        "| drives | flagged by the rule | least risky tenth of them | not flagged | riskiest tenth of them | "
        "riskiest 1% of them |",
        "|---|---|---|---|---|---|",
    ]
    for name, h in horizon.headroom.items():
        md.append(
            f"| {name} | {h.flagged_drives:,} | {_pct(h.least_risky_flagged_failure_share)} | "
            f"{h.unflagged_drives:,} | {_pct(h.riskiest_unflagged_failure_share)} | "
            f"{_pct(h.riskiest_percent_unflagged_failure_share)} |"
        )
    return md, {name: vars(h) for name, h in horizon.headroom.items()}


def _calibration_table(horizon: HorizonResult) -> tuple[list[str], dict[str, Any]]:
    """Predicted vs observed on the labelled test instants, the tail split finely."""
    cal = horizon.calibration
    if cal is None:
        return [], {}
    md = [
        "",
        f"Calibration on the labelled test instants ({int(cal.count.sum()):,}, natural prevalence); bins are "
        "quantiles 0-50-80-90-95-98-99-99.9-100 % of the predicted probability (tied edges merge bins):",
        "",
        "| instants | mean predicted | observed failure fraction |",
        "|---|---|---|",
        *(f"| {n:,} | {p:.4f} | {o:.4f} |" for n, p, o in zip(cal.count, cal.predicted, cal.observed, strict=True)),
    ]
    metrics = {"count": cal.count.tolist(), "predicted": cal.predicted.tolist(), "observed": cal.observed.tolist()}
    return md, metrics


def _counter_weight(model: Any) -> tuple[list[str], dict[str, Any]]:
    """Age and counter weight as chosen on the training drives, and the objective at every grid point."""
    if model is None or not hasattr(model, "counter_weight_"):
        return [], {}
    described = model.describe()
    grid = described["objective_per_counter_weight"]
    chosen = f"{'age' if described['age_used'] else 'no age'}, w={described['counter_weight']:g}"
    md = [
        "",
        f"Chosen on the training drives: **{chosen}** (ranking score = trees' logit + w x counter score + "
        f"{described['tie_break']:g} x tie-break; age = power-on hours as a monotone tree input). Chosen by mean "
        "detection over false-alarm rates 0..1 % on out-of-fold scores whose folds hold out whole drive models "
        "(labels censored at the cut-off); test drives are not read. Objective per grid point:",
        "",
        "| choice | mean detection, training drives (leave-model-out) |",
        "|---|---|",
        *(
            f"| {'**' + k + '**' if k == chosen else k} | {'-' if v is None else f'{100 * v:.2f}%'} |"
            for k, v in grid.items()
        ),
    ]
    metrics = {"chosen": chosen, "objective": grid}
    return md, metrics


def experiment_section(result: ExperimentResult, out: Path) -> tuple[list[str], dict[str, Any]]:
    exp = result.experiment
    md = [f"## {exp.name}", "", exp.description, ""]
    md.append(f"Training drives: {result.train_drives:,}; test drives: {result.test_drives:,}.")
    metrics: dict[str, Any] = {"train_drives": result.train_drives, "test_drives": result.test_drives, "horizons": {}}
    for horizon in result.horizons:
        files = _plots(result, horizon, out)
        md += [
            "",
            f"### {horizon.horizon}-day horizon",
            "",
            f"Test: {horizon.test_positive_drives} failed drives, {horizon.test_healthy_drives:,} healthy drives with "
            f"at least {horizon.horizon} days of follow-up (natural prevalence). Training: "
            f"{horizon.train_instants:,} labelled instants, {horizon.train_positive_instants:,} positive.",
            "",
        ]
        points = list(horizon.scorers[0].points)
        header = (
            "| scorer | PR-AUC | "
            + " | ".join(f"detection @ {p}" for p in points)
            + " | F1 @ cap 1% | lead median / p10 (days) @ cap 1% | Brier |"
        )
        md += [header, "|" + "---|" * (header.count("|") - 1)]
        h_metrics: dict[str, Any] = {}
        for scorer in horizon.scorers:
            cap1 = scorer.points["cap 1%"]
            cells = [
                scorer.name,
                f"{scorer.pr_auc:.3f}",
                *(
                    f"{_pct(scorer.points[p]['detection_rate'])} (FA {_pct(scorer.points[p]['false_alarm_rate'])})"
                    for p in points
                ),
                f"{_num(cap1['f1'], 3)}",
                f"{_num(cap1['lead_median_days'])} / {_num(cap1['lead_p10_days'])}",
                "-" if scorer.brier is None else f"{scorer.brier:.5f}",
            ]
            md.append("| " + " | ".join(cells) + " |")
            h_metrics[scorer.name] = {
                "pr_auc": scorer.pr_auc,
                "brier": scorer.brier,
                "points": scorer.points,
                "precision_at_k": scorer.precision_at_k,
            }
        md += ["", "Precision of the k highest-risk drives per week (tickets per week):", ""]
        md += [
            "| scorer | " + " | ".join(f"k={k}" for k in TICKETS_PER_WEEK) + " |",
            "|---|" + "---|" * len(TICKETS_PER_WEEK),
        ]
        for scorer in horizon.scorers:
            md.append(
                f"| {scorer.name} | " + " | ".join(_pct(scorer.precision_at_k[k]) for k in TICKETS_PER_WEEK) + " |"
            )
        if horizon.alert_thresholds:
            md += [
                "",
                "Alert thresholds for deployment, chosen on out-of-fold scores of the training drives before the "
                "cut-off (stored in the artifact), and what the same thresholds give on the test drives:",
                "",
                "| cap | probability threshold | training FA / detection | test FA / detection |",
                "|---|---|---|---|",
            ]
            for cap, t in horizon.alert_thresholds.items():
                md.append(
                    f"| {cap} | {_num(t['threshold'], 4)} | {_pct(t['train_false_alarm_rate'])} / "
                    f"{_pct(t['train_detection_rate'])} | {_pct(t['test_false_alarm_rate'])} / "
                    f"{_pct(t['test_detection_rate'])} |"
                )
        calibration_md, calibration_metrics = _calibration_table(horizon)
        md += calibration_md
        weight_md, weight_metrics = _counter_weight(result.models.get(horizon.horizon))
        md += weight_md
        md += ["", "Verdict (same false-alarm rate):", "", *_verdict(horizon), "", _PAIRED_NOTE]
        headroom_md, headroom_metrics = _headroom(horizon)
        md += headroom_md
        md += ["", *(f"Note: {n}" for n in horizon.notes)]
        md += ["", *(f"![{f}]({f})" for f in files)]
        h_metrics["alert_thresholds"] = horizon.alert_thresholds
        h_metrics["counter_weight_selection"] = weight_metrics
        h_metrics["paired_differences"] = {
            name: {point: vars(d) for point, d in by_point.items()} for name, by_point in horizon.differences.items()
        }
        h_metrics["rule_headroom"] = headroom_metrics
        h_metrics["calibration"] = calibration_metrics
        metrics["horizons"][str(horizon.horizon)] = h_metrics
    return md, metrics


_BUCKETS = ("0-30", "30-90", "90-180")
_INTERVAL_BUCKETS = (*_BUCKETS, "all")


def _interval_rows(result: BatteryResult, with_estimate: bool, in_sample: bool) -> list[str]:
    """One row per estimate and interval kind: the old one first, the served factors last."""
    rows = []
    order = (SLOPE_SPREAD, LEAVE_ONE_OUT, OTHER_HALF, CALIBRATED)
    for estimate, kinds in result.interval_table().items():
        for kind in sorted(kinds, key=order.index):
            by_bucket = kinds[kind]
            cover = " / ".join(_pct(by_bucket[b]["coverage"]) if b in by_bucket else "-" for b in _INTERVAL_BUCKETS)
            width = " / ".join(_num(by_bucket[b]["median_width_days"], 0) if b in by_bucket else "-" for b in _BUCKETS)
            nominal = "none stated" if kind == SLOPE_SPREAD else f"{NOMINAL_COVERAGE * 100:.0f} %"
            label = f"{kind} (in-sample)" if in_sample and kind == CALIBRATED else kind
            first = f"{estimate} | " if with_estimate else ""
            rows.append(f"| {first}{label} | {nominal} | {cover} | {width} |")
    return rows


def battery_section(
    real: BatteryResult, simulated: BatteryResult | None, sim_note: str
) -> tuple[list[str], dict[str, Any]]:
    md = [
        "## Battery end of life",
        "",
        "Days until the capacity ratio crosses 80 % and 60 % of design, predicted after every reading from the "
        "readings so far; error grouped by the true remaining days. Real series: " + ", ".join(real.series_used) + ". "
        "Lab cells: one cycle = one day. Runtime under 3 h is scored on simulated laptops only (no real runtime "
        "histories exist). The fit windows (60/240 days) were chosen on these same real series "
        "(no held-out battery data exists), so the real-data numbers are optimistic; the simulated laptops were not "
        "used for any choice, except that the runtime method (capacity trend x runtime per capacity) was designed "
        "knowing the simulator draws runtime in proportion to capacity, and was tried on 300 other simulated laptops "
        "(seed 1) first. Its truth (first 5-reading median under 3 h) comes earlier than the mean crossing because "
        "runtime readings scatter +-13 %, which is most of its remaining error.",
        "",
    ]
    metrics: dict[str, Any] = {"real": real.table()}
    for title, result in (("real histories", real), ("simulated laptops", simulated)):
        if result is None:
            continue
        md += [
            f"### {title}",
            "",
            "| method | remaining 0-30 d: MAE (n) | 30-90 d | 90-180 d |",
            "|---|---|---|---|",
        ]
        for method, buckets in result.table().items():
            md.append(
                f"| {method} | " + " | ".join(f"{_num(b['mae_days'])} ({b['n']})" for b in buckets.values()) + " |"
            )
        md.append("")
    if simulated is not None:
        metrics["simulated"] = simulated.table()
        md += [sim_note, ""]
    md += [
        "### Interval (low..high days on the score and the ticket)",
        "",
        f"Nominal {NOMINAL_COVERAGE * 100:.0f} %, equal tails: split-conformal on the relative error of the point estimate, "
        "log((true + 1) / (predicted + 1)) days, per bin of the predicted days (already below / up to 30 / 90 / 365 "
        "/ longer), each battery weighted equally within a bin (`models/battery_interval.py`). The served factors "
        "are fitted on all the real series above (regenerate: `python -m fleetpulse.models.battery_calibration`), "
        f"so their coverage on those series is in-sample; **leave-one-series-out** (factors from the other "
        f"{len(real.series_used) - 1} series only) is the honest real-data number. The level (80 %: nine batteries "
        "cannot place a 2.5 % tail), the bins and the weighting were fixed before any coverage was seen; two other "
        "bin variables (distance of the capacity to the threshold, prediction / history span) were then tried "
        "leave-one-series-out on the same series, gave no clear gain, and were not kept. The simulated laptops "
        "were not used for any interval choice; they are scored with the served factors (real data only) and, to "
        "tell the method from the transfer from lab cells to laptops, with factors fitted on the other half of the "
        "simulated laptops (halves by a hash of the device id; capacity estimate only; not served). "
        "Coverage = share of predictions whose interval held the true remaining days; buckets by the true remaining "
        "days as above, plus all = every prediction with a crossing ahead (also beyond 180 days: the population the "
        "factors are calibrated on). Width = median high - low in days. Coverage counts predictions while "
        "the factors weigh batteries equally, so pooled coverage can miss nominal even in-distribution. The "
        "calibration holds given the prediction, "
        "not given the outcome: batteries just before the knee are predicted too long, so the bucket of true "
        "remaining 0-30 days is covered less than nominal and the longer buckets more.",
        "",
        "Real histories (estimate: robust capacity trend, both thresholds):",
        "",
        "| interval | nominal | coverage 0-30 / 30-90 / 90-180 / all | median width 0-30 / 30-90 / 90-180 (days) |",
        "|---|---|---|---|",
        *_interval_rows(real, with_estimate=False, in_sample=True),
        "",
    ]
    metrics["interval"] = {
        "nominal_coverage": NOMINAL_COVERAGE,
        "served_factors": [asdict(f) for f in FACTORS],
        "real": real.interval_table(),
    }
    if simulated is not None:
        md += [
            "Simulated laptops (60 % and runtime < 3 h):",
            "",
            "| estimate | interval | nominal | coverage 0-30 / 30-90 / 90-180 / all "
            "| median width 0-30 / 30-90 / 90-180 (days) |",
            "|---|---|---|---|---|",
            *_interval_rows(simulated, with_estimate=True, in_sample=False),
            "",
        ]
        metrics["interval"]["simulated"] = simulated.interval_table()
    return md, metrics


def _diff(d: PairedDifference) -> str:
    return f"{100 * d.difference:+.1f} ({100 * d.low:+.1f}..{100 * d.high:+.1f})"


def _held_out_rows(rows: list[HeldOut]) -> tuple[list[str], list[str], list[str], list[str]]:
    """(detection, paired differences, stored alert thresholds, calibration and choices) table rows."""
    scorers = (MODEL, RULE_NAME, SINGLE)
    detection, differences, alerts, calibration = [], [], [], []
    for h in rows:
        name = f"**{h.name}**" if h.kind == "pooled" else h.name
        trio = [" / ".join(_pct(h.detection[s][p]) for s in scorers) for p in h.detection[MODEL]]
        lead = " / ".join(_num(h.lead_median_days[s], 0) for s in scorers)
        detection.append(
            f"| {name} | {h.failed_drives} / {h.healthy_drives:,} | {h.single_attribute} | {trio[0]} | {trio[1]} | "
            f"{_pct(h.rule_far)}: {trio[2]} | {' / '.join(f'{h.pr_auc[s]:.3f}' for s in scorers)} | {lead} |"
        )
        cells = [_diff(h.differences[b][p]) for b in (RULE_NAME, SINGLE) for p in h.detection[MODEL]]
        differences.append(f"| {name} | " + " | ".join(cells) + " |")
        for cap, a in h.alerts.items():
            low, high = a["threshold_min"], a["threshold_max"]
            threshold = f"{low:.3f}" if low == high else f"{low:.3f}-{high:.3f}"
            verdict = (
                "yes"
                if a["false_alarm_rate"] <= a["cap"]
                else "within interval"
                if a["false_alarm_low"] <= a["cap"]
                else "**no**"
            )
            alerts.append(
                f"| {name} | {cap} | {threshold} | {int(a['false_alarms']):,} / {int(a['healthy_drives']):,} | "
                f"{100 * a['false_alarm_rate']:.2f}% ({100 * a['false_alarm_low']:.2f}-{100 * a['false_alarm_high']:.2f}%) "
                f"| {verdict} | {_pct(a['detection_rate'])} |"
            )
        cal = h.calibration
        choices = ", ".join(
            sorted(
                {f"{'age' if age else 'no age'} w={w:g}" for age, w in zip(h.age_used, h.counter_weight, strict=True)}
            )
        )
        calibration.append(
            f"| {name} | {cal['mean_predicted']:.4f} / {cal['observed']:.4f} ({int(cal['instants']):,}) | {choices} |"
        )
    return detection, differences, alerts, calibration


def _held_out_metrics(h: HeldOut) -> dict[str, Any]:
    return {
        "kind": h.kind,
        "failed_drives": h.failed_drives,
        "healthy_drives": h.healthy_drives,
        "single_attribute": h.single_attribute,
        "rule_false_alarm_rate": h.rule_far,
        "detection": h.detection,
        "pr_auc": h.pr_auc,
        "lead_median_days_at_1pct": h.lead_median_days,
        "paired_differences": {b: {p: vars(d) for p, d in by.items()} for b, by in h.differences.items()},
        "stored_thresholds_on_held_out": h.alerts,
        "calibration": h.calibration,
        "age_used": h.age_used,
        "counter_weight": h.counter_weight,
    }


def transfer_section(result: TransferResult) -> tuple[list[str], dict[str, Any]]:
    """The headline: drive models (and vendors) the model never saw in training."""
    exp = result.experiment
    md = [
        f"## Drive models never seen in training: {exp.name}, {result.horizon}-day horizon",
        "",
        f"Leave one drive model out, for every drive model with at least {MIN_FAILED_DRIVES} failed drives after the "
        "cut-off, then pooled over them; below, leave one vendor out. The model and the single-attribute baseline "
        "are fitted on the other drive models only (training drives, instants before the cut-off, labels censored "
        "there; age, counter weight, calibration and alert thresholds chosen on out-of-fold scores whose folds hold "
        "out whole drive models), and tested on every drive of the held-out model from the cut-off on, at its "
        "natural prevalence. Detection at exactly the false-alarm rate (a tied score's drives alarmed in part, for "
        "every scorer, so the binary rule can be compared below its own rate); lead time = median days from the first "
        "alarm to failure at 1 % false alarms. Cells read model / Backblaze rule / single attribute.",
        "",
    ]
    metrics: dict[str, Any] = {"horizon": result.horizon, "held_out": {}}
    blocks = (
        ("Held-out drive models", [*result.drive_models, *([result.pooled] if result.pooled else [])]),
        ("Held-out vendors", result.vendors),
    )
    for title, rows in blocks:
        if not rows:
            md += [f"{title}: none with at least {MIN_FAILED_DRIVES} failed drives after the cut-off.", ""]
            continue
        detection, differences, alerts, calibration = _held_out_rows(rows)
        md += [
            f"### {title}",
            "",
            "| held out | failed / healthy drives | single attribute | detection @ FA 0.1% | @ FA 1% | "
            "@ rule's FA rate | PR-AUC | lead median (days) |",
            "|---|---|---|---|---|---|---|---|",
            *detection,
            "",
            "Model minus baseline, detection points, paired bootstrap 95 % interval (1,000 resamples of the held-out "
            "drives, the same drives for both):",
            "",
            "| held out | vs rule @ 0.1% | vs rule @ 1% | vs rule @ its rate | vs single @ 0.1% | vs single @ 1% | "
            "vs single @ rule's rate |",
            "|---|---|---|---|---|---|---|",
            *differences,
            "",
            f"Alert thresholds as the artifact stores them, applied to the held-out drives. Per cap: the lowest "
            f"threshold that keeps the cap on at least {100 * COVERAGE:g} % of the training drive models, each "
            "measured on its own leave-model-out scores (drive models with enough healthy drives to allow one false "
            f"alarm at the cap; with fewer than {MIN_MODELS} such models, the pooled training drives); a drive with "
            f"{ALARM_SECTORS:,} or more bad sectors scores at least the highest of them, so it is ticketed at every cap "
            "from its first report (a pooled row spans its folds' thresholds). False alarms = alarmed / healthy held-out drives, with a 95 % "
            "bootstrap interval (drives resampled; no alarm among n drives gives 0-0, yet up to 3/n is not ruled "
            "out); at or under the cap: the rate, else its interval; detection = failed held-out drives alarmed "
            f"in the {result.horizon} days before failure.",
            "",
            "| held out | cap | threshold | false alarms | false-alarm rate (95 % interval) | at or under the cap | "
            "detection |",
            "|---|---|---|---|---|---|---|",
            *alerts,
            "",
            "Calibration = mean predicted probability vs observed failure fraction over the labelled held-out "
            "instants; the choices the inner validation made:",
            "",
            "| held out | predicted / observed (instants) | chosen |",
            "|---|---|---|",
            *calibration,
            "",
        ]
        for h in rows:
            metrics["held_out"][h.name] = _held_out_metrics(h)
    cal = result.pooled_calibration
    if cal is not None:
        md += [
            "Calibration pooled over the held-out drive models (labelled instants; quantile bins of the prediction):",
            "",
            "| instants | mean predicted | observed failure fraction |",
            "|---|---|---|",
            *(f"| {n:,} | {p:.4f} | {o:.4f} |" for n, p, o in zip(cal.count, cal.predicted, cal.observed, strict=True)),
            "",
        ]
        metrics["pooled_calibration"] = {
            "count": cal.count.tolist(),
            "predicted": cal.predicted.tolist(),
            "observed": cal.observed.tolist(),
        }
    return md, metrics


def anomaly_section(result: AnomalyResult | None) -> list[str]:
    if result is None:
        return []
    caps = list(result.detection)
    md = [
        "## Device anomaly score (simulated fleet only)",
        "",
        f"No real labelled data exists for crashes or overheating, so this checks the mechanism on "
        f"{result.devices} simulated PCs (90 days, failure hazards x10 so a small fleet has failures; scored every "
        f"3 days with cohort baselines refitted). Detection = failure preceded within 14 days by a score at or above "
        f"the threshold; false alarms over {result.healthy} devices without any failure. The alert-threshold column "
        f"applies the worker's raise threshold to single scores (the worker also waits for several in a row).",
        "",
        "| failure | n | " + " | ".join(f"detection @ {c} (FA {_pct(result.false_alarm[c])})" for c in caps) + " |",
        "|---|---|" + "---|" * len(caps),
    ]
    for cause, n in result.failures.items():
        md.append(f"| {cause} | {n} | " + " | ".join(_pct(result.detection[c][cause]) for c in caps) + " |")
    return [*md, ""]


def write_report(
    out: Path,
    experiments: list[ExperimentResult],
    transfers: list[TransferResult],
    real: BatteryResult,
    simulated: BatteryResult | None,
    sim_note: str,
    anomaly: AnomalyResult | None,
    meta: dict[str, Any],
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    md = [
        "# fleetpulse failure-prediction evaluation",
        "",
        f"Generated {datetime.now(UTC).isoformat(timespec='seconds')} by `fleetpulse evaluate` (seed {meta['seed']}).",
        "",
        "Protocol: unit = drive serial; split by drive (a stable hash puts each drive on one side, in every data set) "
        "and by time (training instants before the cut-off, labels censored there; test instants after it). "
        "Drives that leave without failing are censored, never negatives. Detection = failed test drives alarmed in "
        "the horizon before failure; false alarms = healthy test drives alarmed at any instant with full follow-up. "
        "Thresholds per false-alarm cap are operating points of each scorer's own curve; nothing is tuned on test data.",
        "",
    ]
    metrics: dict[str, Any] = {"meta": meta, "experiments": {}, "leave_model_out": {}}
    for transfer in transfers:
        section, m = transfer_section(transfer)
        md += [*section, ""]
        metrics["leave_model_out"][transfer.experiment.name] = m
    md += [
        "## In distribution (every drive model on both sides of the split)",
        "",
        "For comparison with earlier reports only: the numbers that matter for a fleet of new drive models are the "
        "leave-model-out tables above.",
        "",
    ]
    for result in experiments:
        section, m = experiment_section(result, out)
        md += [*section, ""]
        metrics["experiments"][result.experiment.name] = m
    md += anomaly_section(anomaly)
    if anomaly is not None:
        metrics["anomaly_simulated"] = {
            "failures": anomaly.failures,
            "detection": anomaly.detection,
            "false_alarm": anomaly.false_alarm,
        }
    section, m = battery_section(real, simulated, sim_note)
    md += section
    metrics["battery"] = m
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    path = out / "report.md"
    path.write_text("\n".join(md) + "\n")
    return path
