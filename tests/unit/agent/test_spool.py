"""The spool: cap respected, events outlive routine metrics, order kept, crash-safe under kill -9."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetpulse.agents.spool import ROW_OVERHEAD_BYTES, Spool
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
from datetime import UTC, datetime
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
