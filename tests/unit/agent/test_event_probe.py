"""Health events between regular reports: reported at once with event priority, and nothing else is."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fleetpulse.agents.collectors.base import Section, Throttled
from fleetpulse.agents.collectors.config import default_collectors
from fleetpulse.agents.events import EventBaseline, health_events
from fleetpulse.agents.identity import build_identity
from fleetpulse.agents.runner import Agent
from fleetpulse.agents.settings import AgentSettings, DeliverySettings, IdentitySettings
from fleetpulse.agents.spool import Spool
from fleetpulse.config import KafkaSettings
from fleetpulse.contract import BatteryHealth, DiskHealth, HealthReport, Priority, StabilityHealth, decode
from tests.harness import free_port


class FakeEventCollector:
    """An event source whose next readings the test sets; counts how often it ran."""

    name = "stability"
    timeout_s = 5.0
    event_source = True

    def __init__(self) -> None:
        self.next: Section = {"stability": StabilityHealth()}
        self.runs = 0

    def collect(self) -> Section:
        self.runs += 1
        section, self.next = self.next, {"stability": StabilityHealth()}
        return section


class FakeRoutineCollector:
    name = "system"
    timeout_s = 5.0

    def __init__(self) -> None:
        self.runs = 0

    def collect(self) -> Section:
        self.runs += 1
        return {}


def make_agent(tmp_path: Path, *collectors: object, interval_s: float = 3600.0, probe_s: float = 0.02) -> Agent:
    settings = AgentSettings(
        kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}"),  # nothing listens: reports stay spooled
        interval_s=interval_s,
        event_probe_interval_s=probe_s,
        inventory_interval_s=0,
        spool_dir=tmp_path / "spool",
        identity=IdentitySettings(device_id="events-1"),
        collectors=[],
        device_kind="laptop",
        delivery=DeliverySettings(max_block_ms=200, delivery_timeout_ms=1_000, flush_timeout_s=1.0),
    )
    return Agent(settings, build_identity(settings.identity), list(collectors))  # type: ignore[arg-type]


def spooled(agent: Agent) -> list[tuple[HealthReport, Priority]]:
    spool = Spool(agent.spool_path, agent.settings.spool_max_bytes)
    try:
        records = spool.peek(1000)
    finally:
        spool.close()
    return [(decode(r.value, HealthReport), r.priority) for r in records if r.stream == "health"]


def run_in_background(tmp_path: Path, *collectors: object) -> tuple[Agent, threading.Thread]:
    """The agent is built in the thread that runs it: its spool connection belongs to that thread."""
    built: list[Agent] = []

    def main() -> None:
        built.append(make_agent(tmp_path, *collectors))
        built[0].run()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    wait_for(lambda: bool(built))
    return built[0], thread


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached")


def disk(**counters: int | bool) -> DiskHealth:
    return DiskHealth(name="/dev/sda", serial_hash="h-1", **counters)  # type: ignore[arg-type]


def battery(ratio: float) -> BatteryHealth:
    return BatteryHealth(design_capacity=50_000.0, full_charge_capacity=50_000.0 * ratio)


def test_a_crash_between_slots_is_reported_at_once_with_event_priority(tmp_path: Path) -> None:
    events, routine = FakeEventCollector(), FakeRoutineCollector()
    agent, thread = run_in_background(tmp_path, events, routine)
    try:
        wait_for(lambda: events.runs >= 3)  # the slot's report is out and the probe is running
        events.next = {"stability": StabilityHealth(crashes=1)}
        wait_for(lambda: len(spooled(agent)) >= 2)
    finally:
        agent.stop()
        thread.join(10)
    reports = spooled(agent)
    assert [r.stability.crashes for r, _ in reports if r.stability] == [0, 1]
    assert [p for _, p in reports] == [Priority.ROUTINE, Priority.EVENT]
    assert routine.runs == 2, "the event report is a whole report: routine collectors ran for it too"


def test_no_event_means_no_extra_report(tmp_path: Path) -> None:
    events, routine = FakeEventCollector(), FakeRoutineCollector()
    agent, thread = run_in_background(tmp_path, events, routine)
    try:
        wait_for(lambda: events.runs >= 20)  # many probes, no event
    finally:
        agent.stop()
        thread.join(10)
    assert len(spooled(agent)) == 1, "only the regular report at start"
    assert routine.runs == 1, "the probe runs only the event collectors"


def test_a_quiet_smart_read_by_the_probe_goes_into_the_next_regular_report(tmp_path: Path) -> None:
    events = FakeEventCollector()
    agent = make_agent(tmp_path, events)
    agent.collect_into_spool()
    events.next = {"disks": [disk(reallocated_sectors=0, smart_passed=True)]}
    assert agent.probe() is None
    report = agent.collect_into_spool()  # SMART is not due again: the collector returns no disks
    assert [d.name for d in report.disks] == ["/dev/sda"]


def test_a_battery_crossing_is_an_event_priority_report(tmp_path: Path) -> None:
    events = FakeEventCollector()
    agent = make_agent(tmp_path, events)
    events.next = {"battery": battery(0.85)}
    agent.collect_into_spool()
    events.next = {"battery": battery(0.79)}
    report = agent.probe()
    assert report is not None
    assert report.battery is not None
    assert report.priority == Priority.ROUTINE, "the report alone would not say so"
    assert [p for _, p in spooled(agent)] == [Priority.ROUTINE, Priority.EVENT]
    events.next = {"battery": battery(0.78)}
    assert agent.probe() is None, "still in the same band"


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (disk(reallocated_sectors=8), disk(reallocated_sectors=8), []),
        (disk(reallocated_sectors=8), disk(reallocated_sectors=9), ["/dev/sda: reallocated_sectors grew"]),
        (disk(current_pending_sectors=0), disk(current_pending_sectors=2), ["/dev/sda: current_pending_sectors grew"]),
        (disk(media_errors=1), disk(media_errors=3), ["/dev/sda: media_errors grew"]),
        (disk(critical_warning=0), disk(critical_warning=4), ["/dev/sda: NVMe critical warning"]),
        (disk(critical_warning=4), disk(critical_warning=4), []),
        (disk(smart_passed=True), disk(smart_passed=False), ["/dev/sda: SMART health failed"]),
        (disk(smart_passed=False), disk(smart_passed=False), []),
    ],
)
def test_smart_events_are_growth_not_level(before: DiskHealth, after: DiskHealth, expected: list[str]) -> None:
    baseline = EventBaseline()
    baseline.remember({"disks": [before]})
    assert health_events(baseline, {"disks": [after]}) == expected


def test_battery_thresholds_and_stability_events() -> None:
    baseline = EventBaseline()
    baseline.remember({"battery": battery(0.7)})
    assert health_events(baseline, {"battery": battery(0.65)}) == []
    assert health_events(baseline, {"battery": battery(0.59)}) == ["battery below threshold"]
    assert health_events(baseline, {"battery": battery(0.9)}) == [], "a new battery is no alarm"
    unexpected = {"stability": StabilityHealth(unexpected_shutdowns=1)}
    assert health_events(baseline, unexpected) == ["unexpected shutdown"]


def test_the_default_event_sources_are_the_cheap_checks_and_smart(tmp_path: Path) -> None:
    from fleetpulse.agents.collectors.base import CollectorContext
    from fleetpulse.contract import Platform

    context = CollectorContext(tmp_path, Platform.LINUX, lambda s: s, 3600.0)
    built = {c.kind: c.build_throttled(context) for c in default_collectors()}
    sources = {kind for kind, c in built.items() if getattr(c, "event_source", False)}
    assert sources == {"smart", "battery", "stability"}
    assert isinstance(built["battery"], Throttled), "battery keeps its own limit: powercfg costs a process"


def test_a_collector_failing_at_every_probe_is_reported_once(tmp_path: Path) -> None:
    class Failing:
        name = "stability"
        timeout_s = 5.0
        event_source = True

        def collect(self) -> Section:
            raise OSError("crash folder unreadable")

    agent = make_agent(tmp_path, Failing())
    for _ in range(14):
        assert agent.probe() is None
    report = agent.collect_into_spool()
    assert [e.error for e in report.collector_errors] == ["OSError: crash folder unreadable"]
