"""Pseudonymous device identity: nobody downstream of the agent learns which machine is which.

The device id is ``HMAC-SHA256(fleet secret, machine id)``; disk serials travel as HMACs under the
same secret. Only IT, holding the secret and the asset register, links ids back to machines: the
``fleetpulse-agent identity`` command prints this machine's register entry (see :func:`mapping_entry`).

Authenticity is separate from the pseudonym: every installation creates its own random report key
(:func:`load_or_create_device_key`, owner-only file next to the spool), so a PC that knows the fleet
secret and the shared Kafka credential still cannot speak for another device.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import platform
import secrets
import socket
import stat
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from fleetpulse.agents.settings import IdentitySettings
from fleetpulse.agents.trust import UntrustedPathError, check_trusted
from fleetpulse.compat import UTC
from fleetpulse.contract import DeviceEnrolment, Platform, encode, report_key
from fleetpulse.contract.auth import KEY_BYTES, enrolment_headers, inventory_headers, report_headers

DEVICE_KEY_FILE = "device.key"

log = logging.getLogger(__name__)

LINUX_MACHINE_ID_FILES = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))
DMI = Path("/sys/class/dmi/id")


class IdentityError(RuntimeError):
    pass


def current_platform() -> Platform:
    if sys.platform == "win32":
        return Platform.WINDOWS
    if sys.platform == "darwin":
        return Platform.MACOS
    return Platform.LINUX


def read_machine_id(override: Path | None = None) -> str:
    """The OS's stable per-installation id (never sent anywhere; only its HMAC is)."""
    if override is not None:
        return override.read_text().strip()
    if sys.platform == "win32":
        import winreg  # only on Windows

        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, r"SOFTWARE\Microsoft\Cryptography") as key:  # type: ignore[attr-defined,unused-ignore]
            return str(winreg.QueryValueEx(key, "MachineGuid")[0])  # type: ignore[attr-defined,unused-ignore]
    if sys.platform == "darwin":
        out = subprocess.run(
            ["ioreg", "-rd1", "-c", "IOPlatformExpertDevice"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
        for line in out.splitlines():
            if "IOPlatformUUID" in line:
                return line.split("=", 1)[1].strip().strip('"')
        raise IdentityError("IOPlatformUUID not found in ioreg output")
    for path in LINUX_MACHINE_ID_FILES:
        try:
            value = path.read_text().strip()
        except OSError:
            continue
        if value:
            return value
    raise IdentityError("no machine id: /etc/machine-id and /var/lib/dbus/machine-id are missing or empty")


def _hmac(secret: bytes, purpose: str, value: str) -> str:
    return hmac.new(secret, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Identity:
    device_id: str
    secret: bytes

    def hash_serial(self, serial: str) -> str:
        """Disk and battery serials leave the machine only as this keyed hash."""
        return _hmac(self.secret, "serial", serial.strip())[:32]


def build_identity(settings: IdentitySettings) -> Identity:
    secret = settings.secret.get_secret_value().encode() if settings.secret is not None else b""
    if not secret:
        log.warning("no identity.secret configured: device ids are unkeyed hashes of the machine id")
    if settings.device_id:
        return Identity(device_id=settings.device_id, secret=secret)
    machine_id = read_machine_id(settings.machine_id_file)
    return Identity(device_id="d" + _hmac(secret, "device", machine_id)[:40], secret=secret)


def _dmi(name: str) -> str | None:
    try:
        value = (DMI / name).read_text().strip()
    except OSError:
        return None
    return value or None


def mapping_entry(identity: Identity, settings: IdentitySettings) -> dict[str, str | None]:
    """This machine's line for IT's asset register: the pseudonym next to what identifies the hardware.

    Printed locally for IT on request; never sent to Kafka.
    """
    try:
        machine_id: str | None = read_machine_id(settings.machine_id_file)
    except (OSError, IdentityError, subprocess.SubprocessError):
        machine_id = None
    return {
        "device_id": identity.device_id,
        "hostname": socket.gethostname(),
        "machine_id": machine_id,
        "platform": current_platform().value,
        "os": platform.platform(),
        "vendor": _dmi("sys_vendor"),
        "model": _dmi("product_name"),
        "system_serial": _dmi("product_serial"),
    }


def load_or_create_device_key(directory: Path, *, strict: bool = False) -> bytes:
    """This installation's report key: created once (owner-only), then read; never logged or printed.

    A key file that others can read or write is refused: whoever reads it can speak for this
    device, whoever writes it can lock the device out. ``strict`` (the service): the folder and the
    key must also be owned by root or the agent and writable by nobody else, as its config must
    (:func:`~fleetpulse.agents.trust.check_trusted`): a key planted in a folder another user made
    before the agent started would be that user's.
    """
    path = directory / DEVICE_KEY_FILE
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if strict:
        _check_trusted(directory, "spool folder")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_device_key(path, strict)
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_hex(KEY_BYTES) + "\n")
        file.flush()
        os.fsync(file.fileno())
    log.info("device key created", extra={"fields": {"path": str(path)}})
    return _read_device_key(path, strict)


def _check_trusted(path: Path, what: str) -> None:
    try:
        check_trusted(Path(os.path.abspath(path)), what)
    except UntrustedPathError as exc:
        raise IdentityError(str(exc)) from None


def _read_device_key(path: Path, strict: bool) -> bytes:
    if strict:
        _check_trusted(path, "device key")
    if sys.platform != "win32":  # Windows: the installer restricts the ProgramData folder's ACL
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise IdentityError(f"{path} is accessible to other users (mode {stat.filemode(mode)}); chmod 600 it")
    text = path.read_text().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise IdentityError(f"{path} does not hold a {KEY_BYTES}-byte hex key; delete it and re-enrol the device")
    return key


@dataclass(frozen=True)
class RecordSigner:
    """Kafka headers that authenticate this device's records (see ``fleetpulse.contract.auth``)."""

    device_id: str
    key: bytes
    agent_version: str

    def enrolment(self) -> tuple[bytes, bytes]:
        record = DeviceEnrolment(
            device_id=self.device_id,
            key=self.key.hex(),
            created_at=datetime.now(UTC),
            agent_version=self.agent_version[:128],
        )
        return report_key(self.device_id), encode(record)

    def headers(self, stream: str, value: bytes) -> list[tuple[str, bytes]]:
        if stream == "enrolment":
            return enrolment_headers(self.key, value)
        if stream == "inventory":
            return inventory_headers(self.key, value)
        return report_headers(self.key, value)
