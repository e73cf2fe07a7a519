"""Attacks on the model registry on disk, through the loading path the stream worker uses.

Before the registry held digests, the SHA-256 lived inside the ``metadata.json`` it was to
protect: raising the stored disk threshold to 1.0 silently turned disk alerts off, and a
registry entry ``../outside-artifact`` was loaded from outside the registry folder.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from fleetpulse.alerts.policy import AlertPolicy
from fleetpulse.cli import app as cli_app
from fleetpulse.contract import Component, ScorerRole
from fleetpulse.models import index as registry_module
from fleetpulse.models.artifact import TrainedDiskScorer, load_artifact, recorded_predictions, save_artifact
from fleetpulse.models.features import DISK_FEATURES
from fleetpulse.models.index import (
    METADATA_FILE,
    MODEL_FILE,
    REGISTRY_FILE,
    ArtifactError,
    Registry,
    artifact_digests,
    read_registry,
)
from fleetpulse.models.registry import ScorerSet, load_scorers, register_artifact, write_registry
from fleetpulse.models.settings import ModelSettings
from fleetpulse.settings import ServerSettings
from fleetpulse.streams import app as stream_app
from fleetpulse.streams.app import create_app, serving_policy
from fleetpulse.streams.reload import RELOAD_ATTEMPTS, RegistryWatch
from tests.unit.test_models_artifact import artifact_dir

__all__ = ["artifact_dir"]  # fixture

KEY = "k" * 40
ARTIFACT = "disk-gbm-test"
RULE_DISK_RAISE = AlertPolicy().thresholds(Component.DISK).raise_threshold


@pytest.fixture
def registry_dir(artifact_dir: Path, tmp_path: Path) -> Path:
    """A registry on disk with the test artifact as disk champion; its cap-1% threshold is 0.3."""
    root = tmp_path / "registry"
    shutil.copytree(artifact_dir, root / ARTIFACT)
    meta_path = root / ARTIFACT / METADATA_FILE
    meta = json.loads(meta_path.read_text())
    meta["operating_points"]["30"]["cap 1%"]["threshold"] = 0.3
    meta_path.write_text(json.dumps(meta))
    register_artifact(root, "disk", ARTIFACT, ScorerRole.CHAMPION)
    return root


def worker_policy(registry: Path, key: str | None = None) -> tuple[list[str], float, list[str]]:
    """(champions, disk raise threshold, refusals) as the stream worker builds them at start-up."""
    settings = ServerSettings(models=ModelSettings(registry_dir=registry, signing_key=key))
    app = create_app(settings)
    processor = app.fleetpulse.processor  # type: ignore[attr-defined]
    champions = [s.name for s in processor.scorers.champions]
    return champions, processor.policy.thresholds(Component.DISK).raise_threshold, processor.scorers.refused


def test_intact_registry_serves_the_champion_and_its_threshold(registry_dir: Path) -> None:
    champions, threshold, refused = worker_policy(registry_dir)
    assert champions[0] == "disk-gbm"
    assert threshold == 0.3
    assert refused == []


def test_edited_threshold_is_refused_and_the_worker_serves_the_disk_rule(
    registry_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    meta_path = registry_dir / ARTIFACT / METADATA_FILE
    meta = json.loads(meta_path.read_text())
    meta["operating_points"]["30"]["cap 1%"]["threshold"] = 1.0  # disk alerts off
    meta_path.write_text(json.dumps(meta))

    with caplog.at_level(logging.ERROR, logger="fleetpulse.models.registry"):
        champions, threshold, refused = worker_policy(registry_dir)
    assert champions[0] == "disk-rule"
    assert threshold == RULE_DISK_RAISE != 1.0
    assert "metadata.json: SHA-256" in refused[0]
    assert "does not match the registry index" in refused[0]
    assert any(r.getMessage() == "model artifact refused: serving without it" for r in caplog.records)


def test_swapped_model_file_is_refused(registry_dir: Path, tmp_path: Path, artifact_dir: Path) -> None:
    # another well-formed, trusted-types dump: its horizons swapped, so it scores differently
    payload, meta = load_artifact(artifact_dir, artifact_digests(artifact_dir))
    payload["horizon_30"], payload["horizon_7"] = payload["horizon_7"], payload["horizon_30"]
    save_artifact(tmp_path / "other", payload, meta)
    shutil.copy(tmp_path / "other" / MODEL_FILE, registry_dir / ARTIFACT / MODEL_FILE)

    scorers = load_scorers(ModelSettings(registry_dir=registry_dir))
    assert scorers.champions[0].name == "disk-rule"
    assert "model.skops: SHA-256" in scorers.refused[0]
    policy = serving_policy(ServerSettings(models=ModelSettings(registry_dir=registry_dir)), scorers)
    assert policy.thresholds(Component.DISK).raise_threshold == RULE_DISK_RAISE


def test_entry_outside_the_registry_folder_is_refused(registry_dir: Path) -> None:
    outside = registry_dir.parent / "outside-artifact"
    shutil.copytree(registry_dir / ARTIFACT, outside)
    (registry_dir / "inside-link").symlink_to(outside, target_is_directory=True)
    digests = artifact_digests(outside)  # the attacker writes matching digests into the index
    for entry in ("../outside-artifact", str(outside), "inside-link", "..", "a/../../outside-artifact"):
        write_registry(registry_dir, Registry(champions={"disk": entry}, artifacts={entry: digests}))
        champions, threshold, refused = worker_policy(registry_dir)
        assert champions[0] == "disk-rule", entry
        assert threshold == RULE_DISK_RAISE
        assert "plain folder name" in refused[0] or "leads outside the registry folder" in refused[0], refused


def test_a_symlinked_file_leading_out_is_refused(registry_dir: Path) -> None:
    outside = registry_dir.parent / "elsewhere.json"
    shutil.move(registry_dir / ARTIFACT / METADATA_FILE, outside)
    (registry_dir / ARTIFACT / METADATA_FILE).symlink_to(outside)
    scorers = load_scorers(ModelSettings(registry_dir=registry_dir))
    assert scorers.champions[0].name == "disk-rule"
    assert "leads outside the registry folder" in scorers.refused[0]


def test_signed_index_refuses_an_attacker_who_also_rewrites_the_digests(artifact_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "signed"
    shutil.copytree(artifact_dir, root / ARTIFACT)
    register_artifact(root, "disk", ARTIFACT, ScorerRole.CHAMPION, key=KEY.encode())
    assert worker_policy(root, KEY)[0][0] == "disk-gbm"
    meta_path = root / ARTIFACT / METADATA_FILE
    meta = json.loads(meta_path.read_text())
    meta["operating_points"]["30"]["cap 1%"]["threshold"] = 1.0
    meta_path.write_text(json.dumps(meta))
    index = json.loads((root / REGISTRY_FILE).read_text())
    index["artifacts"][ARTIFACT][METADATA_FILE] = artifact_digests(root / ARTIFACT)[METADATA_FILE]
    (root / REGISTRY_FILE).write_text(json.dumps(index))

    champions, threshold, refused = worker_policy(root, KEY)
    assert champions[0] == "disk-rule"
    assert threshold == RULE_DISK_RAISE
    assert "signature that does not match models.signing_key" in refused[0]
    del index["hmac"]
    (root / REGISTRY_FILE).write_text(json.dumps(index))
    assert "is not signed" in worker_policy(root, KEY)[2][0]


def test_a_model_whose_tree_loops_is_refused_before_it_can_hang_the_worker(artifact_dir: Path, tmp_path: Path) -> None:
    """Digests and a signature prove who wrote an artifact, not that it is sane: a tree whose split
    points back at itself would spin scikit-learn's prediction forever on the first disk scored."""
    payload, meta = load_artifact(artifact_dir, artifact_digests(artifact_dir))
    payload["horizon_30"].trees_._predictors[3][0].nodes["left"][0] = 0
    save_artifact(tmp_path / "looping", payload, meta)
    malformed = "the 30-day model has malformed trees (tree 3: a child does not follow its parent)"
    with pytest.raises(ArtifactError, match=re.escape(malformed)):
        register_artifact(tmp_path, "disk", "looping", ScorerRole.CHAMPION)

    # an unsigned registry's writer swaps the model in and rewrites its digest by hand
    root = tmp_path / "registry"
    shutil.copytree(artifact_dir, root / ARTIFACT)
    register_artifact(root, "disk", ARTIFACT, ScorerRole.CHAMPION)
    shutil.copy(tmp_path / "looping" / MODEL_FILE, root / ARTIFACT / MODEL_FILE)
    index = json.loads((root / REGISTRY_FILE).read_text())
    index["artifacts"][ARTIFACT][MODEL_FILE] = artifact_digests(root / ARTIFACT)[MODEL_FILE]
    (root / REGISTRY_FILE).write_text(json.dumps(index))

    champions, threshold, refused = worker_policy(root)
    assert champions[0] == "disk-rule"
    assert threshold == RULE_DISK_RAISE
    assert malformed in refused[0]


