"""The pure processing core: raw Kafka records in, state changes and effects out.

Faust is only the transport around :meth:`Processor.process_batch`; everything that
decides (validation, dedup, state, scoring, alerting, TSDB points) happens here on
plain values, so it is unit-tested without Kafka and behaves the same in replays.

Per-device table value (:class:`DeviceRecord`): the models' ``DeviceState`` plus the
alert policy's state per component. Both live in ONE value so a device's dedup
position (``state.last_seq``), features and alert hysteresis change atomically with
one changelog write.

Authenticity before anything else: a report on the health topic must carry the MAC of
its device's enrolled key (``fleetpulse.contract.auth``), checked before the record can
change any state. The key is pinned by the device's first enrolment (or the fingerprint
IT pinned on the control topic) and kept in the device's table value, so the check costs
no extra read. Reports on the mobile topic come from the MDM bridge, whose Kafka principal
is the only one allowed to write it; they carry no device MAC, so the topic takes only reports
whose ``source`` is the MDM and never one for a device an agent authenticates
(:func:`mobile_refusal`): a leaked MDM credential cannot write a PC's history.

Asset facts: IT's register (the compacted inventory topic) is authoritative and alone makes a
device known (``unknown_devices``). The MDM bridge's asset facts travel on a compacted topic of their
own, joined like the register's but only for the bridge's devices (:func:`mdm_inventory_refusal`): a
leaked MDM credential cannot move a PC to another site, change its warranty or retire it. An agent's
own MACed inventory on the health topic knows only kind, vendor and model: it fills what the register
lacks, never clears the register's facts and is ordered by its own ``agent_inventory_at``, so IT's
next update is never refused as older than it.

Dedup and replays: a report with ``seq <= state.last_seq`` is dead-lettered as
``duplicate`` (equal) or ``stale_replay`` (older) and changes nothing (the MDM bridge's
republished unchanged observation, a duplicate by design, is only counted), unless its
``collected_at`` is newer than the device's last event: then it cannot be a replay of
anything processed, and it is a new agent spool counting from a lower seq
(``seq_restart``). Bounds keep even an authenticated bug from wedging a device: a
``seq`` too far ahead (``seq_out_of_bounds``) and a ``collected_at`` far before the
device's last event (``clock_skew``) are refused, and with ``max_first_report_age`` set so is a
first report far before receive time (``clock_skew``). Reports of one
device inside one batch are scored one after another ("generations"), so the result
does not depend on where batch boundaries fall: a replay from scratch reaches the
same table state as live processing.

Scoring is on change, not per report (:meth:`Processor._due`): at one report a minute
the daily-bucketed features barely move, so a device is rescored on its first report
of a day, on a health event, or when ``rescore_interval`` of event time has passed.
Every report still updates the state and writes its metrics. Each generation's champion
scores also yield feature-log records (:mod:`fleetpulse.streams.featurelog`): daily and
threshold-crossing, for fleet retraining.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

from fleetpulse.alerts.policy import AlertPolicy, PolicyState, step
from fleetpulse.compat import UTC
from fleetpulse.contract import (
    MDM_DEVICE_ID_PREFIX,
    Alert,
    Component,
    ContractError,
    DeadLetter,
    DeviceControl,
    DeviceEnrolment,
    DeviceInventory,
    FeatureLogRecord,
    HealthReport,
    Priority,
    ReportSource,
    RiskScore,
    ScorerRole,
    Topics,
    decode,
    decode_report,
)
from fleetpulse.contract.auth import (
    ENROLMENT_TYPE,
    INVENTORY_TYPE,
    MAC_HEADER,
    TYPE_HEADER,
    Headers,
    header,
    key_fingerprint,
    mac_matches,
    mdm_inventory_refusal,
)
from fleetpulse.contract.v1 import COUNT_MAX, UtcDatetime
from fleetpulse.logs import RefusalWarnings
from fleetpulse.models import forest, state_codec
from fleetpulse.models.anomaly import EXPLAINED_BY
from fleetpulse.models.feature_cache import shared_features
from fleetpulse.models.registry import ScorerLabels, ScorerSet
from fleetpulse.models.state import (
    MAX_DISKS,
    MAX_STATE_BYTES,
    DeviceState,
    apply_inventory_in_place,
    apply_report_in_place,
    disk_key,
    fit_in_place,
    state_bytes,
)
from fleetpulse.streams.featurelog import feature_records
from fleetpulse.streams.partitioning import default_partition
from fleetpulse.streams.points import Point, alert_point, report_points, score_point
from fleetpulse.streams.settings import StreamSettings

try:  # optional: built where the install found cargo (``make native``); without it every record takes the Python path
    from fleetpulse.streams import _native
except ImportError:  # pragma: no cover - exercised by installs without the extension
    _native = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
Keyed = TypeVar("Keyed", DeviceEnrolment, DeviceControl)

EXCERPT_BYTES = 1024
"""Payload bytes kept in a dead letter: enough to diagnose, bounded (escaped, at most 4 KiB of text)."""
ENROLMENT_EXCERPT = "<enrolment: withheld, it carries a device key>"
"""Dead letters are read more widely than the health topic: a key in one would let its reader forge reports."""

ErrorKind = str
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
RECORD_ERRORS = (ValueError, TypeError, RecursionError, ArithmeticError)
"""What odd input can raise in processing (pydantic's ``ValidationError`` is a ``ValueError``; a date
pushed past the calendar an ``OverflowError``): the record is dead-lettered, the worker goes on."""
ERRORS_LOGGED_EVERY_S = 60.0
"""A traceback per exception type at most this often: records that all hit one bug (a producer resending
them, or someone who found it) are each dead-lettered with the error, but log one traceback a minute."""


ADDED_FIELDS = frozenset({"enrolled_at"})
"""Fields of :class:`DeviceRecord` newer than the first release that reads unknown fields (see its docstring):
stored only when set, so that workers of the release before read every value that does not use them."""


class DeviceRecord(BaseModel):
    """One device's table value: model state + alert policy state per component.

    Reading ignores fields it does not know, here and in the state's models: a value a newer version wrote
    (workers of two versions share partitions during a rolling update, and a rollback reads what the newer
    one wrote) is read without them, not reset as unreadable, which would forget the device's enrolled key.
    """

    model_config = ConfigDict(extra="ignore")

    state: DeviceState
    policies: dict[str, PolicyState] = {}
    inventory_at: UtcDatetime | None = Field(default=None, description="updated_at of IT's register record joined")
    agent_inventory_at: UtcDatetime | None = Field(
        default=None,
        description="updated_at of the agent's own inventory last applied (orders its replays apart from IT's); "
        "absent from values stored before it, read as None",
    )
    scored_at: UtcDatetime | None = Field(default=None, description="event time of the last report that was scored")
    mdm_reported_at: UtcDatetime | None = Field(
        default=None,
        description="event time of the last MDM bridge report applied: no agent may enrol the device then; "
        "absent from values stored before it, read as None",
    )
    device_key: str | None = Field(default=None, description="the enrolled report key (hex); None: not enrolled")
    pinned_fingerprint: str | None = Field(
        default=None, description="set by IT's re-enrolment: only the key with this fingerprint may enrol next"
    )
    offered_key: str | None = Field(
        default=None, description="the last key refused for this device: IT's re-enrolment may pin it by fingerprint"
    )
    enrolled_at: UtcDatetime | None = Field(
        default=None,
        description="when the key or pin was set: the enrolment's created_at (never after its receive time) or "
        "the receive time of IT's re-enrolment; an enrolment no report follows ages out like a report; absent "
        "from values stored before it, read as None",
    )

    def to_bytes(self) -> bytes:
        """The table value (``state_codec`` version 3), never over ``MAX_STATE_BYTES``.

        A record over the bound first loses the alert states of disks its state no longer
        tracks (a device rotating disk ids would otherwise grow them without end), then its
        oldest history (:func:`fit_in_place`). Both happen in place, so the record kept in
        memory is the one stored. Records within the bound (every real device) are stored
        as they are, so only a record over it can depend on where batches end.
        """
        raw = self._encode()
        if len(raw) <= MAX_STATE_BYTES:
            return raw
        tracked = {f"{Component.DISK.value}:{key}" for key in self.state.disks}
        self.policies = {
            key: policy
            for key, policy in self.policies.items()
            if not key.startswith(f"{Component.DISK.value}:") or key in tracked
        }
        raw = self._encode()
        if len(raw) > MAX_STATE_BYTES:
            fit_in_place(self.state, MAX_STATE_BYTES - (len(raw) - state_bytes(self.state)))
            raw = self._encode()
        return raw

    def _encode(self) -> bytes:
        return state_codec.pack(state_codec.header_json(self, self.state, ADDED_FIELDS), self.state)

    @classmethod
    def from_bytes(cls, raw: bytes) -> DeviceRecord:
        """Decode a table value of either version; a value that cannot be read back exactly raises
        :class:`~fleetpulse.models.state_codec.StateDecodeError` (or pydantic's error: both are
        ``ValueError``). A version-1 (JSON) or -2 value is written as version 3 with the device's next update."""
        if state_codec.is_legacy_json(raw):
            return cls.model_validate_json(raw)
        header, series = state_codec.unpack(raw)
        record = cls.model_validate_json(header)
        state_codec.attach(record.state, series)
        return record

    def asset_facts(self) -> DeviceState | None:
        """The inventory facts the TSDB points are tagged with (site, model), or None when no inventory joined.

        IT's register or the agent's own record (which knows the model, not the site): a fleet without a
        register still sees its dashboards by hardware model. The state holds them: no inventory record
        is built for every report and score.
        """
        joined = self.inventory_at is not None or self.agent_inventory_at is not None
        return self.state if joined else None


