"""Labels under censoring, drive-level metrics, PSI, the anomaly score, and real-data checks."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from fleetpulse.compat import UTC
from fleetpulse.contract import HealthReport, StabilityHealth
from fleetpulse.models.anomaly import MIN_COHORT, AnomalyScorer
from fleetpulse.models.data import Instants
from fleetpulse.models.drift import bin_fractions, column_profile, psi
from fleetpulse.models.evaluation import (
    DriveScores,
    alarm_weights,
    cut_at_far,
    detection_at_far,
    drive_scores,
    operating_point,
    precision_at_k,
    threshold_at_cap,
)
from fleetpulse.models.features import DISK_FEATURES
from fleetpulse.models.state import DeviceState, apply_report_in_place
from fleetpulse.models.training import Split, labels


def toy() -> Instants:
    """Drive 0 fails on day 10; drive 1 is healthy to day 30; drive 2 leaves on day 12 without failing."""
    days = [list(range(0, 11)), list(range(0, 31)), list(range(0, 13))]
    drive = np.concatenate([np.full(len(d), i) for i, d in enumerate(days)])
    return Instants(
        features=np.zeros((len(drive), len(DISK_FEATURES)), dtype=np.float32),
        drive=drive.astype(np.int32),
        day=np.concatenate([np.asarray(d, dtype=float) for d in days]),
        serials=["a", "b", "c"],
        models=["m", "m", "m"],
        end_day=np.array([10.0, 30.0, 12.0]),
        failed=np.array([True, False, False]),
    )


def test_labels_censor_drives_that_leave_and_respect_the_cutoff() -> None:
    inst = toy()
    y = labels(inst, horizon=7)
    d0, d1, d2 = (y[inst.drive == i] for i in range(3))
    assert list(d0[:3]) == [0.0, 0.0, 0.0]
    assert list(d0[3:]) == [1.0] * 8  # days 3..10 are within 7 days of the failure
    assert np.isnan(d1[-8:]).all()  # under 7 days of follow-up after the instant: censored
    assert (d1[:-8] == 0.0).all()
    assert np.isnan(d2[-8:]).all()  # left without failing: censored, not negative
    cut = labels(inst, horizon=7, cutoff_day=8.0)
    assert np.isnan(cut[inst.drive == 0][1:]).all()  # the failure on day 10 is unknown on day 8
    assert cut[inst.drive == 0][0] == 0.0


def test_drive_level_detection_lead_time_and_false_alarms() -> None:
    inst = toy()
    score = np.zeros(len(inst.day))
    score[(inst.drive == 0) & (inst.day >= 6)] = 0.9  # alarm 4 days ahead
    score[(inst.drive == 1) & (inst.day == 5)] = 0.5  # one false alarm on the healthy drive
    score[(inst.drive == 2) & (inst.day == 11)] = 0.99  # censored instant: never a false alarm
    test = np.ones(len(inst.day), dtype=bool)
    ds = drive_scores(inst, test, score, horizon=7)
    assert list(ds.positive) == [0.9]
    assert sorted(ds.negative) == [0.0, 0.5]  # drive 2 has uncensored instants up to day 5
    point = operating_point(ds, 0.8)
    assert point.detection_rate == 1.0
    assert point.false_alarm_rate == 0.0
    assert list(point.lead_days) == [4.0]
    assert operating_point(ds, 0.4).false_alarm_rate == 0.5
    assert threshold_at_cap(np.array([0.1, 0.2, 0.3, 0.9]), 0.25) > 0.3
    assert threshold_at_cap(np.array([0.1, 0.2, 0.3, 0.9]), 0.25) <= 0.9


def test_one_tie_rule_sets_thresholds_detection_and_alarm_weights() -> None:
    """Heavy ties: the threshold at a cap alarms on at most the cap, the healthy drives' alarm weights sum to
    exactly the cap, and the failed drives' mean weight is the detection at the cap (the ROC chord)."""
    rng = np.random.default_rng(2)
    for _ in range(50):
        healthy = rng.integers(0, 4, 200).astype(float)
        failed = rng.integers(0, 5, 15).astype(float)
        for far in (0.001, 0.01, 0.1, 0.5):
            cut = cut_at_far(np.sort(healthy)[::-1], far)
            assert cut is not None
            assert threshold_at_cap(healthy, far) == cut.threshold
            assert (healthy >= cut.threshold).mean() <= far
            assert alarm_weights(healthy, healthy, far).sum() == pytest.approx(far * len(healthy))
            detection = detection_at_far(DriveScores(failed, healthy), far)
            assert alarm_weights(failed, healthy, far).mean() == pytest.approx(detection)
    assert cut_at_far(np.array([0.3, 0.2]), 1.0) is None  # every drive alarmed
    assert threshold_at_cap(np.array([0.3, 0.2]), 1.0) == -np.inf
    assert alarm_weights(np.array([0.0]), np.array([0.3, 0.2]), 1.0).tolist() == [1.0]


