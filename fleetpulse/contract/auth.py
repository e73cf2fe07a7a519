"""Device authentication on the wire: which headers prove that a record comes from the device it names.

Every record an agent puts on the health topic carries ``fleetpulse-mac``: HMAC-SHA256 over the
record's value bytes exactly as sent, under the device's own 32-byte key (created at install,
never shared between devices). The value itself is an unchanged v1 record, so the signed bytes
need no canonicalisation and consumers that ignore headers still read it.

The key reaches the stream worker in a :class:`~fleetpulse.contract.v1.DeviceEnrolment` record
(header ``fleetpulse-type: enrolment``) on the same topic and partition as the device's reports,
so it is always read before them. An agent's own inventory record (vendor, model) travels there
too (``fleetpulse-type: inventory``), MACed like a report: the agents' Kafka principal may write
the health topic only. HMAC rather than a signature: verifying costs ~1-2 µs per
report against ~100-300 µs for Ed25519 (``benchmarks/stream_profile.py``), and the worker that
verifies is the only reader of the topic and of the state that holds the keys.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping

from fleetpulse.contract.v1 import MDM_DEVICE_ID_PREFIX, DeviceKind

MAC_HEADER = "fleetpulse-mac"
TYPE_HEADER = "fleetpulse-type"
ENROLMENT_TYPE = b"enrolment"
INVENTORY_TYPE = b"inventory"
KEY_BYTES = 32

Headers = Iterable[tuple[str, bytes]] | Mapping[str, bytes]

MDM_KINDS = frozenset({DeviceKind.PHONE, DeviceKind.TABLET, DeviceKind.LAPTOP})
"""What the MDM bridge reports: phones and tablets, and laptops from Intune's battery-health export."""


def record_mac(key: bytes, value: bytes) -> bytes:
    return hmac.digest(key, value, "sha256")


def mac_matches(key: bytes, value: bytes, mac: bytes | None) -> bool:
    """Constant-time check; a missing MAC never matches."""
    return mac is not None and hmac.compare_digest(record_mac(key, value), mac)


def key_fingerprint(key: bytes) -> str:
    """What IT compares and pins (``fleetpulse devices re-enrol --fingerprint``): never the key itself."""
    return hashlib.sha256(b"fleetpulse-device-key:" + key).hexdigest()


def report_headers(key: bytes, value: bytes) -> list[tuple[str, bytes]]:
    return [(MAC_HEADER, record_mac(key, value))]


def enrolment_headers(key: bytes, value: bytes) -> list[tuple[str, bytes]]:
    """An enrolment is MACed with the key it carries: proof that the sender holds that key."""
    return [(TYPE_HEADER, ENROLMENT_TYPE), (MAC_HEADER, record_mac(key, value))]


def inventory_headers(key: bytes, value: bytes) -> list[tuple[str, bytes]]:
    return [(TYPE_HEADER, INVENTORY_TYPE), (MAC_HEADER, record_mac(key, value))]


def mdm_inventory_refusal(device_id: str, kind: DeviceKind | None) -> str | None:
    """Why a record on the MDM bridge's inventory topic is not the bridge's to write (None: it is).

    The topic's ACL proves only that the MDM principal wrote it, and nothing on it is MACed: it may name
    only the bridge's own pseudonyms (``MDM_DEVICE_ID_PREFIX``) of a kind the bridge reports, so a leaked
    bridge certificate cannot move a PC of IT's register to another site or change its warranty.
    ``kind`` is None for a tombstone.
    """
    if not device_id.startswith(MDM_DEVICE_ID_PREFIX):
        return (
            f"device {device_id} is not the MDM bridge's (its pseudonyms start with {MDM_DEVICE_ID_PREFIX!r}): "
            "its asset facts come from IT's register only"
        )
    if kind is not None and kind not in MDM_KINDS:
        return f"kind {kind.value!r} on the MDM inventory topic, which carries phones, tablets and laptops only"
    return None


def header(headers: Headers | None, name: str) -> bytes | None:
    """The last value of ``name`` (Kafka allows repeats; the last one wins, as for JSON keys)."""
    if not headers:
        return None
    items = headers.items() if isinstance(headers, Mapping) else headers
    found = None
    for key, value in items:
        if key == name:
            found = value
    return found
