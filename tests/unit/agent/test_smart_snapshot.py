"""SMART through the privileged helper: the helper writes a snapshot, the capability-less agent reads it.

The reports must be the ones the agent made running smartctl itself, and the file must be trusted
only when root wrote it: any other local user could otherwise plant a disk's health or hide a failing
disk. The attacks run as root because planting as another user needs chown.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from fleetpulse.agents.collectors.base import CollectorContext, Section
from fleetpulse.agents.collectors.config import SmartConfig
from fleetpulse.agents.collectors.smart_snapshot import (
    MAX_DISK_OUTPUT_BYTES,
    MAX_OUTPUT_DEPTH,
    MAX_SNAPSHOT_BYTES,
    SNAPSHOT_FILE,
    SnapshotError,
    read_snapshot,
    take_snapshot,
)
from fleetpulse.agents.runner import CollectorRunner
from fleetpulse.agents.trust import UntrustedPathError
from fleetpulse.compat import UTC
from fleetpulse.contract import Platform
from tests.unit.agent.smartctl_fake import FAILING_DISK, make_fake_smartctl, scripted_smartctl

NOBODY = 65534
HOUR = timedelta(hours=1)
as_root = pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="planting as another user needs root")


def context(tmp_path: Path, snapshot_dir: Path | None) -> CollectorContext:
    state = tmp_path / ("state-snapshot" if snapshot_dir else "state-direct")
    return CollectorContext(state, Platform.LINUX, lambda s: f"h-{len(s)}", 3600.0, snapshot_dir)


@pytest.fixture
def snapshot_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "run-fleetpulse-smart"
    folder.mkdir(mode=0o755)
    return folder


def test_the_snapshot_path_reports_what_smartctl_run_by_the_agent_reports(tmp_path: Path, snapshot_dir: Path) -> None:
    script, log = make_fake_smartctl(tmp_path)
    direct = SmartConfig(smartctl=str(script)).build(context(tmp_path, None)).collect()
    taken = take_snapshot(str(script), snapshot_dir, 120.0, 16)
    assert [d.name for d in taken.disks] == ["/dev/sda", "/dev/nvme0", "/dev/sdb"]
    calls = log.read_text().splitlines()
    assert all("-n standby,3" in call for call in calls if "--scan-open" not in call)  # no disk woken
    written = snapshot_dir / SNAPSHOT_FILE
    assert written.stat().st_mode & 0o777 == 0o644
    before = len(log.read_text().splitlines())
    from_snapshot = SmartConfig(smartctl="/nonexistent/smartctl").build(context(tmp_path, snapshot_dir)).collect()
    assert len(log.read_text().splitlines()) == before, "the agent ran no smartctl"
    assert from_snapshot == direct
    assert {d.name for d in from_snapshot["disks"]} == {"/dev/sda", "/dev/testfoobarpass"}  # sdb asleep: not reported
    chosen = SmartConfig(devices=["/dev/nvme0", "/dev/sdz"]).build(context(tmp_path / "second", snapshot_dir)).collect()
    assert [d.model for d in chosen["disks"]] == [d.model for d in direct["disks"] if d.kind.value == "nvme"]
    assert [e.collector for e in chosen["collector_errors"]] == ["smart:/dev/sdz"]  # configured, but not scanned


def test_the_real_commands_end_to_end(tmp_path: Path, snapshot_dir: Path) -> None:
    """``fleetpulse-agent smart-snapshot`` as the helper unit runs it, then ``once`` as the agent unit runs it."""
    script, _ = make_fake_smartctl(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPULSE_AGENT")}
    agent = [sys.executable, "-m", "fleetpulse.agents.cli"]
    helper = subprocess.run(
        [*agent, "smart-snapshot", "--out", str(snapshot_dir), "--smartctl", str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert helper.returncode == 0, helper.stderr
    assert json.loads(helper.stdout.splitlines()[-1])["disks"] == ["/dev/sda", "/dev/nvme0", "/dev/sdb"]
    env |= {
        "FLEETPULSE_AGENT_SMART_SNAPSHOT_DIR": str(snapshot_dir),
        "FLEETPULSE_AGENT_SPOOL_DIR": str(tmp_path / "spool"),
        "FLEETPULSE_AGENT_IDENTITY__DEVICE_ID": "pc-0001",
        "FLEETPULSE_AGENT_COLLECTORS": json.dumps([{"kind": "smart", "smartctl": "/nonexistent/smartctl"}]),
    }
    once = subprocess.run([*agent, "once"], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert once.returncode == 0, once.stderr
    report = json.loads(once.stdout)
    assert sorted(d["name"] for d in report["disks"]) == ["/dev/sda", "/dev/testfoobarpass"]
    assert report.get("collector_errors", []) == []


def _planted(folder: Path, doc: object) -> Path:
    path = folder / SNAPSHOT_FILE
    path.write_text(json.dumps(doc))
    return path


def _doc(taken_at: datetime, **extra: object) -> dict[str, object]:
    return {"format": 1, "taken_at": taken_at.isoformat(), "disks": [], "errors": [], **extra}


@as_root
def test_attack_a_snapshot_planted_by_another_user_is_refused(tmp_path: Path, snapshot_dir: Path) -> None:
    """A user who could write the snapshot would report a failing disk healthy (or a healthy one failing)."""
    now = datetime.now(UTC)
    path = _planted(snapshot_dir, _doc(now))
    os.chown(path, NOBODY, NOBODY)
    with pytest.raises(SnapshotError, match=f"owned by uid {NOBODY}"):
        read_snapshot(snapshot_dir, 3 * HOUR, now)
    section = CollectorRunner([SmartConfig().build(context(tmp_path, snapshot_dir))]).collect()
    assert section["disks"] == []
    assert section["collector_errors"][0].collector == "smart"
    os.chown(path, 0, 0)
    read_snapshot(snapshot_dir, 3 * HOUR, now)  # root's own file is read


@as_root
@pytest.mark.parametrize("what", ["file", "folder"])
def test_attack_a_snapshot_others_can_rewrite_is_refused(snapshot_dir: Path, what: str) -> None:
    now = datetime.now(UTC)
    path = _planted(snapshot_dir, _doc(now))
    (path if what == "file" else snapshot_dir).chmod(0o666 if what == "file" else 0o777)
    with pytest.raises(SnapshotError, match="writable by every user"):
        read_snapshot(snapshot_dir, 3 * HOUR, now)


@as_root
def test_attack_a_link_to_another_root_file_is_not_followed(tmp_path: Path, snapshot_dir: Path) -> None:
    """Even a root-owned target: the agent reads only the file the helper wrote, never a path it links to."""
    now = datetime.now(UTC)
    elsewhere = _planted(tmp_path, _doc(now))
    (snapshot_dir / SNAPSHOT_FILE).symlink_to(elsewhere)
    with pytest.raises(SnapshotError, match="cannot open it"):
        read_snapshot(snapshot_dir, 3 * HOUR, now)


@as_root
def test_attack_the_helper_writes_through_no_planted_link(tmp_path: Path, snapshot_dir: Path) -> None:
    """A link waiting at the helper's temporary name must not make root overwrite what it points to."""
    script, _ = make_fake_smartctl(tmp_path)
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    (snapshot_dir / f".{SNAPSHOT_FILE}.{os.getpid()}.tmp").symlink_to(victim)
    take_snapshot(str(script), snapshot_dir, 120.0, 16)
    assert victim.read_text() == "untouched"
    assert not (snapshot_dir / SNAPSHOT_FILE).is_symlink()
    other = tmp_path / "users-folder"
    other.mkdir()
    os.chown(other, NOBODY, NOBODY)
    with pytest.raises(UntrustedPathError, match="owned by uid"):
        take_snapshot(str(script), other, 120.0, 16)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "not a format-1 SMART snapshot"),
        (json.dumps({"format": 1, "taken_at": "2026-12-03T09:00:00", "disks": []}).encode(), "UTC offset"),
        (json.dumps({"format": 1, "taken_at": "tomorrow", "disks": []}).encode(), "UTC offset"),
        (json.dumps(_doc(datetime.now(UTC), disks={"a": 1})).encode(), "must be lists"),
        (json.dumps(_doc(datetime.now(UTC), disks=[{"name": "/dev/sda"}])).encode(), "no integer exit_status"),
        (json.dumps(_doc(datetime.now(UTC), disks=[{"exit_status": 0}])).encode(), "needs a name"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
        (b" " * (MAX_SNAPSHOT_BYTES + 1), "byte bound"),
    ],
    ids=[
        "garbage",
        "not-a-snapshot",
        "naive-time",
        "no-time",
        "disks-not-list",
        "no-status",
        "no-name",
        "deep",
        "huge",
    ],
)
def test_malformed_snapshots_are_refused_with_a_reason(snapshot_dir: Path, content: bytes, reason: str) -> None:
    (snapshot_dir / SNAPSHOT_FILE).write_bytes(content)
    with pytest.raises(SnapshotError, match=reason) as refused:
        read_snapshot(snapshot_dir, 3 * HOUR, datetime.now(UTC))
    assert len(str(refused.value)) < 600


