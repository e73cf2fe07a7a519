"""Bounded, prioritised on-disk spool: nothing collected is lost while Kafka is unreachable.

One SQLite database (stdlib, WAL, ``synchronous=FULL``) holds every record not yet acknowledged
by the broker, plus the report sequence counter. Allocating a sequence number and storing the
report happen in one transaction, so after a kill -9 or power loss the counter never goes
backwards and never skips a number that a stored report did not take. Records leave the spool
only after the broker acknowledged them (at-least-once; consumers drop duplicates by
``(device_id, seq)``).

Over the size cap, the oldest ROUTINE records are evicted first; EVENT records (failing
disks, crashes) go only when nothing routine is left. Every eviction is counted and logged.

A corrupt file (overwritten header, truncation, damaged pages) must neither stop the agent
for good nor strand the records still readable in it: :func:`open_spool` checks the file,
moves a corrupt one aside into ``quarantine/`` (kept for forensics, the newest
:data:`QUARANTINE_KEEP` only), salvages every readable record into a fresh spool whose sequence
continues above the old one, and says so in a :class:`SpoolRecovery` the agent reports. A counter
that is no number or runs ahead of the clock (:func:`counter_problem`) is damage too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from fleetpulse.compat import UTC
from fleetpulse.contract import HealthReport, Priority, encode
from fleetpulse.contract.v1 import COUNT_MAX

if TYPE_CHECKING:
    from fleetpulse.agents.salvage import SalvagedRecord

log = logging.getLogger(__name__)

PAGE_SIZE = 4096
"""Set explicitly so the salvage reader knows the page size even when the header is destroyed."""
QUARANTINE_DIR = "quarantine"
QUARANTINE_KEEP = 3
"""Corrupt spools kept for forensics; older ones are deleted, so quarantine stays within ~3 spool caps."""
COUNTER_AHEAD_LIMIT_MS = 24 * 3600 * 1000
"""How far the sequence counter may run ahead of the clock. It starts at the clock in ms and counts one per
report, so only damage (or a clock set back by more than this) puts it further ahead, and the stream worker
refuses reports numbered beyond their own clock (``seq_out_of_bounds``): such a counter is damage."""
# SQLite's primary result codes (sqlite3 exports them as names only from Python 3.11 on):
# BUSY, LOCKED, NOMEM, READONLY, INTERRUPT, IOERR, FULL, CANTOPEN, PERM.
_PASSING_CODES = frozenset({5, 6, 7, 8, 9, 10, 13, 14, 3})
"""SQLite failures that say nothing about the file's content (contention, resources, permissions)."""
_PASSING_MESSAGES = (
    "database is locked",
    "database table is locked",
    "out of memory",
    "attempt to write a readonly database",
    "interrupted",
    "disk i/o error",
    "database or disk is full",
    "unable to open database file",
    "access permission denied",
)
"""The same failures by SQLite's message, for Python 3.10, whose exceptions carry no result code."""

ROW_OVERHEAD_BYTES = 64
"""Rough per-record SQLite overhead, so the cap tracks the file size rather than payload bytes only."""

_PRIORITY_RANK = {Priority.EVENT: 0, Priority.ROUTINE: 1}
STREAMS = ("health", "inventory", "enrolment")
"""What a record may be sent as; delivery maps each to its topic."""

