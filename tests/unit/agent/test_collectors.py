"""Collectors: one conformance test for every configured kind, plus each collector's own rules."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import get_args

import pytest

from fleetpulse.agents.collectors import stability
from fleetpulse.agents.collectors.base import Collector, CollectorContext, Section, Throttled, collector_error
from fleetpulse.agents.collectors.battery import BatteryCollector
from fleetpulse.agents.collectors.config import BatteryConfig, CollectorConfig, SmartConfig, default_collectors
from fleetpulse.agents.collectors.stability import StabilityCollector
from fleetpulse.agents.runner import MAX_COLLECTOR_ERRORS, CollectorRunner, build_report
from fleetpulse.compat import UTC
from fleetpulse.contract import (
    MAX_MESSAGE_BYTES,
    DeviceKind,
    HealthReport,
    MemoryHealth,
    Platform,
    decode_report,
    encode,
)
from tests.unit.agent.smartctl_fake import make_fake_smartctl
from tests.unit.largest_report import DEVICE_ID, largest_report

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "agent"
NOW_TS = "2026-01-01T00:00:00Z"
NOBODY = 65534


def ctx(tmp_path: Path, smart_interval_s: float = 3600.0) -> CollectorContext:
    return CollectorContext(
        state_dir=tmp_path / "state",
        platform=Platform.LINUX,
        hash_serial=lambda s: f"h-{len(s)}",
        smart_interval_s=smart_interval_s,
    )


def _report(section: Section) -> HealthReport:
    return build_report(0, "dev-1", DeviceKind.DESKTOP, Platform.LINUX, datetime.now(UTC), section)


def test_every_collector_kind_is_in_the_defaults() -> None:
    union = get_args(get_args(CollectorConfig)[0])
    assert {c.model_fields["kind"].default for c in union} == {c.kind for c in default_collectors()}


NO_DISKS_SMARTCTL = """#!/bin/sh
echo '{"devices": []}'
"""


def _on_fake_machine(config: CollectorConfig, tmp_path: Path) -> CollectorConfig:
    """SMART reads a tool that CI machines may lack: point it at one that answers "no disks"."""
    if not isinstance(config, SmartConfig):
        return config
    script = tmp_path / "smartctl"
    script.write_text(NO_DISKS_SMARTCTL)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return SmartConfig(smartctl=str(script))


@pytest.mark.parametrize("config", default_collectors(), ids=lambda c: c.kind)
def test_collector_conformance(tmp_path: Path, config: CollectorConfig) -> None:
    """Each kind builds into a Collector that collects without error and forms a valid report.

    On a machine without the hardware (no battery, sensors or EDAC) a collector reports
    nothing; raising there would put a collector error into every report of such a fleet.
    """
    collector = _on_fake_machine(config, tmp_path).build(ctx(tmp_path))
    assert isinstance(collector, Collector)
    assert collector.name == config.kind
    assert collector.timeout_s == config.timeout_s
    section = CollectorRunner([collector]).collect()
    assert section.get("collector_errors", []) == [], "the collector raised"
    report = _report(section)
    assert report.collector_errors == [], "section broke the contract"


class _Boom:
    name = "boom"
    timeout_s = 1.0

    def collect(self) -> Section:
        raise OSError("permission denied on /dev/sda")


class _Hang:
    name = "hang"
    timeout_s = 0.2

    def collect(self) -> Section:
        time.sleep(3)
        return {}


class _Bad:
    name = "bad"
    timeout_s = 1.0

    def collect(self) -> Section:
        return {"thermal": "not a thermal record"}


def test_throttled_collector_runs_at_most_every_interval() -> None:
    calls = []

    class _Counting:
        name = "counting"
        timeout_s = 1.0

        def collect(self) -> Section:
            calls.append(1)
            return {"memory": MemoryHealth(correctable_errors=len(calls))}

    now = [1000.0]
    throttled = Throttled(_Counting(), 900.0, clock=lambda: now[0])
    assert isinstance(throttled, Collector)
    assert throttled.collect()["memory"].correctable_errors == 1
    now[0] += 899
    assert throttled.collect() == {}
    now[0] += 1
    assert throttled.collect()["memory"].correctable_errors == 2
    assert isinstance(BatteryConfig().build_throttled(ctx(Path("/nonexistent"))), Throttled)


def test_runner_reports_failures_and_timeouts_instead_of_dying() -> None:
    runner = CollectorRunner([_Boom(), _Hang()])
    section = runner.collect()
    errors = {e.collector: e.error for e in section["collector_errors"]}
    assert errors["boom"].startswith("OSError: permission denied")
    assert "timed out" in errors["hang"]
    again = runner.collect()  # the hung thread is still sleeping: skipped, not stacked
    assert "still hanging" in {e.collector: e.error for e in again["collector_errors"]}["hang"]


class _UndecodableName:
    """A crash folder holding a file whose name is not UTF-8: Python hands it over with lone surrogates."""

    name = "stability\udcff"
    timeout_s = 1.0

    def collect(self) -> Section:
        raise OSError("cannot read /var/crash/core." + b"\xff".decode("utf-8", "surrogateescape"))


def test_an_error_naming_a_file_that_is_not_utf8_is_reported_not_lost() -> None:
    """The contract refuses lone surrogates: the error used to raise while being recorded, losing the round."""
    section = CollectorRunner([_UndecodableName(), _Boom()]).collect()
    report = _report(section)
    errors = {e.collector: e.error for e in report.collector_errors}
    assert errors["stability\ufffd"] == "OSError: cannot read /var/crash/core.\ufffd"
    assert "boom" in errors


def test_report_survives_a_collector_breaking_the_contract() -> None:
    report = _report(CollectorRunner([_Bad()]).collect())
    assert report.thermal is None
    assert report.collector_errors[-1].collector == "report"


@pytest.mark.parametrize("char", ["\ufffd", "\x01", "\U0001f4be"], ids=["replacement", "control", "4-byte"])
def test_a_report_over_the_message_limit_sheds_collector_errors_not_its_data(
    char: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: 64 errors of 2048 such characters made a valid report of up to 800 KB; the worker
    dead-lettered it whole as oversized, disks and battery with it."""
    largest = largest_report(1, datetime.now(UTC))
    sections = {
        name: getattr(largest, name) for name in ("disks", "battery", "thermal", "memory", "stability", "system")
    }
    errors = [collector_error(f"smart:/dev/sd{i}", f"{i}:".ljust(2048, char)) for i in range(MAX_COLLECTOR_ERRORS)]
    with caplog.at_level(logging.WARNING):
        report = build_report(
            7, DEVICE_ID, largest.kind, largest.platform, largest.collected_at, {**sections, "collector_errors": errors}
        )
    raw = encode(report)
    assert len(raw) <= MAX_MESSAGE_BYTES
    received = decode_report(raw)  # what the worker does: no longer refused as oversized
    assert received.model_dump(include=set(sections)) == largest.model_dump(include=set(sections))
    note = received.collector_errors[-1]
    assert note.collector == "report"
    assert f"dropped: the report exceeded {MAX_MESSAGE_BYTES} bytes" in note.error
    assert len(received.collector_errors) <= MAX_COLLECTOR_ERRORS
    kept = received.collector_errors[:-1]
    assert kept
    assert all(e.error.startswith(f"{e.collector.removeprefix('smart:/dev/sd')}:") for e in kept)
    assert "collector errors cut" in caplog.text


