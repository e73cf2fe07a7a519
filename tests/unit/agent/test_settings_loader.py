"""The agent's own settings loader agrees with pydantic-settings, which the agent no longer imports.

The reference is the server's loader (:func:`fleetpulse.config.load_settings`) applied to the same
model declared as a pydantic-settings class, fed the same TOML file and environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic_settings import BaseSettings, SettingsConfigDict

from fleetpulse.agents.settings import AgentSettings, load_agent_settings
from fleetpulse.config import load_settings
from tests.harness import modules_loaded_by

REPO = Path(__file__).resolve().parents[3]
SAMPLE_CONFIG = REPO / "deploy" / "agent" / "agent.toml"


class _Reference(AgentSettings, BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FLEETPULSE_AGENT_", env_nested_delimiter="__", extra="forbid", frozen=True
    )


def _both(env: dict[str, str], toml: Path | None) -> tuple[Any, Any]:
    """(ours, reference): each a model dump or the exception type raised."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("FLEETPULSE_AGENT")}
    results = []
    with mock.patch.dict(os.environ, {**clean, **env}, clear=True):
        for load in (lambda: load_agent_settings(toml), lambda: load_settings(_Reference, toml)):
            try:
                results.append(load().model_dump())
            except ValueError:  # pydantic's ValidationError and pydantic-settings' SettingsError both are
                results.append(ValueError)
    return results[0], results[1]


NAMES = [
    "LOG_LEVEL",
    "log_level",
    "Interval_S",
    "INTERVAL_S",
    "SPOOL_DIR",
    "SPOOL_MAX_BYTES",
    "DEVICE_KIND",
    "BOGUS",
    "KAFKA",
    "KAFKA__BOOTSTRAP_SERVERS",
    "Kafka__Topic_Prefix",
    "KAFKA__SASL_PASSWORD",
    "KAFKA__REQUEST_TIMEOUT_MS",
    "KAFKA__REQUEST_TIMEOUT_MS__X",
    "KAFKA__BOGUS",
    "KAFKA__",
    "DELIVERY",
    "DELIVERY__LINGER_MS",
    "DELIVERY__COMPRESSION",
    "IDENTITY__SECRET",
    "IDENTITY__DEVICE_ID",
    "COLLECTORS",
    "COLLECTORS__0__KIND",
    "LOG_LEVEL__X",
]
VALUES = [
    "",
    "null",
    "5",
    " 7 ",
    "-1",
    "laptop",
    "none",
    "h:9092",
    "x",
    "[1]",
    '["a"]',
    '{"bootstrap_servers": "a:1"}',
    '{"linger_ms": 7, "batch_size": 2048}',
    '{"bogus": 1}',
    '[{"kind": "system"}]',
    '[{"kind": "nope"}]',
    "{not json",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    env=st.dictionaries(st.sampled_from(NAMES), st.sampled_from(VALUES), max_size=4),
    with_file=st.booleans(),
)
def test_environment_rules_match_pydantic_settings(env: dict[str, str], with_file: bool) -> None:
    ours, reference = _both({f"FLEETPULSE_AGENT_{k}": v for k, v in env.items()}, SAMPLE_CONFIG if with_file else None)
    assert ours == reference


def test_environment_overrides_the_file_field_by_field(tmp_path: Path) -> None:
    toml = tmp_path / "agent.toml"
    toml.write_text('interval_s = 30\n[kafka]\nbootstrap_servers = "file:1"\ntopic_prefix = "f."\n')
    ours, reference = _both({"FLEETPULSE_AGENT_KAFKA__TOPIC_PREFIX": "env."}, toml)
    assert ours == reference
    assert ours["kafka"] == {**ours["kafka"], "bootstrap_servers": "file:1", "topic_prefix": "env."}
    assert ours["interval_s"] == 30


@pytest.mark.parametrize("content", ['interval_s = "soon"\n', "bogus = 1\n", "not toml [\n"])
def test_bad_files_are_a_value_error_like_the_reference(tmp_path: Path, content: str) -> None:
    toml = tmp_path / "agent.toml"
    toml.write_text(content)
    assert _both({}, toml) == (ValueError, ValueError)


def test_an_agent_cannot_be_configured_under_an_mdm_pseudonym(tmp_path: Path) -> None:
    """The server refuses such an enrolment anyway; the agent says why at start, not in a dead letter."""
    toml = tmp_path / "agent.toml"
    toml.write_text('[identity]\ndevice_id = "mdm-0123456789abcdef0123456789abcdef"\n')
    with pytest.raises(ValueError, match="MDM bridge's pseudonyms"):
        load_agent_settings(toml)


def test_missing_file_is_reported() -> None:
    with pytest.raises(FileNotFoundError):
        load_agent_settings(Path("/nonexistent/agent.toml"))


def test_service_path_does_not_load_pydantic_settings() -> None:
    """pydantic-settings brings asyncio and dotenv: ~3 MB resident on every endpoint for nothing."""
    code = (
        "import fleetpulse.agents.cli, fleetpulse.agents.runner, fleetpulse.agents.delivery\n"
        "from fleetpulse.agents.settings import load_agent_settings\n"
        "load_agent_settings(None)\n"
    )
    loaded = modules_loaded_by(code)
    assert {"pydantic_settings", "dotenv", "asyncio"} & loaded == set()