def test_a_disk_model_without_trees_is_refused_at_load(artifact_dir: Path, tmp_path: Path) -> None:
    payload, meta = load_artifact(artifact_dir, artifact_digests(artifact_dir))
    del payload["horizon_7"].trees_
    save_artifact(tmp_path / "treeless", payload, meta)
    with pytest.raises(ArtifactError, match="the 7-day model has no fitted trees"):
        register_artifact(tmp_path, "disk", "treeless", ScorerRole.CHAMPION)


def plain_trees(classes: int = 2) -> HistGradientBoostingClassifier:
    """scikit-learn's own gradient-boosted trees on the disk features, which skops' trusted types let through
    and scikit-learn predicts with its own walk."""
    x = np.random.default_rng(0).random((400, len(DISK_FEATURES)))
    return HistGradientBoostingClassifier(max_iter=3).fit(x, (x[:, 0] * classes).astype(int))


def looping(trees: HistGradientBoostingClassifier) -> HistGradientBoostingClassifier:
    """``trees`` with its first root's left child pointing back at the root: a walk that never ends."""
    trees._predictors[0][0].nodes["left"][0] = 0
    return trees


def calibrated() -> CalibratedClassifierCV:
    """Gradient-boosted trees calibrated by sigmoids, as artifacts before the disk model held them."""
    x = np.random.default_rng(0).random((400, len(DISK_FEATURES)))
    trees = HistGradientBoostingClassifier(max_iter=3)
    return CalibratedClassifierCV(trees, method="sigmoid", cv=2).fit(x, (x[:, 0] > 0.5).astype(int))