def test_a_report_within_the_message_limit_is_left_alone() -> None:
    errors = [collector_error("smart", "x" * 2048) for _ in range(MAX_COLLECTOR_ERRORS)]
    report = _report({"collector_errors": errors})
    assert report.collector_errors == errors


@pytest.fixture
def fake_smartctl(tmp_path: Path) -> tuple[Path, Path]:
    return make_fake_smartctl(tmp_path)


def test_smart_polls_hourly_skips_standby_and_hashes_serials(tmp_path: Path, fake_smartctl: tuple[Path, Path]) -> None:
    script, log = fake_smartctl
    collector = SmartConfig(smartctl=str(script)).build(ctx(tmp_path))
    section = collector.collect()
    disks = {d.name: d for d in section["disks"]}
    assert set(disks) == {"/dev/sda", "/dev/testfoobarpass"}  # sdb was asleep: not woken, not reported
    assert disks["/dev/testfoobarpass"].serial_hash == "h-16"
    calls = log.read_text().splitlines()
    assert all("-n standby,3" in c for c in calls if "--scan-open" not in c)
    assert len(calls) == 4
    assert collector.collect() == {}, "SMART is not polled again within the hour"
    rebuilt = SmartConfig(smartctl=str(script)).build(ctx(tmp_path))
    assert rebuilt.collect() == {}, "restarting the agent does not reset the hourly limit"
    assert len(log.read_text().splitlines()) == 4


