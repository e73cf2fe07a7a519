"""The table value of a device: its JSON header and its daily histories as packed arrays, version-tagged.

The stream encodes a device's value for every report (and decodes it whenever its decoded
record is not cached). As JSON, that round trip spends its time building one Python object
per number (orjson and msgpack build the same objects). :class:`~fleetpulse.models.state.DailySeries`
keeps its columns in typed arrays, so here the histories are one join of byte buffers on the
way out and one copy on the way back, and the values read back bit for bit, so every
feature is the same whichever way a state was stored.

Layout (little-endian), version 3::

    b"FPS" | u8 version | u32 header length | header | u8 history count
    | per history: u16 days, u8 columns
    | i32 day ordinals of every history | u8 column ids of every history
    | f64 values of every history: column after column, one value per day

A day without a value is ``MISSING``, the one NaN bit pattern the state holds; every other
NaN, an infinity or a value no report reaches (at least 2**1009) is refused. The header is
the record's JSON without its histories, as pydantic's ``model_dump_json`` writes it
(:func:`header_json` builds it with orjson from the models' fields, in about half the time),
validated by the record's pydantic model on the way back; the histories follow in
:func:`series_of` order.

Older values keep loading: version 1 is plain JSON (it starts with ``{``); version 2 stored
each history whole (days, ids, dense values, then a presence mask and the present values
of each column with missing days). Both are written as version 3 with the device's next
update. Anything else, and any value no report can produce (days out of order, a count
past the end, bytes after the end), raises :class:`StateDecodeError`.
"""

from __future__ import annotations

import operator
import struct
import sys
from array import array
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, cast, get_args, get_origin

import orjson
from pydantic import BaseModel
from pydantic.main import IncEx

from fleetpulse.models.state import MISSING, DailySeries, Days, DeviceState, DiskHistory, Values

MAGIC = b"FPS"
VERSION = 3
READABLE_VERSIONS = (2, 3)
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
MISSING_BITS = struct.unpack("<Q", struct.pack("<d", MISSING))[0]
"""The bit pattern of ``MISSING``: the only NaN a stored history may hold."""
MAX_HISTORIES = 255
"""The count is one byte; a state holds at most ``MAX_DISKS`` disks, the device and a battery."""

_PREFIX = struct.Struct("<3sBI")
_SERIES_V2 = struct.Struct("<HBB")
_HEAD_BYTES = 3  # per history in version 3: u16 days, u8 columns
if sys.byteorder != "little" or array("i").itemsize != 4 or array("d").itemsize != 8 or array("Q").itemsize != 8:
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


# -- the header -------------------------------------------------------------------------------


def _model_fields(model: object) -> dict[str, Any]:
    """orjson's hook for a model in a header that :func:`header_json` did not flatten (none in a ``DeviceRecord``)."""
    if isinstance(model, BaseModel) and not isinstance(model, DailySeries | DeviceState):
        return model.__dict__
    raise TypeError(f"{type(model).__name__} has no place in a state header")


def _disk_fields(disk: DiskHistory) -> dict[str, Any]:
    fields = disk.__dict__.copy()
    del fields["series"]
    fields["kind"] = disk.kind._value_  # orjson reads an enum's value through its Python property
    return fields


def _state_fields(state: DeviceState) -> dict[str, Any]:
    """The state's fields for its header: every history left out."""
    fields = state.__dict__.copy()
    del fields["device"]
    if state.kind is not None:
        fields["kind"] = state.kind._value_
    if state.platform is not None:
        fields["platform"] = state.platform._value_
    fields["disks"] = {key: _disk_fields(disk) for key, disk in state.disks.items()}
    if state.battery is not None:
        battery = fields["battery"] = state.battery.__dict__.copy()
        del battery["series"]
    return fields


