"""The README's main job, `fleetpulse demo`, on a small fleet with its own Kafka and TSDB instances."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_runs_end_to_end_and_raises_tickets(tmp_path: Path) -> None:
    kafka_port, vm_port = free_port(), free_port()
    env = dict(os.environ)
    env.update(
        FLEETPULSE_LOCAL_DIR=str(tmp_path / "stack"),
        FLEETPULSE_KAFKA_PORT=str(kafka_port),
        FLEETPULSE_KAFKA_CONTROLLER_PORT=str(free_port()),
        FLEETPULSE_VM_PORT=str(vm_port),
        FLEETPULSE_KAFKA_HEAP="512m",
        FLEETPULSE_KAFKA__BOOTSTRAP_SERVERS=f"127.0.0.1:{kafka_port}",
        FLEETPULSE_STREAMS__TSDB__KIND="influxdb2",
        FLEETPULSE_STREAMS__TSDB__URL=f"http://127.0.0.1:{vm_port}",
        COLUMNS="160",
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fleetpulse",
            "demo",
            "--devices",
            "300",
            "--days",
            "60",
            "--serve",
            "0",
            "--port",
            str(free_port()),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "Tickets raised vs ground truth" in out
    published = re.search(r"([\d,]+) reports from ([\d,]+) devices published and processed", out)
    assert published is not None
    assert published.group(2) == "300"
    tickets = re.search(r"(\d+) open tickets", out)
    assert tickets is not None
    assert int(tickets.group(1)) > 0
    assert "kafka stopped" in proc.stderr  # the demo stops what it started
    assert '"level": "warning"' not in out + proc.stderr, "a newcomer's first run shows no warnings"
    processed = re.search(r"processing.*?([\d,]+)/([\d,]+) reports", out)
    assert processed is not None, out[-3000:]
    counts = {int(processed.group(1)), int(processed.group(2)), int(published.group(1).replace(",", ""))}
    assert len(counts) == 1, "the progress bar counts what the summary counts"
    for column in ("recall pred.:", "no failure:", "median lead d:"):
        assert column in out, "every column is explained under the table"
    run_dir = Path(re.search(r"files in (\S+)", out.replace("\n", "")).group(1))  # type: ignore[union-attr]
    worker_log = (run_dir / "worker.log").read_text()
    assert "producer buffer full" not in worker_log
    assert "GroupCoordinatorNotAvailableError" not in worker_log
    print(out)  # the closing note shows the demo output: pytest -s prints it