@dataclass(frozen=True, slots=True)
class RawRecord:
    """What the processor needs of one Kafka message."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers | None = None


@dataclass
class BatchResult:
    """Everything one batch changes; the caller makes effects durable before writing ``records``."""

    records: dict[str, DeviceRecord] = field(default_factory=dict)
    rewrite: set[str] = field(default_factory=set)
    reports: list[HealthReport] = field(default_factory=list)
    scores: list[RiskScore] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    features: list[FeatureLogRecord] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    scorer_errors: Counter[ScorerLabels] = field(default_factory=Counter)
    """device states each failing scorer left unscored, by (component, role, name, version)"""
    last_record_of: dict[str, int] = field(default_factory=dict)
    """device id -> index (in the batch) of its last record: tells the caller which partition to write to."""
    first_of_day: set[str] = field(default_factory=set)
    """devices whose pending scoring is their first of a UTC day: their components get a daily feature-log record"""
    encoded: dict[str, bytes] = field(default_factory=dict)
    """device id -> the table value the native fast path wrote; a device also in ``records`` is stored from there"""
    lines: list[bytes] = field(default_factory=list)
    """line-protocol lines of the reports the fast path took (``points`` holds the others' points)"""
    collected_us: list[int] = field(default_factory=list)
    """event times (UTC microseconds) of the reports the fast path took (``reports`` holds the others)"""


def explained_anomaly(score: RiskScore, diagnosed: set[Component]) -> bool:
    """A device anomaly whose leading signal a raised specific diagnosis of the device accounts for."""
    if score.component is not Component.DEVICE or not score.factors:
        return False
    leading = score.factors[0].feature
    return any(leading in EXPLAINED_BY.get(component, ()) for component in diagnosed)


def policy_key(score: RiskScore) -> str:
    return f"{score.component._value_}:{score.component_id}"


def dead_letter(raw: RawRecord, kind: ErrorKind, reason: str, now: datetime) -> DeadLetter:
    payload = raw.value or b""
    key = raw.key.decode("utf-8", "backslashreplace")[:128] if raw.key is not None else None
    enrolment = header(raw.headers, TYPE_HEADER) == ENROLMENT_TYPE
    return DeadLetter(
        reason=reason[:2048],
        error_kind=kind,  # type: ignore[arg-type]
        source_topic=raw.topic[:128],
        partition=raw.partition,
        offset=raw.offset,
        key=key,
        payload_excerpt=ENROLMENT_EXCERPT if enrolment else payload[:EXCERPT_BYTES].decode("utf-8", "backslashreplace"),
        payload_bytes=len(payload),
        received_at=now,
    )


def authentication_failure(
    record: DeviceRecord | None, device_id: str, value: bytes, headers: Headers | None
) -> str | None:
    """Why a health-topic record is not provably from ``device_id`` (None: it is)."""
    if record is None or record.device_key is None:
        return (
            f"device {device_id} has no enrolled key: its agent enrols before its first report; "
            f"after a reinstall IT runs `fleetpulse devices re-enrol {device_id}`"
        )
    mac = header(headers, MAC_HEADER)
    if mac is None:
        return f"no {MAC_HEADER} header: the sender does not sign its reports (agent too old, or not an agent)"
    if not mac_matches(bytes.fromhex(record.device_key), value, mac):
        return f"{MAC_HEADER} does not match the key enrolled for {device_id}"
    return None


def mobile_refusal(record: DeviceRecord | None, report: HealthReport) -> str | None:
    """Why a mobile-topic report is not the MDM bridge's to write (None: it is).

    The topic's ACL proves only that the MDM principal wrote the record, and nothing on it is MACed: a
    device that authenticates with an agent key (enrolled, pinned or offered) is written by its agent only.
    """
    if report.source is not ReportSource.MDM:
        return (
            f"source {report.source.value!r} on the mobile topic, which carries the MDM bridge's reports only: "
            "agents MAC theirs on the health topic"
        )
    if record is not None and (record.device_key or record.pinned_fingerprint or record.offered_key):
        return f"device {report.device_id} authenticates with its agent's key: the MDM bridge may not write it"
    return None


DISK_TURNOVER = timedelta(days=1)
"""A device whose state tracks ``MAX_DISKS`` disks takes a new one only in place of a disk unseen this long."""


def admitted_disks(state: DeviceState, report: HealthReport, out: BatchResult) -> HealthReport:
    """``report`` without the new disks its device has no room for.

    The state tracks at most ``MAX_DISKS`` disks and evicts the least recently seen, so a PC inventing a
    fresh serial with every report would get each one scored, logged for training and stored as a risk
    history: thousands of components a day. A full device takes a new disk only in place of one unseen
    for ``DISK_TURNOVER`` (a swapped disk), and each refused disk is counted.
    """
    tracked = state.disks
    if len(tracked) + len(report.disks) <= MAX_DISKS:
        return report
    new = [disk for disk in report.disks if disk_key(disk) not in tracked]
    if not new:
        return report
    unseen_since = report.collected_at - DISK_TURNOVER
    room = MAX_DISKS - len(tracked) + sum(1 for disk in tracked.values() if disk.last_seen < unseen_since)
    refused = {disk_key(disk) for disk in new[max(room, 0) :]}
    if not refused:
        return report
    out.counts["disk_refused_no_room"] += len(refused)
    return report.model_copy(update={"disks": [d for d in report.disks if disk_key(d) not in refused]})


def _micros(span: timedelta) -> int:
    return span // timedelta(microseconds=1)


def compiled_forest(flat: forest.FlatForest) -> forest.CompiledForest:
    """``flat`` in the native extension: the same bits as its numpy evaluation, without an array step per level."""
    assert _native is not None
    return _native.Forest(
        flat.n_features,
        flat.feature.astype("<i8").tobytes(),
        flat.threshold.astype("<f8").tobytes(),
        flat.child.astype("<i8").tobytes(),
        flat.value.astype("<f8").tobytes(),
        flat.roots.astype("<i8").tobytes(),
        flat.depth,
        flat.baseline,
    )


class Processor:
    """Validates, deduplicates, folds into state, scores in batches and runs the alert policy."""

    def __init__(self, settings: StreamSettings, topics: Topics, scorers: ScorerSet, policy: AlertPolicy) -> None:
        self.settings = settings
        self.fast_path = (
            _native.Core(
                _micros(settings.max_clock_skew),
                _micros(settings.max_backdate),
                _micros(settings.rescore_interval),
                _micros(settings.event_rescore_gap),
                min(settings.max_seq_jump, COUNT_MAX + 1),  # any larger jump admits every seq the contract carries
                None if settings.max_first_report_age is None else _micros(settings.max_first_report_age),
            )
            if settings.native_fast_path and _native is not None
            else None
        )
        if self.fast_path is not None:
            forest.use_compiler(compiled_forest)
        self.topics = topics
        # ``Topics`` builds each name on access: read once, compared for every record
        self._inventory_topic, self._control_topic, self._health_topic = topics.inventory, topics.control, topics.health
        self._mobile_inventory_topic, self._mobile_topic = topics.mobile_inventory, topics.mobile
        self.scorers = scorers
        self.policy = policy
        self._errors: dict[type[BaseException], RefusalWarnings] = {}  # keyed by the code's exception types only

    def process_batch(
        self,
        batch: Sequence[RawRecord],
        lookup: Callable[[int, str], DeviceRecord | None],
        now: datetime,
        partitions: Mapping[str, int] | None = None,
        stored: Callable[[int, str], bytes | None] | None = None,
    ) -> BatchResult:
        """Process ``batch``: each topic's records in order, IT's and the MDM bridge's asset facts before the
        rest. ``lookup(index, device_id)`` reads the table for the batch's i-th record.

        ``stored(index, device_id)`` gives the table value for the native fast path: only a value this
        worker wrote or decoded itself (None otherwise), so the fast path never reads a value the
        Python path has not validated. Without it (or without the extension) every record takes the
        Python path; both give the same table values, points, counts and dead letters.

        Kafka orders records within a partition only, so a batch's interleaving of topics is arbitrary
        anyway. Taking the facts first keeps a device's register record from cutting its pending scoring
        short: a register reload read among live reports would otherwise score in calls of a few states.
        IT's control records keep their place: an enrolment read before a re-enrolment was sent before it.

        ``partitions`` gives each source topic's partition count: a keyed record found anywhere but
        on its key's default partition is refused (the runtime always passes it; without it every
        record counts as placed right, as on a topic of one partition).
        """
        out = BatchResult()
        pending: dict[str, DeviceState] = {}  # states advanced since the last scoring call
        fast = stored if self.fast_path is not None else None
        # the fast path reads most reports itself: decoding them all first would be wasted
        decoded = self._decode_reports(batch) if fast is None else {}
        now_us = _micros(now - EPOCH)
        homes = {topic: tuple(range(count)) for topic, count in (partitions or {}).items()}
        for index in self._order(batch):
            raw = batch[index]
            try:
                if raw.key is not None and raw.topic in homes and self._misplaced(raw, homes[raw.topic], now, out):
                    continue
                if fast is not None and self._folded(index, raw, fast, now_us, out, pending):
                    continue
                self._one(index, raw, lookup, now, out, pending, decoded)
            except RECORD_ERRORS as exc:
                self._failed(raw, exc, now, out)
        states = len(pending)
        try:
            self._score(pending, now, out)
        except RECORD_ERRORS:  # the batch's states are still stored: one odd state must not stop the partition
            log.exception("alert policy failed", extra={"fields": {"states": states}})
            out.counts["scoring_error"] += states
        return out

    def _order(self, batch: Sequence[RawRecord]) -> list[int]:
        """The batch's indices, the asset-facts topics' records first, each topic's order kept."""
        first = (self._inventory_topic, self._mobile_inventory_topic)
        facts = [index for index, raw in enumerate(batch) if raw.topic in first]
        if not facts:
            return list(range(len(batch)))
        taken = set(facts)
        return facts + [index for index in range(len(batch)) if index not in taken]

    def _failed(self, raw: RawRecord, exc: Exception, now: datetime, out: BatchResult) -> None:
        errors = self._errors.get(type(exc))
        if errors is None:
            errors = self._errors[type(exc)] = RefusalWarnings(
                log, "processing error", ERRORS_LOGGED_EVERY_S, level=logging.ERROR
            )
        errors.refused({"topic": raw.topic, "offset": raw.offset}, exc)
        out.dead_letters.append(dead_letter(raw, "processing_error", f"{type(exc).__name__}: {exc}", now))
        out.counts["dead_letter.processing_error"] += 1

    def _misplaced(self, raw: RawRecord, all_partitions: tuple[int, ...], now: datetime, out: BatchResult) -> bool:
        """Whether ``raw`` sits on another partition than its key's: refused, it would read and write a device
        state the key's own partition does not hold (a producer may choose any partition; ACLs cannot stop it)."""
        assert raw.key is not None
        home = default_partition(raw.key, all_partitions)
        if raw.partition == home:
            return False
        reason = f"a record with this key belongs on partition {home} of {len(all_partitions)}, not {raw.partition}"
        self._reject(raw, "wrong_partition", reason, now, out)
        return True

    def _decode_reports(self, batch: Sequence[RawRecord]) -> dict[int, HealthReport | Exception]:
        """The batch's health reports decoded in one loop, by index; a failure is kept to be raised in turn.

        Decoding them one after another keeps pydantic's validator in the CPU caches that state decoding,
        folding and scoring evict between two reports handled in turn (``benchmarks/stream_profile.py``).
        Decoding is pure, so each record's outcome, dead letter included, is the one it had in turn.
        """
        decoded: dict[int, HealthReport | Exception] = {}
        no_reports = (self._inventory_topic, self._mobile_inventory_topic, self._control_topic)
        for index, raw in enumerate(batch):
            if raw.value is None or raw.topic in no_reports:
                continue
            if raw.topic == self._health_topic and header(raw.headers, TYPE_HEADER) in (ENROLMENT_TYPE, INVENTORY_TYPE):
                continue
            try:
                decoded[index] = decode_report(raw.value)
            except Exception as exc:  # raised again where the record is handled
                decoded[index] = exc
        return decoded

    def _current(
        self, index: int, device_id: str, lookup: Callable[[int, str], DeviceRecord | None], out: BatchResult
    ) -> DeviceRecord | None:
        if device_id in out.records:
            return out.records[device_id]
        if device_id in out.encoded:  # the fast path advanced it earlier in this batch
            return DeviceRecord.from_bytes(out.encoded[device_id])
        return lookup(index, device_id)

    def _folded(
        self,
        index: int,
        raw: RawRecord,
        stored: Callable[[int, str], bytes | None],
        now_us: int,
        out: BatchResult,
        pending: dict[str, DeviceState],
    ) -> bool:
        """Whether the native fast path took ``raw``: a routine report, with nothing to refuse or count but
        its acceptance. A report that scores its device leaves its record, decoded from the folded value,
        pending for the batch's scoring. Otherwise it changed nothing."""
        health = raw.topic == self._health_topic
        if raw.key is None or raw.value is None or not (health or raw.topic == self._mobile_topic):
            return False
        if health and header(raw.headers, TYPE_HEADER) is not None:
            return False  # an enrolment or the agent's inventory
        device_id = raw.key.decode("utf-8", "replace")
        if device_id in out.records or device_id in pending:
            return False  # the Python path holds its record in this batch
        current = out.encoded.get(device_id) or stored(index, device_id)
        if current is None:
            return False
        assert self.fast_path is not None
        mac = header(raw.headers, MAC_HEADER) if health else None
        folded = self.fast_path.fold(raw.key, current, raw.value, mac, not health, now_us)
        if folded is None:
            return False
        value, lines, at_us, due = folded
        if due == _native.NOT_DUE:
            out.encoded[device_id] = value
            out.counts["not_rescored"] += 1
        else:  # the scorers and the alert policy read the Python state: the folded value, decoded
            record = out.records[device_id] = DeviceRecord.from_bytes(value)
            pending[device_id] = record.state
            if due == _native.FIRST_OF_DAY:
                out.first_of_day.add(device_id)
        out.lines += lines
        out.collected_us.append(at_us)
        out.last_record_of[device_id] = index
        out.counts["accepted"] += 1
        return True

    def _one(
        self,
        index: int,
        raw: RawRecord,
        lookup: Callable[[int, str], DeviceRecord | None],
        now: datetime,
        out: BatchResult,
        pending: dict[str, DeviceState],
        decoded: dict[int, HealthReport | Exception],
    ) -> None:
        """Handle one record, advancing its device's state in place (the batch owns each state it looks up:
        freshly decoded, or taken out of the worker's decoded-state cache)."""
        if raw.topic == self._inventory_topic or raw.topic == self._mobile_inventory_topic:
            return self._inventory(index, raw, lookup, now, out)
        if raw.value is None:
            return self._reject(raw, "schema_violation", "empty record (tombstone) on a report topic", now, out)
        if raw.topic == self._control_topic:
            return self._control(index, raw, raw.value, lookup, now, out)
        record_type = header(raw.headers, TYPE_HEADER) if raw.topic == self._health_topic else None
        if record_type == ENROLMENT_TYPE:
            return self._enrol(index, raw, raw.value, lookup, now, out)
        if record_type == INVENTORY_TYPE:
            return self._agent_inventory(index, raw, raw.value, lookup, now, out, pending)
        try:
            report = decoded.pop(index) if index in decoded else decode_report(raw.value)
            if isinstance(report, Exception):
                raise report
        except ContractError as exc:
            return self._reject(raw, exc.kind, exc.reason, now, out)
        if raw.key != report.device_id.encode():
            reason = f"record key {raw.key!r} is not the device id {report.device_id!r}: it would split device state"
            return self._reject(raw, "schema_violation", reason, now, out)
        if report.collected_at > now + self.settings.max_clock_skew:
            reason = f"collected_at {report.collected_at.isoformat()} is ahead of receive time {now.isoformat()}"
            return self._reject(raw, "clock_skew", reason, now, out)
        record = self._current(index, report.device_id, lookup, out)
        if raw.topic == self._health_topic:
            refused = authentication_failure(record, report.device_id, raw.value, raw.headers)
        else:
            refused = mobile_refusal(record, report)
        if refused is not None:
            return self._reject(raw, "unauthenticated", refused, now, out)
        last_at = record.state.last_collected_at if record is not None else None
        last_seq = record.state.last_seq if record is not None else -1
        replayed = last_at is None or report.collected_at <= last_at
        if record is not None and report.seq <= last_seq and replayed:
            kind = "duplicate" if report.seq == last_seq else "stale_replay"
            out.rewrite.add(report.device_id)
            out.last_record_of.setdefault(report.device_id, index)
            if kind == "duplicate" and raw.topic != self._health_topic:
                # every MDM export republishes each phone's latest observation under its seq: expected, not an error
                out.counts["mdm_unchanged"] += 1
                return None
            reason = f"seq {report.seq} already processed (last seq {last_seq})"
            return self._reject(raw, kind, reason, now, out)
        if last_at is not None and report.collected_at < last_at - self.settings.max_backdate:
            reason = (
                f"collected_at {report.collected_at.isoformat()} is more than {self.settings.max_backdate} "
                f"before the device's last event {last_at.isoformat()}"
            )
            return self._reject(raw, "clock_skew", reason, now, out)
        if (
            record is None
            and raw.topic != self._health_topic
            and report.collected_at < now - self.settings.state_retention
        ):
            # a phone the MDM still lists but that has not synced within the retention: the retention pass erased it
            # (or would at once); every export names it again, so it is counted, not dead-lettered
            out.counts["mdm_silent"] += 1
            return None
        oldest = self.settings.max_first_report_age
        if last_at is None and oldest is not None and report.collected_at < now - oldest:
            reason = (
                f"collected_at {report.collected_at.isoformat()} is more than {oldest} before receive time "
                f"{now.isoformat()}, and the device has no earlier report"
            )
            return self._reject(raw, "clock_skew", reason, now, out)
        if report.seq <= last_seq:
            out.counts["seq_restart"] += 1  # newer than anything processed: a fresh spool, not a replay
        elif report.seq > (bound := self._seq_bound(last_seq, report)):
            reason = (
                f"seq {report.seq} is beyond the bound {bound} (last seq {last_seq}, report time in Unix ms + skew)"
            )
            return self._reject(raw, "seq_out_of_bounds", reason, now, out)
        elif report.seq > last_seq + 1 and last_seq >= 0:
            out.counts["seq_gap"] += 1  # a report never seen: dropped by the agent's spool cap, or lost upstream
        if record is None or record.inventory_at is None:
            if self.settings.unknown_devices == "reject":
                return self._reject(raw, "unknown_device", f"no inventory record for {report.device_id}", now, out)
            out.counts["unknown_device"] += 1
        if report.device_id in pending:
            # its previous state in this batch is not scored yet: score it before it changes, so the
            # outcome does not depend on where batch boundaries fall
            self._score(pending, now, out)
        record = record or DeviceRecord(state=DeviceState(device_id=report.device_id))
        report = admitted_disks(record.state, report, out)
        apply_report_in_place(record.state, report)
        if raw.topic != self._health_topic:
            record.mdm_reported_at = report.collected_at
        if self._due(record, report):
            if record.scored_at is None or record.scored_at.date() != report.collected_at.date():
                out.first_of_day.add(report.device_id)
            record.scored_at = report.collected_at
            pending[report.device_id] = record.state
        else:
            out.counts["not_rescored"] += 1
        out.records[report.device_id] = record
        out.last_record_of[report.device_id] = index
        out.reports.append(report)
        out.points.extend(report_points(report, record.asset_facts()))
        out.counts["accepted"] += 1
        return None

    def _inventory(
        self,
        index: int,
        raw: RawRecord,
        lookup: Callable[[int, str], DeviceRecord | None],
        now: datetime,
        out: BatchResult,
    ) -> None:
        """IT's register record, or the MDM bridge's for one of its devices, joined as the device's asset facts.

        Taken before the batch's reports (:meth:`process_batch`): no state of the batch is pending scoring yet.
        """
        mdm = raw.topic == self._mobile_inventory_topic
        if raw.value is None:
            # compaction tombstone: the device left the inventory; keep its history, drop the join
            device_id = (raw.key or b"").decode("utf-8", "replace")
            if mdm and (refused := mdm_inventory_refusal(device_id, None)) is not None:
                return self._reject(raw, "unauthenticated", refused, now, out)
            record = self._current(index, device_id, lookup, out)
            if record is not None:
                out.records[device_id] = record.model_copy(update={"inventory_at": None})
                out.last_record_of[device_id] = index
            out.counts["inventory_tombstone"] += 1
            return
        inventory = self._inventory_record(raw, raw.value, now, out)
        if inventory is None:
            return None
        if mdm and (refused := mdm_inventory_refusal(inventory.device_id, inventory.kind)) is not None:
            return self._reject(raw, "unauthenticated", refused, now, out)
        record = self._current(index, inventory.device_id, lookup, out)
        if mdm and record is None and inventory.updated_at < now - self.settings.state_retention:
            # a phone silent past the retention (its last MDM sync): the retention pass would erase it again, and
            # every export names it again; counted, not stored
            out.counts["mdm_silent"] += 1
            return None
        if self._older(inventory, record.inventory_at if record is not None else None, now):
            return self._reject(raw, "stale_replay", "inventory record older than the one already joined", now, out)
        record = record or DeviceRecord(state=DeviceState(device_id=inventory.device_id))
        apply_inventory_in_place(record.state, inventory)
        record.inventory_at = inventory.updated_at
        out.records[inventory.device_id] = record
        out.last_record_of[inventory.device_id] = index
        out.counts["inventory"] += 1

    def _agent_inventory(
        self,
        index: int,
        raw: RawRecord,
        value: bytes,
        lookup: Callable[[int, str], DeviceRecord | None],
        now: datetime,
        out: BatchResult,
        pending: dict[str, DeviceState],
    ) -> None:
        """An agent's own asset facts, once its MAC proves the device sent them: kind, vendor and model only.

        The agent sends them at start-up and daily with site, department and dates empty: joined like IT's
        register, they would erase its facts and move ``inventory_at`` past IT's next update. So they fill
        only what the register lacks (while the device is not in the register, the agent's newer reading
        replaces its older one), are ordered by ``agent_inventory_at`` and make no device known.
        """
        device_id = (raw.key or b"").decode("utf-8", "replace")
        record = self._current(index, device_id, lookup, out)
        refused = authentication_failure(record, device_id, value, raw.headers)
        if refused is not None:
            return self._reject(raw, "unauthenticated", refused, now, out)
        assert record is not None, "authenticated: the record holds the device's key"
        inventory = self._inventory_record(raw, value, now, out)
        if inventory is None:
            return None
        registered = record.inventory_at is not None
        if not registered and self.settings.unknown_devices == "reject":
            return self._reject(raw, "unknown_device", f"no inventory record for {device_id}", now, out)
        if self._older(inventory, record.agent_inventory_at, now):
            return self._reject(raw, "stale_replay", "agent inventory older than the one already applied", now, out)
        if device_id in pending:
            self._score(pending, now, out)
        state = record.state
        state.kind = state.kind or inventory.kind
        if registered:
            state.vendor, state.model = state.vendor or inventory.vendor, state.model or inventory.model
        else:
            state.vendor, state.model = inventory.vendor or state.vendor, inventory.model or state.model
        record.agent_inventory_at = inventory.updated_at
        out.records[device_id] = record
        out.last_record_of[device_id] = index
        out.counts["inventory"] += 1
        return None

    def _inventory_record(
        self, raw: RawRecord, value: bytes, now: datetime, out: BatchResult
    ) -> DeviceInventory | None:
        """``value`` as an inventory record of the device its key names, not dated ahead; else dead-lettered."""
        try:
            inventory = decode(value, DeviceInventory)
        except ContractError as exc:
            self._reject(raw, exc.kind, exc.reason, now, out)
            return None
        if raw.key != inventory.device_id.encode():
            reason = f"record key {raw.key!r} is not the device id {inventory.device_id!r}"
            self._reject(raw, "schema_violation", reason, now, out)
            return None
        if inventory.updated_at > now + self.settings.max_clock_skew:
            # a record dated in the future would outrank every correct update until that date
            reason = f"updated_at {inventory.updated_at.isoformat()} is ahead of receive time {now.isoformat()}"
            self._reject(raw, "clock_skew", reason, now, out)
            return None
        return inventory

    def _older(self, inventory: DeviceInventory, applied_at: datetime | None, now: datetime) -> bool:
        """Whether ``inventory`` is older than the one applied at ``applied_at``: a replay that must not win.

        A future date stored before future dates were refused does not block correct updates either.
        """
        if applied_at is None or applied_at > now + self.settings.max_clock_skew:
            return False
        return inventory.updated_at < applied_at

    def _seq_bound(self, last_seq: int, report: HealthReport) -> int:
        """The highest acceptable seq: a bounded step, or up to the report's own clock.

        An agent's spool starts counting at the Unix time in ms and counts one per report,
        so a fresh spool (reinstall, corruption) jumps far ahead but never past its clock.
        """
        clock_ms = int(report.collected_at.timestamp() * 1000)
        skew_ms = int(self.settings.max_clock_skew.total_seconds() * 1000)
        return max(last_seq + self.settings.max_seq_jump, clock_ms + skew_ms)

    def _enrol(
        self,
        index: int,
        raw: RawRecord,
        value: bytes,
        lookup: Callable[[int, str], DeviceRecord | None],
        now: datetime,
        out: BatchResult,
    ) -> None:
        """Pin a device's key: first enrolment wins (or the fingerprint IT pinned); a repeat is a no-op."""
        enrolment = self._keyed(raw, value, DeviceEnrolment, now, out)
        if enrolment is None:
            return None
        device_id = enrolment.device_id
        key = bytes.fromhex(enrolment.key)
        if not mac_matches(key, value, header(raw.headers, MAC_HEADER)):
            return self._reject(raw, "unauthenticated", "enrolment not signed with the key it carries", now, out)
        record = self._current(index, device_id, lookup, out)
        if device_id.startswith(MDM_DEVICE_ID_PREFIX) or (record is not None and record.mdm_reported_at is not None):
            # with a key pinned, the MDM bridge's reports for the phone would be refused and the enrolling
            # agent would write its history
            reason = f"{device_id} is reported by the MDM bridge: an agent may not enrol it"
            return self._reject(raw, "enrolment_conflict", reason, now, out)
        offered = key_fingerprint(key)
        if record is not None and record.device_key == enrolment.key:
            out.counts["enrolment_repeat"] += 1  # every agent start re-sends its enrolment
            return None
        if record is not None and record.device_key is not None:
            pinned = key_fingerprint(bytes.fromhex(record.device_key))
            reason = (
                f"{device_id} is enrolled with key {pinned[:16]}, this enrolment offers {offered[:16]}; "
                f"if the device was reinstalled, IT runs `fleetpulse devices re-enrol {device_id} "
                f"--fingerprint <key_fingerprint from fleetpulse-agent identity>`"
            )
            self._remember_offer(index, record, enrolment.key, out)
            return self._reject(raw, "enrolment_conflict", reason, now, out)
        if record is not None and record.pinned_fingerprint not in (None, offered):
            reason = f"IT pinned key {str(record.pinned_fingerprint)[:16]} for {device_id}; this enrolment offers {offered[:16]}"
            return self._reject(raw, "enrolment_conflict", reason, now, out)
        if (record is None or record.inventory_at is None) and self.settings.unknown_devices == "reject":
            return self._reject(raw, "unknown_device", f"no inventory record for {device_id}", now, out)
        record = record or DeviceRecord(state=DeviceState(device_id=device_id))
        record.device_key = enrolment.key
        record.pinned_fingerprint = record.offered_key = None
        record.enrolled_at = min(enrolment.created_at, now)  # never ahead: a date to come would keep it for good
        out.records[device_id] = record
        out.last_record_of[device_id] = index
        out.counts["enrolled"] += 1
        log.info("device enrolled", extra={"fields": {"device_id": device_id, "fingerprint": offered[:16]}})
        return None

    def _remember_offer(self, index: int, record: DeviceRecord, key: str, out: BatchResult) -> None:
        """Keep the last refused key: IT's re-enrolment with its fingerprint pins it without waiting for the
        device to enrol again (the reinstalled agent enrols once per session, usually before IT acts)."""
        record.offered_key = key
        out.records[record.state.device_id] = record
        out.last_record_of[record.state.device_id] = index

    def _control(
        self,
        index: int,
        raw: RawRecord,
        value: bytes,
        lookup: Callable[[int, str], DeviceRecord | None],
        now: datetime,
        out: BatchResult,
    ) -> None:
        """IT's re-enrolment: forget the pinned key so the device's next enrolment (optionally: this key) wins."""
        control = self._keyed(raw, value, DeviceControl, now, out)
        if control is None:
            return None
        device_id = control.device_id
        record = self._current(index, device_id, lookup, out) or DeviceRecord(state=DeviceState(device_id=device_id))
        offered = record.offered_key
        if offered is not None and control.fingerprint == key_fingerprint(bytes.fromhex(offered)):
            record.device_key, record.pinned_fingerprint = offered, None
            out.counts["enrolled"] += 1
        else:
            record.device_key, record.pinned_fingerprint = None, control.fingerprint
        record.offered_key = record.mdm_reported_at = None  # IT hands the device over to its agent
        record.enrolled_at = now
        out.records[device_id] = record
        out.last_record_of[device_id] = index
        out.counts["re_enrol"] += 1
        fields = {"device_id": device_id, "issued_by": control.issued_by, "fingerprint": control.fingerprint}
        log.warning("device re-enrolment opened", extra={"fields": fields})
        return None

    def _due(self, record: DeviceRecord, report: HealthReport) -> bool:
        """Score on change, not on every report: a later day bucket, a health event, or the interval passed.

        Decided on event time only, so live processing and replays score the same reports. Each
        trigger needs event time to move forward past the last scoring (a health event by
        ``event_rescore_gap``): a device sending event after event, or alternating between two days,
        costs one scoring per gap of its clock, which runs at most ``max_clock_skew`` ahead of ours.
        """
        last = record.scored_at
        if last is None:
            return True
        elapsed = report.collected_at - last
        if report.priority is Priority.EVENT and elapsed >= self.settings.event_rescore_gap:
            return True
        if report.collected_at.date() > last.date():
            return True
        return elapsed >= self.settings.rescore_interval

    def _keyed(self, raw: RawRecord, value: bytes, model: type[Keyed], now: datetime, out: BatchResult) -> Keyed | None:
        """``value`` as ``model`` when it decodes and names the device its record key names; else dead-lettered."""
        try:
            record = decode(value, model)
        except ContractError as exc:
            self._reject(raw, exc.kind, exc.reason, now, out)
            return None
        if raw.key != record.device_id.encode():
            self._reject(raw, "schema_violation", f"record key {raw.key!r} is not the device id", now, out)
            return None
        return record

    def _reject(self, raw: RawRecord, kind: ErrorKind, reason: str, now: datetime, out: BatchResult) -> None:
        out.dead_letters.append(dead_letter(raw, kind, reason, now))
        out.counts[f"dead_letter.{kind}"] += 1
        return None

    def _diagnosed(self, scores: Sequence[RiskScore]) -> dict[str, set[Component]]:
        """Per device, the components whose champion score is at or above their raise threshold."""
        out: dict[str, set[Component]] = {}
        for score in scores:
            if score.role is ScorerRole.CHAMPION and self.policy.at_raise_level(score):
                out.setdefault(score.device_id, set()).add(score.component)
        return out

    def _score(self, pending: dict[str, DeviceState], now: datetime, out: BatchResult) -> None:
        """One vectorised scoring call per generation, then the alert policy per champion score.

        A scorer that raises costs only its own scores (:meth:`ScorerSet.score`), counted per
        scorer in ``scorer_errors``; the other scorers' scores are published and alerted on.
        """
        if not pending:
            return
        by_device = dict(pending)
        states = list(by_device.values())
        pending.clear()
        first_of_day = out.first_of_day & by_device.keys()
        out.first_of_day -= first_of_day
        with shared_features():  # the feature log reads the features the scorers computed
            scores = self.scorers.score(states, now, out.scorer_errors)
            out.scores.extend(scores)
            out.features.extend(feature_records(scores, by_device, first_of_day, self.policy.at_raise_level, now))
        diagnosed = self._diagnosed(scores)
        points, alerts, records = out.points, out.alerts, out.records
        # each scored record gets one fresh policies dict (never the decoded one: it may be shared), then
        # every champion score of the generation updates it in place
        fresh: dict[str, dict[str, PolicyState]] = {}
        none_diagnosed: set[Component] = set()
        for score in scores:
            device_id = score.device_id
            record = records[device_id]
            facts = record.asset_facts()
            points.append(score_point(score, facts))
            if score.role is not ScorerRole.CHAMPION:
                continue
            policies = fresh.get(device_id)
            if policies is None:
                policies = fresh[device_id] = dict(record.policies)
                record.policies = policies
            key = policy_key(score)
            explained = explained_anomaly(score, diagnosed.get(device_id, none_diagnosed))
            policies[key], alert = step(self.policy, policies.get(key), score, explained=explained)
            if alert is not None:
                alerts.append(alert)
                points.append(alert_point(alert, facts))
