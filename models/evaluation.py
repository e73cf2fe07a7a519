"""Drive-level metrics under censoring, shared by the model and every baseline.

For a horizon H over the test instants:

* a *failed* test drive (failure at or after the cut-off) is detected at threshold t
  if any instant in the H days before its failure scores >= t; its lead time is the
  failure day minus the first such instant;
* a *healthy* test drive (never failed) raises a false alarm if any of its instants
  with more than H days of follow-up scores >= t; instants without that follow-up
  are censored, and drives with no such instant are left out;
* false-alarm caps (0.1 %, 1 %) are fractions of healthy drives; the threshold is the
  lowest that keeps the fraction at or under the cap (a curve operating point, the
  same procedure for every scorer -- nothing is fitted on test data).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss

from fleetpulse.models.data import Instants

CAPS = (0.001, 0.01)
TICKETS_PER_WEEK = (5, 10, 20)


@dataclass
class DriveScores:
    """Per-drive maxima a threshold is applied to, plus what lead times need."""

    positive: np.ndarray  # best score in the H days before failure (-inf if no instant there)
    negative: np.ndarray  # best score over uncensored instants of healthy drives
    pos_days: list[np.ndarray] = field(default_factory=list)  # days before failure of window instants
    pos_scores: list[np.ndarray] = field(default_factory=list)


def drive_scores(instants: Instants, test: np.ndarray, score: np.ndarray, horizon: int) -> DriveScores:
    drive = instants.drive[test]
    day = instants.day[test]
    s = score[test]
    end = instants.end_day[drive]
    failed = instants.failed[drive]
    remaining = end - day
    window = failed & (remaining <= horizon) & (remaining >= 0)
    negative = (~failed) & (remaining > horizon)
    positives: list[float] = []
    pos_days: list[np.ndarray] = []
    pos_scores: list[np.ndarray] = []
    failed_drives = np.unique(drive[failed])
    order = np.argsort(drive[window], kind="stable")
    wdrive, wrem, wscore = drive[window][order], remaining[window][order], s[window][order]
    starts = np.searchsorted(wdrive, failed_drives, side="left")
    stops = np.searchsorted(wdrive, failed_drives, side="right")
    for a, b in zip(starts, stops, strict=True):
        if a == b:
            positives.append(-np.inf)
            pos_days.append(np.array([]))
            pos_scores.append(np.array([]))
            continue
        positives.append(float(wscore[a:b].max()))
        pos_days.append(wrem[a:b])
        pos_scores.append(wscore[a:b])
    neg_drive, neg_score = drive[negative], s[negative]
    if len(neg_drive):
        uniq, inv = np.unique(neg_drive, return_inverse=True)
        best = np.full(len(uniq), -np.inf)
        np.maximum.at(best, inv, neg_score)
    else:
        best = np.array([])
    return DriveScores(np.asarray(positives), best, pos_days, pos_scores)


@dataclass(frozen=True)
class Cut:
    """Where alarming on exactly a false-alarm rate cuts the healthy scores: every score above ``tied``
    alarms, and ``share`` of those equal to it. A score shared by many healthy drives makes the rates a
    threshold can reach jump; alarming on a random part of the tie reaches any rate in between (the ROC
    chord). The one tie rule of every detection, alarm weight and threshold at a cap."""

    tied: float
    share: float

    @classmethod
    def of_counts(cls, far: float, n: int, tied: float, above: int, at_or_above: int) -> Cut:
        """The cut at ``tied`` when ``above`` of ``n`` healthy scores lie above it and ``at_or_above`` at or above."""
        below_far, above_far = above / n, at_or_above / n
        # a NaN score ties with nothing (above_far == below_far): no share
        share = (far - below_far) / (above_far - below_far) if below_far < far and above_far > below_far else 0.0
        return cls(float(tied), share)

    @property
    def threshold(self) -> float:
        """The lowest threshold alarming on no tied score."""
        return float(np.nextafter(self.tied, np.inf))

    def weights(self, scores: np.ndarray) -> np.ndarray:
        """How much each of ``scores`` is alarmed on: 1 above the tie, ``share`` at it, 0 below."""
        return np.asarray((scores >= self.threshold).astype(float) + self.share * (scores == self.tied), dtype=float)

    def detection(self, positive: np.ndarray) -> float:
        """The share of ``positive`` alarmed on (their mean weight, counted)."""
        npos = max(1, len(positive))
        below = float((positive >= self.threshold).sum()) / npos
        if not self.share:
            return below
        above = float((positive >= self.tied).sum()) / npos
        return below + self.share * (above - below)


def cut_at_far(negative_desc: np.ndarray, far: float) -> Cut | None:
    """The :class:`Cut` alarming on exactly ``far`` of the healthy scores ``negative_desc`` (sorted high to
    low); None when that is every one of them."""
    n = len(negative_desc)
    allowed = int(np.floor(far * n))
    if allowed >= n:
        return None
    tied = negative_desc[allowed]
    above = int((negative_desc >= np.nextafter(tied, np.inf)).sum())
    return Cut.of_counts(far, n, tied, above, int((negative_desc >= tied).sum()))


def threshold_at_cap(negative: np.ndarray, cap: float) -> float:
    """Lowest threshold with at most ``cap`` of healthy drives at or above it."""
    cut = cut_at_far(np.sort(negative)[::-1], cap)
    return -np.inf if cut is None else cut.threshold


def alarm_weights(scores: np.ndarray, negative: np.ndarray, far: float) -> np.ndarray:
    """How much each of ``scores`` is alarmed on at the cut alarming ``far`` of ``negative`` (:class:`Cut`).
    Their mean is :func:`detection_at_far`; of ``negative`` itself, each healthy drive's part of the false
    alarms (they sum to ``far`` times their number)."""
    cut = cut_at_far(np.sort(negative)[::-1], far)
    return np.ones(len(scores)) if cut is None else cut.weights(scores)


@dataclass
class OperatingPoint:
    false_alarm_rate: float
    detection_rate: float
    precision: float
    f1: float
    threshold: float
    lead_days: np.ndarray

    def summary(self) -> dict[str, float | None]:
        lead = self.lead_days
        return {
            "false_alarm_rate": self.false_alarm_rate,
            "detection_rate": self.detection_rate,
            "precision": self.precision,
            "f1": self.f1,
            "threshold": self.threshold if np.isfinite(self.threshold) else None,
            "lead_median_days": float(np.median(lead)) if len(lead) else None,
            "lead_p10_days": float(np.percentile(lead, 10)) if len(lead) else None,
        }


def operating_point(scores: DriveScores, threshold: float) -> OperatingPoint:
    hits = scores.positive >= threshold
    false = scores.negative >= threshold
    tp, fp = int(hits.sum()), int(false.sum())
    detection = tp / max(1, len(scores.positive))
    precision = tp / (tp + fp) if tp + fp else 0.0
    f1 = 2 * precision * detection / (precision + detection) if precision + detection else 0.0
    lead = [
        float(days[sc >= threshold].max())
        for days, sc, hit in zip(scores.pos_days, scores.pos_scores, hits, strict=True)
        if hit
    ]
    return OperatingPoint(
        false_alarm_rate=fp / max(1, len(scores.negative)),
        detection_rate=detection,
        precision=precision,
        f1=f1,
        threshold=threshold,
        lead_days=np.asarray(lead),
    )


def flagged_share(negative: np.ndarray) -> float:
    """Share of healthy drives a 0/1 rule flags: its one false-alarm rate."""
    return float((negative >= 1.0).mean()) if len(negative) else 0.0


def _exact_detection(positive: np.ndarray, negative_desc: np.ndarray, far: float) -> float:
    """:func:`detection_at_far` on bare arrays (``negative_desc`` sorted high to low): the
    bootstrap calls it thousands of times."""
    cut = cut_at_far(negative_desc, far)
    if cut is None:  # every drive alarmed, even one without a scored instant (as operating_point)
        return float(len(positive) > 0)
    return cut.detection(positive)


def detection_at_far(scores: DriveScores, far: float) -> float:
    """Detection at exactly ``far`` false alarms, interpolating across a tied score.

    A score shared by many healthy drives (e.g. every drive with clean counters) makes
    the achievable false-alarm rates jump; alarming on a random part of the tied drives
    reaches any rate in between (the ROC chord). Used to compare with a binary rule at
    the rule's own rate, which a scorer with ties can otherwise only undershoot.
    """
    return _exact_detection(scores.positive, np.sort(scores.negative)[::-1], far)


@dataclass(frozen=True)
class PairedDifference:
    """Model minus baseline detection at one false-alarm rate, with a bootstrap interval."""

    difference: float
    low: float
    high: float


def paired_difference(
    model: DriveScores,
    baseline: DriveScores,
    far_of: Callable[[np.ndarray], float],
    resamples: int = 1000,
    seed: int = 0,
) -> PairedDifference:
    """Detection difference at the false-alarm rate ``far_of(baseline healthy scores)``, both
    scorers with ties split (:func:`detection_at_far`), and its 95 % percentile interval
    from resampling drives with replacement (failed and healthy drives separately, the same
    drives for both scorers: the two alarm sets overlap, so the paired interval is much
    narrower than two separate ones).

    ``model`` and ``baseline`` must come from :func:`drive_scores` on the same instants and
    test mask, so their arrays list the same drives in the same order. ``far_of`` receives
    the (resampled) baseline's healthy-drive scores: a fixed cap, or the rate a binary rule
    flags in that sample.
    """
    if model.positive.shape != baseline.positive.shape or model.negative.shape != baseline.negative.shape:
        raise ValueError("model and baseline scores must list the same drives")

    def difference(pos: np.ndarray, neg: np.ndarray) -> float:
        far = far_of(baseline.negative[neg])
        return _exact_detection(model.positive[pos], np.sort(model.negative[neg])[::-1], far) - _exact_detection(
            baseline.positive[pos], np.sort(baseline.negative[neg])[::-1], far
        )

    npos, nneg = len(model.positive), len(model.negative)
    point = difference(np.arange(npos), np.arange(nneg))
    if not npos or not nneg:
        return PairedDifference(point, point, point)
    rng = np.random.default_rng(seed)
    draws = np.array([difference(rng.integers(0, npos, npos), rng.integers(0, nneg, nneg)) for _ in range(resamples)])
    low, high = np.percentile(draws, [2.5, 97.5])
    return PairedDifference(point, float(low), float(high))


@dataclass(frozen=True)
class FlagHeadroom:
    """Failure shares that decide whether any ranking can beat a binary rule at its own rate.

    At the rule's false-alarm rate a scorer can only do better by swapping drives: alarming
    on some drives the rule leaves alone instead of some it flags. That pays only if the
    riskiest unflagged drives fail more often than the least risky flagged ones.
    """

    flagged_drives: int
    least_risky_flagged_failure_share: float  # the tenth of flagged drives the model ranks lowest
    unflagged_drives: int
    riskiest_unflagged_failure_share: float  # the tenth of unflagged drives the model ranks highest
    riskiest_percent_unflagged_failure_share: float  # the model's top 1 % of unflagged drives


def flag_headroom(model: DriveScores, rule: DriveScores) -> FlagHeadroom:
    """:class:`FlagHeadroom` of ``rule`` (scores 0/1) under the ranking of ``model`` (same drives)."""
    score = np.concatenate([model.positive, model.negative])
    failed = np.concatenate([np.ones(len(model.positive), bool), np.zeros(len(model.negative), bool)])
    flagged = np.concatenate([rule.positive, rule.negative]) >= 1.0

    def share(mask: np.ndarray, fraction: float, riskiest: bool) -> float:
        """Failure share of the ``fraction`` of ``mask`` drives ranked first; a tied score at
        the cut counts in proportion (the expectation of a random tie-break)."""
        if not mask.any():
            return float("nan")
        s = -score[mask] if riskiest else score[mask]
        f = failed[mask]
        k = max(1, round(fraction * len(s)))
        cut = np.sort(s)[k - 1]
        before, tied = s < cut, s == cut
        expected = f[before].sum() + (k - before.sum()) * f[tied].mean()
        return float(expected / k)

    return FlagHeadroom(
        flagged_drives=int(flagged.sum()),
        least_risky_flagged_failure_share=share(flagged, 0.1, riskiest=False),
        unflagged_drives=int((~flagged).sum()),
        riskiest_unflagged_failure_share=share(~flagged, 0.1, riskiest=True),
        riskiest_percent_unflagged_failure_share=share(~flagged, 0.01, riskiest=True),
    )


def detection_area(scores: DriveScores, max_far: float) -> float:
    """Mean detection rate over false-alarm rates 0..``max_far``: the normalised partial area
    under the drive-level detection-vs-false-alarm curve, tied scores as chords (as
    :func:`detection_at_far`). One number for "how well the tail is ordered" up to an
    operating point, where PR-AUC weighs the whole curve."""
    from sklearn.metrics import roc_curve

    if not len(scores.positive) or not len(scores.negative):
        return 0.0
    y = np.concatenate([np.ones(len(scores.positive)), np.zeros(len(scores.negative))])
    s = np.concatenate([scores.positive, scores.negative])
    s = np.where(np.isfinite(s), s, np.min(s[np.isfinite(s)]) - 1.0 if np.isfinite(s).any() else 0.0)
    far, detection, _ = roc_curve(y, s)
    if max_far <= 0:
        return float(detection[far == 0].max())
    # first curve point at or past max_far (far[0] == 0 < max_far); the chord into it ends the area
    i = int(np.searchsorted(far, max_far, side="left"))
    edge = detection[i - 1] + (max_far - far[i - 1]) / (far[i] - far[i - 1]) * (detection[i] - detection[i - 1])
    x = np.append(far[:i], max_far)
    top = np.append(detection[:i], edge)
    return float(np.trapezoid(top, x) / max_far)


CALIBRATION_QUANTILES = (0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.999, 1.0)
"""Bin edges of the calibration table, as quantiles of the predicted probability: most
instants are clean drives, so equal-count deciles spend nine bins on them and lump every
alarm-worthy score into one; these edges keep splitting the tail alerts are raised from."""


@dataclass(frozen=True)
class CalibrationBins:
    count: np.ndarray
    predicted: np.ndarray  # mean predicted probability per bin
    observed: np.ndarray  # observed failure fraction per bin


def calibration_bins(
    y: np.ndarray, p: np.ndarray, quantiles: tuple[float, ...] = CALIBRATION_QUANTILES
) -> CalibrationBins:
    """Mean prediction vs observed rate per bin of ``p`` (labelled instants only; a bin edge
    shared by tied predictions merges the bins it separates)."""
    edges = np.unique(np.quantile(p, quantiles))
    index = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, max(0, len(edges) - 2))
    count = np.bincount(index, minlength=max(1, len(edges) - 1))
    used = count > 0
    predicted = np.bincount(index, weights=p, minlength=len(count))[used] / count[used]
    observed = np.bincount(index, weights=y, minlength=len(count))[used] / count[used]
    return CalibrationBins(count[used], predicted, observed)


def pr_auc(scores: DriveScores) -> float:
    y = np.concatenate([np.ones(len(scores.positive)), np.zeros(len(scores.negative))])
    s = np.concatenate([scores.positive, scores.negative])
    s = np.where(np.isfinite(s), s, np.nanmin(s[np.isfinite(s)]) - 1.0 if np.isfinite(s).any() else 0.0)
    return float(average_precision_score(y, s))


def brier(y: np.ndarray, p: np.ndarray) -> float:
    known = ~np.isnan(y)
    return float(brier_score_loss(y[known], np.clip(p[known], 0.0, 1.0)))


def precision_at_k(
    instants: Instants, test: np.ndarray, score: np.ndarray, horizon: int, start_day: float
) -> dict[int, float | None]:
    """Mean weekly precision of the k highest-scoring drives (their latest score that week).

    A ticket is right if the drive fails within the week or the following H days.
    Only weeks whose H-day follow-up lies inside the data are counted.
    """
    idx = np.flatnonzero(test)
    order = idx[np.lexsort((instants.day[idx], instants.drive[idx]))]
    drive, day, s = instants.drive[order], instants.day[order], score[order]
    key = drive.astype(np.float64) * 1e7 + day
    last_data_day = float(instants.end_day.max())
    drives = np.unique(drive)
    first_index = np.searchsorted(drive, drives, side="left")
    result: dict[int, list[float]] = {k: [] for k in TICKETS_PER_WEEK}
    week_start = start_day
    while week_start + 7 + horizon <= last_data_day:
        week_end = week_start + 7
        pos = np.searchsorted(key, drives.astype(np.float64) * 1e7 + week_end, side="left") - 1
        seen = pos >= first_index
        alive = instants.end_day[drives] >= week_start
        ok = seen & alive
        if ok.any():
            cand_drives = drives[ok]
            cand_scores = s[pos[ok]]
            end = instants.end_day[cand_drives]
            right = instants.failed[cand_drives] & (end >= week_start) & (end <= week_end + horizon)
            ranked = np.argsort(-cand_scores, kind="stable")
            for k in TICKETS_PER_WEEK:
                result[k].append(float(right[ranked[:k]].mean()))
        week_start = week_end
    return {k: (float(np.mean(v)) if v else None) for k, v in result.items()}
