"""Storm control: a fleet-wide spike of alerts from one cause becomes one grouped problem.

A bad firmware push or a model regression can raise thousands of alerts within an hour,
all for the same component, the same top contributing signal and the same device model.
Those are one problem for IT-support, not thousands of tickets: once ``threshold`` raises
share a storm key within ``window`` (event time), they join one storm group, and the ITSM
connectors receive one grouped problem instead of one incident per device. Device tickets
still exist (each device needs its own repair) but are marked with the group.

Pure: the ticket service supplies the recent raise times from its store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from fleetpulse.contract.v1 import MDM_DEVICE_ID_PREFIX, Alert


class StormPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    window: Annotated[timedelta, Field(gt=timedelta(0), le=timedelta(days=30))] = timedelta(hours=1)
    threshold: Annotated[int, Field(ge=2, le=1_000_000)] = Field(
        default=25, description="raises sharing a storm key within the window that make a storm"
    )


def cause(alert: Alert) -> str:
    """The signal that contributed most to the score, or 'unspecified' when the model gave none."""
    if not alert.factors:
        return "unspecified"
    return max(alert.factors, key=lambda f: abs(f.contribution)).feature


def storm_key(alert: Alert, device_model: str | None) -> str:
    """Component, cause and device model; the MDM bridge's devices storm apart from IT's register's (model
    ``mdm:<model>``): the bridge states their models itself, so naming a PC model must not pull PCs'
    tickets into a storm of its devices' alerts."""
    model = device_model or "unknown"
    if alert.device_id.startswith(MDM_DEVICE_ID_PREFIX):
        model = f"mdm:{model}"
    return f"{alert.component.value}|{cause(alert)}|{model}"


def is_storm(policy: StormPolicy, at: datetime, recent: Sequence[datetime]) -> bool:
    """Does this raise, with the earlier raises of its key at ``recent``, reach the threshold in the window?"""
    in_window = sum(1 for t in recent if at - policy.window < t <= at)
    return in_window + 1 >= policy.threshold


def group_id(key: str, first_at: datetime) -> str:
    """Deterministic: the same alerts replayed form the same group."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return f"storm-{digest}-{first_at:%Y%m%dT%H%M%SZ}"
