"""How long the worker keeps a device's state once the device goes silent (data minimisation).

A device's table value holds weeks of its health history and its alert states. Without a rule
it would stay in the table and its compacted changelog for good: every retired PC, every phone
gone from the MDM, and every device a leaked MDM certificate invented. A device silent for
``[streams] state_retention`` loses what it no longer needs:

* a device in IT's register keeps what the register and its enrolment gave it (asset facts,
  enrolled key, dedup position) and loses its histories and alert states: it is still an asset,
  and its agent may come back (a laptop back from storage reports without enrolling again);
* any other device (retired from the register, an MDM phone that stopped syncing, a device that
  was never registered) is erased: its table entry becomes a changelog tombstone. The worker then
  knows it no more than a new device: registered again, its first enrolment is trusted (IT pins the
  key with ``fleetpulse devices re-enrol --fingerprint`` where that matters).

Silence is measured on what the device itself sends (reports, its enrolment, the agent's inventory;
IT's re-enrolment dates the enrolment too) and, for the MDM bridge's phones, on the phone's last sync
with the MDM, which dates the facts the bridge exports. An enrolment no report follows therefore ages
out like a report: without that, enrolments for made-up device ids (the agents' shared Kafka
credential and ``unknown_devices = "accept"``) or of devices retired before their first report would
stay for good. A key enrolled before enrolment times were stored is dated at the first pass (its
retention starts then). A pin IT set for a device's next enrolment (``fleetpulse devices re-enrol
--fingerprint``) holds the device as the register does, until that enrolment comes: erased, the first
enrolment would win again. A device that never spoke is kept while it is held; anything else is what a
tombstone left of facts (retired before use, or made up with a leaked bridge certificate) and is erased. The rule is a pure function of the stored record and the time; the worker applies it
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
    DATE = "dated"
    """an enrolment stored without its time gets the pass's time: its retention starts then"""


def last_heard(record: DeviceRecord) -> datetime | None:
    """The latest time the device spoke of itself or was enrolled (for a phone: synced with the MDM); None: never."""
    heard = [
        at for at in (record.state.last_collected_at, record.agent_inventory_at, record.enrolled_at) if at is not None
    ]
    if record.inventory_at is not None and record.state.device_id.startswith(MDM_DEVICE_ID_PREFIX):
        heard.append(record.inventory_at)
    return max(heard, default=None)


def enrolled(record: DeviceRecord) -> bool:
    return bool(record.device_key or record.pinned_fingerprint or record.offered_key)


def has_history(record: DeviceRecord) -> bool:
    """Whether thinning would drop anything: histories, or alert states other than raised alerts."""
    state = record.state
    if state.disks or state.battery is not None or len(state.device.days):
        return True
    return any(not policy.raised for policy in record.policies.values())


def retention(record: DeviceRecord, now: datetime, keep_for: timedelta) -> Retention:
    """What happens to ``record`` at ``now`` when silent devices are kept ``keep_for``."""
    registered = record.inventory_at is not None and not record.state.device_id.startswith(MDM_DEVICE_ID_PREFIX)
    # IT's pin waits for the device's agent (a laptop pinned before it leaves storage) as the register does:
    # erased, the first enrolment would win again. Only IT's control topic sets one, so made-up ids cannot use it
    held = registered or (record.pinned_fingerprint is not None and record.device_key is None)
    heard = last_heard(record)
    if heard is None:
        # never spoke: a held device waits for its agent; a key enrolled before enrolment times were stored is
        # dated now; anything else is what a tombstone left of facts no device ever reported under (retired
        # before use, or made up)
        if held:
            return Retention.KEEP
        return Retention.DATE if enrolled(record) else Retention.ERASE
    if heard >= now - keep_for:
        return Retention.KEEP
    if not held:
        return Retention.ERASE
    return Retention.THIN if has_history(record) else Retention.KEEP


def thinned(record: DeviceRecord) -> DeviceRecord:
    """``record`` without histories and alert states: facts, enrolment, dedup position and raised alerts stay.

    The next scoring starts the device's alert rules afresh, as for a new device, except a raised alert: its
    ticket is still open and clears as usual once the device is back and healthy. The dedup position still
    refuses a replay of a report it sent before it went silent."""
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
    raised = {key: policy for key, policy in record.policies.items() if policy.raised}
    return record.model_copy(update={"state": kept, "policies": raised, "scored_at": None})


def dated(record: DeviceRecord, now: datetime) -> DeviceRecord:
    """``record`` with ``now`` as its enrolment time (for :attr:`Retention.DATE`)."""
    return record.model_copy(update={"enrolled_at": now})
