"""Reading the records out of a damaged spool file without SQLite's help.

When the spool is corrupt, SQLite refuses the whole file (header overwritten) or stops at the
first bad page (truncation, random bytes mid-file), which would strand every record behind it.
This reader walks the file page by page instead, the way ``sqlite3 .recover`` does: every table
leaf page that still parses yields its rows, wherever it sits and whatever happened to the
header, the schema or the interior pages that pointed to it. Committed pages still in the
write-ahead log override their copy in the main file.

A row counts only if it has the shape of a spool record and its value decodes under the wire
contract with the same device and sequence, so garbage never reaches the broker. A page freed
after its records were acknowledged can still hold them: those are sent again, which the
at-least-once contract already allows (consumers drop duplicates by ``(device_id, seq)``).
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from fleetpulse.contract import DeviceInventory, Priority, decode, decode_report

DEFAULT_PAGE_SIZE = 4096
"""The spool creates its file with this page size; used when the header cannot be trusted."""

_MAGIC = b"SQLite format 3\x00"
_WAL_MAGICS = (0x377F0682, 0x377F0683)
_TABLE_LEAF = 0x0D
_MAX_RECORD_BYTES = 1 << 20
"""No spool record is near this; a larger claimed payload is corruption, not data."""

Column = int | float | bytes | str | None


@dataclass(frozen=True, slots=True)
class SalvagedRecord:
    rowid: int
    stream: str
    key: bytes
    value: bytes
    seq: int | None
    priority: Priority


@dataclass
class SalvageResult:
    records: list[SalvagedRecord]
    rejected: int
    """Rows shaped like spool records whose value failed the contract (damaged in place)."""
    next_seq: int | None
    """The largest sequence counter found in the damaged file, if any survived."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(8):
        byte = buf[pos + i]
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, pos + i + 1
    return (value << 8) | buf[pos + 8], pos + 9


def _parse_record(payload: bytes) -> list[Column]:
    """SQLite's record format: a header of serial types, then the values. Raises on any inconsistency."""
    header_len, pos = _varint(payload, 0)
    if header_len > len(payload):
        raise ValueError("record header past its payload")
    types: list[int] = []
    while pos < header_len:
        serial, pos = _varint(payload, pos)
        types.append(serial)
    body = header_len
    columns: list[Column] = []
    for serial in types:
        if serial == 0:
            columns.append(None)
        elif 1 <= serial <= 6:
            width = (1, 2, 3, 4, 6, 8)[serial - 1]
            columns.append(int.from_bytes(payload[body : body + width], "big", signed=True))
            body += width
        elif serial == 7:
            columns.append(struct.unpack(">d", payload[body : body + 8])[0])
            body += 8
        elif serial in (8, 9):
            columns.append(serial - 8)
        elif serial >= 12:
            width = (serial - 12) // 2
            raw = payload[body : body + width]
            columns.append(raw if serial % 2 == 0 else raw.decode("utf-8"))
            body += width
        else:
            raise ValueError(f"reserved serial type {serial}")
        if body > len(payload):
            raise ValueError("record body past its payload")
    return columns


