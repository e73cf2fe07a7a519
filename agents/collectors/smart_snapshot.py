"""SMART read by a separate privileged helper, so that the agent itself holds no capabilities (Linux).

``smartctl`` needs ``CAP_SYS_RAWIO`` (ATA/SCSI pass-through) and ``CAP_SYS_ADMIN`` (NVMe admin
commands). Rather than give those to the whole agent — a network client that parses files other
users write — ``fleetpulse-smart.service`` (a timer starts it hourly) runs only
``fleetpulse-agent smart-snapshot``: ``smartctl --scan-open``, then ``smartctl --json -a -n standby``
per device, with no network, written as one file, ``snapshot.json``, replaced atomically in a
folder only root can write. The agent's ``smart`` collector reads that file instead of running
``smartctl`` (``smart_snapshot_dir``) and parses the outputs as it would its own.

The agent reads the file only when root (or itself) owns it and the folders above it and nobody
else can write them: any other local user could otherwise plant a disk's health. The file is
bounded in size, and a snapshot older than its freshness bound is reported as a collector error
instead of being re-sent as current data.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from fleetpulse.agents.collectors.base import replace_file, run_tool
from fleetpulse.agents.trust import UntrustedPathError, check_trusted
from fleetpulse.compat import UTC

STANDBY_EXIT = 3
"""``-n standby,3``: smartctl exits with 3 when it skipped a disk in standby (distinct from its bit flags 1/2/4)."""
SNAPSHOT_FILE = "snapshot.json"
SNAPSHOT_FORMAT = 1
MAX_DISK_OUTPUT_BYTES = 512 * 1024
"""One device's ``smartctl --json -a``: real outputs are 10-60 KB; a device answering more is recorded as an error."""
MAX_SNAPSHOT_BYTES = 32 * MAX_DISK_OUTPUT_BYTES
"""32 disks (the collector's limit) at the per-device bound: one odd device cannot cost the others theirs."""
MAX_OUTPUT_DEPTH = 64
"""smartctl's JSON nests a few levels; deeper output is refused, so the snapshot (3 levels more) always encodes."""
CLOCK_SKEW = timedelta(minutes=5)


class SnapshotError(RuntimeError):
    """The snapshot cannot be used; the message says why and never quotes the file's content."""


@dataclass(frozen=True)
class DiskOutput:
    """One device's ``smartctl --json -a`` run: its exit status and output (None with ``error``)."""

    name: str
    dev_type: str | None
    exit_status: int
    output: bytes | None
    error: str | None = None


@dataclass(frozen=True)
class Snapshot:
    taken_at: datetime
    disks: list[DiskOutput]
    errors: list[str]


def scan(smartctl: str, timeout_s: float) -> list[tuple[str, str | None]]:
    """Devices ``smartctl --scan-open`` finds, with the ``-d`` type it names."""
    proc = run_tool([smartctl, "--scan-open", "--json"], timeout_s, ok_codes=tuple(range(256)))
    try:
        doc: Any = json.loads(proc.stdout)
    except ValueError as exc:
        raise RuntimeError(f"smartctl --scan-open: not JSON: {exc}") from None
    found: list[tuple[str, str | None]] = []
    for device in doc.get("devices", []) if isinstance(doc, dict) else []:
        if isinstance(device, dict) and isinstance(device.get("name"), str):
            dev_type = device.get("type")
            found.append((device["name"], dev_type if isinstance(dev_type, str) else None))
    return found


def read_disk(smartctl: str, name: str, dev_type: str | None, timeout_s: float) -> tuple[int, str]:
    """``smartctl --json -a -n standby`` of one device: (exit status, output); a disk in standby is not woken.

    ``--scan-open`` may print a name or type no argument can hold (NUL, a lone surrogate the OS cannot
    encode), on which subprocess raises: :class:`ValueError` here, so only that device fails.
    """
    argv = [smartctl, "--json", "-a", "-n", f"standby,{STANDBY_EXIT}"]
    if dev_type:
        argv += ["-d", dev_type]
    for value in (name, dev_type or ""):
        if not _can_be_argument(value):
            raise ValueError(
                f"{value[:128]!r} cannot be passed to smartctl: it holds NUL or a character the OS cannot encode"
            )
    proc = run_tool([*argv, name], timeout_s, ok_codes=tuple(range(256)))
    return proc.returncode, proc.stdout


def _can_be_argument(text: str) -> bool:
    try:
        os.fsencode(text)
    except UnicodeEncodeError:
        return False
    return "\0" not in text