def unrecorded_meta(artifact_dir: Path, **changes: Any) -> dict[str, Any]:
    """The test artifact's metadata without recorded predictions (as earlier versions wrote it), ``changes`` applied."""
    meta = json.loads((artifact_dir / METADATA_FILE).read_text())
    del meta["predictions"]
    return {**meta, **changes}


def crafted(root: Path, payload: dict[str, Any], meta: dict[str, Any], artifact_id: str = "disk-crafted") -> str:
    """An artifact written with fleetpulse's own writer (trusted types only), not by its training."""
    save_artifact(root / artifact_id, {"reference": np.zeros(len(DISK_FEATURES)), **payload}, meta)
    return artifact_id


def registered_by_hand(root: Path, artifact_id: str) -> None:
    """``artifact_id`` as disk champion of a signed index, written before registration checked what it checks now."""
    digests = {artifact_id: artifact_digests(root / artifact_id)}
    write_registry(root, Registry(champions={"disk": artifact_id}, artifacts=digests), KEY.encode())


def test_attack_plain_trees_that_loop_are_refused_at_registration_and_at_load(
    artifact_dir: Path, tmp_path: Path
) -> None:
    """Only the disk model's trees were checked: plain trees with a node whose child is itself were registered,
    served, and hung the worker at the first disk scored."""
    artifact = crafted(tmp_path, {"horizon_30": looping(plain_trees())}, unrecorded_meta(artifact_dir, horizons=[30]))
    malformed = "the 30-day model has malformed trees (tree 0: a child does not follow its parent)"
    with pytest.raises(ArtifactError, match=re.escape(malformed)):
        register_artifact(tmp_path, "disk", artifact, ScorerRole.CHAMPION, key=KEY.encode())

    registered_by_hand(tmp_path, artifact)
    champions, threshold, refused = worker_policy(tmp_path, KEY)
    assert (champions[0], threshold) == ("disk-rule", RULE_DISK_RAISE)
    assert malformed in refused[0]


