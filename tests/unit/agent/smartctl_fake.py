"""A stand-in smartctl that answers from real recorded outputs and logs every call it gets."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from tests.harness import SHARED_DATA, unavailable

FAKE_SMARTCTL = """#!/bin/sh
# records every call, answers from recorded real outputs
echo "$@" >> "{log}"
case "$*" in
  *--scan-open*) echo '{{"devices": [{{"name": "/dev/sda", "type": "sat"}}, {{"name": "/dev/nvme0", "type": "nvme"}}, {{"name": "/dev/sdb", "type": "sat"}}]}}' ;;
  */dev/sda) cat "{sda}" ;;
  */dev/nvme0) cat "{nvme}" ;;
  */dev/sdb) echo '{{"smartctl": {{"exit_status": 3}}}}'; exit 3 ;;
esac
"""
"""/dev/sda: a real ATA disk failing its health check; /dev/nvme0: a real NVMe drive; /dev/sdb: in standby."""


def make_fake_smartctl(tmp_path: Path) -> tuple[Path, Path]:
    """(the script, the log of its calls); skips the test when the real outputs are absent."""
    models = SHARED_DATA / "smartctl" / "scrutiny_testdata" / "models"
    if not models.is_dir():
        unavailable(f"smartctl corpus not found at {models}")
    log = tmp_path / "calls.log"
    script = tmp_path / "smartctl"
    script.write_text(
        FAKE_SMARTCTL.format(log=log, sda=models / "smart-ata-failed-scrutiny.json", nvme=models / "smart-nvme.json")
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script, log


FAILING_DISK = {
    "device": {"name": "/dev/sda", "protocol": "ATA"},
    "model_name": "Failing",
    "smart_status": {"passed": False},
}
"""What matters most in a report: a disk failing its SMART health check."""


def scripted_smartctl(tmp_path: Path, scanned: list[str], outputs: dict[str, str]) -> Path:
    """A smartctl whose ``--scan-open`` lists ``scanned`` (any names, JSON-escaped) and that prints ``outputs[name]``
    for a device (plain names only: they are shell patterns); any other device fails with exit status 2."""
    (tmp_path / "scan.json").write_text(json.dumps({"devices": [{"name": n, "type": "sat"} for n in scanned]}))
    cases = ""
    for n, (name, text) in enumerate(outputs.items()):
        (tmp_path / f"out{n}.json").write_text(text)
        cases += f'  *{name}) cat "{tmp_path}/out{n}.json" ;;\n'
    script = tmp_path / "smartctl"
    script.write_text(
        f'#!/bin/sh\ncase "$*" in\n  *--scan-open*) cat "{tmp_path}/scan.json" ;;\n{cases}'
        "  *) echo '{}'; exit 2 ;;\nesac\n"
    )
    script.chmod(0o755)
    return script
