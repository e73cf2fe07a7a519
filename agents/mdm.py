"""MDM bridge: Intune (Microsoft Graph) exports of phones and tablets -> contract health reports.

Why: phones and tablets run no fleetpulse agent; the MDM already knows their battery health
and storage. The bridge reads what an export tool saved from Graph and publishes it like an
agent would, so the same pipeline scores them.

Inputs (see README "Simulator and MDM bridge"):
- ``graph-json``: Graph collection pages ``{"@odata.context": ..., "value": [...],
  "@odata.nextLink": ...}`` -- one page, a JSON array of pages, or one page per line --
  of ``managedDevice`` objects (with ``hardwareInformation`` from the beta endpoint) or of
  ``userExperienceAnalyticsBatteryHealthDevicePerformance`` objects (Windows laptops).
- ``csv``: one row per device; headers are Graph property names, matched case- and
  punctuation-insensitively (``lastSyncDateTime`` == ``Last Sync DateTime``).
Both in UTF-8 (with or without a BOM) or UTF-16 with a BOM. Exports are streamed: memory holds one
item (at most 1 MiB of JSON, or one CSV line of at most 64 KiB) and one batch of reports, never the file.

Mapping rules:
- Only whitelisted, non-personal fields are read. User principal names, e-mail addresses,
  phone numbers, IMEI/MEID, serial numbers, device names and MAC addresses are never copied,
  not even into error messages or dead letters. Dead letters copy an allow-listed field only
  when its value passes that field's check (a known enum value, an ISO timestamp, a number
  below a million, a byte count rounded to two digits); otherwise only the field's name is kept.
- ``device_id`` = ``mdm-`` + HMAC-SHA256(secret, Intune device id), truncated to 128 bits.
- The MDM reports battery health only as a percentage, so ``design_capacity`` is 100 and
  ``full_charge_capacity`` is the percentage (unit "mAh", dimensionless on both sides);
  ``health_ratio`` stays correct. A health of 0 is treated as "not reported".
- ``seq`` comes from a small SQLite state: the same observation (device + content) always
  gets the same seq and collected_at, so re-ingesting an export produces identical records
  and the stream's (device_id, seq) dedup drops them (counted, not dead-lettered).
- Bad rows become :class:`RowError` entries with a reason and their location (``file:line 12``,
  ``file:page 2:item 7``); so does a broken file (truncated, not JSON), after its readable rows.
  The bridge never raises on input.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import hmac
import io
import json
import math
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TextIO

from pydantic import ValidationError

from fleetpulse.compat import UTC
from fleetpulse.contract import (
    MDM_DEVICE_ID_PREFIX,
    BatteryHealth,
    DeviceInventory,
    DeviceKind,
    DiskHealth,
    DiskKind,
    HealthReport,
    Platform,
    ReportSource,
    SystemLoad,
)

InputFormat = Literal["graph-json", "csv"]
BRIDGE_VERSION = "mdm-bridge-1"


class RowError(Exception):
    """A row the bridge could not map; ``reason`` never contains personal data."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Problem:
    ref: str
    """Where: ``file:page:index`` or ``file:line`` -- never a device name or user."""
    reason: str
    excerpt: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Observation:
    """What one MDM row says about one device, before pseudonymisation and sequencing."""

    intune_id: str
    kind: DeviceKind
    platform: Platform
    collected_at: datetime | None
    battery_pct: float | None = None
    charge_cycles: int | None = None
    runtime_minutes: float | None = None
    total_bytes: int | None = None
    free_bytes: int | None = None
    vendor: str | None = None
    model: str | None = None

    def fingerprint(self) -> str:
        data = [
            self.intune_id,
            self.kind.value,
            self.platform.value,
            self.collected_at.isoformat() if self.collected_at else None,
            self.battery_pct,
            self.charge_cycles,
            self.runtime_minutes,
            self.total_bytes,
            self.free_bytes,
        ]
        return hashlib.sha256(json.dumps(data).encode()).hexdigest()


@dataclass
class IngestResult:
    reports: list[HealthReport] = field(default_factory=list)
    inventory: list[DeviceInventory] = field(default_factory=list)
    errors: list[Problem] = field(default_factory=list)
    skipped: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    rows: int = 0


# --- pseudonyms and sequence state ----------------------------------------------------------


def pseudonymise(intune_id: str, secret: bytes) -> str:
    """Stable, unlinkable-without-the-secret device id (fits the contract's DeviceId)."""
    digest = hmac.new(secret, b"intune:" + intune_id.encode(), hashlib.sha256).hexdigest()
    return f"{MDM_DEVICE_ID_PREFIX}{digest[:32]}"


