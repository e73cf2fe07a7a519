"""The registry floor through the real Kafka and real worker processes.

The attacker can write the registry folder and kept a copy of the signed index from before IT
demoted the disk champion. A running worker already refuses that copy; here the copy is put back
while no worker runs, so only what the serving topic remembers stands in the way.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fleetpulse.config import KafkaSettings
from fleetpulse.contract import ScorerRole, ServedRegistry, Topics, decode
from fleetpulse.models.index import REGISTRY_FILE, read_registry
from fleetpulse.models.registry import register_artifact, write_registry
from fleetpulse.streams.process import WorkerProcess
from tests.integration.stream_support import Worker, create_topics, read_topic

pytestmark = pytest.mark.integration

KEY = "registry-signing-key-of-the-tests-0123456789"
SHIPPED = Path(__file__).resolve().parents[2] / "models" / "shipped"


def signed_worker(kafka: KafkaSettings, data_dir: Path, registry: Path) -> WorkerProcess:
    worker = Worker(kafka, data_dir, store="memory", registry_poll_s=0)
    worker.extra_env.update({"FLEETPULSE_MODELS__REGISTRY_DIR": str(registry), "FLEETPULSE_MODELS__SIGNING_KEY": KEY})
    return worker


def served_models(worker: WorkerProcess) -> set[tuple[str, str]]:
    """(role, name) of the disk models the worker's metrics say it serves."""
    served = set()
    for line in worker.metrics().splitlines():
        if line.startswith("fleetpulse_stream_model_info{") and 'component="disk"' in line:
            labels = dict(part.split("=", 1) for part in line[line.index("{") + 1 : line.index("}")].split(","))
            served.add((labels["role"].strip('"'), labels["model_name"].strip('"')))
    return served


def test_an_old_signed_index_put_back_while_the_workers_are_down_is_not_served(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    create_topics(kafka_settings)
    registry = tmp_path / "registry"
    champion = next(p.name for p in SHIPPED.iterdir() if p.is_dir())
    shutil.copytree(SHIPPED / champion, registry / champion)
    register_artifact(registry, "disk", champion, ScorerRole.CHAMPION, key=KEY.encode())
    kept_by_the_attacker = (registry / REGISTRY_FILE).read_bytes()
    demoted = read_registry(registry, KEY.encode())
    demoted.champions.clear()
    write_registry(registry, demoted, KEY.encode())  # IT demotes the champion: generation 2

    first = signed_worker(kafka_settings, tmp_path / "w1", registry).start()
    try:
        first.wait_ready(timeout=180)
        assert served_models(first) == {("champion", "disk-rule")}
    finally:
        first.stop()
    topics = Topics(prefix=kafka_settings.topic_prefix)
    recorded = [decode(m.value, ServedRegistry) for m in read_topic(kafka_settings, topics.serving)]
    assert [r.generation for r in recorded] == [2]

    (registry / REGISTRY_FILE).write_bytes(kept_by_the_attacker)  # generation 1, validly signed
    second = signed_worker(kafka_settings, tmp_path / "w2", registry).start()
    try:
        second.wait_ready(timeout=180)
        assert served_models(second) == {("champion", "disk-rule")}  # not the demoted disk-gbm champion
    finally:
        second.stop()
    log = [json.loads(line) for line in second.log_path.read_text().splitlines() if line.startswith("{")]
    assert any(entry.get("msg") == "registry index below the served floor" for entry in log)
    assert [
        r.generation for r in (decode(m.value, ServedRegistry) for m in read_topic(kafka_settings, topics.serving))
    ] == [2]