def test_a_stale_or_future_snapshot_is_not_reported_as_current_health(tmp_path: Path, snapshot_dir: Path) -> None:
    """A stopped timer must not keep re-sending hours-old readings as today's; a clock jump forward is refused too."""
    now = datetime.now(UTC)
    _planted(snapshot_dir, _doc(now - 4 * HOUR))
    with pytest.raises(SnapshotError, match=r"is fleetpulse-smart\.timer running"):
        read_snapshot(snapshot_dir, 3 * HOUR, now)
    section = CollectorRunner([SmartConfig().build(context(tmp_path, snapshot_dir))]).collect()
    assert section["disks"] == []
    assert "fleetpulse-smart.timer" in section["collector_errors"][0].error
    _planted(snapshot_dir, _doc(now + HOUR))
    with pytest.raises(SnapshotError, match="in the future"):
        read_snapshot(snapshot_dir, 3 * HOUR, now)
    _planted(snapshot_dir, _doc(now - 2 * HOUR, errors=["smartctl --scan-open: exited 2"]))
    assert read_snapshot(snapshot_dir, 3 * HOUR, now).errors == ["smartctl --scan-open: exited 2"]


def test_a_missing_snapshot_is_a_collector_error_not_a_crash(tmp_path: Path, snapshot_dir: Path) -> None:
    section = CollectorRunner([SmartConfig().build(context(tmp_path, snapshot_dir))]).collect()
    assert section["collector_errors"][0].collector == "smart"
    assert "snapshot.json" in section["collector_errors"][0].error


