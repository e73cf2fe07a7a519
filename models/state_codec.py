"""The table value of a device: its JSON header and its daily histories as packed arrays, version-tagged.

The stream decodes and re-encodes a device's value for every report. As JSON, that round
trip spends its time building one Python object per number (orjson and msgpack build the
same objects). :class:`~fleetpulse.models.state.DailySeries` keeps its columns in typed
arrays, so here a history is a few byte copies each way: no object per number, and the
values read back bit for bit, so every feature is the same whichever way a state was stored.

Layout (little-endian), version 2::

    b"FPS" | u8 version | u32 header length | header | u8 history count | history ...
    history: u16 days | u8 dense | u8 sparse | i32[days] day ordinals | u8[dense + sparse] column ids
             | f64[dense * days] values | per sparse column: ceil(days / 8) presence bytes, f64[present] values

The header is the caller's JSON of everything else (validated by its pydantic model); the
histories follow in :func:`series_of` order. Version 1 is plain JSON (it starts with ``{``)
and still loads; anything else, and any value no report can produce (a NaN or infinity, days
out of order, a count past the end), raises :class:`StateDecodeError`.
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
if sys.byteorder != "little" or array("i").itemsize != 4 or array("d").itemsize != 8:
    raise ImportError("the state layout is little-endian 4-byte C ints and 8-byte C doubles, as arrays hold them here")

Decoded = tuple[Days, dict[str, Values]]
"""One history's day ordinals and columns, as :func:`unpack` returns them."""


class StateDecodeError(ValueError):
    """A stored device state that this version cannot read back exactly; the reason names the defect."""


def series_of(state: DeviceState) -> list[DailySeries]:
    """The histories of ``state`` in stored order: device, disks (in their dict order), battery."""
    series = [state.device, *(disk.series for disk in state.disks.values())]
    if state.battery is not None:
        series.append(state.battery.series)
    return series


def attach(state: DeviceState, decoded: Sequence[Decoded]) -> DeviceState:
    """Fill the histories of a ``state`` decoded from the header (empty until now) with ``decoded``.

    They are the header's own fresh ``DailySeries`` objects, filled in place: no model is built twice.
    """
    series = series_of(state)
    if len(series) != len(decoded):
        raise StateDecodeError(f"the header has {len(series)} histories, the value holds {len(decoded)}")
    for history, (days, columns) in zip(series, decoded, strict=True):
        history.__dict__.update(days=days, columns=columns)
    return state


def _out_of_range(packed: bytes, start: int = 0, end: int | None = None) -> bool:
    """Whether any little-endian float64 in ``packed[start:end]`` is a NaN, an infinity or at least 2**1009.

    Their high byte is 0x7F or 0xFF (sign and the exponent's top seven bits set): one strided
    byte slice and two C-level searches, no Python object per value.
    """
    high = packed[start + 7 : end : 8]
    return b"\x7f" in high or b"\xff" in high


def _split(series: DailySeries) -> tuple[list[str], list[tuple[str, Values, list[bool]]]]:
    """Dense column names, and the sparse columns (with a day is-present list), of a series holding a NaN."""
    dense, sparse = [], []
    for name, col in series.columns.items():
        present = [v == v for v in col]
        if all(present):
            dense.append(name)
        else:
            sparse.append((name, col, present))
    return dense, sparse


def series_size(series: DailySeries) -> int:
    """Bytes ``series`` takes in the encoding (computed, not encoded)."""
    days, columns = len(series.days), series.columns
    size = _SERIES.size + 4 * days + (1 + 8 * days) * len(columns)
    if _out_of_range(b"".join([col.tobytes() for col in columns.values()])):
        for _, _, present in _split(series)[1]:
            size += (days + 7) // 8 - 8 * present.count(False)
    return size


def encoded_size(state: DeviceState) -> int:
    """Bytes ``state`` takes in the encoding with its own JSON as the header (the bound's measure)."""
    header = len(state.model_dump_json(exclude=HISTORY_FIELDS).encode())
    return _PREFIX.size + header + 1 + sum(series_size(history) for history in series_of(state))


