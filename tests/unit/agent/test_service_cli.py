"""``fleetpulse-agent run`` parsed without typer gives what the typer app gives for the same line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleetpulse.agents import cli, commands
from tests.harness import modules_loaded_by

LINES = [
    ["run"],
    ["--config", "a.toml", "run"],
    ["-c", "a.toml", "run"],
    ["--config=a.toml", "run"],
    ["--config", "run", "run"],
    ["run", "--max-reports", "3"],
    ["run", "--max-reports=3"],
    ["run", "--max-reports", "1", "--max-reports", "2"],
    ["-c", "x.toml", "--config", "y.toml", "run", "--max-reports", "0"],
]
NOT_FOR_THE_FAST_PATH = [
    [],
    ["--help"],
    ["run", "--help"],
    ["once"],
    ["config", "show"],
    ["run", "--max-reports"],
    ["run", "--max-reports", "many"],
    ["run", "extra"],
    ["--config"],
    ["--verbose", "run"],
]


@pytest.mark.parametrize("line", LINES, ids=" ".join)
def test_fast_path_matches_typer(line: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cli.CONFIG_ENV, raising=False)
    seen: list[tuple[Path | None, int | None]] = []
    monkeypatch.setattr(commands, "run_service", lambda config, n: seen.append((config, n)) or 0)
    result = CliRunner().invoke(commands.app, line)
    assert result.exit_code == 0, result.output
    assert cli.parse_service_args(line) == seen[0]


@pytest.mark.parametrize("line", NOT_FOR_THE_FAST_PATH, ids=lambda line: " ".join(line) or "<empty>")
def test_other_lines_go_to_typer(line: list[str]) -> None:
    assert cli.parse_service_args(line) is None


def test_config_env_applies_on_both_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cli.CONFIG_ENV, "from-env.toml")
    seen: list[Path | None] = []
    monkeypatch.setattr(commands, "run_service", lambda config, n: seen.append(config) or 0)
    CliRunner().invoke(commands.app, ["run"])
    parsed = cli.parse_service_args(["run"])
    assert parsed is not None
    assert cli.config_path(parsed[0]) == seen[0] == Path("from-env.toml")
    assert cli.config_path(Path("opt.toml")) == Path("opt.toml")


def test_run_service_rejects_a_bad_config_with_status_2(tmp_path: Path) -> None:
    bad = tmp_path / "agent.toml"
    bad.write_text("interval_s = 'soon'\n")
    out = subprocess.run(
        [sys.executable, "-m", "fleetpulse.agents.cli", "--config", str(bad), "run"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "invalid configuration" in out.stderr


def test_service_process_does_not_load_typer(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from fleetpulse.agents import cli\n"
        "cli.run_service = lambda config, n: 0\n"
        "sys.argv = ['fleetpulse-agent', 'run']\n"
        "try:\n"
        "    cli.main()\n"
        "except SystemExit:\n"
        "    pass\n"
    )
    loaded = modules_loaded_by(code)
    assert {"typer", "click", "rich"} & loaded == set()