def test_precision_at_k_counts_failures_in_the_week_or_horizon() -> None:
    inst = toy()
    score = np.where(inst.drive == 0, 1.0, 0.0)
    p = precision_at_k(inst, np.ones(len(inst.day), dtype=bool), score, horizon=7, start_day=0.0)
    # weeks from day 0, 7, 14 (day 21's week lacks 7 days of follow-up); drive 0 (fails day 10)
    # is a right ticket in weeks 0 and 1 among 3 alive drives; week 2 has only drive 1
    assert p[5] == pytest.approx((1 / 3 + 1 / 3 + 0) / 3)


def test_split_never_puts_a_drive_on_both_sides() -> None:
    inst = toy()
    train, test = Split(cutoff_day=5.0, test_fraction=0.5).masks(inst)
    assert not set(inst.drive[train]) & set(inst.drive[test])
    assert (inst.day[train] < 5.0).all()
    assert (inst.day[test] >= 5.0).all()


def test_psi_is_zero_for_same_distribution_and_large_for_shift() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, 5000)
    prof = column_profile(ref)
    same = psi(prof["fractions"], bin_fractions(rng.normal(0, 1, 5000), prof["edges"]))
    shifted = psi(prof["fractions"], bin_fractions(rng.normal(1.5, 1, 5000), prof["edges"]))
    assert same < 0.02
    assert shifted > 0.25
    missing = psi(prof["fractions"], bin_fractions(np.full(100, np.nan), prof["edges"]))
    assert missing > 0.25
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0


def _device(
    i: int,
    crashes_per_day: int,
    earlier_crashes_per_day: int | None = None,
    boot_seconds: Callable[[int], float] = lambda day: 30.0,
) -> DeviceState:
    """30 daily reports; ``crashes_per_day`` in the last week, before that ``earlier_crashes_per_day``
    (default: one crash every 15 days)."""
    state = DeviceState(device_id=f"pc-{i}", model="T14")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for day in range(30):
        earlier = (1 if day % 15 == i % 15 else 0) if earlier_crashes_per_day is None else earlier_crashes_per_day
        stab = StabilityHealth(crashes=crashes_per_day if day >= 23 else earlier, boot_duration_s=boot_seconds(day))
        apply_report_in_place(
            state,
            HealthReport(
                device_id=f"pc-{i}",
                seq=day,
                collected_at=t0 + timedelta(days=day),
                kind="laptop",
                platform="windows",
                stability=stab,
            ),
        )
    return state


def test_anomaly_is_relative_to_the_cohort() -> None:
    normal = [_device(i, 0) for i in range(MIN_COHORT + 5)]
    odd = _device(99, 3)
    scorer = AnomalyScorer()
    scorer.fit_baseline([*normal, odd])
    scores = {s.device_id: s for s in scorer.score_batch([*normal, odd], datetime(2026, 2, 1, tzinfo=UTC))}
    assert scores["pc-99"].risk > 0.5
    assert max(s.risk for k, s in scores.items() if k != "pc-99") < scores["pc-99"].risk - 0.2
    assert "crashes in 7 days" in scores["pc-99"].factors[0].text
    assert "cohort 'T14'" in scores["pc-99"].factors[0].text