class SeqStore:
    """Remembers which observation got which seq, so replays are idempotent."""

    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode with explicit BEGIN IMMEDIATE: two ingests running at once are serialised
        # instead of handing out the same seq twice.
        self._db = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS observations (device_id TEXT NOT NULL, fingerprint TEXT NOT NULL,"
            " seq INTEGER NOT NULL, collected_at TEXT NOT NULL, PRIMARY KEY (device_id, fingerprint))"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS devices (device_id TEXT PRIMARY KEY, next_seq INTEGER NOT NULL)")

    def assign(self, device_id: str, fingerprint: str, collected_at: datetime) -> tuple[int, datetime]:
        """(seq, collected_at) for this observation: the stored pair if seen before, else a new seq."""
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")
        row = self._db.execute(
            "SELECT seq, collected_at FROM observations WHERE device_id = ? AND fingerprint = ?",
            (device_id, fingerprint),
        ).fetchone()
        if row is not None:
            return int(row[0]), datetime.fromisoformat(row[1])
        nxt = self._db.execute("SELECT next_seq FROM devices WHERE device_id = ?", (device_id,)).fetchone()
        seq = int(nxt[0]) if nxt else 0
        self._db.execute(
            "INSERT INTO devices (device_id, next_seq) VALUES (?, ?)"
            " ON CONFLICT(device_id) DO UPDATE SET next_seq = excluded.next_seq",
            (device_id, seq + 1),
        )
        self._db.execute(
            "INSERT INTO observations (device_id, fingerprint, seq, collected_at) VALUES (?, ?, ?, ?)",
            (device_id, fingerprint, seq, collected_at.isoformat()),
        )
        return seq, collected_at

    def start_input(self) -> None:
        """Forget which observations the previous input held (duplicates are counted per input)."""
        self._db.execute("CREATE TEMP TABLE IF NOT EXISTS input_seen (key BLOB PRIMARY KEY) WITHOUT ROWID")
        self._db.execute("DELETE FROM input_seen")

    def first_in_input(self, device_id: str, fingerprint: str) -> bool:
        """True the first time this observation appears in the current input. Kept in SQLite's temp
        store rather than a Python set, so a 500 MB export does not hold a million keys in memory."""
        key = hashlib.sha256(f"{device_id}\0{fingerprint}".encode()).digest()[:16]
        return self._db.execute("INSERT OR IGNORE INTO input_seen (key) VALUES (?)", (key,)).rowcount == 1

    def commit(self) -> None:
        if self._db.in_transaction:
            self._db.execute("COMMIT")

    def close(self) -> None:
        self.commit()
        self._db.close()

    def __enter__(self) -> SeqStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- readers: rows with a reference, streamed -----------------------------------------------

MAX_ITEM_CHARS = 1024 * 1024
"""A Graph object of a device is a few KB; a larger one is refused, so one row can never exhaust memory."""
MAX_CSV_LINE = 64 * 1024
"""A CSV line longer than this is reported as a row error instead of being read (nor, as csv's own
field-size limit would, costing the rest of the file)."""
MAX_CSV_ROW = 1024 * 1024
"""Quoted fields may span lines; a row over this many characters is refused like a long line."""
MAX_CSV_ROW_LINES = 32
"""Lines one row may span. A quoted field may hold line breaks, but no MDM export's field holds many: a stray
quote would otherwise take every following line into one field, up to a limit, and each of those rows with it."""
MAX_NUMBER_DIGITS = 20
_CHUNK = 64 * 1024
_WHITESPACE = re.compile(r"[ \t\n\r]*")


def _norm(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


def open_export(path: Path) -> TextIO:
    """The export as text: UTF-8 with or without a BOM, or UTF-16 with a BOM (PowerShell's ``Out-File``).

    Undecodable bytes become U+FFFD, which no field validation accepts, so they cost a value, not the file.
    """
    raw = path.open("rb")
    head = raw.peek(4)[:4]
    encoding = "utf-8-sig"
    if head[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        encoding = "utf-16"
    return io.TextIOWrapper(raw, encoding=encoding, errors="replace", newline="")


class _AbsurdNumber:
    """A JSON integer of more than :data:`MAX_NUMBER_DIGITS` digits, kept unconverted: Python's int()
    refuses (or is slow on) thousands of digits, and no MDM counter needs more than 20."""

    def __repr__(self) -> str:
        return f"<number of more than {MAX_NUMBER_DIGITS} digits>"


def _json_int(text: str) -> int | _AbsurdNumber:
    return int(text) if len(text.lstrip("-")) <= MAX_NUMBER_DIGITS else _AbsurdNumber()


_DECODER = json.JSONDecoder(parse_int=_json_int)


class _BadJson(Exception):
    """The stream is not valid JSON at the reader's position (``reason`` names no content)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _JsonStream:
    """A sliding window over a text stream: holds at most one item plus one chunk, tracks the line."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.text = ""
        self.pos = 0
        self.eof = False
        self.line_base = 1
        """Line number at ``text[0]``."""

    @property
    def line(self) -> int:
        return self.line_base + self.text.count("\n", 0, self.pos)

    def fill(self) -> bool:
        """Drop what was consumed, append a chunk; False at end of input."""
        if self.eof:
            return False
        self.line_base += self.text.count("\n", 0, self.pos)
        chunk = self.stream.read(_CHUNK)
        self.text = self.text[self.pos :] + chunk
        self.pos = 0
        self.eof = not chunk
        return bool(chunk)

    def peek(self) -> str:
        """The next non-whitespace character ("" at end of input), not consumed."""
        while True:
            match = _WHITESPACE.match(self.text, self.pos)
            self.pos = match.end() if match else self.pos
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.fill():
                return ""

    def expect(self, char: str, what: str) -> None:
        found = self.peek()
        if found != char:
            raise _BadJson(f"expected {what}, found {_describe(found)}")
        self.pos += 1

    def value(self, limit: int) -> Any:
        """Decode the JSON value at the position, reading more input until it is complete."""
        self.peek()
        while True:
            try:
                value, end = _DECODER.raw_decode(self.text, self.pos)
            except json.JSONDecodeError as exc:
                # More input can complete a value cut at the window's end (an open string, a split
                # literal); an error well inside the window is a syntax error whatever follows.
                cut = exc.msg.startswith("Unterminated string") or exc.pos + 64 >= len(self.text)
                if not cut or self.eof:
                    raise _BadJson(
                        "truncated JSON: the input ends inside a value" if self.eof else "invalid JSON"
                    ) from None
            except RecursionError:
                raise _BadJson("JSON nested too deeply") from None
            else:
                if end < len(self.text) or self.eof:
                    self.pos = end
                    return value
                # a number at the window's end may continue in the next chunk
            if len(self.text) - self.pos > limit:
                raise _BadJson(f"a JSON value larger than {limit // 1024} KiB")
            self.fill()

    def indent(self) -> str | None:
        """The whitespace before the position when nothing else precedes it on its line, else None."""
        start = self.text.rfind("\n", max(0, self.pos - 256), self.pos)  # deeper indentation is no export's
        if start < 0:
            return None
        prefix = self.text[start + 1 : self.pos]
        return prefix if prefix.strip(" \t") == "" else None

    def resync(self, indent: str = "") -> bool:
        """Skip to the next line that starts with ``indent`` and ``{``: the next page of a page-per-line
        export, or (with the indentation of the broken item) the next item of a pretty-printed page."""
        marker = "\n" + indent + "{"
        while True:
            found = self.text.find(marker, self.pos)
            if found >= 0:
                self.pos = found + len(marker) - 1
                return True
            self.pos = max(self.pos, len(self.text) - len(marker) + 1)
            if not self.fill():
                return False


class _InputExhausted(Exception):
    """A broken item was reported and nothing readable follows it."""


def _describe(char: str) -> str:
    return "end of input" if char == "" else f"'{char}'" if char in '[]{},:"' else "other text"


class GraphJsonReader:
    """Streams the items of Graph collection pages, each with its reference (``file:page 2:item 7``).

    Accepts one page, a JSON array of pages, or one page per line, in any mix. Memory holds one item
    (at most :data:`MAX_ITEM_CHARS`), never the file. A syntax error (a truncated file, garbage) becomes
    a row error at its line, page and item; reading resumes at the next item of a pretty-printed page
    (the next line with the broken item's indentation), else at the next line that starts a page, so
    what follows a broken item or page is still read.
    """

    def __init__(self, stream: TextIO, source: str = "input") -> None:
        self.source = source
        self.context = ""
        """``@odata.context`` of the latest page that had one: it names the entity set."""
        self.warnings: list[str] = []
        self._json = _JsonStream(stream)
        self._page = 0
        self._item = -1
        self._next_link = False

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        stream = self._json
        while True:
            try:
                first = stream.peek()
                if first == "":
                    break
                if first == "[":
                    stream.pos += 1
                    yield from self._pages_of_array()
                elif first == "{":
                    yield from self._read_page()
                else:
                    raise _BadJson(f"expected a Graph page object, found {_describe(first)}")
            except _InputExhausted:
                break
            except _BadJson as exc:
                where = f"page {self._page}:item {self._item}" if self._item >= 0 else f"page {max(self._page, 1)}"
                yield f"{self.source}:line {stream.line}:{where}", RowError(exc.reason + "; rest of the page skipped")
                self._item = -1
                if not stream.resync():
                    break
        if self._next_link:
            self.warnings.append(
                f"{self.source}: last page has @odata.nextLink: the export is incomplete (more pages on the server)"
            )

    def _pages_of_array(self) -> Iterator[tuple[str, Any]]:
        stream = self._json
        count = 0
        while stream.peek() != "]":
            if count:
                stream.expect(",", "',' between pages")
            if stream.peek() == "{":
                yield from self._read_page()
            else:
                self._page += 1
                stream.value(MAX_ITEM_CHARS)
                yield f"{self.source}:page {self._page}", RowError("not a Graph collection page (not an object)")
            count += 1
        stream.pos += 1

    def _read_page(self) -> Iterator[tuple[str, Any]]:
        stream = self._json
        self._page += 1
        self._item = -1
        self._next_link = False
        has_value = False
        stream.expect("{", "a page object")
        members = 0
        while stream.peek() != "}":
            if members:
                stream.expect(",", "',' between members")
            if stream.peek() != '"':
                raise _BadJson(f"expected a member name, found {_describe(stream.peek())}")
            key = stream.value(4096)
            stream.expect(":", "':' after a member name")
            members += 1
            if key == "value" and stream.peek() == "[":
                has_value = True
                stream.pos += 1
                yield from self._items()
                continue
            member = stream.value(MAX_ITEM_CHARS)
            if key == "@odata.context" and isinstance(member, str):
                self.context = member[:512]
            elif key == "@odata.nextLink":
                self._next_link = bool(member)
        stream.pos += 1
        if not has_value:
            yield f"{self.source}:page {self._page}", RowError("not a Graph collection page (no 'value' array)")

    def _items(self) -> Iterator[tuple[str, Any]]:
        stream = self._json
        self._item = 0
        resumed = False
        while stream.peek() != "]":
            if self._item and not resumed:
                stream.expect(",", "',' between items")
            resumed = False
            stream.peek()
            indent = stream.indent()
            try:
                item: Any = stream.value(MAX_ITEM_CHARS)
            except _BadJson as exc:
                if indent is None:  # a compact page: no line tells where the next item starts
                    raise
                # A pretty-printed page puts every item on a line of its own at the same indentation.
                ref = f"{self.source}:line {stream.line}:page {self._page}:item {self._item}"
                resumed = stream.resync(indent)
                more = "item skipped" if resumed else "rest of the input skipped"
                item = RowError(exc.reason if stream.eof and not resumed else f"{exc.reason}; {more}")
                yield ref, item
                if not resumed:
                    raise _InputExhausted from None
            else:
                yield f"{self.source}:page {self._page}:item {self._item}", item
            self._item += 1
        stream.pos += 1
        self._item = -1


class _BoundedLines:
    """Physical lines for :func:`csv.reader`, none longer than :data:`MAX_CSV_LINE`, no row (quoted
    fields can span lines) longer than :data:`MAX_CSV_ROW` or spanning more than :data:`MAX_CSV_ROW_LINES`.

    A longer line is read in pieces, never whole, and replaced by an empty stand-in, as is every line of
    a row once it passes the row limit; ``oversized`` keeps where and why, so the row is reported
    instead of parsed. A line with a NUL character is refused the same way. A row that runs over too many
    lines (a stray quote) is ended and refused, and its lines after the first are read again as rows of
    their own: one stray quote costs its own row only.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.line = 0
        self.row_chars = 0
        self.oversized: tuple[int, str] | None = None
        self._row: list[str] = []
        """The current row's lines as served (stand-ins included), to be read again if the row runs on."""
        self._again: list[str] = []
        """Lines to serve before reading on, last first."""

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if len(self._row) >= MAX_CSV_ROW_LINES:
            return self._run_on()
        if self._again:
            line = self._again.pop()
            self.line += 1
            self.row_chars += len(line)
        else:
            line = self._read()
        if not line:
            raise StopIteration
        self._row.append(line)
        return line

    def _read(self) -> str:
        line = self.stream.readline(MAX_CSV_LINE + 1)
        if not line:
            return line
        self.line += 1
        self.row_chars += len(line)
        if len(line) > MAX_CSV_LINE and not line.endswith(("\n", "\r")):
            quotes, rest = line.count('"'), line
            while rest and not rest.endswith(("\n", "\r")):
                rest = self.stream.readline(MAX_CSV_LINE)
                quotes += rest.count('"')
            self._refuse(f"line longer than {MAX_CSV_LINE} characters")
            return _stand_in(quotes)
        if self.row_chars > MAX_CSV_ROW:
            self._refuse(f"row longer than {MAX_CSV_ROW} characters")
            return _stand_in(line.count('"'))
        if "\x00" in line:
            # no MDM writes one; Python 3.10's csv module refuses the line and 3.11's reads it: refused on both
            self._refuse("line contains NUL")
            return line.replace("\x00", "")
        return line

    def _run_on(self) -> str:
        """End the current row (a stand-in that closes an open quote), refuse it, and give back its lines
        after the first, so that they are read again."""
        first, *rest = self._row
        if self.oversized is None:
            self.oversized = (self.line - len(rest), f"a row over more than {MAX_CSV_ROW_LINES} lines (a stray quote?)")
        self._again.extend(reversed(rest))
        self.line -= len(rest)
        self._row = []
        return _stand_in(sum(line.count('"') for line in (first, *rest)))

    def _refuse(self, reason: str) -> None:
        if self.oversized is None:
            self.oversized = (self.line, reason)

    def next_row(self) -> tuple[int, str] | None:
        """Start counting a new row; return the refusal of the row just read, if any."""
        refused, self.oversized, self.row_chars, self._row = self.oversized, None, 0, []
        return refused


def _stand_in(quotes: int) -> str:
    """An empty line that leaves csv's quoting state where the refused line would have: a row that
    ends on it still ends, and the next row is read from its first line."""
    return '"\n' if quotes % 2 else "\n"


def read_csv(stream: TextIO, source: str = "input") -> Iterator[tuple[str, Any]]:
    """Rows keyed by normalised header (``lastsyncdatetime``), each with the line it starts on.

    Streams row by row; a line over :data:`MAX_CSV_LINE` characters, a row over :data:`MAX_CSV_ROW`
    or a malformed row is a row error and reading continues with the next line.
    """
    lines = _BoundedLines(stream)
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        header = []
    if (refused := lines.next_row()) is not None:
        yield f"{source}:line 1", RowError(f"unreadable CSV header ({refused[1]})")
        return
    if not any(h.strip() for h in header):
        yield f"{source}:line 1", RowError("no CSV header")
        return
    keys = [_norm(h) for h in header]
    start = lines.line + 1
    while True:
        problem: str | None = None
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            values, problem = [], f"unreadable CSV row ({str(exc)[:80]})"
        if (refused := lines.next_row()) is not None:
            line, problem = refused
            problem += f" (at line {line})" if line != start else ""
        if problem is not None:
            yield f"{source}:line {start}", RowError(problem)
        elif not any(v.strip() for v in values):
            pass
        elif len(values) != len(keys):
            yield f"{source}:line {start}", RowError(f"{len(values)} columns, header has {len(keys)}")
        else:
            yield f"{source}:line {start}", {k: v for k, v in zip(keys, values, strict=True) if v.strip() != ""}
        start = lines.line + 1


# --- field parsing ----------------------------------------------------------------------------


def _get(item: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if name in item and item[name] is not None:
            return item[name]
    return None


def _number(value: Any, name: str, low: float, high: float) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise RowError(f"{name}: expected a number, got a boolean")
    if isinstance(value, _AbsurdNumber) or (isinstance(value, str) and len(value.strip()) > 2 * MAX_NUMBER_DIGITS):
        raise RowError(f"{name}: a number of more than {MAX_NUMBER_DIGITS} digits")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise RowError(f"{name}: not a number") from None
    if not math.isfinite(number):
        raise RowError(f"{name}: not a finite number")
    if not low <= number <= high:
        raise RowError(f"{name}: {_shown(number)} outside {low:g}..{high:g}")
    return number


def _shown(number: float) -> str:
    """A rejected value for a reason: small ones as they are; long ones (which could be an IMEI or a
    phone number typed into the wrong column) only by their size."""
    return f"{number:g}" if abs(number) < 1e6 else f"a number of {len(str(int(abs(number))))} digits"


def _timestamp(value: Any, name: str) -> datetime:
    if not isinstance(value, str) or not value.strip():
        raise RowError(f"{name}: missing")
    text = value.strip()
    if text.startswith("0001-01-01"):
        raise RowError(f"{name}: device never synced")
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RowError(f"{name}: not an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        raise RowError(f"{name}: timestamp without time zone")
    try:
        parsed = parsed.astimezone(UTC)
    except (OverflowError, ValueError):  # 9999-12-31T23:59:59-01:00 parses, but is past datetime.max in UTC
        raise RowError(f"{name}: outside the range of dates") from None
    if not 2000 <= parsed.year < 2100:
        raise RowError(f"{name}: year {parsed.year} outside 2000..2099")
    return parsed


def _text(value: Any, limit: int = 128) -> str | None:
    """A display string (vendor, model); control characters are dropped, never forwarded."""
    if not isinstance(value, str):
        return None
    text = "".join(ch for ch in value[: 4 * limit] if ch.isprintable()).strip()
    return text[:limit] or None


def _kind_and_platform(device_type: Any, chassis: Any, os_name: Any) -> tuple[DeviceKind, Platform]:
    dtype = _norm(device_type) if isinstance(device_type, str) else ""
    chassis_n = _norm(chassis) if isinstance(chassis, str) else ""
    os_n = _norm(os_name) if isinstance(os_name, str) else ""
    if dtype in ("iphone", "ipod") or (os_n == "ios" and chassis_n != "tablet" and dtype != "ipad"):
        return DeviceKind.PHONE, Platform.IOS
    if dtype == "ipad" or os_n == "ipados":
        return DeviceKind.TABLET, Platform.IOS
    if os_n == "ios":
        return DeviceKind.TABLET, Platform.IOS
    if dtype.startswith("android") or os_n == "android":
        return (DeviceKind.TABLET if chassis_n == "tablet" else DeviceKind.PHONE), Platform.ANDROID
    shown = next((v for v in (os_n, dtype) if v in _KNOWN_VALUES), "unrecognised" if os_n or dtype else "missing")
    raise _NotMobile(f"not a phone or tablet (operatingSystem/deviceType {shown})")


class _NotMobile(RowError):
    """PCs in an MDM export report through the agent; skipped, not an error."""


def _intune_id(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RowError("id: missing Intune device id")
    if len(value) > 256:
        raise RowError("id: longer than 256 characters")
    try:
        value.encode()  # JSON's "\ud800" decodes to a lone surrogate, which no pseudonym can hash
    except UnicodeEncodeError:
        raise RowError("id: not valid Unicode") from None
    return value.strip()


def _storage(item: Mapping[str, Any], hw: Mapping[str, Any]) -> tuple[int | None, int | None]:
    total = _number(
        _get(item, "totalStorageSpaceInBytes", "totalstoragespaceinbytes") or _get(hw, "totalStorageSpace"),
        "totalStorageSpace",
        0,
        2**50,
    )
    free = _number(
        _get(item, "freeStorageSpaceInBytes", "freestoragespaceinbytes") or _get(hw, "freeStorageSpace"),
        "freeStorageSpace",
        0,
        2**50,
    )
    if total is not None and free is not None and free > total:
        raise RowError("freeStorageSpace larger than totalStorageSpace")
    return (int(total) if total else None), (int(free) if free is not None else None)


def map_managed_device(item: Any) -> Observation:
    """One Graph ``managedDevice`` (or a CSV row with the same property names)."""
    if not isinstance(item, Mapping):
        raise RowError(f"expected a JSON object, got {type(item).__name__}")
    hw_raw = _get(item, "hardwareInformation")
    hw: Mapping[str, Any] = hw_raw if isinstance(hw_raw, Mapping) else {}
    if hw_raw is not None and not isinstance(hw_raw, Mapping):
        raise RowError("hardwareInformation: expected an object")
    kind, platform = _kind_and_platform(
        _get(item, "deviceType", "devicetype"),
        _get(item, "chassisType", "chassistype"),
        _get(item, "operatingSystem", "operatingsystem"),
    )
    battery = _number(
        _get(hw, "batteryHealthPercentage") or _get(item, "batteryhealthpercentage", "batteryHealthPercentage"),
        "batteryHealthPercentage",
        0,
        100,
    )
    cycles = _number(
        _get(hw, "batteryChargeCycles") or _get(item, "batterychargecycles", "batteryChargeCycles"),
        "batteryChargeCycles",
        0,
        100_000,
    )
    total, free = _storage(item, hw)
    return Observation(
        intune_id=_intune_id(_get(item, "id", "deviceid", "deviceId")),
        kind=kind,
        platform=platform,
        collected_at=_timestamp(_get(item, "lastSyncDateTime", "lastsyncdatetime"), "lastSyncDateTime"),
        battery_pct=battery or None,
        charge_cycles=int(cycles) if cycles is not None else None,
        total_bytes=total,
        free_bytes=free,
        vendor=_text(_get(item, "manufacturer") or _get(hw, "manufacturer")),
        model=_text(_get(item, "model") or _get(hw, "model")),
    )


def map_battery_performance(item: Any) -> Observation:
    """One Endpoint-analytics ``userExperienceAnalyticsBatteryHealthDevicePerformance`` (Windows laptops)."""
    if not isinstance(item, Mapping):
        raise RowError(f"expected a JSON object, got {type(item).__name__}")
    capacity = _number(_get(item, "maxCapacityPercentage", "maxcapacitypercentage"), "maxCapacityPercentage", -1, 200)
    runtime = _number(
        _get(item, "estimatedRuntimeInMinutes", "estimatedruntimeinminutes"), "estimatedRuntimeInMinutes", -1, 10_000
    )
    if capacity is None or capacity <= 0:
        raise RowError("maxCapacityPercentage: missing or not measured")
    return Observation(
        intune_id=_intune_id(_get(item, "deviceId", "deviceid")),
        kind=DeviceKind.LAPTOP,
        platform=Platform.WINDOWS,
        collected_at=None,
        battery_pct=min(capacity, 200.0),
        runtime_minutes=runtime if runtime is not None and runtime > 0 else None,
        vendor=_text(_get(item, "manufacturer")),
        model=_text(_get(item, "model")),
    )


def _is_battery_performance(item: Any, context: str) -> bool:
    if "BatteryHealthDevicePerformance".lower() in context.lower():
        return True
    if not isinstance(item, Mapping):
        return False
    return ("maxCapacityPercentage" in item and "deviceId" in item) or "maxcapacitypercentage" in item


# --- dead-letter excerpts: only values proven non-personal ------------------------------------

_KNOWN_VALUES = frozenset(
    # Graph's deviceType and chassisType enums and the operatingSystem names Intune reports, normalised
    [
        "desktop",
        "windowsrt",
        "winmo6",
        "nokia",
        "windowsphone",
        "mac",
        "wince",
        "winembedded",
        "iphone",
        "ipad",
        "ipod",
        "android",
        "isocconsumer",
        "unix",
        "macmdm",
        "hololens",
        "surfacehub",
        "androidforwork",
        "androidenterprise",
        "windows10x",
        "androidngms",
        "androidaosp",
        "chromeos",
        "linux",
        "blackberry",
        "palm",
        "unknown",
        "cloudpc",
        "laptop",
        "worksworkstation",
        "enterpriseserver",
        "phone",
        "tablet",
        "mobileother",
        "mobileunknown",
        "ios",
        "ipados",
        "windows",
        "macos",
        "windowsmobile",
        "windowsholographic",
    ]
)
_ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,7})?(?:Z|[+-]\d{2}:\d{2})?")
_SMALL_DECIMAL = re.compile(r"-?\d{1,6}(?:\.\d{1,4})?")
_DIGITS = re.compile(r"\d{1,20}")


def _known_value(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and _norm(value) in _KNOWN_VALUES else None


def _iso_time(value: Any) -> str | None:
    return value if isinstance(value, str) and _ISO_TIME.fullmatch(value) else None


def _finite(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _small_number(value: Any) -> float | int | None:
    """A measurement below a million: too short to be an IMEI, a phone number or an account id."""
    if isinstance(value, str):
        value = float(value) if _SMALL_DECIMAL.fullmatch(value.strip()) else None
    number = _finite(value)
    if number is None or abs(number) >= 1e6:
        return None
    return int(number) if number.is_integer() else number


def _size_magnitude(value: Any) -> float | None:
    """A byte count rounded to two significant digits: shows why the row failed, identifies nobody."""
    if isinstance(value, str):
        value = int(value) if _DIGITS.fullmatch(value.strip()) else None
    number = _finite(value)
    return float(f"{number:.2g}") if number is not None and 0 <= number < 1e20 else None


_EXCERPT_CHECKS: dict[str, Callable[[Any], Any]] = {
    "deviceType": _known_value,
    "chassisType": _known_value,
    "operatingSystem": _known_value,
    "lastSyncDateTime": _iso_time,
    "batteryHealthPercentage": _small_number,
    "batteryChargeCycles": _small_number,
    "maxCapacityPercentage": _small_number,
    "estimatedRuntimeInMinutes": _small_number,
    "totalStorageSpaceInBytes": _size_magnitude,
    "freeStorageSpaceInBytes": _size_magnitude,
    "totalStorageSpace": _size_magnitude,
    "freeStorageSpace": _size_magnitude,
}
"""The only fields a dead letter may carry, each with the check its value must pass to be copied."""
_EXCERPT_FIELDS = {_norm(name): check for name, check in _EXCERPT_CHECKS.items()}
_EXCERPT_NAMES = {_norm(name): name for name in _EXCERPT_CHECKS}


def _excerpt(item: Any) -> dict[str, Any]:
    """The row's allow-listed fields whose VALUES are proven non-personal, for a dead letter.

    A field is copied only when its value passes its field's check (see :data:`_EXCERPT_FIELDS`):
    anything else -- an e-mail address typed into ``operatingSystem``, an IMEI in a storage column --
    is withheld, and only the field's name and why appear under ``withheld``.
    """
    if not isinstance(item, Mapping):
        return {}
    sources: list[Mapping[str, Any]] = [item]
    hardware = item.get("hardwareInformation")
    if isinstance(hardware, Mapping):
        sources.append(hardware)
    kept: dict[str, Any] = {}
    withheld: dict[str, str] = {}
    for source in sources:
        for key, value in source.items():
            check = _EXCERPT_FIELDS.get(_norm(key)) if isinstance(key, str) else None
            if check is None or value is None or value == "":
                continue
            name = _EXCERPT_NAMES[_norm(key)]
            proven = check(value)
            if proven is None:
                withheld[name] = "value withheld: not a recognised non-personal value"
            else:
                kept[name] = proven
    return {**kept, "withheld": withheld} if withheld else kept


# --- ingest -------------------------------------------------------------------------------------


def to_report(obs: Observation, device_id: str, seq: int, collected_at: datetime) -> HealthReport:
    battery = None
    if obs.battery_pct is not None:
        battery = BatteryHealth(
            design_capacity=100.0,
            full_charge_capacity=obs.battery_pct,
            unit="mAh",
            cycle_count=obs.charge_cycles,
            runtime_full_minutes=obs.runtime_minutes,
        )
    disks = []
    system = None
    if obs.total_bytes is not None or obs.free_bytes is not None:
        disks = [
            DiskHealth(
                name="internal", kind=DiskKind.UNKNOWN, capacity_bytes=obs.total_bytes, free_bytes=obs.free_bytes
            )
        ]
        system = SystemLoad(disk_free_bytes=obs.free_bytes)
    return HealthReport(
        device_id=device_id,
        seq=seq,
        collected_at=collected_at,
        source=ReportSource.MDM,
        kind=obs.kind,
        platform=obs.platform,
        agent_version=BRIDGE_VERSION,
        disks=disks,
        battery=battery,
        system=system,
    )


@dataclass(frozen=True, slots=True)
class Mapped:
    """One row that became a report (and the inventory record that goes before it)."""

    ref: str
    report: HealthReport
    inventory: DeviceInventory


@dataclass(frozen=True, slots=True)
class Rejected:
    problem: Problem


@dataclass(frozen=True, slots=True)
class Skipped:
    problem: Problem


Outcome = Mapped | Rejected | Skipped


def iter_ingest(
    rows: Iterable[tuple[str, Any]],
    secret: bytes,
    store: SeqStore,
    as_of: datetime,
    context: Callable[[], str] = str,
) -> Iterator[Outcome]:
    """Map rows one by one to pseudonymised, sequenced reports; every row yields exactly one outcome.

    Never raises on bad rows: an exception no check foresaw refuses its row, named by its type (not
    its message, which could quote the row); only a failing seq store raises. ``context`` gives the
    entity set of the rows being read (Graph's ``@odata.context``). Seqs are assigned inside the
    store's open transaction: commit it (``store.commit()``) before publishing what was yielded, so a
    published seq is never handed out again.
    """
    if not secret:
        raise ValueError("an MDM pseudonymisation secret is required")
    store.start_input()
    for ref, item in rows:
        try:
            if isinstance(item, RowError):
                raise item
            mapper = map_battery_performance if _is_battery_performance(item, context()) else map_managed_device
            obs = mapper(item)
            device_id = pseudonymise(obs.intune_id, secret)
            fingerprint = obs.fingerprint()
            if not store.first_in_input(device_id, fingerprint):
                yield Skipped(Problem(ref, "duplicate of an earlier row in this input"))
                continue
            # Validate against the contract before a seq is spent on the observation.
            draft = to_report(obs, device_id, 0, obs.collected_at or as_of)
            inventory = DeviceInventory(
                device_id=device_id, kind=obs.kind, vendor=obs.vendor, model=obs.model, updated_at=draft.collected_at
            )
            seq, collected_at = store.assign(device_id, fingerprint, draft.collected_at)
            yield Mapped(
                ref,
                draft.model_copy(update={"seq": seq, "collected_at": collected_at}),
                inventory.model_copy(update={"updated_at": collected_at}),
            )
        except _NotMobile as exc:
            yield Skipped(Problem(ref, exc.reason))
        except RowError as exc:
            yield Rejected(Problem(ref, exc.reason, _excerpt(item)))
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            yield Rejected(Problem(ref, f"rejected by contract: {where}: {first['msg']}", _excerpt(item)))
        except sqlite3.Error:
            raise  # the seq store failed, not the row: stop before seqs and reports disagree
        except Exception as exc:  # input no check foresaw costs its row, never the rest of the export
            reason = f"refused: unexpected {type(exc).__name__} while mapping the row"
            yield Rejected(Problem(ref, reason, _excerpt(item)))


def ingest(
    rows: Iterable[tuple[str, Any]],
    secret: bytes,
    store: SeqStore,
    as_of: datetime,
    context: Callable[[], str] = str,
) -> IngestResult:
    """:func:`iter_ingest` collected into lists (for small inputs and tests; the CLI streams)."""
    result = IngestResult()
    for outcome in iter_ingest(rows, secret, store, as_of, context):
        result.rows += 1
        if isinstance(outcome, Mapped):
            result.reports.append(outcome.report)
            result.inventory.append(outcome.inventory)
        elif isinstance(outcome, Rejected):
            result.errors.append(outcome.problem)
        else:
            result.skipped.append(outcome.problem)
    store.commit()
    return result


def read_rows(
    stream: TextIO, fmt: InputFormat, source: str
) -> tuple[Iterator[tuple[str, Any]], Callable[[], str], list[str]]:
    """Rows of an export as they are read, the entity-set context, and the reader's warnings (filled as it goes)."""
    if fmt == "graph-json":
        reader = GraphJsonReader(stream, source)
        return iter(reader), lambda: reader.context, reader.warnings
    return read_csv(stream, source), str, []


def ingest_text(
    text: str, fmt: InputFormat, secret: bytes, store: SeqStore, as_of: datetime, source: str = "input"
) -> IngestResult:
    """Read an export held in a string (``graph-json`` or ``csv``) and :func:`ingest` it."""
    rows, context, warnings = read_rows(io.StringIO(text.removeprefix("\ufeff")), fmt, source)
    result = ingest(rows, secret, store, as_of, context)
    result.warnings = warnings + result.warnings
    return result


def dead_letter(problem: Problem, at: datetime) -> str:
    """One JSON line for a rejected row: where, why, and the values proven non-personal only."""
    return json.dumps(
        {"ref": problem.ref, "reason": problem.reason, "excerpt": problem.excerpt, "rejected_at": at.isoformat()},
        sort_keys=True,
    )


def dead_letters(result: IngestResult, at: datetime) -> Iterator[str]:
    for problem in result.errors:
        yield dead_letter(problem, at)


# --- the CLI's run: stream files to the publisher ---------------------------------------------

Publish = Callable[[list[DeviceInventory], list[HealthReport]], None]


@dataclass
class RunSummary:
    """Counts of one ``mdm ingest`` run; only the first problems are kept for display."""

    rows: int = 0
    reports: int = 0
    rejected: int = 0
    skipped: int = 0
    first_problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def run_ingest(
    paths: Iterable[Path],
    fmt: InputFormat,
    secret: bytes,
    store: SeqStore,
    as_of: datetime,
    publish: Publish | None,
    dead_letter_file: TextIO | None = None,
    batch: int = 1000,
) -> RunSummary:
    """Stream every export through :func:`iter_ingest`: reports go to ``publish`` in batches (after the
    store commits their seqs), rejected rows to ``dead_letter_file`` as they come. Memory stays bounded
    by one batch and one item, whatever the size of the files."""
    summary = RunSummary()
    pending: list[Mapped] = []

    def flush() -> None:
        store.commit()
        if publish is not None and pending:
            publish([m.inventory for m in pending], [m.report for m in pending])
        pending.clear()

    for path in paths:
        try:
            stream = open_export(path)
        except OSError as exc:
            problem = Problem(path.name, f"unreadable: {exc.strerror or type(exc).__name__}")
            _count_rejected(summary, problem, dead_letter_file)
            continue
        with stream:
            rows, context, warnings = read_rows(stream, fmt, path.name)
            try:
                for outcome in iter_ingest(rows, secret, store, as_of, context):
                    summary.rows += 1
                    if isinstance(outcome, Mapped):
                        summary.reports += 1
                        pending.append(outcome)
                        if len(pending) >= batch:
                            flush()
                    elif isinstance(outcome, Rejected):
                        _count_rejected(summary, outcome.problem, dead_letter_file)
                    else:
                        summary.skipped += 1
            except OSError as exc:  # a failing disk or network share: the rows read so far are kept
                problem = Problem(path.name, f"read failed: {exc.strerror or type(exc).__name__}; rest of file skipped")
                _count_rejected(summary, problem, dead_letter_file)
            summary.warnings += warnings
    flush()
    return summary


def _count_rejected(summary: RunSummary, problem: Problem, dead_letter_file: TextIO | None) -> None:
    summary.rejected += 1
    if len(summary.first_problems) < 20:
        summary.first_problems.append(problem)
    if dead_letter_file is not None:
        dead_letter_file.write(dead_letter(problem, datetime.now(UTC)) + "\n")