def test_smart_missing_tool_is_an_error_not_a_crash(tmp_path: Path) -> None:
    collector = SmartConfig(smartctl=str(tmp_path / "no-such-smartctl")).build(ctx(tmp_path))
    section = CollectorRunner([collector]).collect()
    assert section["collector_errors"][0].collector == "smart"


def test_battery_from_sysfs(tmp_path: Path) -> None:
    root = tmp_path / "power_supply"
    for name, src in (("AC", "sysfs_AC_uevent"), ("BAT0", "sysfs_BAT0_uevent")):
        (root / name).mkdir(parents=True)
        shutil.copy(FIXTURES / src, root / name / "uevent")
    section = BatteryCollector(ctx(tmp_path), 5.0, sysfs_root=root).collect()
    assert section["battery"].full_charge_capacity == 43890.0
    (root / "BAT0" / "uevent").unlink()
    assert BatteryCollector(ctx(tmp_path), 5.0, sysfs_root=root).collect() == {}


def test_unexpected_shutdown_detected_from_boot_id_without_clean_stop(tmp_path: Path) -> None:
    state = tmp_path / "state" / "stability.json"
    first = StabilityCollector(ctx(tmp_path), 5.0, crash_dirs=())
    assert first.collect()["stability"].unexpected_shutdowns == 0
    first.close()  # orderly stop
    state.write_text(json.dumps({**json.loads(state.read_text()), "boot_id": "an-earlier-boot"}))
    assert StabilityCollector(ctx(tmp_path), 5.0, crash_dirs=()).collect()["stability"].unexpected_shutdowns == 0
    # the previous boot ended without the clean-stop mark: power loss or hard reset
    state.write_text(json.dumps({**json.loads(state.read_text()), "boot_id": "another-boot", "clean_stop": False}))
    hard = StabilityCollector(ctx(tmp_path), 5.0, crash_dirs=())
    assert hard.collect()["stability"].unexpected_shutdowns == 1
    assert hard.collect()["stability"].unexpected_shutdowns == 0, "counted once, in the next report only"


def test_new_crash_dumps_are_counted_once(tmp_path: Path) -> None:
    dumps = tmp_path / "crash"
    dumps.mkdir()
    collector = StabilityCollector(ctx(tmp_path), 5.0, crash_dirs=(dumps,))
    assert collector.collect()["stability"].crashes == 0
    time.sleep(0.05)
    (dumps / "202611230101").mkdir()
    (dumps / "dmesg-efi-1").write_text("panic")
    section = collector.collect()
    assert section["stability"].crashes == 2
    assert _report(section).priority.value == "event"
    assert collector.collect()["stability"].crashes == 0


def _date(path: Path, mtime: float) -> None:
    os.utime(path, (mtime, mtime), follow_symlinks=False)


def test_a_crash_file_dated_in_the_future_does_not_blind_the_collector(tmp_path: Path) -> None:
    """Before: one ``touch -d 2099-01-01`` in /var/crash (writable by all) moved the watermark to 2099."""
    dumps = tmp_path / "crash"
    dumps.mkdir()
    collector = StabilityCollector(ctx(tmp_path), 5.0, crash_dirs=(dumps,))
    assert collector.collect()["stability"].crashes == 0
    planted = dumps / "x.crash"
    planted.write_text("")
    _date(planted, 4_070_908_800.0)  # 2099-01-01
    assert collector.collect()["stability"].crashes == 0, "a future date is not a crash"
    time.sleep(0.05)
    (dumps / "dmesg-efi-1").write_text("panic")
    assert collector.collect()["stability"].crashes == 1
    restarted = StabilityCollector(ctx(tmp_path), 5.0, crash_dirs=(dumps,))
    time.sleep(0.05)
    (dumps / "dmesg-efi-2").write_text("panic")
    assert restarted.collect()["stability"].crashes == 1, "the saved watermark never passed now"