def test_a_failed_smartctl_run_is_reported_per_disk(tmp_path: Path, snapshot_dir: Path) -> None:
    now = datetime.now(UTC)
    disks = [
        {"name": "/dev/sda", "type": "sat", "exit_status": 2, "output": {"smartctl": {"exit_status": 2}}},
        {"name": "/dev/sdc", "type": None, "exit_status": -1, "error": "smartctl timed out"},
    ]
    _planted(snapshot_dir, _doc(now, disks=disks))
    section = SmartConfig().build(context(tmp_path, snapshot_dir)).collect()
    assert section["disks"] == []
    errors = {e.collector: e.error for e in section["collector_errors"]}
    assert errors == {"smart:/dev/sda": "smartctl exit status 2 for /dev/sda", "smart:/dev/sdc": "smartctl timed out"}


def test_one_device_printing_too_much_costs_only_its_own_entry(tmp_path: Path, snapshot_dir: Path) -> None:
    """A device (a USB bridge, a broken firmware) answering megabytes or nested garbage must not stop the snapshot."""
    script = tmp_path / "smartctl"
    huge, deep = tmp_path / "huge.json", tmp_path / "deep.json"
    huge.write_text('{"x": "' + "a" * (MAX_DISK_OUTPUT_BYTES + 1) + '"}')
    deep.write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "real").mkdir()
    real, _ = make_fake_smartctl(tmp_path / "real")
    script.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        """  *--scan-open*) echo '{"devices": [{"name": "/dev/sda"}, {"name": "/dev/sdx"}, {"name": "/dev/sdy"}]}' ;;\n"""
        f'  */dev/sdx) cat "{huge}" ;;\n'
        f'  */dev/sdy) cat "{deep}" ;;\n'
        f'  *) exec "{real}" "$@" ;;\n'
        "esac\n"
    )
    script.chmod(0o755)
    taken = take_snapshot(str(script), snapshot_dir, 120.0, 16)
    errors = {d.name: d.error for d in taken.disks}
    assert errors["/dev/sda"] is None
    assert "over the 524288-byte bound" in (errors["/dev/sdx"] or "")
    assert "not JSON" in (errors["/dev/sdy"] or "")
    section = SmartConfig().build(context(tmp_path, snapshot_dir)).collect()
    assert [d.name for d in section["disks"]] == ["/dev/sda"]
    assert sorted(e.collector for e in section["collector_errors"]) == ["smart:/dev/sdx", "smart:/dev/sdy"]


