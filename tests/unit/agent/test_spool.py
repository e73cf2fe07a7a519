"""The spool: cap respected, events outlive routine metrics, order kept, crash-safe under kill -9."""

from __future__ import annotations

import functools
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetpulse.agents.spool import (
    PAGE_SIZE,
    QUARANTINE_DIR,
    QUARANTINE_KEEP,
    ROW_OVERHEAD_BYTES,
    Spool,
    find_damage,
    open_spool,
)
from fleetpulse.compat import UTC
from fleetpulse.contract import HealthReport, Priority, StabilityHealth, decode_report

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def report(seq: int, event: bool = False, pad: int = 0) -> HealthReport:
    return HealthReport(
        device_id="dev-1",
        seq=seq,
        collected_at=NOW,
        kind="laptop",
        platform="linux",
        agent_version="x" * min(pad, 128),
        stability=StabilityHealth(crashes=1 if event else 0),
    )


def test_sequence_is_allocated_atomically_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with Spool(path, 10**6, initial_seq=0) as spool:
        for _ in range(3):
            spool.append_report(lambda seq: report(seq))
        with pytest.raises(RuntimeError):
            spool.append_report(lambda seq: (_ for _ in ()).throw(RuntimeError("collector blew up")))
        assert spool.next_seq == 3  # the failed build consumed nothing
    with Spool(path, 10**6, initial_seq=0) as spool:
        assert spool.next_seq == 3
        assert spool.append_report(lambda seq: report(seq)).seq == 3
        assert [r.seq for r in spool.peek(10)] == [0, 1, 2, 3]


def test_a_lost_spool_never_makes_the_sequence_go_backwards(tmp_path: Path) -> None:
    with Spool(tmp_path / "old.db", 10**6) as old:
        for _ in range(50):
            old.append_report(lambda seq: report(seq))
        last_before_loss = old.next_seq - 1
        assert abs(old.initial_seq - time.time() * 1000) < 60_000, "a new spool numbers from the clock (ms)"
    time.sleep(0.1)
    with Spool(tmp_path / "reinstalled.db", 10**6) as new:  # spool wiped, agent reinstalled
        assert new.append_report(lambda seq: report(seq)).seq > last_before_loss


def test_ack_removes_only_acknowledged(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db", 10**6, initial_seq=0) as spool:
        for _ in range(5):
            spool.append_report(lambda seq: report(seq))
        batch = spool.peek(2)
        spool.ack([r.id for r in batch])
        assert [r.seq for r in spool.peek(10)] == [2, 3, 4]
        assert spool.next_seq == 5  # acking never moves the counter


def test_routine_evicted_before_events(tmp_path: Path) -> None:
    one = len(report(0).model_dump_json(exclude_none=True)) + len(b"dev-1") + ROW_OVERHEAD_BYTES
    with Spool(tmp_path / "s.db", max_bytes=one * 5 + 10, initial_seq=0) as spool:
        kinds = [True, False, False, True, False, False, False, True]
        for is_event in kinds:
            spool.append_report(lambda seq, e=is_event: report(seq, event=e))
        left = spool.peek(100)
        assert spool.total_bytes() <= spool.max_bytes
        events = [r.seq for r in left if r.priority is Priority.EVENT]
        assert events == [0, 3, 7], "every event survives while routine records remain evictable"
        assert [r.seq for r in left] == sorted(r.seq for r in left)
        assert spool.evicted()[Priority.ROUTINE] == len(kinds) - len(left)


def test_record_larger_than_cap_is_refused(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db", max_bytes=100) as spool, pytest.raises(ValueError, match="exceeds"):
        spool.append_report(lambda seq: report(seq))


@settings(max_examples=40)
@given(
    ops=st.lists(st.tuples(st.sampled_from(["add", "event", "ack"]), st.integers(0, 100)), max_size=60),
    cap_records=st.integers(2, 12),
)
def test_spool_invariants(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, int]], cap_records: int
) -> None:
    """Whatever happens: under the cap, in seq order, and events only evicted when no routine is left."""
    one = len(report(0, pad=100).model_dump_json(exclude_none=True)) + len(b"dev-1") + ROW_OVERHEAD_BYTES
    with Spool(tmp_path_factory.mktemp("s") / "s.db", max_bytes=one * cap_records, initial_seq=0) as spool:
        allocated = events_evicted_before = 0
        for op, n in ops:
            if op == "ack":
                spool.ack([r.id for r in spool.peek(n % 5)])
                continue
            spool.append_report(lambda seq, e=op == "event", p=n: report(seq, event=e, pad=p))
            allocated += 1
            left = spool.peek(10_000)
            assert spool.total_bytes() <= spool.max_bytes
            seqs = [r.seq for r in left]
            assert seqs == sorted(seqs)
            assert all(decode_report(r.value).seq == r.seq for r in left)
            events_evicted = spool.evicted()[Priority.EVENT]
            if events_evicted > events_evicted_before:  # an event went only because nothing routine was left
                assert all(r.priority is Priority.EVENT for r in left[:-1])
            events_evicted_before = events_evicted
        assert spool.next_seq == allocated


