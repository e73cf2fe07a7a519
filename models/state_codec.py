"""The stored form of a device's daily histories: packed arrays behind a version tag.

The stream keeps one value per device in its table (RocksDB and changelog) and decodes
and re-encodes it for every report. As JSON, that round trip spent its time building one
Python object per number (orjson and msgpack build the same objects); packed, a column is
one ``array.array`` copy and one C-level ``tolist``. The in-memory model is unchanged
(:class:`~fleetpulse.models.state.DailySeries` of lists), so ``apply_report`` and every
feature read the very same values whichever encoding a state was loaded from.

Layout (little-endian), version 2::

    b"FPS" | u8 version | u32 header length | header | u8 series count | series ...
    series: u16 days | u8 dense | u8 sparse | i32[days] day ordinals | u8[dense] column ids
            | u8[sparse] column ids | f64[dense * days] values | per sparse column:
            ceil(days / 8) presence bytes, f64[present] values

The header is the caller's JSON of everything else (validated by its pydantic model); the
series follow in :func:`series_of` order. Version 1 is the JSON the stream stored before
(it starts with ``{``) and still loads; anything else, and any value no report can produce
(a NaN or infinity, days out of order, counts past the end), raises :class:`StateDecodeError`.
"""

from __future__ import annotations

import operator
import struct
import sys
from array import array
from collections.abc import Sequence
from typing import cast

from pydantic.main import IncEx

from fleetpulse.models.state import MISSING, DailySeries, Days, DeviceState, Values

MAGIC = b"FPS"
VERSION = 2
LEGACY_JSON_START = b"{"
"""Version 1 (JSON, pydantic's ``model_dump_json``) has no tag: it is recognised by its first byte."""

COLUMN_NAMES: tuple[str, ...] = (
    # append only: a column's position is its id in every stored state
    "reallocated_sectors",
    "reported_uncorrect",
    "command_timeout",
    "current_pending_sectors",
    "offline_uncorrectable",
    "udma_crc_errors",
    "media_errors",
    "critical_warning",
    "available_spare_pct",
    "available_spare_threshold_pct",
    "percentage_used",
    "power_on_hours",
    "temperature_c",
    "smart_failed",
    "health_ratio",
    "health_ratio__n",
    "full_charge_capacity",
    "full_charge_capacity__n",
    "cycle_count",
    "runtime_full_minutes",
    "runtime_full_minutes__n",
    "reports",
    "crashes",
    "unexpected_shutdowns",
    "thermal_excursions",
    "cpu_max_c",
    "throttle_events",
    "fan_rpm_max",
    "boot_duration_s",
    "boot_duration_s__n",
    "mem_correctable",
    "mem_uncorrectable",
)
COLUMN_ID = {name: ident for ident, name in enumerate(COLUMN_NAMES)}
HISTORY_FIELDS = cast("IncEx", {"device": True, "disks": {"__all__": {"series"}}, "battery": {"series"}})
"""``model_dump_json`` exclusion of a state's histories: its header is the rest."""
MAX_DAY = 3_652_059  # date.max.toordinal()

_PREFIX = struct.Struct("<3sBI")
_SERIES = struct.Struct("<HBB")
_SWAP = sys.byteorder != "little"
if array("i").itemsize != 4 or array("d").itemsize != 8:
    raise ImportError("the state layout needs 4-byte C ints and 8-byte C doubles")


class StateDecodeError(ValueError):
    """A stored device state that this version cannot read back exactly; the reason names the defect."""


def series_of(state: DeviceState) -> list[DailySeries]:
    """The histories of ``state`` in stored order: device, disks (in their dict order), battery."""
    series = [state.device, *(disk.series for disk in state.disks.values())]
    if state.battery is not None:
        series.append(state.battery.series)
    return series


def attach(state: DeviceState, series: Sequence[DailySeries]) -> DeviceState:
    """Put decoded histories back into a ``state`` decoded from the header (:func:`series_of` order)."""
    expected = 1 + len(state.disks) + (state.battery is not None)
    if len(series) != expected:
        raise StateDecodeError(f"the header has {expected} histories, the value holds {len(series)}")
    state.device = series[0]
    for disk, history in zip(state.disks.values(), series[1:], strict=False):
        disk.series = history
    if state.battery is not None:
        state.battery.series = series[-1]
    return state


def _out_of_range(packed: bytes | memoryview) -> bool:
    """Whether any little-endian float64 in ``packed`` is a NaN, an infinity or at least 2**1009.

    Their high byte is 0x7F or 0xFF (sign and the exponent's top seven bits set): one strided
    byte slice and two C-level searches, no Python object per value.
    """
    high = bytes(packed[7::8])
    return b"\x7f" in high or b"\xff" in high


def _present(col: Values) -> list[bool] | None:
    """Which days of ``col`` hold a value; None when all do (no NaN: the fast, common case)."""
    if not _out_of_range(_little(col)):
        return None
    return [v == v for v in col]


def _little(values: Values | Days) -> bytes:
    if _SWAP:
        values = array(values.typecode, values)
        values.byteswap()
    return values.tobytes()


def series_size(series: DailySeries) -> int:
    """Bytes ``series`` takes in the encoding (computed, not encoded)."""
    days = len(series.days)
    size = _SERIES.size + (4 + 8) * days + 2 * len(series.columns)
    for col in series.columns.values():
        present = _present(col)
        if present is not None:
            size += (days + 7) // 8 - 8 * present.count(False)
    return size


def encoded_size(state: DeviceState) -> int:
    """Bytes ``state`` takes in the encoding with its own JSON as the header (the bound's measure)."""
    header = len(state.model_dump_json(exclude=HISTORY_FIELDS).encode())
    return _PREFIX.size + header + 1 + sum(series_size(history) for history in series_of(state))


