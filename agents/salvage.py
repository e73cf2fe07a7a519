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

from fleetpulse.agents.spool import STREAMS
from fleetpulse.contract import DeviceEnrolment, DeviceInventory, Priority, decode, decode_report

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


def _leaf_cells(page: bytes, number: int) -> range:
    """Indexes of the cells of a table leaf page (empty for any other page)."""
    start = 100 if number == 1 else 0
    return range(int.from_bytes(page[start + 3 : start + 5], "big")) if page[start] == _TABLE_LEAF else range(0)


def _cell(pages: _Pages, number: int, page: bytes, index: int) -> tuple[int, bytes] | None:
    """``(rowid, payload)`` of one table leaf cell, or None if it does not parse."""
    usable = pages.usable
    pointer_at = (100 if number == 1 else 0) + 8 + 2 * index
    if pointer_at + 2 > usable:
        return None
    pos = int.from_bytes(page[pointer_at : pointer_at + 2], "big")
    try:
        size, pos = _varint(page, pos)
        rowid, pos = _varint(page, pos)
    except IndexError:
        return None
    if size > _MAX_RECORD_BYTES:
        return None
    max_local = usable - 35
    min_local = (usable - 12) * 32 // 255 - 23
    local = size
    if size > max_local:
        local = min_local + (size - min_local) % (usable - 4)
        local = local if local <= max_local else min_local
    payload = page[pos : pos + local]
    if local < size:
        payload += _overflow(pages, int.from_bytes(page[pos + local : pos + local + 4], "big"), size - local)
    return (rowid, payload) if len(payload) == size else None


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
    if stream not in STREAMS or not isinstance(key, bytes) or not isinstance(value, bytes):
        return None
    if not (seq is None or isinstance(seq, int)) or priority not in (0, 1):
        return None
    return SalvagedRecord(rowid, stream, key, value, seq, Priority.EVENT if priority == 0 else Priority.ROUTINE)


def _valid(record: SalvagedRecord) -> bool:
    try:
        if record.stream == "health":
            report = decode_report(record.value)
            return report.seq == record.seq and report.device_id.encode() == record.key
        if record.stream == "enrolment":
            return decode(record.value, DeviceEnrolment).device_id.encode() == record.key
        inventory = decode(record.value, DeviceInventory)
        return inventory.device_id.encode() == record.key
    except ValueError:
        return False


def _row(pages: _Pages, number: int, page: bytes, index: int) -> tuple[int, list[Column]] | None:
    cell = _cell(pages, number, page, index)
    if cell is None:
        return None
    try:
        return cell[0], _parse_record(cell[1])
    except (IndexError, ValueError, struct.error):
        return None


class Salvage:
    """The readable records of a damaged spool file (and its ``-wal``), found in one pass over its pages.

    Only where each record lies is kept, and :meth:`records` reads them again one by one, so
    salvaging a full spool costs little more memory than one record.
    """

    def __init__(self, path: Path) -> None:
        wal_path = path.with_name(path.name + "-wal")
        self._files = contextlib.ExitStack()
        db = self._files.enter_context(path.open("rb"))
        self._pages = _Pages(db, self._files.enter_context(wal_path.open("rb")) if wal_path.exists() else None)
        self._where: dict[int, tuple[int, int]] = {}
        rejected: set[int] = set()
        self.next_seq: int | None = None
        """The largest sequence counter found in the damaged file, if any survived."""
        self.highest_seq: int | None = None
        """The largest sequence number among the salvaged records."""
        for number in sorted(self._pages.where):
            page = self._pages.read(number)
            if page is None:
                continue
            for index in _leaf_cells(page, number):
                row = _row(self._pages, number, page, index)
                if row is None:
                    continue
                rowid, columns = row
                if len(columns) == 2 and columns[0] == "next_seq" and isinstance(columns[1], int):
                    self.next_seq = max(self.next_seq or 0, columns[1])
                    continue
                record = _as_record(rowid, columns)
                if record is None:
                    continue
                if _valid(record):
                    self._where[rowid] = (number, index)
                    rejected.discard(rowid)
                    if record.seq is not None:
                        self.highest_seq = max(self.highest_seq or record.seq, record.seq)
                elif rowid not in self._where:
                    rejected.add(rowid)
        self.rejected = len(rejected)
        """Rows shaped like spool records whose value failed the contract (damaged in place)."""

    def __enter__(self) -> Salvage:
        return self

    def __exit__(self, *exc: object) -> None:
        self._files.close()

    def records(self) -> Iterator[SalvagedRecord]:
        """The salvaged records, oldest first."""
        cached: tuple[int, bytes | None] = (0, None)  # neighbouring records mostly share a page
        for rowid in sorted(self._where):
            number, index = self._where[rowid]
            if cached[0] != number:
                cached = (number, self._pages.read(number))
            page = cached[1]
            row = _row(self._pages, number, page, index) if page is not None else None
            record = _as_record(*row) if row is not None else None
            if record is not None:
                yield record
