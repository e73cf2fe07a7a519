"""``fleetpulse simulate``: options, ground-truth file, dry run."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from fleetpulse.agents.server_cli import parse_duration
from fleetpulse.cli import app


def test_dry_run_writes_ground_truth_and_counts(tmp_path: Path) -> None:
    truth = tmp_path / "gt" / "truth.json"
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "--devices",
            "80",
            "--days",
            "5",
            "--seed",
            "3",
            "--failure-scale",
            "30",
            "--ground-truth",
            str(truth),
            "--dry-run",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "dry run: generated" in result.output
    records = json.loads(truth.read_text())
    assert records
    assert {"device_id", "component", "fails_at", "cause", "predictable"} <= set(records[0])


def test_bad_interval_is_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["simulate", "--interval", "soon", "--dry-run"])
    assert result.exit_code == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1d", timedelta(days=1)),
        ("15m", timedelta(minutes=15)),
        ("90s", timedelta(seconds=90)),
        ("1.5h", timedelta(minutes=90)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "0d", "5", "-1h", "1w"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(typer.BadParameter):
        parse_duration(text)


def test_fixed_start_reproduces_the_ground_truth(tmp_path: Path) -> None:
    files = [tmp_path / "a.json", tmp_path / "b.json"]
    for path in files:
        args = ["simulate", "--devices", "60", "--days", "20", "--seed", "9", "--failure-scale", "40"]
        result = CliRunner().invoke(app, [*args, "--start", "2025-02-01", "--ground-truth", str(path), "--dry-run"])
        assert result.exit_code == 0, result.output
        assert "20 days from 2025-02-01" in result.output
    assert files[0].read_bytes() == files[1].read_bytes()
