"""``fleetpulse tickets consume`` serves the store gauges the alerting rules read, and stops serving on exit."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fleetpulse.cli import app
from fleetpulse.config import KafkaSettings

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _scrape(url: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return urllib.request.urlopen(url, timeout=2).read().decode()
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_consumer_serves_outbox_and_coverage_gauges(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    port = _free_port()
    config = tmp_path / "server.toml"
    config.write_text(
        f'[kafka]\nbootstrap_servers = "{kafka_settings.bootstrap_servers}"\n'
        f'topic_prefix = "{kafka_settings.topic_prefix}"\n'
        f'[alerts]\nstore_url = "sqlite:///{tmp_path / "tickets.db"}"\n'
        f"[alerts.consumer]\nmetrics_port = {port}\n"
    )
    result: dict[str, Any] = {}
    consumer = threading.Thread(
        target=lambda: result.update(
            run=CliRunner().invoke(app, ["--config", str(config), "tickets", "consume", "--until-idle", "4"])
        ),
        daemon=True,
    )
    consumer.start()
    body = _scrape(f"http://127.0.0.1:{port}/metrics", timeout_s=60)
    consumer.join(120)
    assert not consumer.is_alive()
    assert result["run"].exit_code == 0, result["run"].output
    for family in (
        "fleetpulse_tickets_outbox_pending",
        "fleetpulse_tickets_outbox_needs_attention",
        "fleetpulse_tickets_outbox_oldest_pending_seconds",
        "fleetpulse_tickets_devices",
        "fleetpulse_tickets_devices_silent",
    ):
        assert f"# TYPE {family} gauge" in body
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