def test_a_device_that_always_crashed_often_is_not_a_failing_part() -> None:
    """Chronic instability is a support case; only a rise against the device's own past is a precursor."""
    normal = [_device(i, 0) for i in range(MIN_COHORT + 5)]
    chronic = _device(98, 2, earlier_crashes_per_day=2)
    sudden = _device(99, 2)
    scorer = AnomalyScorer()
    scorer.fit_baseline([*normal, chronic, sudden])
    scores = {s.device_id: s for s in scorer.score_batch([chronic, sudden], datetime(2026, 2, 1, tzinfo=UTC))}
    assert scores["pc-99"].risk > 0.5
    assert scores["pc-98"].risk < 0.1


def test_a_noisy_boot_time_is_not_a_trend_but_a_steady_rise_is() -> None:
    rng = np.random.default_rng(0)
    noise = rng.uniform(60.0, 140.0, size=30)  # a spinning disk: a minute of scatter, no trend
    normal = [_device(i, 0) for i in range(MIN_COHORT + 5)]
    noisy = _device(98, 0, boot_seconds=lambda day: float(noise[day]))
    rising = _device(99, 0, boot_seconds=lambda day: 30.0 + 3.0 * day + float(noise[day] - 100.0) / 40.0)
    scorer = AnomalyScorer()
    scorer.fit_baseline([*normal, noisy, rising])
    scores = {s.device_id: s for s in scorer.score_batch([noisy, rising], datetime(2026, 2, 1, tzinfo=UTC))}
    assert scores["pc-98"].risk < 0.2
    assert scores["pc-99"].risk > 0.5
    assert "boot time changing" in scores["pc-99"].factors[0].text


def test_battery_end_of_life_on_real_histories(shared_data: Path) -> None:
    from fleetpulse.models.battery_eval import evaluate_real

    result = evaluate_real(shared_data / "battery")
    assert "MacBook log" in result.series_used
    assert len(result.series_used) == 9
    table = result.table()["robust"]
    for bucket in ("0-30", "30-90", "90-180"):
        assert table[bucket]["n"]
        assert table[bucket]["mae_days"] is not None
    assert table["0-30"]["mae_days"] < 60  # near end of life the estimate is within weeks
    naive = result.table()["least-squares, all history"]
    assert table["0-30"]["mae_days"] < naive["0-30"]["mae_days"]


@pytest.mark.slow
def test_training_on_a_real_subset_beats_chance(shared_data: Path) -> None:
    from fleetpulse.models.data import SURVIVAL_FILE, replay_survival
    from fleetpulse.models.pipeline import EXPERIMENTS, run_experiment

    instants = replay_survival(shared_data / SURVIVAL_FILE, max_drives=6000)
    assert instants.skipped_rows == 0
    result = run_experiment(instants, EXPERIMENTS["survival"], seed=0)
    horizon = result.horizons[-1]
    model = horizon.scorers[0]
    prevalence = horizon.test_positive_drives / (horizon.test_positive_drives + horizon.test_healthy_drives)
    assert horizon.test_positive_drives > 20
    assert model.pr_auc > 2 * prevalence
    assert model.brier is not None
    assert model.brier < 0.1


def test_detection_at_exact_far_splits_ties() -> None:
    from fleetpulse.models.evaluation import DriveScores, detection_at_far

    scores = DriveScores(
        positive=np.array([0.0, 1.0]),
        negative=np.array([0.0, 0.0, 0.0, 0.0, 1.0]),
        pos_days=[np.array([1.0]), np.array([2.0])],
        pos_scores=[np.array([0.0]), np.array([1.0])],
    )
    # reachable: FAR 0.2 (detect 1 of 2) and FAR 1.0 (detect both); 0.5 lies 3/8 of the way
    assert detection_at_far(scores, 0.5) == pytest.approx(0.5 + 0.375 * 0.5)
    assert detection_at_far(scores, 0.2) == pytest.approx(0.5)