@lru_cache(maxsize=16)
def _dicts_of_models(record_type: type[BaseModel]) -> tuple[str, ...]:
    """The fields of ``record_type`` that hold a dict of models (a ``DeviceRecord``'s alert states)."""
    names = []
    for name, field in record_type.model_fields.items():
        args = get_args(field.annotation)
        if get_origin(field.annotation) is dict and isinstance(args[1], type) and issubclass(args[1], BaseModel):
            names.append(name)
    return tuple(names)


def header_json(record: BaseModel, state: DeviceState, unset_left_out: frozenset[str] = frozenset()) -> bytes:
    """``record``'s JSON without ``state``'s histories: what ``record.model_dump_json(exclude={"state":
    HISTORY_FIELDS})`` writes (but for how a float past 1e16 spells its exponent), read back by the
    same validation. The fields in ``unset_left_out`` are left out while None: fields added to the record
    after a release, so that a worker of that release reads every value that does not use them.

    Built by orjson from the models' field dicts, the record's dicts of models (its alert states)
    flattened here rather than through orjson's per-object hook: pydantic serialises the same in
    about twice the time. A value orjson does not write (an integer beyond 64 bits, a string that
    is not Unicode) takes pydantic's own path.
    """
    fields = record.__dict__.copy()
    unset = {name for name in unset_left_out if fields.get(name) is None}
    for name in unset:
        del fields[name]
    for name in _dicts_of_models(type(record)):
        fields[name] = {key: model.__dict__ for key, model in fields[name].items()}
    fields["state"] = _state_fields(state)
    try:
        return orjson.dumps(fields, default=_model_fields, option=orjson.OPT_UTC_Z)
    except orjson.JSONEncodeError:
        exclude: dict[str, Any] = {"state": HISTORY_FIELDS, **dict.fromkeys(unset, True)}
        return record.model_dump_json(exclude=exclude).encode()


# -- the histories ----------------------------------------------------------------------------


def _out_of_range(packed: bytes, start: int = 0, end: int | None = None) -> bool:
    """Whether any little-endian float64 in ``packed[start:end]`` is a NaN, an infinity or at least 2**1009.

    Their high byte is 0x7F or 0xFF (sign and the exponent's top seven bits set): one strided
    byte slice and two C-level searches, no Python object per value.
    """
    high = packed[start + 7 : end : 8]
    return b"\x7f" in high or b"\xff" in high


def _only_missing_out_of_range(packed: bytes, start: int, end: int) -> bool:
    """Whether every out-of-range float64 in ``packed[start:end]`` is ``MISSING`` (not another NaN, not an infinity)."""
    high = packed[start + 7 : end : 8]
    if b"\xff" in high:
        return False
    bits = array("Q")
    bits.frombytes(memoryview(packed)[start:end])
    return bits.count(MISSING_BITS) == high.count(0x7F)


@lru_cache(maxsize=4096)
def _column_ids(names: tuple[str, ...]) -> bytes:
    """Stored ids of column names in their order: a few orders exist (columns appear in their merge order)."""
    try:
        return bytes([COLUMN_ID[name] for name in names])
    except KeyError as exc:
        raise ValueError(f"column {exc.args[0]!r} has no stored id: add it to COLUMN_NAMES") from None


def series_size(series: DailySeries) -> int:
    """Bytes ``series`` takes in the encoding (computed, not encoded)."""
    days, columns = len(series.days), len(series.columns)
    return _HEAD_BYTES + 4 * days + columns + 8 * days * columns


def encoded_size(state: DeviceState) -> int:
    """Bytes ``state`` takes in the encoding with its own JSON as the header (the bound's measure)."""
    try:
        header = len(orjson.dumps(_state_fields(state), option=orjson.OPT_UTC_Z))
    except orjson.JSONEncodeError:
        header = len(state.model_dump_json(exclude=HISTORY_FIELDS).encode())
    return _PREFIX.size + header + 1 + sum(series_size(history) for history in series_of(state))