def _smart_of_every_kind(tmp_path: Path, snapshot_dir: Path, smartctl: Path) -> list[Section]:
    """What the agent reports running ``smartctl`` itself, then from the helper's snapshot."""
    direct = CollectorRunner([SmartConfig(smartctl=str(smartctl)).build(context(tmp_path, None))]).collect()
    take_snapshot(str(smartctl), snapshot_dir, 120.0, 16)
    from_snapshot = CollectorRunner([SmartConfig().build(context(tmp_path, snapshot_dir))]).collect()
    return [direct, from_snapshot]


@pytest.mark.parametrize("odd", ["/dev/sd\x00b", "/dev/sd\ud800b"], ids=["nul", "lone-surrogate"])
def test_attack_a_device_name_no_argument_can_hold_costs_only_its_own_entry(
    tmp_path: Path, snapshot_dir: Path, odd: str
) -> None:
    """Before: ``--scan-open`` naming such a device made subprocess raise for the whole run: the helper wrote no
    snapshot and the command died with a traceback; the agent's own SMART collector lost every disk."""
    smartctl = scripted_smartctl(tmp_path, ["/dev/sda", odd], {"/dev/sda": json.dumps(FAILING_DISK)})
    taken = take_snapshot(str(smartctl), snapshot_dir, 120.0, 16)
    errors = {d.name: d.error for d in taken.disks}
    assert errors["/dev/sda"] is None
    assert f"{odd!r} cannot be passed to smartctl" in (errors[odd] or "")
    reported = "smart:" + odd.replace("\ud800", "\ufffd")  # the contract holds no lone surrogate
    for section in _smart_of_every_kind(tmp_path, snapshot_dir, smartctl):
        assert [(d.name, d.smart_passed) for d in section["disks"]] == [("/dev/sda", False)]
        assert [e.collector for e in section["collector_errors"]] == [reported]


def test_attack_an_undecodable_device_name_does_not_hide_a_failing_disk(tmp_path: Path, snapshot_dir: Path) -> None:
    """Before: a name holding a byte that is not UTF-8 (``\\udc80`` in Python) is a valid argument, but the agent could
    not record that device's error (the contract refuses lone surrogates): the failing disk beside it went unreported."""
    smartctl = scripted_smartctl(tmp_path, ["/dev/sda", "/dev/sd\udc80"], {"/dev/sda": json.dumps(FAILING_DISK)})
    for section in _smart_of_every_kind(tmp_path, snapshot_dir, smartctl):
        assert [(d.name, d.smart_passed) for d in section["disks"]] == [("/dev/sda", False)]
        errors = {e.collector: e.error for e in section["collector_errors"]}
        assert errors == {"smart:/dev/sd\ufffd": "smartctl exit status 2 for /dev/sd\ufffd"}


def _deepest_json_accepted() -> int:
    """How deeply ``json.loads`` nests in this interpreter (it differs between versions)."""
    low, high = 1, 100_000
    while low < high:
        middle = (low + high + 1) // 2
        try:
            json.loads("[" * middle + "]" * middle)
        except RecursionError:
            high = middle - 1
        else:
            low = middle
    return low


def test_attack_output_nested_just_within_the_parser_limit_costs_only_its_own_entry(
    tmp_path: Path, snapshot_dir: Path
) -> None:
    """Before: output that ``json.loads`` still took was kept, and the snapshot around it (3 levels deeper) failed to
    encode: RecursionError, no snapshot for any disk. The depths around the parser's limit are all tried."""
    deepest = _deepest_json_accepted()
    refused: list[str] = []
    for depth in (MAX_OUTPUT_DEPTH, MAX_OUTPUT_DEPTH + 1, *range(deepest - 8, deepest + 3)):
        nested = '{"model_name": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"
        smartctl = scripted_smartctl(
            tmp_path, ["/dev/sda", "/dev/sdb"], {"/dev/sda": json.dumps(FAILING_DISK), "/dev/sdb": nested}
        )
        taken = take_snapshot(str(smartctl), snapshot_dir, 120.0, 16)
        errors = {d.name: d.error for d in taken.disks}
        assert errors["/dev/sda"] is None
        assert (errors["/dev/sdb"] is None) == (depth == MAX_OUTPUT_DEPTH)
        refused.append(errors["/dev/sdb"] or "")
    assert f"nests more than {MAX_OUTPUT_DEPTH} levels deep" in refused[1]
    assert any("nests more than" in error for error in refused[2:]), "some depth passed the parser"
    section = SmartConfig().build(context(tmp_path, snapshot_dir)).collect()
    assert [(d.name, d.smart_passed) for d in section["disks"]] == [("/dev/sda", False)]
