"""The registry floor: an old signed index put back is refused even by a worker that restarted."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import pytest

from fleetpulse.compat import UTC
from fleetpulse.contract import ScorerRole, ServedRegistry, decode, encode
from fleetpulse.models.index import REGISTRY_FILE, read_registry
from fleetpulse.models.registry import load_scorers, register_artifact, write_registry
from fleetpulse.models.settings import ModelSettings
from fleetpulse.streams.reload import accept
from fleetpulse.streams.serving_floor import RegistryFloor, floor_of, registry_id
from tests.unit.test_models_artifact import artifact_dir

__all__ = ["artifact_dir"]  # fixture

KEY = "s" * 40
ARTIFACT = "disk-gbm-test"
NOW = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
def demoted(artifact_dir: Path, tmp_path: Path) -> tuple[Path, bytes]:
    """A signed registry whose champion IT demoted (generation 2), and the index from before (generation 1)."""
    root = tmp_path / "registry"
    shutil.copytree(artifact_dir, root / ARTIFACT)
    register_artifact(root, "disk", ARTIFACT, ScorerRole.CHAMPION, key=KEY.encode())
    old_index = (root / REGISTRY_FILE).read_bytes()
    registry = read_registry(root, KEY.encode())
    registry.champions.clear()
    write_registry(root, registry, KEY.encode())
    return root, old_index


def test_serving_records_the_generation_once_and_raises_the_floor(demoted: tuple[Path, bytes]) -> None:
    root, _ = demoted
    floor = RegistryFloor(registry_id(KEY.encode()), root)
    scorers = load_scorers(ModelSettings(registry_dir=root, signing_key=KEY))

    record = floor.record(scorers, "worker-1", NOW)

    assert record is not None
    key, value = record
    served = decode(value, ServedRegistry)
    assert (served.generation, served.worker, floor.floor) == (2, "worker-1", 2)
    assert key == f"{floor.registry}:{2:015d}".encode()
    assert KEY not in (value + key).decode(), "the topic names the registry, never its key"
    assert floor.record(scorers, "worker-1", NOW) is None  # not again: the floor is already there


def test_attack_an_old_signed_index_put_back_before_a_restart_is_not_served(demoted: tuple[Path, bytes]) -> None:
    """The running worker's own check does not survive its restart; the floor read from the topic does."""
    root, old_index = demoted
    settings = ModelSettings(registry_dir=root, signing_key=KEY)
    first = RegistryFloor(registry_id(KEY.encode()), root)
    served = first.record(load_scorers(settings), "worker-1", NOW)
    assert served is not None
    (root / REGISTRY_FILE).write_bytes(old_index)

    restarted = RegistryFloor(first.registry, root, floor=floor_of([served[1]], first.registry))
    loaded = load_scorers(settings)
    assert (loaded.refused, loaded.champions[0].name) == ([], "disk-gbm")  # it verifies: signed by the key
    held = restarted.hold(loaded)

    assert held.champions[0].name == "disk-rule"
    assert "generation 1 is older than generation 2" in held.refused[0]
    assert restarted.record(held, "worker-1", NOW) is None  # never lowers the floor
    assert not accept(held, loaded, restarted.floor)  # and a reload of the same old index is refused too


def test_the_floor_is_per_registry_and_skips_records_it_cannot_read() -> None:
    ours, theirs = registry_id(b"our key"), registry_id(b"another registry's key")
    values = [
        encode(ServedRegistry(registry=ours, generation=3, index_sha256="a" * 64, worker="w", served_at=NOW)),
        encode(ServedRegistry(registry=theirs, generation=9, index_sha256="b" * 64, worker="w", served_at=NOW)),
        b'{"registry": "not hex", "generation": 99}',
        json.dumps({"schema_version": 1, "registry": ours, "generation": -1}).encode(),
        None,  # a tombstone
    ]
    assert floor_of(values, ours) == 3
    assert floor_of(values, registry_id(b"new key")) == 0  # a rebuilt registry signs with a new key