def pack(header: bytes, state: DeviceState) -> bytes:
    """The versioned value: ``header`` (the record's JSON without the histories), then the histories.

    One join of the histories' own arrays; the values are checked once, as one block.
    """
    series = series_of(state)
    count = len(series)
    if count > MAX_HISTORIES:
        raise ValueError(f"{count} histories: the layout holds {MAX_HISTORIES}")
    heads: list[int] = [count]
    days: list[Days] = []
    ids: list[bytes] = []
    values: list[Values] = []
    layout = floats = 0
    for history in series:
        columns = history.columns
        n_days, n_columns = len(history.days), len(columns)
        heads += (n_days, n_columns)
        days.append(history.days)
        names = tuple(columns)
        ids.append(_column_ids(names))
        values += columns.values()
        layout += 4 * n_days + n_columns
        floats += n_days * n_columns
    raw = b"".join(
        [_PREFIX.pack(MAGIC, VERSION, len(header)), header, _heads(count).pack(*heads), *days, *ids, *values]
    )
    start = _PREFIX.size + len(header) + 1 + _HEAD_BYTES * count + layout
    if len(raw) != start + 8 * floats:
        raise ValueError("a history's columns are not all as long as its days")
    if _out_of_range(raw, start) and not _only_missing_out_of_range(raw, start, len(raw)):
        raise ValueError("a history holds an infinity, a NaN other than a missing value, or a value beyond 1e300")
    return raw


@lru_cache(maxsize=MAX_HISTORIES + 1)
def _heads(count: int) -> struct.Struct:
    """The history count and each history's day and column counts."""
    return struct.Struct("<B" + "HB" * count)


def is_legacy_json(raw: bytes) -> bool:
    return raw[:1] == LEGACY_JSON_START


def _out_of_bounds(what: str, needed: int, offset: int, size: int) -> StateDecodeError:
    return StateDecodeError(f"truncated: {what} needs {needed} bytes at offset {offset}, the value has {size}")


def _check_days(days: Days) -> None:
    if days and not (days[0] > 0 and days[-1] <= MAX_DAY):
        raise StateDecodeError(f"day ordinals {days[0]}..{days[-1]} are outside the calendar")
    if len(days) > 1:
        ordinals = days.tolist()
        if not all(map(operator.lt, ordinals, ordinals[1:])):
            raise StateDecodeError("day ordinals out of order or repeated")


@lru_cache(maxsize=1024)
def _column_names(ids: bytes) -> tuple[str, ...]:
    if ids and (max(ids) >= len(COLUMN_NAMES) or len(set(ids)) != len(ids)):
        raise StateDecodeError(f"unknown or repeated column ids {list(ids)} (this version knows {len(COLUMN_NAMES)})")
    return tuple([COLUMN_NAMES[ident] for ident in ids])


def _unpack_v3(raw: bytes, count_at: int) -> list[Decoded]:
    size = len(raw)
    count = raw[count_at]
    heads_at = count_at + 1
    days_at = heads_at + _HEAD_BYTES * count
    if days_at > size:
        raise _out_of_bounds(f"the counts of {count} histories", days_at - heads_at, heads_at, size)
    heads = _heads(count).unpack_from(raw, count_at)[1:]
    day_counts, column_counts = heads[0::2], heads[1::2]
    ids_at = days_at + 4 * sum(day_counts)
    values_at = ids_at + sum(column_counts)
    end = values_at + 8 * sum(map(operator.mul, day_counts, column_counts))
    if end > size:
        raise _out_of_bounds(f"{count} histories", end - days_at, days_at, size)
    if end < size:
        raise StateDecodeError(f"{size - end} bytes after the last history")
    if _out_of_range(raw, values_at) and not _only_missing_out_of_range(raw, values_at, end):
        raise StateDecodeError("a history holds a NaN, an infinity or a value beyond 1e300: no report produces one")
    all_days = array("i")
    all_days.frombytes(memoryview(raw)[days_at:ids_at])
    all_values = array("d")
    all_values.frombytes(memoryview(raw)[values_at:end])
    decoded: list[Decoded] = []
    day_at = id_at = value_at = 0
    for n_days, n_columns in zip(day_counts, column_counts, strict=True):
        days = all_days[day_at : day_at + n_days]
        _check_days(days)
        names = _column_names(raw[ids_at + id_at : ids_at + id_at + n_columns])
        columns = {}
        for name in names:
            columns[name] = all_values[value_at : value_at + n_days]
            value_at += n_days
        decoded.append((days, columns))
        day_at += n_days
        id_at += n_columns
    return decoded


