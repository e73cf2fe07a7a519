"""How long the worker keeps a device's state once the device goes silent (data minimisation).

A device's table value holds weeks of its health history and its alert states. Without a rule
it would stay in the table and its compacted changelog for good: every retired PC, every phone
gone from the MDM, and every device a leaked MDM certificate invented. A device silent for
``[streams] state_retention`` loses what it no longer needs:

* a device in IT's register keeps what the register and its enrolment gave it (asset facts,
  enrolled key, dedup position) and loses its histories and alert states: it is still an asset,
  and its agent may come back (a laptop back from storage reports without enrolling again);
* any other device (retired from the register, an MDM phone no export names any more, a device
  that was never registered) is erased: its table entry becomes a changelog tombstone.

Silence is measured on what the device itself sends (reports, the agent's inventory) and, for the
MDM bridge's phones, on the bridge's asset facts, which every export republishes. A value that
names no such time at all (enrolled or registered, never reported) has no history to age and is
kept. The rule is a pure function of the stored record and the time; the worker applies it
(``Pipeline.apply_retention``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import Enum

from fleetpulse.contract import MDM_DEVICE_ID_PREFIX
from fleetpulse.models.state import DailySeries, DeviceState
from fleetpulse.streams.processing import DeviceRecord


class Retention(Enum):
    KEEP = "kept"
    THIN = "thinned"
    ERASE = "erased"


def last_heard(record: DeviceRecord) -> datetime | None:
    """The latest time the device (or, for a phone, the MDM bridge's export) spoke of itself; None: never."""
    heard = [at for at in (record.state.last_collected_at, record.agent_inventory_at) if at is not None]
    if record.inventory_at is not None and record.state.device_id.startswith(MDM_DEVICE_ID_PREFIX):
        heard.append(record.inventory_at)
    return max(heard, default=None)


def has_history(record: DeviceRecord) -> bool:
    state = record.state
    return bool(state.disks or state.battery is not None or len(state.device.days) or record.policies)


def retention(record: DeviceRecord, now: datetime, keep_for: timedelta) -> Retention:
    """What happens to ``record`` at ``now`` when silent devices are kept ``keep_for``."""
    heard = last_heard(record)
    if heard is None or heard >= now - keep_for:
        return Retention.KEEP
    registered = record.inventory_at is not None and not record.state.device_id.startswith(MDM_DEVICE_ID_PREFIX)
    if not registered:
        return Retention.ERASE
    return Retention.THIN if has_history(record) else Retention.KEEP


def thinned(record: DeviceRecord) -> DeviceRecord:
    """``record`` without histories and alert states: facts, enrolment and dedup position stay.

    The next scoring starts the device's alert rules afresh, as for a new device; its dedup position
    still refuses a replay of a report it sent before it went silent."""
    state = record.state
    kept = DeviceState(
        device_id=state.device_id,
        kind=state.kind,
        platform=state.platform,
        last_seq=state.last_seq,
        last_collected_at=state.last_collected_at,
        vendor=state.vendor,
        model=state.model,
        site=state.site,
        department=state.department,
        purchase_date=state.purchase_date,
        warranty_end=state.warranty_end,
        device=DailySeries(),
    )
    return record.model_copy(update={"state": kept, "policies": {}, "scored_at": None})
