"""No agent thread dies silently: an unexpected failure stops the agent with a non-zero status."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from fleetpulse.agents import delivery as delivery_module
from fleetpulse.agents.identity import build_identity
from fleetpulse.agents.runner import Agent
from fleetpulse.agents.settings import AgentSettings, DeliverySettings, IdentitySettings
from fleetpulse.agents.spool import Spool
from fleetpulse.config import KafkaSettings
from tests.harness import free_port


def agent(tmp_path: Path) -> Agent:
    settings = AgentSettings(
        kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}"),
        interval_s=0.05,
        inventory_interval_s=0,
        spool_dir=tmp_path / "spool",
        identity=IdentitySettings(device_id="threads-1"),
        collectors=[],
        device_kind="desktop",
        delivery=DeliverySettings(max_block_ms=500, delivery_timeout_ms=1_000, flush_timeout_s=1.0),
    )
    return Agent(settings, build_identity(settings.identity), [])


def test_a_dying_delivery_thread_stops_the_agent_non_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: the thread died (OverflowError, DatabaseError) and the agent spooled forever, exit status 0."""

    def explode(self: delivery_module.DeliveryLoop, spool: Spool) -> float | None:
        raise OverflowError("(34, 'Numerical result out of range')")

    monkeypatch.setattr(delivery_module.DeliveryLoop, "step", explode)
    subject = agent(tmp_path)
    timer = threading.Timer(30, subject.stop)  # a hang must fail the test, not the suite
    timer.start()
    try:
        with caplog.at_level(logging.CRITICAL, logger="fleetpulse.agents.runner"):
            status = subject.run()
    finally:
        timer.cancel()
    assert status == 1
    assert subject.failure is not None
    assert subject.failure.startswith("delivery: OverflowError")
    died = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert [getattr(r, "fields", {}).get("thread") for r in died] == ["delivery"]
    assert died[0].exc_info is not None, "the traceback is logged"


def test_an_orderly_stop_exits_zero(tmp_path: Path) -> None:
    subject = agent(tmp_path)
    assert subject.run(max_reports=2) == 0
    assert subject.failure is None