def _categorical_disk_model(payload: dict[str, Any]) -> Any:
    payload["horizon_30"].trees_._predictors[0][0].nodes["is_categorical"][0] = True
    return payload["horizon_30"]


def _categorical_trees(payload: dict[str, Any]) -> Any:
    trees = plain_trees()
    trees._predictors[0][0].nodes["is_categorical"][0] = True
    return trees


def _calibrated_looping(payload: dict[str, Any]) -> Any:
    model = calibrated()
    looping(model.calibrated_classifiers_[1].estimator)
    return model


def _calibrated_by_trees(payload: dict[str, Any]) -> Any:
    model = calibrated()
    model.calibrated_classifiers_[0].calibrators = [looping(plain_trees())]
    return model


@pytest.mark.parametrize(
    ("model", "refusal"),
    [
        (_categorical_disk_model, "has trees that cannot be checked"),
        (_categorical_trees, "has trees that cannot be checked"),
        (lambda payload: plain_trees(classes=3), "has trees for several classes"),
        (_calibrated_looping, "has malformed trees (tree 0: a child does not follow its parent)"),
        (_calibrated_by_trees, "is calibrated otherwise than by sigmoids"),
        (lambda payload: np.zeros(len(DISK_FEATURES)), "is a ndarray, not a kind of model fleetpulse serves"),
        (lambda payload: LogisticRegression().fit(np.eye(2), [0, 1]), "is a LogisticRegression, not a kind of model"),
    ],
    ids=[
        "disk-model-categorical",
        "categorical",
        "several-classes",
        "calibrated-loop",
        "calibrated-by-trees",
        "array",
        "logistic",
    ],
)
def test_attack_a_horizon_model_not_proven_walkable_is_refused_at_registration_and_at_load(
    artifact_dir: Path, tmp_path: Path, model: Callable[[dict[str, Any]], Any], refusal: str
) -> None:
    """Every model a scoring call walks must be proven to finish: trees the check does not cover (categorical
    splits, several classes), calibrated wrappers whose inner models or calibrators were never looked at, and
    payloads that are no model at all (each failed every scoring call of the worker) were all served."""
    payload, _ = load_artifact(artifact_dir, artifact_digests(artifact_dir))
    artifact = crafted(tmp_path, {"horizon_30": model(payload)}, unrecorded_meta(artifact_dir, horizons=[30]))
    with pytest.raises(ArtifactError, match=re.escape(f"the 30-day model {refusal}")):
        register_artifact(tmp_path, "disk", artifact, ScorerRole.CHAMPION, key=KEY.encode())

    registered_by_hand(tmp_path, artifact)
    scorers = load_scorers(ModelSettings(registry_dir=tmp_path, signing_key=KEY))
    assert scorers.champions[0].name == "disk-rule"
    assert f"the 30-day model {refusal}" in scorers.refused[0]


def test_calibrated_trees_proven_walkable_still_load(artifact_dir: Path, tmp_path: Path) -> None:
    """Artifacts from before the disk model (sigmoid-calibrated trees) stay servable once their predictions are recorded."""
    model = calibrated()
    scorer = TrainedDiskScorer(name="disk-gbm", version="", models={30: model}, reference=np.zeros(len(DISK_FEATURES)))
    meta = unrecorded_meta(artifact_dir, horizons=[30], predictions=recorded_predictions(scorer))
    artifact = crafted(tmp_path, {"horizon_30": model}, meta, "disk-calibrated")
    register_artifact(tmp_path, "disk", artifact, ScorerRole.CHALLENGER)
    scorers = load_scorers(ModelSettings(registry_dir=tmp_path))
    assert scorers.refused == []
    assert [s.name for s in scorers.challengers] == ["disk-gbm"]