_RECORD_COLUMNS = ["id", "stream", "key", "value", "seq", "priority", "size"]
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
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _owner_only(path)
        self.path = path
        self.max_bytes = max_bytes
        self._db = sqlite3.connect(path, isolation_level=None, timeout=30)
        # damaged text must not make every read fail: such records are dropped in peek()
        self._db.text_factory = lambda raw: raw.decode("utf-8", "replace")
        self._db.execute(f"PRAGMA page_size={PAGE_SIZE}")
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

    def append_report(
        self, make: Callable[[int], HealthReport], stream: str = "health", priority: Priority | None = None
    ) -> HealthReport:
        """Allocate the next sequence number, build the report with it and store it, atomically.

        If ``make`` raises, nothing is stored and the number is not consumed. ``priority`` overrides the
        report's own when the agent knows more (a battery that just crossed a threshold is an event).
        """
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            seq = self._meta("next_seq")
            report = make(seq)
            if report.seq != seq:
                raise ValueError(f"report built with seq {report.seq}, allocated {seq}")
            self._insert(stream, report.device_id.encode(), encode(report), seq, priority or report.priority)
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

    def restore(self, records: Iterable[SalvagedRecord]) -> int:
        """Store records salvaged from a corrupt spool, in their order and with their own seq; returns how many."""
        db = self._db
        stored = 0
        db.execute("BEGIN IMMEDIATE")
        try:
            for record in records:
                self._insert(record.stream, record.key, record.value, record.seq, record.priority)
                stored += 1
            self._evict_over_cap()
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return stored

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
        """The oldest ``limit`` records, in the order they were collected.

        A record damaged in place (the file's structure is sound, its bytes are not) would block
        every record behind it, so it is dropped here and logged.
        """
        rows = self._db.execute(
            "SELECT id, stream, key, value, seq, priority FROM records ORDER BY id LIMIT ?", (limit,)
        ).fetchall()
        records: list[SpooledRecord] = []
        damaged: list[int] = []
        for row_id, stream, key, value, seq, rank in rows:
            sound = stream in STREAMS and isinstance(key, bytes) and isinstance(value, bytes) and rank in (0, 1)
            if not sound or not (seq is None or isinstance(seq, int)):
                damaged.append(row_id)
                continue
            records.append(
                SpooledRecord(row_id, stream, key, value, seq, Priority.EVENT if rank == 0 else Priority.ROUTINE)
            )
        if damaged:
            log.error("spool records damaged in place: dropped", extra={"fields": {"ids": damaged[:20]}})
            self.ack(damaged)
        return records

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


def is_corruption(exc: BaseException) -> bool:
    """The file itself is damaged, not locked, full or unreadable for a passing reason.

    Damage shows as SQLite's corruption codes but also as generic errors ("unsupported file
    format", a schema that no longer parses), so every SQLite error that is not about contention,
    resources or permissions counts. Damaged text surfaces from Python's sqlite3 as
    :class:`UnicodeDecodeError` rather than as an SQLite error.
    """
    if isinstance(exc, UnicodeDecodeError):
        return True
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    if sys.version_info < (3, 11):  # no result codes on the exception: judge by SQLite's message
        message = str(exc).lower()
        return not isinstance(exc, sqlite3.ProgrammingError) and not any(p in message for p in _PASSING_MESSAGES)
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and int(code) & 0xFF not in _PASSING_CODES


@dataclass(frozen=True)
class SpoolRecovery:
    """What happened to a corrupt spool; the agent logs it and reports it to the server."""

    problem: str
    quarantined: Path
    salvaged: int
    rejected: int
    next_seq: int

    def describe(self) -> str:
        return (
            f"spool file corrupt ({self.problem}): moved to {self.quarantined}, "
            f"{self.salvaged} records salvaged, {self.rejected} damaged records dropped, "
            f"sequence continues at {self.next_seq}"
        )


def _owner_only(path: Path) -> None:
    """Make the spool owner-only (0600), whatever the umask: it holds the enrolment record, whose key
    lets whoever reads it speak for the device (``device.key`` is 0600 for the same reason).

    The database file is created here, before SQLite would create it under the umask; SQLite gives
    the -wal and -shm files it creates the database's mode. Files left by an older agent are fixed.
    Windows: the installer restricts the ProgramData folder's ACL.
    """
    if sys.platform == "win32":
        return
    # Only a new file is opened here: closing any descriptor of a file drops every POSIX lock this process
    # holds on it, so opening the live spool again would silently release the other thread's SQLite locks.
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(path.with_name(path.name + suffix), 0o600)