def test_detection_area_averages_detection_up_to_the_false_alarm_limit() -> None:
    from fleetpulse.models.evaluation import DriveScores, detection_area

    def scores(positive: list[float], negative: list[float]) -> DriveScores:
        return DriveScores(positive=np.array(positive), negative=np.array(negative))

    # 4 healthy drives: the first false alarm costs 25 %; one failed drive ranks above all of them
    ranked = scores([3.0, 1.0], [2.0, 0.0, 0.0, 0.0])
    assert detection_area(ranked, 0.25) == pytest.approx(0.5)
    # the other failed drive ties with the first false alarm: the chord from (0, 1/2) to (1/4, 1)
    assert detection_area(scores([3.0, 2.0], [2.0, 0.0, 0.0, 0.0]), 0.25) == pytest.approx(0.75)
    # tied scores are a chord too: a healthy drive tied with the best failed drive
    assert detection_area(scores([3.0, 1.0], [3.0, 0.0, 0.0, 0.0]), 0.25) == pytest.approx(0.25)
    # no failed drive in the window at all (-inf) is never detected
    assert detection_area(scores([-np.inf], [0.0, 1.0]), 0.5) == 0.0
    assert detection_area(ranked, 0.0) == 0.5


def test_paired_difference_is_zero_for_the_same_alarms_and_bounds_a_real_gain() -> None:
    from fleetpulse.models.evaluation import DriveScores, flagged_share, paired_difference

    rng = np.random.default_rng(0)
    rule = DriveScores(positive=(rng.random(200) < 0.5).astype(float), negative=(rng.random(4000) < 0.05).astype(float))
    # a ranking that alarms on exactly the rule's drives first ties it at the rule's rate in every resample
    same = DriveScores(positive=rule.positive * 2, negative=rule.negative * 2)
    tie = paired_difference(same, rule, flagged_share, resamples=200)
    assert (tie.difference, tie.low, tie.high) == (0.0, 0.0, 0.0)
    # a ranking that also puts half of the rule's misses above its healthy alarms wins, and the interval says so
    better = DriveScores(
        positive=np.where(rule.positive == 1, 3.0, np.where(np.arange(200) % 2 == 0, 2.5, 0.0)),
        negative=rule.negative * 2,
    )
    gain = paired_difference(better, rule, flagged_share, resamples=200)
    assert gain.difference > 0.1
    assert 0.0 < gain.low <= gain.difference <= gain.high


def test_paired_difference_rejects_scores_of_different_drives() -> None:
    from fleetpulse.models.evaluation import DriveScores, paired_difference

    a = DriveScores(positive=np.zeros(3), negative=np.zeros(10))
    b = DriveScores(positive=np.zeros(4), negative=np.zeros(10))
    with pytest.raises(ValueError, match="same drives"):
        paired_difference(a, b, lambda _negative: 0.1)


def test_flag_headroom_compares_the_least_risky_flagged_with_the_riskiest_unflagged() -> None:
    from fleetpulse.models.evaluation import DriveScores, flag_headroom

    # 10 flagged drives (2 failed, ranked lowest and highest), 100 unflagged (1 failed, ranked top)
    model = DriveScores(
        positive=np.array([0.1, 0.9, 0.8]),
        negative=np.concatenate([np.linspace(0.2, 0.7, 8), np.linspace(0.0, 0.5, 99)]),
    )
    rule = DriveScores(positive=np.array([1.0, 1.0, 0.0]), negative=np.concatenate([np.ones(8), np.zeros(99)]))
    h = flag_headroom(model, rule)
    assert (h.flagged_drives, h.unflagged_drives) == (10, 100)
    assert h.least_risky_flagged_failure_share == 1.0  # the lowest-ranked flagged drive failed
    assert h.riskiest_unflagged_failure_share == pytest.approx(0.1)
    assert h.riskiest_percent_unflagged_failure_share == 1.0


def test_flag_headroom_counts_a_tie_at_the_cut_in_proportion() -> None:
    from fleetpulse.models.evaluation import DriveScores, flag_headroom

    # every unflagged drive has the same score: its riskiest tenth is the whole group's failure share
    model = DriveScores(positive=np.array([0.0, 0.0]), negative=np.zeros(18))
    rule = DriveScores(positive=np.zeros(2), negative=np.zeros(18))
    h = flag_headroom(model, rule)
    assert h.riskiest_unflagged_failure_share == pytest.approx(0.1)
    assert h.flagged_drives == 0
    assert np.isnan(h.least_risky_flagged_failure_share)