def _floats_v2(raw: bytes, start: int, end: int, what: str) -> Values:
    if _out_of_range(raw, start, end):
        raise StateDecodeError(f"{what} holds a NaN, an infinity or a value beyond 1e300: no report produces one")
    values = array("d")
    values.frombytes(memoryview(raw)[start:end])
    return values


def _unpack_series_v2(raw: bytes, offset: int) -> tuple[Decoded, int]:
    """One version-2 history from ``offset``: its days and columns, and the offset after it."""
    size = len(raw)
    if offset + _SERIES_V2.size > size:
        raise _out_of_bounds("a history's counts", _SERIES_V2.size, offset, size)
    n_days, n_dense, n_sparse = _SERIES_V2.unpack_from(raw, offset)
    n_ids = n_dense + n_sparse
    start = offset + _SERIES_V2.size
    ids_at = start + 4 * n_days
    block_at = ids_at + n_ids
    end = block_at + 8 * n_days * n_dense
    if end > size:
        raise _out_of_bounds(f"a history of {n_days} days and {n_ids} columns", end - offset, offset, size)
    days = array("i")
    days.frombytes(memoryview(raw)[start:ids_at])
    _check_days(days)
    names = _column_names(raw[ids_at:block_at])
    block = _floats_v2(raw, block_at, end, "a dense column")
    columns: dict[str, Values] = {name: block[i * n_days : (i + 1) * n_days] for i, name in enumerate(names[:n_dense])}
    mask_size = (n_days + 7) // 8
    for name in names[n_dense:]:
        if end + mask_size > size:
            raise _out_of_bounds(f"column {name}'s presence bytes", mask_size, end, size)
        mask = raw[end : end + mask_size]
        positions = [i for i in range(n_days) if mask[i >> 3] & (1 << (i & 7))]
        start, end = end + mask_size, end + mask_size + 8 * len(positions)
        if end > size:
            raise _out_of_bounds(f"column {name}", end - start, start, size)
        col = array("d", (MISSING,)) * n_days
        for position, value in zip(positions, _floats_v2(raw, start, end, f"column {name}"), strict=True):
            col[position] = value
        columns[name] = col
    return (days, columns), end


def _unpack_v2(raw: bytes, count_at: int) -> list[Decoded]:
    offset, series = count_at + 1, []
    for _ in range(raw[count_at]):
        history, offset = _unpack_series_v2(raw, offset)
        series.append(history)
    if offset != len(raw):
        raise StateDecodeError(f"{len(raw) - offset} bytes after the last history")
    return series


def unpack(raw: bytes) -> tuple[bytes, list[Decoded]]:
    """Split a version-2 or -3 value into its header and validated histories (raises :class:`StateDecodeError`)."""
    if raw[:3] != MAGIC:
        raise StateDecodeError(f"not a device state: it starts with {bytes(raw[:4])!r}")
    if len(raw) < _PREFIX.size:
        raise StateDecodeError(f"truncated: {len(raw)} bytes, the prefix alone takes {_PREFIX.size}")
    _, version, header_size = _PREFIX.unpack_from(raw)
    if version not in READABLE_VERSIONS:
        raise StateDecodeError(f"state encoding version {version}: this worker reads 1 (JSON), 2 and {VERSION}")
    count_at = _PREFIX.size + header_size
    if count_at >= len(raw):
        raise _out_of_bounds("the header and history count", header_size + 1, _PREFIX.size, len(raw))
    series = _unpack_v3(raw, count_at) if version == VERSION else _unpack_v2(raw, count_at)
    return raw[_PREFIX.size : count_at], series
