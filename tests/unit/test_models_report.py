"""The report states the counter weight the model chose and the objective at every grid point."""

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
