"""Bounded, prioritised on-disk spool: nothing collected is lost while Kafka is unreachable.

One SQLite database (stdlib, WAL, ``synchronous=FULL``) holds every record not yet acknowledged
by the broker, plus the report sequence counter. Allocating a sequence number and storing the
report happen in one transaction, so after a kill -9 or power loss the counter never goes
backwards and never skips a number that a stored report did not take. Records leave the spool
only after the broker acknowledged them (at-least-once; consumers drop duplicates by
``(device_id, seq)``).

Over the size cap, the oldest ROUTINE records are evicted first; EVENT records (failing
disks, crashes) go only when nothing routine is left. Every eviction is counted and logged.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fleetpulse.contract import HealthReport, Priority, encode

log = logging.getLogger(__name__)

ROW_OVERHEAD_BYTES = 64
"""Rough per-record SQLite overhead, so the cap tracks the file size rather than payload bytes only."""

_PRIORITY_RANK = {Priority.EVENT: 0, Priority.ROUTINE: 1}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stream TEXT NOT NULL,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    seq INTEGER,
    priority INTEGER NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS records_priority ON records (priority, id);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (name, value) VALUES ('evicted_routine', 0), ('evicted_event', 0);
"""


@dataclass(frozen=True, slots=True)
class SpooledRecord:
    id: int
    stream: str
    key: bytes
    value: bytes
    seq: int | None
    priority: Priority


class Spool:
    """Not thread-safe: the agent's single loop owns it."""

    def __init__(self, path: Path, max_bytes: int, initial_seq: int | None = None) -> None:
        """``initial_seq`` applies only when the spool is created; default: the current Unix time in ms.

        Starting a new spool at the clock rather than at 0 keeps sequence numbers increasing even when
        the spool is lost (reinstall, wiped disk): at one report per second or slower, the counter
        never catches up with the clock, so consumers never mistake new reports for replays.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_bytes = max_bytes
        self._db = sqlite3.connect(path, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        start = initial_seq if initial_seq is not None else time.time_ns() // 1_000_000
        self._db.execute(
            "INSERT OR IGNORE INTO meta (name, value) VALUES ('next_seq', ?), ('initial_seq', ?)", (start, start)
        )

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- writing

    def append_report(self, make: Callable[[int], HealthReport], stream: str = "health") -> HealthReport:
        """Allocate the next sequence number, build the report with it and store it, atomically.

        If ``make`` raises, nothing is stored and the number is not consumed.
        """
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            seq = self._meta("next_seq")
            report = make(seq)
            if report.seq != seq:
                raise ValueError(f"report built with seq {report.seq}, allocated {seq}")
            self._insert(stream, report.device_id.encode(), encode(report), seq, report.priority)
            db.execute("UPDATE meta SET value = ? WHERE name = 'next_seq'", (seq + 1,))
            self._evict_over_cap()
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return report

    def append(self, stream: str, key: bytes, value: bytes, priority: Priority) -> None:
        """Store a record that carries no report sequence (e.g. inventory)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            self._insert(stream, key, value, None, priority)
            self._evict_over_cap()
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _insert(self, stream: str, key: bytes, value: bytes, seq: int | None, priority: Priority) -> None:
        size = len(key) + len(value) + ROW_OVERHEAD_BYTES
        if size > self.max_bytes:
            raise ValueError(f"record of {size} bytes exceeds the whole spool cap {self.max_bytes}")
        self._db.execute(
            "INSERT INTO records (stream, key, value, seq, priority, size) VALUES (?, ?, ?, ?, ?, ?)",
            (stream, key, value, seq, _PRIORITY_RANK[priority], size),
        )

    def _evict_over_cap(self) -> None:
        total = self._total_bytes()
        if total <= self.max_bytes:
            return
        evicted = {0: 0, 1: 0}
        for rank in (1, 0):  # routine first, events only when nothing routine is left
            rows = self._db.execute("SELECT id, size FROM records WHERE priority = ? ORDER BY id", (rank,)).fetchall()
            doomed: list[int] = []
            for row_id, size in rows:
                if total <= self.max_bytes:
                    break
                doomed.append(row_id)
                total -= size
            self._db.executemany("DELETE FROM records WHERE id = ?", ((i,) for i in doomed))
            evicted[rank] += len(doomed)
        self._db.execute("UPDATE meta SET value = value + ? WHERE name = 'evicted_routine'", (evicted[1],))
        self._db.execute("UPDATE meta SET value = value + ? WHERE name = 'evicted_event'", (evicted[0],))
        log.warning(
            "spool over its cap: evicted oldest records",
            extra={"fields": {"evicted_routine": evicted[1], "evicted_event": evicted[0], "cap": self.max_bytes}},
        )

    # ----------------------------------------------------------------- reading

    def peek(self, limit: int) -> list[SpooledRecord]:
        """The oldest ``limit`` records, in the order they were collected."""
        rows = self._db.execute(
            "SELECT id, stream, key, value, seq, priority FROM records ORDER BY id LIMIT ?", (limit,)
        ).fetchall()
        return [
            SpooledRecord(row[0], row[1], row[2], row[3], row[4], Priority.EVENT if row[5] == 0 else Priority.ROUTINE)
            for row in rows
        ]

    def ack(self, ids: list[int]) -> None:
        """Forget records the broker acknowledged."""
        if not ids:
            return
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("DELETE FROM records WHERE id = ?", ((i,) for i in ids))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if self.count() == 0:
            db.execute("PRAGMA incremental_vacuum")

    # ----------------------------------------------------------------- state

    def _meta(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return int(row[0])

    def _total_bytes(self) -> int:
        return int(self._db.execute("SELECT COALESCE(SUM(size), 0) FROM records").fetchone()[0])

    @property
    def next_seq(self) -> int:
        return self._meta("next_seq")

    @property
    def initial_seq(self) -> int:
        """The first sequence number this spool handed out."""
        return self._meta("initial_seq")

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0])

    def total_bytes(self) -> int:
        return self._total_bytes()

    def evicted(self) -> dict[Priority, int]:
        """Records dropped over the cap since the spool was created.

        A record being sent while it is evicted may still reach the broker, so this is an upper bound
        on what was lost.
        """
        return {Priority.ROUTINE: self._meta("evicted_routine"), Priority.EVENT: self._meta("evicted_event")}