class _Pages:
    """Page number -> where its newest readable copy lies (main file, or a committed WAL frame)."""

    def __init__(self, db: BinaryIO, wal: BinaryIO | None) -> None:
        self._files = {"db": db, "wal": wal}
        header = db.read(100)
        size = int.from_bytes(header[16:18], "big") if header.startswith(_MAGIC) else 0
        size = 65536 if size == 1 else size
        self.page_size = size if size >= 512 and size & (size - 1) == 0 else DEFAULT_PAGE_SIZE
        self.usable = self.page_size - (header[20] if header.startswith(_MAGIC) else 0)
        db.seek(0, 2)
        self.where: dict[int, tuple[str, int]] = {
            n + 1: ("db", n * self.page_size) for n in range(db.tell() // self.page_size)
        }
        if wal is not None:
            self._overlay_wal(wal)

    def _overlay_wal(self, wal: BinaryIO) -> None:
        header = wal.read(32)
        if len(header) < 32 or int.from_bytes(header[:4], "big") not in _WAL_MAGICS:
            return
        frame_page = int.from_bytes(header[8:12], "big")
        if frame_page != self.page_size:
            return
        salts = header[16:24]
        offset = 32
        while True:
            wal.seek(offset)
            frame = wal.read(24)
            if len(frame) < 24:
                return
            if frame[8:16] == salts:  # frames of an older log generation are not current data
                self.where[int.from_bytes(frame[:4], "big")] = ("wal", offset + 24)
            offset += 24 + self.page_size

    def read(self, number: int) -> bytes | None:
        spot = self.where.get(number)
        if spot is None:
            return None
        fh = self._files[spot[0]]
        assert fh is not None
        fh.seek(spot[1])
        page = fh.read(self.page_size)
        return page if len(page) == self.page_size else None


def _leaf_rows(pages: _Pages, number: int, page: bytes) -> Iterator[tuple[int, bytes]]:
    """``(rowid, payload)`` of each cell of a table leaf page; a cell that does not parse is skipped."""
    start = 100 if number == 1 else 0
    if page[start] != _TABLE_LEAF:
        return
    cells = int.from_bytes(page[start + 3 : start + 5], "big")
    usable = pages.usable
    max_local = usable - 35
    min_local = (usable - 12) * 32 // 255 - 23
    for i in range(cells):
        pointer_at = start + 8 + 2 * i
        if pointer_at + 2 > usable:
            return
        pos = int.from_bytes(page[pointer_at : pointer_at + 2], "big")
        try:
            size, pos = _varint(page, pos)
            rowid, pos = _varint(page, pos)
            if size > _MAX_RECORD_BYTES:
                continue
            local = size
            if size > max_local:
                local = min_local + (size - min_local) % (usable - 4)
                local = local if local <= max_local else min_local
            payload = page[pos : pos + local]
            if local < size:
                payload += _overflow(pages, int.from_bytes(page[pos + local : pos + local + 4], "big"), size - local)
            if len(payload) == size:
                yield rowid, payload
        except (IndexError, ValueError):
            continue


def _overflow(pages: _Pages, number: int, wanted: int) -> bytes:
    chunks: list[bytes] = []
    seen: set[int] = set()
    while wanted > 0 and number and number not in seen:
        seen.add(number)
        page = pages.read(number)
        if page is None:
            break
        chunk = page[4 : min(pages.usable, 4 + wanted)]
        chunks.append(chunk)
        wanted -= len(chunk)
        number = int.from_bytes(page[:4], "big")
    return b"".join(chunks)


def _as_record(rowid: int, columns: list[Column]) -> SalvagedRecord | None:
    """The row if it has the spool's ``records`` shape, else None (other tables, index pages, noise)."""
    if len(columns) != 7 or columns[0] is not None:
        return None
    _, stream, key, value, seq, priority, _size = columns
    if stream not in ("health", "inventory") or not isinstance(key, bytes) or not isinstance(value, bytes):
        return None
    if not (seq is None or isinstance(seq, int)) or priority not in (0, 1):
        return None
    return SalvagedRecord(rowid, stream, key, value, seq, Priority.EVENT if priority == 0 else Priority.ROUTINE)


def _valid(record: SalvagedRecord) -> bool:
    try:
        if record.stream == "health":
            report = decode_report(record.value)
            return report.seq == record.seq and report.device_id.encode() == record.key
        inventory = decode(record.value, DeviceInventory)
        return inventory.device_id.encode() == record.key
    except ValueError:
        return False


def salvage(path: Path) -> SalvageResult:
    """Every record still readable in the spool file at ``path`` (and its ``-wal``), oldest first."""
    wal_path = path.with_name(path.name + "-wal")
    records: dict[int, SalvagedRecord] = {}
    rejected: set[int] = set()
    next_seq: int | None = None
    with contextlib.ExitStack() as files:
        db = files.enter_context(path.open("rb"))
        pages = _Pages(db, files.enter_context(wal_path.open("rb")) if wal_path.exists() else None)
        for number in sorted(pages.where):
            page = pages.read(number)
            if page is None:
                continue
            for rowid, payload in _leaf_rows(pages, number, page):
                try:
                    columns = _parse_record(payload)
                except (IndexError, ValueError, struct.error):
                    continue
                if len(columns) == 2 and columns[0] == "next_seq" and isinstance(columns[1], int):
                    next_seq = max(next_seq or 0, columns[1])
                    continue
                record = _as_record(rowid, columns)
                if record is None:
                    continue
                if _valid(record):
                    records[rowid] = record
                    rejected.discard(rowid)
                elif rowid not in records:
                    rejected.add(rowid)
    return SalvageResult([records[r] for r in sorted(records)], len(rejected), next_seq)
