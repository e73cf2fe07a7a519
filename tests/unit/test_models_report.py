"""The report states the counter weight, the paired comparison and the calibration plainly."""

from __future__ import annotations

import numpy as np

from fleetpulse.models.disk_model import COUNTER_WEIGHTS
from fleetpulse.models.report import _counter_weight
from tests.unit.test_models_disk_model import drives, fit_chosen


def test_counter_weight_section_marks_the_chosen_weight_and_lists_the_grid() -> None:
    model = fit_chosen(drives(1500))
    md, metrics = _counter_weight(model, 0.0537)
    text = "\n".join(md)
    assert f"**{model.counter_weight_:g}**" in text
    assert "0..5.4%" in text
    assert metrics["chosen"] == model.counter_weight_
    assert metrics["max_false_alarm_rate"] == 0.0537
    assert list(metrics["objective"]) == [f"{w:g}" for w in COUNTER_WEIGHTS]
    best = max(metrics["objective"].values())
    assert np.isclose(metrics["objective"][f"{model.counter_weight_:g}"], best)
    assert _counter_weight(None, 0.05) == ([], {})


def test_selection_section_says_when_the_used_candidate_is_not_best_by_the_objective() -> None:
    from fleetpulse.models.pipeline import SelectionRow
    from fleetpulse.models.report import selection_section

    def row(name: str, objective: float) -> SelectionRow:
        return SelectionRow(name, {"cap 1%": 0.4, "FA 0-9.8% (mean)": objective}, 0.5)

    rows = [row("rule", 0.9), row("a", 0.61), row("b", 0.60)]
    assert "the best candidate is a." in "\n".join(selection_section(rows, "b"))
    assert "best candidate" not in "\n".join(selection_section(rows, "a"))


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