def _pack_series(series: DailySeries, out: list[bytes]) -> None:
    """Dense columns as one block of floats; each sparse one (a day without a value) as a presence mask
    and its values. The block is checked once: a series without NaN (nearly all) is dense throughout."""
    days, columns = series.days, series.columns
    block = b"".join([col.tobytes() for col in columns.values()])
    if len(block) != 8 * len(days) * len(columns):
        raise ValueError(f"a history's columns are not all {len(days)} days long")
    if not _out_of_range(block):
        out += (
            _SERIES.pack(len(days), len(columns), 0),
            days.tobytes(),
            bytes(map(COLUMN_ID.__getitem__, columns)),
            block,
        )
        return
    dense, sparse = _split(series)
    out += (
        _SERIES.pack(len(days), len(dense), len(sparse)),
        days.tobytes(),
        bytes([COLUMN_ID[name] for name in dense]),
        bytes([COLUMN_ID[name] for name, _, _ in sparse]),
        *(columns[name].tobytes() for name in dense),
    )
    for name, col, present in sparse:
        mask = bytearray((len(days) + 7) // 8)
        for i, flag in enumerate(present):
            if flag:
                mask[i >> 3] |= 1 << (i & 7)
        values = array("d", (v for v, flag in zip(col, present, strict=True) if flag)).tobytes()
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


def _out_of_bounds(what: str, needed: int, offset: int, size: int) -> StateDecodeError:
    return StateDecodeError(f"truncated: {what} needs {needed} bytes at offset {offset}, the value has {size}")


def _floats(raw: bytes, start: int, end: int, what: str) -> Values:
    if _out_of_range(raw, start, end):
        raise StateDecodeError(f"{what} holds a NaN, an infinity or a value beyond 1e300: no report produces one")
    values = array("d")
    values.frombytes(memoryview(raw)[start:end])
    return values


def _unpack_series(raw: bytes, offset: int) -> tuple[Decoded, int]:
    """One history from ``offset``: its days and columns, and the offset after it."""
    size = len(raw)
    if offset + _SERIES.size > size:
        raise _out_of_bounds("a history's counts", _SERIES.size, offset, size)
    n_days, n_dense, n_sparse = _SERIES.unpack_from(raw, offset)
    n_ids = n_dense + n_sparse
    start = offset + _SERIES.size
    ids_at = start + 4 * n_days
    block_at = ids_at + n_ids
    end = block_at + 8 * n_days * n_dense
    if end > size:
        raise _out_of_bounds(f"a history of {n_days} days and {n_ids} columns", end - offset, offset, size)
    days = array("i")
    days.frombytes(memoryview(raw)[start:ids_at])
    if n_days and not (days[0] > 0 and days[-1] <= MAX_DAY):
        raise StateDecodeError(f"day ordinals {days[0]}..{days[-1]} are outside the calendar")
    if n_days > 1:
        ordinals = days.tolist()
        if not all(map(operator.lt, ordinals, ordinals[1:])):
            raise StateDecodeError("day ordinals out of order or repeated")
    ids = raw[ids_at:block_at]
    if ids and (max(ids) >= len(COLUMN_NAMES) or len(set(ids)) != n_ids):
        raise StateDecodeError(f"unknown or repeated column ids {list(ids)} (this version knows {len(COLUMN_NAMES)})")
    block = _floats(raw, block_at, end, "a dense column")
    columns: dict[str, Values] = {
        COLUMN_NAMES[ident]: block[i * n_days : (i + 1) * n_days] for i, ident in enumerate(ids[:n_dense])
    }
    mask_size = (n_days + 7) // 8
    for ident in ids[n_dense:]:
        name = COLUMN_NAMES[ident]
        if end + mask_size > size:
            raise _out_of_bounds(f"column {name}'s presence bytes", mask_size, end, size)
        mask = raw[end : end + mask_size]
        positions = [i for i in range(n_days) if mask[i >> 3] & (1 << (i & 7))]
        start, end = end + mask_size, end + mask_size + 8 * len(positions)
        if end > size:
            raise _out_of_bounds(f"column {name}", end - start, start, size)
        col = array("d", (MISSING,)) * n_days
        for position, value in zip(positions, _floats(raw, start, end, f"column {name}"), strict=True):
            col[position] = value
        columns[name] = col
    return (days, columns), end


def unpack(raw: bytes) -> tuple[bytes, list[Decoded]]:
    """Split a version-2 value into its header and validated histories (raises :class:`StateDecodeError`)."""
    if raw[:3] != MAGIC:
        raise StateDecodeError(f"not a device state: it starts with {bytes(raw[:4])!r}")
    if len(raw) < _PREFIX.size:
        raise StateDecodeError(f"truncated: {len(raw)} bytes, the prefix alone takes {_PREFIX.size}")
    _, version, header_size = _PREFIX.unpack_from(raw)
    if version != VERSION:
        raise StateDecodeError(f"state encoding version {version}: this worker reads 1 (JSON) and {VERSION}")
    count_at = _PREFIX.size + header_size
    if count_at >= len(raw):
        raise _out_of_bounds("the header and history count", header_size + 1, _PREFIX.size, len(raw))
    offset, series = count_at + 1, []
    for _ in range(raw[count_at]):
        history, offset = _unpack_series(raw, offset)
        series.append(history)
    if offset != len(raw):
        raise StateDecodeError(f"{len(raw) - offset} bytes after the last history")
    return raw[_PREFIX.size : _PREFIX.size + header_size], series