@pytest.mark.parametrize(
    ("horizons", "stored"),
    [
        ([], ["horizon_30"]),  # no model served: every scoring call failed at max(models)
        ([30], ["horizon_7", "horizon_30"]),  # a model the metadata does not name
        (["30"], ["horizon_30"]),
        ([30, 30], ["horizon_30"]),
        ([5000], ["horizon_5000"]),  # longer than a risk score can state: every score failed to build
    ],
    ids=["none", "unnamed-model", "text", "repeated", "too-long"],
)
def test_attack_horizons_that_do_not_name_the_dumps_models_are_refused_at_registration_and_at_load(
    artifact_dir: Path, tmp_path: Path, horizons: list[Any], stored: list[str]
) -> None:
    """Each artifact records the predictions of the scorer its horizons make, so nothing else refuses it."""
    payload, _ = load_artifact(artifact_dir, artifact_digests(artifact_dir))
    models = {name: payload["horizon_30"] for name in stored}
    served = {int(h): models[f"horizon_{h}"] for h in horizons}
    scorer = TrainedDiskScorer(name="disk-gbm", version="", models=served, reference=np.zeros(len(DISK_FEATURES)))
    meta = unrecorded_meta(artifact_dir, horizons=horizons, predictions=recorded_predictions(scorer))
    artifact = crafted(tmp_path, models, meta)
    with pytest.raises(ArtifactError, match="the metadata's horizons"):
        register_artifact(tmp_path, "disk", artifact, ScorerRole.CHAMPION, key=KEY.encode())

    registered_by_hand(tmp_path, artifact)
    scorers = load_scorers(ModelSettings(registry_dir=tmp_path, signing_key=KEY))
    assert scorers.champions[0].name == "disk-rule"
    assert "the metadata's horizons" in scorers.refused[0]


