"""What `fleetpulse demo` prints and keeps: every table column explained, run folders bounded."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from fleetpulse.agents.kafka_publish import PublishStats
from fleetpulse.contract import Component
from fleetpulse.demo import SCORECARD_COLUMNS, _print_scorecard, _prune_runs
from fleetpulse.scorecard import ComponentScore


def test_every_column_is_explained_in_one_line_and_counts_agree() -> None:
    out = io.StringIO()
    console = Console(file=out, width=200, highlight=False)
    row = ComponentScore(Component.DISK, 12, 8, 5, 5, 9, 2, [10.0, 20.0])
    _print_scorecard(console, [row], PublishStats(inventory=300, health=17_000, mobile=200), 10.0, 4)
    text = out.getvalue()
    header = next(line for line in text.splitlines() if "component" in line and "failures" in line)
    for column in SCORECARD_COLUMNS:
        assert column in header
        assert sum(line.strip().startswith(f"{column}:") for line in text.splitlines()) == 1, column
    assert "42%" in text, "recall 5/12"
    assert "62%" in text, "recall pred. 5/8, in its own column"
    assert "17,200 reports from 300 devices" in text


def test_old_run_folders_are_removed_beyond_the_kept_number(tmp_path: Path) -> None:
    names = [f"run-2026120{d}T101010" for d in range(1, 8)]
    for name in names:
        (tmp_path / name).mkdir()
    (tmp_path / "run-notes").mkdir()  # not a run folder: never touched
    kept, removed = _prune_runs(tmp_path, 3)
    assert [p.name for p in kept] == names[-3:]
    assert [p.name for p in removed] == names[:4]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*names[-3:], "run-notes"])
