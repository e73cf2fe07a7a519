"""A crash at any point of ``fleetpulse models migrate`` leaves every artifact matching the index.

Migrate rewrites older artifacts' metadata (recording their predictions) and the index's digests of it. It
used to replace each metadata file, then the index: a crash in between left an artifact whose metadata no
longer matched its index digest, refused until restored or retrained. Here a write or rename raises at each
point in turn; afterwards every registered artifact loads as the old one or the new one, and migrate run
again completes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fleetpulse.cli import app as cli_app
from fleetpulse.contract import Component, ScorerRole
from fleetpulse.models.artifact import load_artifact
from fleetpulse.models.index import (
    METADATA_FILE,
    Registry,
    artifact_digests,
    champion_thresholds,
    read_registry,
    staged,
)
from fleetpulse.models.registry import load_scorers, migrate_registry, register_artifact, write_registry
from fleetpulse.models.settings import ModelSettings
from tests.unit.test_models_artifact import artifact_dir
from tests.unit.test_models_registry_integrity import KEY, registry_dir

__all__ = ["artifact_dir", "registry_dir"]  # fixtures

CHAMPION, CHALLENGER = "disk-gbm-test", "disk-gbm-older"


class Crash(Exception):
    """The process ends here: nothing after this write or rename happens."""


def unrecorded_registry(artifact_dir: Path, root: Path) -> dict[str, dict[str, Any]]:
    """Two artifacts written before artifacts recorded predictions, in a signed index; their metadata."""
    metas = {}
    for artifact_id in (CHAMPION, CHALLENGER):
        shutil.copytree(artifact_dir, root / artifact_id)
        path = root / artifact_id / METADATA_FILE
        meta = json.loads(path.read_text())
        del meta["predictions"]
        path.write_text(json.dumps(meta))
        metas[artifact_id] = meta
    digests = {artifact_id: artifact_digests(root / artifact_id) for artifact_id in metas}
    registry = Registry(champions={"disk": CHAMPION}, challengers={"disk": [CHALLENGER]}, artifacts=digests)
    write_registry(root, registry, KEY.encode())
    return metas


def crash_at(monkeypatch: pytest.MonkeyPatch, point: int) -> list[str]:
    """Make the ``point``-th file write or rename (from 1) raise :class:`Crash`; the operations met so far."""
    met: list[str] = []

    def counted(name: str, real: Callable[..., Any], writes: Callable[..., bool]) -> Callable[..., Any]:
        def operation(self: Path, *args: Any, **kwargs: Any) -> Any:
            if writes(*args, **kwargs):
                met.append(f"{name} {self.name}")
                if len(met) == point:
                    raise Crash(met[-1])
            return real(self, *args, **kwargs)

        return operation

    def opens_for_writing(mode: str = "r", *args: Any, **kwargs: Any) -> bool:
        return any(flag in mode for flag in "wax+")

    for name in ("replace", "rename", "unlink", "write_bytes", "write_text"):
        monkeypatch.setattr(Path, name, counted(name, getattr(Path, name), lambda *a, **k: True))
    monkeypatch.setattr(Path, "open", counted("open", Path.open, opens_for_writing))
    return met


@pytest.mark.slow  # migrate and a load of two artifacts per point
def test_a_crash_at_any_point_of_migrate_leaves_the_old_or_the_new_artifact_and_migrate_completes_after(
    artifact_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEETPULSE_MODELS__SIGNING_KEY", KEY)
    point, crashed = 0, []
    while True:
        point += 1
        root = tmp_path / f"crash-{point}"
        old = unrecorded_registry(artifact_dir, root)
        with monkeypatch.context() as patch:
            met = crash_at(patch, point)
            try:
                migrate_registry(root, KEY.encode())
            except Crash:
                crashed.append(met[-1])
            else:
                break

        registry = read_registry(root, KEY.encode())  # the old index or the new one, never a torn one
        for artifact_id, before in old.items():
            _, meta = load_artifact(root / artifact_id, registry.digests(artifact_id))  # matches the index
            recorded = meta.pop("predictions", None)
            assert meta == before, (crashed[-1], artifact_id)
            assert recorded is None or set(recorded["horizons"]) == {"7", "30"}, crashed[-1]

        rerun = CliRunner().invoke(cli_app, ["models", "migrate", "--registry-dir", str(root)])
        assert rerun.exit_code == 0, (crashed[-1], rerun.output)
        scorers = load_scorers(ModelSettings(registry_dir=root, signing_key=KEY))
        assert scorers.refused == [], crashed[-1]
        assert [s.version for s in scorers.champions if s.name == "disk-gbm"] == ["test-1"]
        assert [s.version for s in scorers.challengers if s.name == "disk-gbm"] == ["test-1"]
        leftovers = sorted(p.name for p in root.rglob("*") if p.suffix in (".staged", ".tmp"))
        assert leftovers == [], crashed[-1]

    # staging both metadata files, committing the index, renaming both into place: each point crashed once
    assert len(crashed) >= 6, crashed
    assert any("registry.json" in point for point in crashed), crashed


def with_served_horizons(registry_dir: Path) -> Path:
    """The fixture's champion, its metadata naming its horizons' models as trained ones do (the index's
    threshold reader looks there), registered again; its metadata file."""
    meta_path = registry_dir / CHAMPION / METADATA_FILE
    meta = json.loads(meta_path.read_text())
    meta["models"] = {"7": {}, "30": {}}
    meta_path.write_text(json.dumps(meta))
    register_artifact(registry_dir, "disk", CHAMPION, ScorerRole.CHAMPION)
    return meta_path


def test_attack_a_staged_file_the_index_does_not_name_is_never_read(registry_dir: Path) -> None:
    """Whoever can write the folder gains nothing from a staged file: it stands in only for a digest the index
    names, and migrate removes it."""
    meta_path = with_served_horizons(registry_dir)
    meta = json.loads(meta_path.read_text())
    meta["operating_points"]["30"]["cap 1%"]["threshold"] = 0.99
    staged(meta_path).write_text(json.dumps(meta))
    settings = ModelSettings(registry_dir=registry_dir)
    assert champion_thresholds(settings)[Component.DISK] == (0.3, 0.15)
    assert load_scorers(settings).alert_thresholds("cap 1%")[Component.DISK] == (0.3, 0.15)

    meta_path.write_text(meta_path.read_text() + " ")  # the named file changed too: refused, not replaced
    assert "does not match the registry index" in load_scorers(settings).refused[0]
    assert champion_thresholds(settings) == {}


def test_a_staged_file_the_index_names_stands_in_until_migrate_renames_it(registry_dir: Path) -> None:
    """As a crash right after migrate committed the index leaves it: the new metadata beside the old."""
    meta_path = with_served_horizons(registry_dir)
    meta = json.loads(meta_path.read_text())
    meta["operating_points"]["30"]["cap 1%"]["threshold"] = 0.4
    staged(meta_path).write_text(json.dumps(meta))
    registry = read_registry(registry_dir)
    registry.artifacts[CHAMPION][METADATA_FILE] = hashlib.sha256(staged(meta_path).read_bytes()).hexdigest()
    write_registry(registry_dir, registry)
    settings = ModelSettings(registry_dir=registry_dir)
    assert champion_thresholds(settings)[Component.DISK] == (0.4, 0.2)
    assert load_scorers(settings).alert_thresholds("cap 1%")[Component.DISK] == (0.4, 0.2)

    migrate_registry(registry_dir)
    assert not staged(meta_path).exists()
    assert json.loads(meta_path.read_text()) == meta
    assert load_scorers(settings).alert_thresholds("cap 1%")[Component.DISK] == (0.4, 0.2)