WRITER = """
import sys
from datetime import datetime
from fleetpulse.compat import UTC
from pathlib import Path
from fleetpulse.agents.spool import Spool
from fleetpulse.contract import HealthReport

spool = Spool(Path(sys.argv[1]), 10**9)
while True:
    r = spool.append_report(lambda seq: HealthReport(device_id="dev-1", seq=seq, collected_at=datetime.now(UTC),
                                                    kind="laptop", platform="linux"))
    if r.seq % 3 == 0:
        spool.ack([x.id for x in spool.peek(2)])
    print(r.seq, flush=True)
"""


@pytest.mark.slow
def test_kill_9_mid_write_loses_nothing_committed(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    for round_ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        first = proc.stdout.readline()  # writing has begun (imports can be slow on a busy machine)
        time.sleep(0.2 + 0.15 * round_)
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        printed = [int(x) for x in (first + out).split()]
        db = sqlite3.connect(path)
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        db.close()
        with Spool(path, 10**9) as spool:
            stored = {r.seq for r in spool.peek(10**6)}
            assert spool.next_seq >= printed[-1] + 1, "the counter went backwards"
            assert printed[-1] in stored, "a confirmed report was lost"
            # acks remove the oldest, so what remains is a gap-free run ending at the last allocated seq
            assert stored == set(range(min(stored), spool.next_seq)), "a sequence number vanished"
            assert all(decode_report(r.value).seq == r.seq for r in spool.peek(10**6))


# ----------------------------------------------------------------- corruption: quarantine and salvage


def filled_spool(path: Path, count: int = 300, device_id: str = "dev-1") -> dict[int, bytes]:
    """A closed (checkpointed) spool of ``count`` reports; returns seq -> stored value."""

    def make(seq: int, padding: int) -> HealthReport:
        return HealthReport(
            device_id=device_id, seq=seq, collected_at=NOW, kind="laptop", platform="linux", agent_version="v" * padding
        )

    with Spool(path, 10**9) as spool:
        for i in range(count):
            spool.append_report(functools.partial(make, padding=i % 60))
        return {r.seq: r.value for r in spool.peek(10**6) if r.seq is not None}


def corrupt(path: Path, how: str) -> tuple[int, int]:
    """Damage the spool file as the attacker did; returns the destroyed byte range ``[start, end)``."""
    size = path.stat().st_size
    if how == "header":
        start, end = 0, 100
        damage = os.urandom(100)
    elif how == "meta":
        db = sqlite3.connect(path)
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'meta'").fetchone()[0]
        db.close()
        start, end = (root - 1) * PAGE_SIZE, root * PAGE_SIZE
        damage = bytes(PAGE_SIZE)
    elif how == "random":
        start = size // 2 + 1000
        end = start + 8192
        damage = os.urandom(8192)
    elif how == "truncate":
        start, end = size * 6 // 10, size
        with path.open("r+b") as fh:
            fh.truncate(start)
        return start // PAGE_SIZE * PAGE_SIZE, end  # a partial last page is no page
    else:
        raise ValueError(how)
    with path.open("r+b") as fh:
        fh.seek(start)
        fh.write(damage)
    return start, end


def readable_after(intact: bytes, values: dict[int, bytes], damaged: tuple[int, int]) -> tuple[set[int], set[int]]:
    """Independent oracle: (reports certainly readable, reports that may or may not be) after the damage.

    Certainly readable: a stored copy whose cell and page header lie clear of the damage. SQLite
    moves cells when it rebalances pages and leaves the old copy on the freed page, so a record
    may be stored twice; either copy is the same bytes and counts. May be readable: a copy right
    next to the damage (its cell's own header or trailing columns may be hit).
    """
    start, end = damaged

    def clear(lo: int, hi: int) -> bool:
        return hi <= start or lo >= end

    certain, maybe = set(), set()
    for seq, value in values.items():
        at = intact.find(value)
        assert at >= 0
        while at >= 0:
            page = at // PAGE_SIZE * PAGE_SIZE
            if clear(at - 64, at + len(value) + 16) and clear(page, page + 128):
                certain.add(seq)
            elif clear(at, at + len(value)):
                maybe.add(seq)
            at = intact.find(value, at + 1)
    return certain, maybe - certain


def sqlite_objects(path: Path) -> str | None:
    """What SQLite itself says about the file: an error at open, or its structural check's complaint."""
    try:
        db = sqlite3.connect(path)
        try:
            rows = db.execute("PRAGMA quick_check").fetchall()
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    return None if rows == [("ok",)] else str(rows)


@pytest.mark.parametrize("how", ["header", "truncate", "meta", "random"])
def test_corrupt_spool_is_quarantined_and_every_readable_record_salvaged(
    tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "spool.sqlite3"
    values = filled_spool(path)
    intact = path.read_bytes()
    damaged = corrupt(path, how)
    expected, maybe = readable_after(intact, values, damaged)
    assert len(expected) >= (300 if how in ("header", "meta") else 100)
    assert sqlite_objects(path), "SQLite refuses the file: the agent used to crash-loop or stall on it"
    found = path.read_bytes()

    with caplog.at_level(logging.ERROR, logger="fleetpulse.agents.spool"):
        spool, recovery = open_spool(path, 10**9)
    with spool:
        assert recovery is not None
        salvaged = {r.seq: r.value for r in spool.peek(10**6) if r.seq is not None}
        assert expected <= set(salvaged) <= expected | maybe, "every readable record is salvaged, nothing else"
        assert all(values[seq] == value for seq, value in salvaged.items()), "salvaged byte for byte"
        assert spool.next_seq > max(values), "the fresh spool continues above the old sequence"
        assert spool.append_report(lambda seq: report(seq)).seq > max(values)
        assert find_damage(spool.path) is None
    assert recovery.salvaged == len(salvaged)
    assert recovery.quarantined.parent == tmp_path / QUARANTINE_DIR
    assert recovery.quarantined.read_bytes() == found, "kept as found, for forensics"
    assert "corrupt" in recovery.describe()
    assert str(recovery.quarantined) in recovery.describe()
    logged = [getattr(r, "fields", {}) for r in caplog.records if r.levelno == logging.ERROR]
    assert [f["salvaged"] for f in logged] == [len(salvaged)]


def test_records_only_in_the_write_ahead_log_are_salvaged_too(tmp_path: Path) -> None:
    """Killed before a checkpoint: the newest records live only in ``-wal``, which moves with the file."""
    path = tmp_path / "spool.sqlite3"
    values = filled_spool(path, count=50)
    holder = Spool(path, 10**9)  # a second connection keeps the WAL from being checkpointed away
    holder._db.execute("PRAGMA wal_autocheckpoint=0")
    for _ in range(30):
        holder.append_report(lambda seq: report(seq))
    newest = {r.seq: r.value for r in holder.peek(10**6) if r.seq is not None}
    snapshot = tmp_path / "copy"
    snapshot.mkdir()
    for suffix in ("", "-wal"):
        (snapshot / f"spool.sqlite3{suffix}").write_bytes((tmp_path / f"spool.sqlite3{suffix}").read_bytes())
    holder.close()
    copied = snapshot / "spool.sqlite3"
    assert (snapshot / "spool.sqlite3-wal").stat().st_size > 0
    corrupt(copied, "truncate")
    spool, recovery = open_spool(copied, 10**9)
    with spool:
        assert recovery is not None
        salvaged = {r.seq: r.value for r in spool.peek(10**6)}
        only_in_wal = {seq: value for seq, value in newest.items() if seq not in values}
        assert len(only_in_wal) == 30
        assert only_in_wal.items() <= salvaged.items()
        assert salvaged.items() <= newest.items()
    assert not (snapshot / "spool.sqlite3-wal").exists(), "the old WAL never replays into the fresh spool"


def test_quarantine_keeps_only_the_newest_few(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    for _ in range(QUARANTINE_KEEP + 2):
        filled_spool(path, count=3)
        corrupt(path, "header")
        open_spool(path, 10**9)[0].close()
        path.unlink()
        for suffix in ("-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
    kept = sorted(p.name for p in (tmp_path / QUARANTINE_DIR).iterdir())
    assert len([k for k in kept if k.endswith(".sqlite3")]) == QUARANTINE_KEEP


def test_a_sound_spool_opens_without_recovery(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    values = filled_spool(path, count=10)
    spool, recovery = open_spool(path, 10**9)
    with spool:
        assert recovery is None
        assert [r.seq for r in spool.peek(100)] == sorted(values)
    assert not (tmp_path / QUARANTINE_DIR).exists()


@pytest.mark.parametrize("counter", [1 << 49 | 1_700_000_000_000, -5, "17OO000000000"])
def test_a_damaged_sequence_counter_is_recovered_not_trusted(tmp_path: Path, counter: object) -> None:
    """A flipped high bit or a mangled value in the counter passes SQLite's structural check; trusted, every
    report built with it would fail the contract (or be refused by the worker for centuries), for good."""
    path = tmp_path / "spool.sqlite3"
    values = filled_spool(path, count=10)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = ? WHERE name = 'next_seq'", (counter,))
    spool, recovery = open_spool(path, 10**9)
    with spool:
        assert recovery is not None
        assert "sequence counter" in recovery.problem
        assert sorted(r.seq for r in spool.peek(100)) == sorted(values), "every record kept"
        assert max(values) < spool.next_seq <= time.time() * 1000 + 60_000, "numbered from the clock again"
        assert spool.append_report(lambda seq: report(seq)).seq == recovery.next_seq


def test_salvage_does_not_take_a_damaged_counter_as_the_new_start(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    filled_spool(path, count=10)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = ? WHERE name = 'next_seq'", (1 << 62,))
    with path.open("r+b") as damaged:
        damaged.write(b"\0" * 100)  # the header too: salvage reads the pages
    spool, recovery = open_spool(path, 10**9)
    with spool:
        assert recovery is not None
        assert recovery.salvaged == 10
        assert recovery.next_seq <= time.time() * 1000 + 60_000
        spool.append_report(lambda seq: report(seq))


def test_a_counter_a_little_ahead_of_the_clock_is_kept(tmp_path: Path) -> None:
    """A clock set back by NTP by minutes leaves the counter ahead of it: no damage, the numbering goes on."""
    path = tmp_path / "spool.sqlite3"
    ahead = int(time.time() * 1000) + 3_600_000
    with Spool(path, 10**9, initial_seq=ahead):
        pass
    spool, recovery = open_spool(path, 10**9)
    with spool:
        assert recovery is None
        assert spool.next_seq == ahead


def test_a_damaged_schema_that_is_still_valid_sql_is_recovered(tmp_path: Path) -> None:
    """One byte of the stored CREATE TABLE changed ("stream" -> "_tream"): the structure checks out, the columns do not."""
    path = tmp_path / "spool.sqlite3"
    values = filled_spool(path, count=10)
    data = path.read_bytes()
    assert data.count(b"stream TEXT") == 1
    path.write_bytes(data.replace(b"stream TEXT", b"_tream TEXT"))
    spool, recovery = open_spool(path, 10**9)
    with spool:
        assert recovery is not None
        assert "columns" in recovery.problem
        assert sorted(r.seq for r in spool.peek(100)) == sorted(values)


@settings(max_examples=25, deadline=None)
@given(start=st.integers(0, 120_000), garbage=st.binary(min_size=1, max_size=9000))
def test_salvage_never_crashes_and_never_invents_records(
    tmp_path_factory: pytest.TempPathFactory, start: int, garbage: bytes
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "spool.sqlite3"
    values = filled_spool(path, count=100)
    with path.open("r+b") as fh:
        fh.seek(min(start, path.stat().st_size))
        fh.write(garbage)
    spool, recovery = open_spool(path, 10**9)
    with spool:
        records = spool.peek(10**6)
    assert len(records) <= len(values)
    if recovery is not None:  # (bytes inside a record that SQLite finds sound go out as they are: dead-lettered)
        for record in records:
            assert record.seq in values
            assert values[record.seq] == record.value


def test_a_record_damaged_in_place_is_dropped_not_blocking_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The file's structure is sound, one record's bytes are not: it must not stop delivery of the others."""
    path = tmp_path / "spool.sqlite3"
    values = filled_spool(path, count=10)
    raw = bytearray(path.read_bytes())
    at = raw.find(b"health" + b"dev-1")  # a record's stream column, right before its key
    raw[at] = 0xFF  # no longer UTF-8
    path.write_bytes(bytes(raw))
    spool, recovery = open_spool(path, 10**9)
    with spool, caplog.at_level(logging.ERROR, logger="fleetpulse.agents.spool"):
        assert recovery is None, "SQLite's structural check passes"
        left = spool.peek(100)
        assert len(left) == 9
        assert all(values[r.seq] == r.value for r in left if r.seq is not None)
        assert spool.count() == 9
    assert any(r.getMessage() == "spool records damaged in place: dropped" for r in caplog.records)


@pytest.mark.skipif(os.name != "posix", reason="Windows: the installer restricts the folder's ACL")
def test_the_spool_holding_the_device_key_is_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    """Before: spool.sqlite3 and its WAL, which carry the enrolment record (the device key in hex), were 0644."""
    from fleetpulse.agents.identity import build_identity
    from fleetpulse.agents.runner import Agent
    from fleetpulse.agents.settings import AgentSettings, IdentitySettings

    old_spool = tmp_path / "older-agent" / "spool.sqlite3"
    old_spool.parent.mkdir()
    previous = os.umask(0o022)
    try:
        Spool(old_spool, 10**6).close()
        os.chmod(old_spool, 0o644)  # as an agent before the fix left it
        for spool_dir in (tmp_path / "new" / "spool", old_spool.parent):
            settings = AgentSettings(
                spool_dir=spool_dir, identity=IdentitySettings(device_id="pc-1"), collectors=[], device_kind="desktop"
            )
            agent = Agent(settings, build_identity(settings.identity), [])
            agent.spool_inventory()
            key = agent.signer.key.hex().encode()
            files = {f.name: f for f in spool_dir.iterdir() if f.is_file()}
            assert {"spool.sqlite3", "spool.sqlite3-wal", "spool.sqlite3-shm", "device.key"} <= set(files)
            assert key in files["spool.sqlite3-wal"].read_bytes(), "the attack's target: the key is in the spool"
            others = {name: oct(f.stat().st_mode & 0o777) for name, f in files.items() if f.stat().st_mode & 0o077}
            assert others == {}, "no spool file is readable by group or others"
            agent.spool.close()
        assert (tmp_path / "new" / "spool").stat().st_mode & 0o777 == 0o700
    finally:
        os.umask(previous)