def test_a_watermark_saved_in_the_future_is_brought_back_to_now(tmp_path: Path) -> None:
    """An agent from before the fix may have saved 2099: the next collect clamps it to now."""
    dumps = tmp_path / "crash"
    dumps.mkdir()
    collector = StabilityCollector(ctx(tmp_path), 5.0, crash_dirs=(dumps,))
    state = tmp_path / "state" / "stability.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), "crash_seen_until": 4_070_908_800.0}))
    assert collector.collect()["stability"].crashes == 0
    assert json.loads(state.read_text())["crash_seen_until"] <= time.time()
    time.sleep(0.05)
    (dumps / "dmesg-efi-1").write_text("panic")
    assert collector.collect()["stability"].crashes == 1


@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="planting as another user needs chown: root")
def test_crash_files_planted_by_other_users_are_not_counted(tmp_path: Path) -> None:
    """Before: every file a user dropped into /var/crash counted as a crash, up to 1000 per report."""
    dumps = tmp_path / "crash"
    dumps.mkdir()
    dumps.chmod(0o1777)
    collector = StabilityCollector(ctx(tmp_path), 5.0, crash_dirs=(dumps,))
    assert collector.collect()["stability"].crashes == 0
    time.sleep(0.05)
    for n in range(50):
        planted = dumps / f"fake-{n}.crash"
        planted.write_text("")
        os.chown(planted, NOBODY, NOBODY)
    link = dumps / "link-to-a-root-file"  # a root file's fresh mtime, through the user's own link
    link.symlink_to(tmp_path / "state" / "stability.json")
    os.chown(link, NOBODY, NOBODY, follow_symlinks=False)
    (dumps / "202611230101").mkdir()  # kdump's, owned by root
    assert collector.collect()["stability"].crashes == 1
    assert collector.collect()["stability"].crashes == 0


class _CountingScandir:
    """``os.scandir`` that counts the entries its caller takes."""

    taken = 0
    real = os.scandir

    def __init__(self, path: Path) -> None:
        self._entries = _CountingScandir.real(path)

    def __enter__(self) -> _CountingScandir:
        return self

    def __exit__(self, *exc: object) -> None:
        self._entries.close()

    def __iter__(self) -> Iterator[os.DirEntry[str]]:
        for entry in self._entries:
            _CountingScandir.taken += 1
            yield entry


@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="planting as another user needs chown: root")
def test_attack_a_flooded_crash_folder_costs_a_bounded_probe_and_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: every probe listed the whole folder into memory and stat'ed every entry: a million empty files a
    user planted in /var/crash (writable by all) cost 5 s and 300 MiB a minute, past the unit's MemoryMax."""
    monkeypatch.setattr(stability, "MAX_CRASH_DIR_ENTRIES", 100)
    monkeypatch.setattr(os, "scandir", _CountingScandir)
    dumps = tmp_path / "crash"
    dumps.mkdir()
    dumps.chmod(0o1777)
    collector = StabilityCollector(ctx(tmp_path), 5.0, crash_dirs=(dumps,))
    time.sleep(0.05)
    for n in range(1000):
        planted = dumps / f"x{n:08d}"
        planted.write_text("")
        os.chown(planted, NOBODY, NOBODY)
    (dumps / "root-vmcore").write_text("")
    _CountingScandir.taken = 0
    section = CollectorRunner([collector]).collect()
    assert _CountingScandir.taken == 101, "the entry past the bound tells the folder is flooded; no more are read"
    assert section["stability"].crashes <= 1
    assert [e.collector for e in section["collector_errors"]] == ["stability"]
    assert f"crash folder {dumps} holds more than 100 entries" in section["collector_errors"][0].error
    assert _report(section).stability == section["stability"]