def test_an_artifact_without_recorded_predictions_is_served_once_migrate_records_them(
    artifact_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its model was never made to predict before a worker served it. Registration refuses it; one registered
    before is refused at load, naming the remedy: ``fleetpulse models migrate`` records its predictions here."""
    root = tmp_path / "registry"
    shutil.copytree(artifact_dir, root / ARTIFACT)
    meta_path = root / ARTIFACT / METADATA_FILE
    meta = json.loads(meta_path.read_text())
    trained = meta.pop("predictions")
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="records no predictions"):
        register_artifact(root, "disk", ARTIFACT, ScorerRole.CHAMPION, key=KEY.encode())

    registered_by_hand(root, ARTIFACT)
    champions, _, refused = worker_policy(root, KEY)
    assert champions[0] == "disk-rule"
    assert "records no predictions" in refused[0]
    assert "`fleetpulse models migrate`" in refused[0]

    monkeypatch.setenv("FLEETPULSE_MODELS__SIGNING_KEY", KEY)
    migrated = CliRunner().invoke(cli_app, ["models", "migrate", "--registry-dir", str(root)])
    assert migrated.exit_code == 0, migrated.output
    assert f"{ARTIFACT}: predictions recorded with scikit-learn" in migrated.output
    assert json.loads(meta_path.read_text())["predictions"] == trained  # recorded where it was trained
    champions, _, refused = worker_policy(root, KEY)
    assert (champions[0], refused) == ("disk-gbm", [])


def test_attack_migrate_never_makes_a_tree_that_loops_predict(
    artifact_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recording predictions runs the model: only after its trees are proven walkable, or migrate would hang too.
    A refusal changes no file, not even the metadata of an intact artifact the same run would have recorded."""
    artifact = crafted(tmp_path, {"horizon_30": looping(plain_trees())}, unrecorded_meta(artifact_dir, horizons=[30]))
    shutil.copytree(artifact_dir, tmp_path / ARTIFACT)
    meta = json.loads((tmp_path / ARTIFACT / METADATA_FILE).read_text())
    del meta["predictions"]
    (tmp_path / ARTIFACT / METADATA_FILE).write_text(json.dumps(meta))
    digests = {name: artifact_digests(tmp_path / name) for name in (ARTIFACT, artifact)}
    registry = Registry(champions={"disk": ARTIFACT}, challengers={"disk": [artifact]}, artifacts=digests)
    write_registry(tmp_path, registry, KEY.encode())
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    monkeypatch.setenv("FLEETPULSE_MODELS__SIGNING_KEY", KEY)
    result = CliRunner().invoke(cli_app, ["models", "migrate", "--registry-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "the 30-day model has malformed trees" in result.output
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before


def old_format(registry_dir: Path) -> None:
    """The index as versions without digests wrote it."""
    (registry_dir / REGISTRY_FILE).write_text(json.dumps({"champions": {"disk": ARTIFACT}, "challengers": {}}))


def test_old_registry_is_refused_naming_the_fix_and_migrates_with_the_cli(
    registry_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_format(registry_dir)
    champions, _, refused = worker_policy(registry_dir)
    assert champions[0] == "disk-rule"
    assert f"fleetpulse models migrate --registry-dir {registry_dir}" in refused[0]

    monkeypatch.setenv("FLEETPULSE_MODELS__SIGNING_KEY", KEY)
    runner = CliRunner()
    verify = runner.invoke(cli_app, ["models", "verify", "--registry-dir", str(registry_dir)])
    assert verify.exit_code == 1
    assert "fleetpulse models migrate" in verify.output
    migrated = runner.invoke(cli_app, ["models", "migrate", "--registry-dir", str(registry_dir)])
    assert migrated.exit_code == 0, migrated.output
    assert "'30d cap 1%': 0.3" in migrated.output  # the operator sees the thresholds being vouched for
    assert "signed with models.signing_key" in migrated.output
    assert KEY not in migrated.output
    verify = runner.invoke(cli_app, ["models", "verify", "--registry-dir", str(registry_dir)])
    assert verify.exit_code == 0, verify.output
    assert f"ok      {ARTIFACT}" in verify.output
    champions, threshold, refused = worker_policy(registry_dir, KEY)
    assert (champions[0], threshold, refused) == ("disk-gbm", 0.3, [])


def test_migration_never_launders_a_changed_file(registry_dir: Path) -> None:
    meta_path = registry_dir / ARTIFACT / METADATA_FILE
    meta_path.write_text(meta_path.read_text().replace('"threshold": 0.3', '"threshold": 1.0'))
    result = CliRunner().invoke(cli_app, ["models", "migrate", "--registry-dir", str(registry_dir)])
    assert result.exit_code == 1
    assert "does not match the registry index" in result.output
    verify = CliRunner().invoke(cli_app, ["models", "verify", "--registry-dir", str(registry_dir)])
    assert verify.exit_code == 1
    assert f"REFUSED {registry_dir / ARTIFACT / METADATA_FILE}" in verify.output


def test_old_registry_with_an_edited_model_does_not_migrate(registry_dir: Path) -> None:
    old_format(registry_dir)
    data = bytearray((registry_dir / ARTIFACT / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (registry_dir / ARTIFACT / MODEL_FILE).write_bytes(bytes(data))
    result = CliRunner().invoke(cli_app, ["models", "migrate", "--registry-dir", str(registry_dir)])
    assert result.exit_code == 1
    assert "does not match the digest in its own metadata" in result.output


def test_packaged_registry_is_verified_read_only_without_a_signature(
    registry_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registry shipped inside the package: its own index's digests, no deployment key, nothing written."""
    monkeypatch.setattr(registry_module, "PACKAGE_ROOT", registry_dir.parent.resolve())
    before = {p: p.stat().st_mtime_ns for p in registry_dir.rglob("*")}
    champions, threshold, refused = worker_policy(registry_dir, KEY)
    assert (champions[0], threshold, refused) == ("disk-gbm", 0.3, [])
    assert read_registry(registry_dir, KEY.encode()).champions == {"disk": ARTIFACT}
    assert {p: p.stat().st_mtime_ns for p in registry_dir.rglob("*")} == before

    meta_path = registry_dir / ARTIFACT / METADATA_FILE
    meta_path.write_text(meta_path.read_text().replace('"threshold": 0.3', '"threshold": 1.0'))
    champions, threshold, refused = worker_policy(registry_dir, KEY)
    assert (champions[0], threshold) == ("disk-rule", RULE_DISK_RAISE)
    assert "does not match the registry index" in refused[0]


def test_only_a_registry_inside_the_models_package_counts_as_packaged(tmp_path: Path) -> None:
    assert registry_module.is_packaged(registry_module.PACKAGE_ROOT / "registry")
    assert not registry_module.is_packaged(Path(".local/models"))  # the default, next to the checkout
    assert not registry_module.is_packaged(tmp_path)
    (tmp_path / "escape").symlink_to(registry_module.PACKAGE_ROOT.parent)
    assert not registry_module.is_packaged(tmp_path / "escape" / "agents")


def test_training_into_an_old_registry_stops_before_training(registry_dir: Path, tmp_path: Path) -> None:
    old_format(registry_dir)
    args = ["train", "--out", str(registry_dir), "--data-dir", str(tmp_path / "no-data")]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 2
    assert "fleetpulse models migrate" in result.output


def test_attack_an_old_signed_index_put_back_is_not_served(artifact_dir: Path, tmp_path: Path) -> None:
    """Whoever can write the registry folder keeps a copy of today's signed index and puts it back after IT
    demotes the champion: the copy verifies, but is older than the index the worker serves."""
    from fleetpulse.streams.reload import accept

    root = tmp_path / "signed"
    shutil.copytree(artifact_dir, root / ARTIFACT)
    register_artifact(root, "disk", ARTIFACT, ScorerRole.CHAMPION, key=KEY.encode())
    settings = ModelSettings(registry_dir=root, signing_key=KEY)
    old_index = (root / REGISTRY_FILE).read_bytes()
    demoted = read_registry(root, KEY.encode())
    demoted.champions.clear()
    write_registry(root, demoted, KEY.encode())
    serving = load_scorers(settings)
    assert serving.champions[0].name == "disk-rule"
    (root / REGISTRY_FILE).write_bytes(old_index)
    restored = load_scorers(settings)
    assert not restored.refused  # its signature verifies ...
    assert restored.generation < serving.generation
    assert not accept(serving, restored)  # ... but the worker keeps what it serves


def test_an_index_signed_before_generations_still_verifies(registry_dir: Path) -> None:
    index = json.loads((registry_dir / REGISTRY_FILE).read_text())
    index.pop("generation")
    index.pop("hmac", None)
    index["hmac"] = registry_module.index_mac(index, KEY.encode())
    (registry_dir / REGISTRY_FILE).write_text(json.dumps(index))
    assert read_registry(registry_dir, KEY.encode()).generation == 0


def test_attack_deleting_a_signed_index_is_refused_not_read_as_no_models(artifact_dir: Path, tmp_path: Path) -> None:
    """Without the index every champion would quietly fall back to its rule, with nothing refused to alert on."""
    root = tmp_path / "signed"
    shutil.copytree(artifact_dir, root / ARTIFACT)
    register_artifact(root, "disk", ARTIFACT, ScorerRole.CHAMPION, key=KEY.encode())
    (root / REGISTRY_FILE).unlink()

    champions, threshold, refused = worker_policy(root, KEY)

    assert (champions[0], threshold) == ("disk-rule", RULE_DISK_RAISE)
    assert "is missing, though models.signing_key is set" in refused[0]
    assert worker_policy(root)[2] == []  # unsigned registries keep meaning "no index, no models yet"


def test_attack_a_folder_in_place_of_the_index_is_refused_and_never_stops_the_reload_timer(
    registry_dir: Path,
) -> None:
    from fleetpulse.streams.reload import accept

    watch = RegistryWatch(registry_dir)
    serving = load_scorers(ModelSettings(registry_dir=registry_dir))
    (registry_dir / REGISTRY_FILE).unlink()
    (registry_dir / REGISTRY_FILE).mkdir()

    assert watch.changed()
    assert not watch.changed()  # unreadable until someone fixes it: one refusal, not one per poll
    loaded = load_scorers(ModelSettings(registry_dir=registry_dir))
    assert "unreadable" in loaded.refused[0]
    assert not accept(serving, loaded)


def reloading(registry_dir: Path) -> Callable[[], bool]:
    """One registry check of a worker serving ``registry_dir`` (True: it serves a reloaded index)."""
    settings = ServerSettings.model_validate(
        {"models": {"registry_dir": str(registry_dir)}, "streams": {"tsdb": {"kind": "none"}}}
    )
    worker = create_app(settings).fleetpulse  # type: ignore[attr-defined]
    watch = RegistryWatch(registry_dir)
    return lambda: bool(asyncio.run(worker.reload_models(settings, watch)))


def test_a_reload_that_failed_for_a_passing_reason_is_retried_at_the_next_check(
    registry_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    check = reloading(registry_dir)
    index = registry_dir / REGISTRY_FILE
    index.write_text(index.read_text() + "\n")
    real_load = stream_app.load_scorers

    def out_of_memory_once(models: ModelSettings) -> ScorerSet:
        monkeypatch.setattr(stream_app, "load_scorers", real_load)
        raise MemoryError

    monkeypatch.setattr(stream_app, "load_scorers", out_of_memory_once)
    assert check() is False
    assert check() is True  # the index did not change again
    assert check() is False


def test_attack_an_index_whose_loading_always_fails_costs_three_loads_not_one_per_check(
    registry_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    check = reloading(registry_dir)
    loads = []

    def never_loads(models: ModelSettings) -> ScorerSet:
        loads.append(1)
        raise MemoryError

    monkeypatch.setattr(stream_app, "load_scorers", never_loads)
    index = registry_dir / REGISTRY_FILE
    index.write_text(index.read_text() + "\n")
    assert not any(check() for _ in range(10))
    assert len(loads) == RELOAD_ATTEMPTS == 3
    index.write_text(index.read_text() + "\n")  # a new change gets its own attempts
    assert not any(check() for _ in range(10))
    assert len(loads) == 2 * RELOAD_ATTEMPTS


@pytest.mark.parametrize(
    ("index", "refusal"),
    [
        (b'{"generation": ' + b"9" * 5000 + b"}", "invalid JSON (ValueError"),  # too long for int()
        (b"[" * 100_000 + b"]" * 100_000, "invalid JSON (RecursionError"),
        (b'{"pad": "' + b"x" * (1024 * 1024) + b'"}', "larger than 1048576 bytes"),
    ],
)
def test_attack_a_hostile_index_is_a_refusal_not_an_error_that_is_retried(
    registry_dir: Path, index: bytes, refusal: str
) -> None:
    """Parsed before its signature can be checked: whoever can write the folder chooses these bytes."""
    (registry_dir / REGISTRY_FILE).write_bytes(index)
    with pytest.raises(ArtifactError, match=re.escape(refusal)):
        read_registry(registry_dir, KEY.encode())
    loaded = load_scorers(ModelSettings(registry_dir=registry_dir, signing_key=KEY))
    assert refusal in loaded.refused[0]


def test_attack_a_dump_that_does_not_load_is_refused_for_good(artifact_dir: Path, tmp_path: Path) -> None:
    """A skops file whose array header is corrupt (digests recomputed: an unsigned registry) is refused,
    not raised as an unforeseen error that the worker would retry."""
    import io
    import zipfile

    copy = tmp_path / "copy"
    shutil.copytree(artifact_dir, copy)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO((copy / MODEL_FILE).read_bytes())) as dump, zipfile.ZipFile(out, "w") as bad:
        for name in dump.namelist():
            corrupt = b"\x93NUMPY\x01\x00\x10\x00{'descr': 1}    "
            bad.writestr(name, corrupt if name.endswith(".npy") else dump.read(name))
    (copy / MODEL_FILE).write_bytes(out.getvalue())
    with pytest.raises(ArtifactError, match=r"not a skops dump \(member '\d+\.npy': Header does not contain"):
        load_artifact(copy, artifact_digests(copy))
