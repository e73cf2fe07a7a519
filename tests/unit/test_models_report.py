"""The report states the counter weight, the paired comparison and the calibration plainly."""

from __future__ import annotations

import numpy as np

from fleetpulse.models.disk_model import AGE_OPTIONS, COUNTER_WEIGHTS
from fleetpulse.models.report import _counter_weight, transfer_section
from tests.unit.test_models_disk_model import drives, fit_chosen


def test_choice_section_marks_the_chosen_age_and_weight_and_lists_the_grid() -> None:
    model = fit_chosen(drives(1500))
    md, metrics = _counter_weight(model)
    text = "\n".join(md)
    chosen = f"{'age' if model.age_ else 'no age'}, w={model.counter_weight_:g}"
    assert f"**{chosen}**" in text
    assert metrics["chosen"] == chosen
    assert list(metrics["objective"]) == [
        f"{'age' if age else 'no age'}, w={w:g}" for age in AGE_OPTIONS for w in COUNTER_WEIGHTS
    ]
    assert np.isclose(metrics["objective"][chosen], max(metrics["objective"].values()))
    assert _counter_weight(None) == ([], {})


def test_transfer_section_puts_each_held_out_model_next_to_both_baselines() -> None:
    from fleetpulse.models.transfer import run_transfer
    from tests.unit.test_models_transfer import EXPERIMENT, fleet

    result = run_transfer(fleet(), EXPERIMENT, seed=0, min_failed=5)
    md, metrics = transfer_section(result)
    text = "\n".join(md)
    assert "pooled over held-out drive models" in text
    for held in result.drive_models:
        row = next(line for line in md if line.startswith(f"| {held.name} | {held.failed_drives} / "))
        assert row.count(" / ") >= 4  # model / rule / single attribute in every detection cell
        assert held.name in metrics["held_out"]
        for cap, alert in held.alerts.items():
            # the stored threshold on the held-out drives: alarmed / healthy, rate with its interval, detection
            row = next(line for line in md if line.startswith(f"| {held.name} | {cap} | "))
            alarmed, healthy = int(alert["false_alarms"]), int(alert["healthy_drives"])
            assert f"| {alarmed:,} / {healthy:,} | {100 * alert['false_alarm_rate']:.2f}% (" in row
            assert alert["false_alarm_low"] <= alert["false_alarm_rate"] <= alert["false_alarm_high"]
            assert metrics["held_out"][held.name]["stored_thresholds_on_held_out"][cap] == alert
    assert "Held-out vendors" in text


def test_calibration_bins_split_the_tail_and_merge_tied_edges() -> None:
    from fleetpulse.models.evaluation import calibration_bins

    rng = np.random.default_rng(0)
    p = np.concatenate([np.full(9000, 0.01), rng.uniform(0.02, 0.9, 1000)])  # most instants tied and clean
    y = (rng.random(len(p)) < p).astype(float)
    bins = calibration_bins(y, p)
    assert bins.count.sum() == len(p)
    assert bins.count[0] == 9000  # the tied clean mass is one bin, whatever quantiles it spans
    assert len(bins.count) >= 4  # the tail still gets several
    assert np.all(np.diff(bins.predicted) > 0)
    big = bins.count >= 100
    assert np.allclose(bins.observed[big], bins.predicted[big], atol=0.1)


def test_verdict_gives_the_paired_interval_in_words() -> None:
    from fleetpulse.models.evaluation import PairedDifference
    from fleetpulse.models.report import _interval_word

    assert _interval_word(PairedDifference(0.0, 0.0, 0.0)) == " (equal in every resample)"
    assert _interval_word(PairedDifference(0.004, -0.024, 0.025)) == " (within sampling error)"
    assert _interval_word(PairedDifference(0.2, 0.17, 0.24)) == ""