def _pack_series(series: DailySeries, out: list[bytes]) -> None:
    """Dense columns first, as one block of floats; then each sparse one as a presence mask and its values."""
    days = series.days
    dense: list[tuple[str, Values]] = []
    sparse: list[tuple[str, Values, list[bool]]] = []
    for name, col in series.columns.items():
        if len(col) != len(days):
            raise ValueError(f"column {name} has {len(col)} values for {len(days)} days")
        present = _present(col)
        if present is None:
            dense.append((name, col))
        else:
            sparse.append((name, col, present))
    out += (
        _SERIES.pack(len(days), len(dense), len(sparse)),
        _little(days),
        bytes(COLUMN_ID[name] for name, _ in dense),
        bytes(COLUMN_ID[name] for name, _, _ in sparse),
    )
    out += (_little(col) for _, col in dense)
    for name, col, present in sparse:
        mask = bytearray((len(days) + 7) // 8)
        for i, flag in enumerate(present):
            if flag:
                mask[i >> 3] |= 1 << (i & 7)
        values = _little(array("d", (v for v, flag in zip(col, present, strict=True) if flag)))
        if _out_of_range(values):
            raise ValueError(f"column {name} holds an infinite value: no report produces one")
        out += (bytes(mask), values)


def pack(header: bytes, state: DeviceState) -> bytes:
    """The versioned value: ``header`` (the caller's JSON of everything but the histories), then the histories."""
    series = series_of(state)
    out = [_PREFIX.pack(MAGIC, VERSION, len(header)), header, bytes((len(series),))]
    for history in series:
        _pack_series(history, out)
    return b"".join(out)


def is_legacy_json(raw: bytes) -> bool:
    return raw[:1] == LEGACY_JSON_START


class _Reader:
    """Bounds-checked reads from one value: a count past the end is an error, never a short read."""

    def __init__(self, raw: bytes, offset: int) -> None:
        self.view = memoryview(raw)
        self.offset = offset

    def take(self, size: int, what: str) -> memoryview:
        end = self.offset + size
        if end > len(self.view):
            raise StateDecodeError(
                f"truncated: {what} needs {size} bytes at offset {self.offset}, the value has {len(self.view)}"
            )
        chunk = self.view[self.offset : end]
        self.offset = end
        return chunk


def _floats(chunk: memoryview, name: str) -> Values:
    if _out_of_range(chunk):
        raise StateDecodeError(
            f"column {name} holds a NaN, an infinity or a value beyond 1e300: no report produces one"
        )
    values = array("d")
    values.frombytes(chunk)
    if _SWAP:
        values.byteswap()
    return values


def _names(ids: memoryview, seen: set[str]) -> list[str]:
    names = []
    for ident in ids.tobytes():
        if ident >= len(COLUMN_NAMES):
            raise StateDecodeError(f"unknown column id {ident} (this version knows {len(COLUMN_NAMES)})")
        name = COLUMN_NAMES[ident]
        if name in seen:
            raise StateDecodeError(f"column {name} appears twice in one history")
        seen.add(name)
        names.append(name)
    return names


def _unpack_series(reader: _Reader) -> DailySeries:
    n_days, n_dense, n_sparse = _SERIES.unpack(reader.take(_SERIES.size, "a history's counts"))
    days = array("i")
    days.frombytes(reader.take(4 * n_days, f"{n_days} day ordinals"))
    if _SWAP:
        days.byteswap()
    ordinals = days.tolist()
    if ordinals and not (ordinals[0] > 0 and ordinals[-1] <= MAX_DAY and all(map(operator.lt, ordinals, ordinals[1:]))):
        raise StateDecodeError("day ordinals out of order, repeated or outside the calendar")
    seen: set[str] = set()
    dense = _names(reader.take(n_dense, "dense column ids"), seen)
    sparse = _names(reader.take(n_sparse, "sparse column ids"), seen)
    block = _floats(reader.take(8 * n_days * n_dense, f"{n_dense} columns of {n_days} days"), "a dense")
    columns: dict[str, Values] = {name: block[i * n_days : (i + 1) * n_days] for i, name in enumerate(dense)}
    for name in sparse:
        mask = reader.take((n_days + 7) // 8, f"column {name}'s presence bytes").tobytes()
        positions = [i for i in range(n_days) if mask[i >> 3] & (1 << (i & 7))]
        present = _floats(reader.take(8 * len(positions), f"column {name}"), name)
        col = array("d", (MISSING,)) * n_days
        for position, value in zip(positions, present, strict=True):
            col[position] = value
        columns[name] = col
    return DailySeries.model_construct(days=days, columns=columns)


def unpack(raw: bytes) -> tuple[bytes, list[DailySeries]]:
    """Split a version-2 value into its header and validated histories (raises :class:`StateDecodeError`)."""
    if raw[:3] != MAGIC:
        raise StateDecodeError(f"not a device state: it starts with {bytes(raw[:4])!r}")
    if len(raw) < _PREFIX.size:
        raise StateDecodeError(f"truncated: {len(raw)} bytes, the prefix alone takes {_PREFIX.size}")
    _, version, header_size = _PREFIX.unpack_from(raw)
    if version != VERSION:
        raise StateDecodeError(f"state encoding version {version}: this worker reads 1 (JSON) and {VERSION}")
    reader = _Reader(raw, _PREFIX.size)
    header = reader.take(header_size, "the header").tobytes()
    (count,) = reader.take(1, "the history count")
    series = [_unpack_series(reader) for _ in range(count)]
    if reader.offset != len(raw):
        raise StateDecodeError(f"{len(raw) - reader.offset} bytes after the last history")
    return header, series
