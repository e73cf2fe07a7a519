"""Features computed once per scoring call, however many scorers and feature-log records read them.

The disk model, the disk rule (its challenger) and the feature log each need a disk's
features; the anomaly scorer and the feature log a device's. Inside :func:`shared_features`
the functions below compute each history's features once and hand every later caller the
same (read-only) dict; outside it they just compute. The scope is one scoring call: states
change in place between calls, so nothing is kept past it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

from fleetpulse.models import features as pure
from fleetpulse.models.state import BatteryHistory, DeviceState, DiskHistory

Source = TypeVar("Source", DeviceState, DiskHistory, BatteryHistory)
Features = dict[str, float]

_memo: ContextVar[dict[tuple[Callable[..., Features], int], tuple[object, Features]] | None] = ContextVar(
    "fleetpulse_feature_memo", default=None
)


@contextmanager
def shared_features() -> Iterator[None]:
    """Within the block, each history's features are computed once (the caller must not change states in it).

    A nested block shares its enclosing block's features."""
    if _memo.get() is not None:
        yield
        return
    token = _memo.set({})
    try:
        yield
    finally:
        _memo.reset(token)


def _shared(compute: Callable[[Source], Features], source: Source) -> Features:
    memo = _memo.get()
    if memo is None:
        return compute(source)
    key = (compute, id(source))
    hit = memo.get(key)
    if hit is not None and hit[0] is source:  # the entry holds its source, so the id is not reused meanwhile
        return hit[1]
    computed = compute(source)
    memo[key] = (source, computed)
    return computed


def disk_features(disk: DiskHistory) -> Features:
    return _shared(pure.disk_features, disk)


def disk_vector(disk: DiskHistory) -> list[float]:
    feats = disk_features(disk)
    return [feats[name] for name in pure.DISK_FEATURES]


def battery_features(battery: BatteryHistory) -> Features:
    return _shared(pure.battery_features, battery)


def device_features(state: DeviceState) -> Features:
    return _shared(pure.device_features, state)


def thermal_features(state: DeviceState) -> Features:
    return _shared(pure.thermal_features, state)


def memory_features(state: DeviceState) -> Features:
    return _shared(pure.memory_features, state)