def take_snapshot(
    smartctl: str,
    out_dir: Path,
    timeout_s: float,
    max_disks: int,
    now: datetime | None = None,
) -> Snapshot:
    """Run ``smartctl`` for every device and replace ``out_dir/snapshot.json``; what the helper service does.

    A device whose run fails is recorded with its error, so the agent reports it like its own failure.
    """
    check_trusted(out_dir, "SMART snapshot folder")
    taken_at = now or datetime.now(UTC)
    per_call = max(1.0, timeout_s / 2)
    errors: list[str] = []
    entries: list[dict[str, Any]] = []
    try:
        devices = scan(smartctl, per_call)
    except (OSError, RuntimeError, subprocess.SubprocessError, UntrustedPathError) as exc:
        devices, errors = [], [str(exc)[:2048]]
    for name, dev_type in devices[:max_disks]:
        entry: dict[str, Any] = {"name": name, "type": dev_type}
        try:
            status, output = read_disk(smartctl, name, dev_type, per_call)
        except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as exc:
            entry.update(exit_status=-1, error=str(exc)[:2048])
        else:
            entry["exit_status"] = status
            size = len(output.encode())
            if size > MAX_DISK_OUTPUT_BYTES:
                entry["error"] = f"smartctl printed {size} bytes, over the {MAX_DISK_OUTPUT_BYTES}-byte bound"
            else:
                try:
                    parsed = json.loads(output)
                except (ValueError, RecursionError) as exc:
                    entry["error"] = f"smartctl output is not JSON: {str(exc)[:200]}"
                else:
                    if _nests_deeper(parsed, MAX_OUTPUT_DEPTH):
                        entry["error"] = f"smartctl output nests more than {MAX_OUTPUT_DEPTH} levels deep"
                    else:
                        entry["output"] = parsed
        entries.append(entry)
    doc = {"format": SNAPSHOT_FORMAT, "taken_at": taken_at.isoformat(), "disks": entries, "errors": errors}
    data = json.dumps(doc).encode()
    if len(data) > MAX_SNAPSHOT_BYTES:
        raise SnapshotError(f"snapshot of {len(data)} bytes is over the {MAX_SNAPSHOT_BYTES}-byte bound")
    replace_file(out_dir / SNAPSHOT_FILE, data, 0o644)  # readable by the agent's account
    return Snapshot(taken_at, [_disk_output(entry) for entry in entries], errors)


def _nests_deeper(doc: Any, limit: int) -> bool:
    """Whether ``doc`` holds lists or objects more than ``limit`` levels deep; iterative, as ``doc`` may nest
    to the interpreter's recursion limit."""
    stack = [(doc, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth == limit:
                return True
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return False


def read_snapshot(folder: Path, max_age: timedelta, now: datetime) -> Snapshot:
    """The helper's snapshot in ``folder``; raises :class:`SnapshotError` when it is missing, untrusted,
    oversized, malformed, from the future or older than ``max_age``."""
    path = folder / SNAPSHOT_FILE
    try:
        check_trusted(path, "SMART snapshot")
    except UntrustedPathError as exc:
        raise SnapshotError(str(exc)) from None
    data = _read_bounded(path)
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise SnapshotError(f"{path}: not JSON: {str(exc)[:200]}") from None
    if not isinstance(doc, dict) or doc.get("format") != SNAPSHOT_FORMAT:
        raise SnapshotError(f"{path}: not a format-{SNAPSHOT_FORMAT} SMART snapshot")
    taken_at = _aware_time(doc.get("taken_at"), path)
    if taken_at > now + CLOCK_SKEW:
        raise SnapshotError(f"{path}: taken at {taken_at.isoformat()}, which is in the future")
    if now - taken_at > max_age:
        raise SnapshotError(
            f"{path}: taken at {taken_at.isoformat()}, more than {max_age} ago: is fleetpulse-smart.timer running?"
        )
    disks, errors = doc.get("disks"), doc.get("errors", [])
    if not isinstance(disks, list) or not isinstance(errors, list):
        raise SnapshotError(f"{path}: disks and errors must be lists")
    return Snapshot(taken_at, [_disk_output(entry, path) for entry in disks], [str(e)[:2048] for e in errors])


def _read_bounded(path: Path) -> bytes:
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise SnapshotError(f"{path}: cannot open it: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise SnapshotError(f"{path}: not a regular file")
        data = fh.read(MAX_SNAPSHOT_BYTES + 1)
    if len(data) > MAX_SNAPSHOT_BYTES:
        raise SnapshotError(f"{path}: over the {MAX_SNAPSHOT_BYTES}-byte bound")
    return data


def _aware_time(value: object, path: Path) -> datetime:
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise SnapshotError(f"{path}: taken_at must be a timestamp with its UTC offset")
    return parsed.astimezone(UTC)


def _disk_output(entry: object, path: Path | None = None) -> DiskOutput:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise SnapshotError(f"{path}: every disk entry needs a name")
    dev_type, status = entry.get("type"), entry.get("exit_status")
    if not isinstance(status, int) or isinstance(status, bool):
        raise SnapshotError(f"{path}: disk {entry['name'][:128]!r} has no integer exit_status")
    error = entry.get("error")
    output = entry.get("output")
    return DiskOutput(
        name=entry["name"],
        dev_type=dev_type if isinstance(dev_type, str) else None,
        exit_status=status,
        output=None if output is None else json.dumps(output).encode(),
        error=str(error)[:2048] if error is not None else None,
    )