def open_spool(path: Path, max_bytes: int) -> tuple[Spool, SpoolRecovery | None]:
    """The spool at ``path``, recovered first if the file is corrupt (see the module docstring)."""
    problem = find_damage(path) if path.exists() else None
    if problem is None:
        try:
            return Spool(path, max_bytes), None
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            if not is_corruption(exc):
                raise
            problem = str(exc)
    return _recover(path, max_bytes, problem)


def counter_problem(value: object, now_ms: int) -> str | None:
    """What is wrong with a stored sequence counter ``value`` at the clock ``now_ms``, or None: it is a number
    from 0 to :data:`COUNTER_AHEAD_LIMIT_MS` past the clock (SQLite stores whatever a damaged page holds)."""
    limit = min(now_ms + COUNTER_AHEAD_LIMIT_MS, COUNT_MAX)
    if type(value) is int and 0 <= value <= limit:
        return None
    return f"sequence counter {str(value)[:40]} is not a number from 0 to {limit} (the clock in ms, plus a day)"


def find_damage(path: Path) -> str | None:
    """What SQLite's structural check, or the sequence counter's bounds, find wrong with the file, or None
    when it is sound.

    Read-only, so a damaged file is quarantined exactly as it was found.
    """
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        db.text_factory = lambda raw: raw.decode("utf-8", "replace")  # the check's findings quote damaged bytes
        try:
            rows = db.execute("PRAGMA quick_check(5)").fetchall()
            columns = [str(row[1]) for row in db.execute("PRAGMA table_info(records)").fetchall()]
            meta = bool(db.execute("PRAGMA table_info(meta)").fetchall())
            counter = db.execute("SELECT value FROM meta WHERE name = 'next_seq'").fetchall() if meta else []
        finally:
            db.close()
    except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
        if not is_corruption(exc):
            raise
        return str(exc)
    found = [str(row[0]) for row in rows if row[0] != "ok"]
    if found:
        return "; ".join(found)[:500]
    # A damaged schema text can still be well-formed SQL: the structure checks out, the columns do not.
    if columns and columns != _RECORD_COLUMNS:
        return f"records table has columns {columns!r}"[:500]
    return counter_problem(counter[0][0], time.time_ns() // 1_000_000) if counter else None


def _recover(path: Path, max_bytes: int, problem: str) -> tuple[Spool, SpoolRecovery]:
    from fleetpulse.agents.salvage import Salvage

    quarantined = _quarantine(path)
    with Salvage(quarantined) as found:
        now_ms = time.time_ns() // 1_000_000
        old = (found.next_seq, None if found.highest_seq is None else found.highest_seq + 1)
        # a damaged counter (or a record numbered by one) must not number the fresh spool's reports
        start = max([now_ms, *(seq for seq in old if seq is not None and counter_problem(seq, now_ms) is None)])
        spool = Spool(path, max_bytes, initial_seq=start)
        try:
            salvaged = spool.restore(found.records())
        except BaseException:
            spool.close()
            raise
    recovery = SpoolRecovery(problem, quarantined, salvaged, found.rejected, spool.next_seq)
    log.error(
        "spool file corrupt: quarantined, readable records salvaged",
        extra={
            "fields": {
                "problem": problem,
                "quarantined": str(quarantined),
                "salvaged": salvaged,
                "rejected": found.rejected,
                "next_seq": recovery.next_seq,
            }
        },
    )
    return spool, recovery


def _quarantine(path: Path) -> Path:
    """Move the spool and its WAL/shared-memory files aside together; keep the newest few."""
    folder = path.parent / QUARANTINE_DIR
    folder.mkdir(mode=0o700, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = folder / f"{path.stem}-{stamp}{path.suffix}"
    for suffix in ("", "-wal", "-shm"):  # a WAL left behind would be replayed into the fresh spool
        source = path.with_name(path.name + suffix)
        if source.exists():
            os.replace(source, target.with_name(target.name + suffix))
    kept = sorted(folder.glob(f"{path.stem}-*{path.suffix}"), reverse=True)
    for old in kept[QUARANTINE_KEEP:]:
        for suffix in ("", "-wal", "-shm"):
            old.with_name(old.name + suffix).unlink(missing_ok=True)
    return target
