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

import pytest
from typer.testing import CliRunner

from fleetpulse.alerts.policy import AlertPolicy
from fleetpulse.cli import app as cli_app
from fleetpulse.contract import Component, ScorerRole
from fleetpulse.models import index as registry_module
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
    from fleetpulse.models.artifact import load_artifact, save_artifact

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
    from fleetpulse.models.artifact import load_artifact, save_artifact

    payload, meta = load_artifact(artifact_dir, artifact_digests(artifact_dir))
    payload["horizon_30"].trees_._predictors[3][0].nodes["left"][0] = 0
    save_artifact(tmp_path / "looping", payload, meta)
    malformed = "the 30-day model's trees are malformed (tree 3: a child does not follow its parent)"
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
    from fleetpulse.models.artifact import load_artifact, save_artifact

    payload, meta = load_artifact(artifact_dir, artifact_digests(artifact_dir))
    del payload["horizon_7"].trees_
    save_artifact(tmp_path / "treeless", payload, meta)
    with pytest.raises(ArtifactError, match="the 7-day model has no fitted trees"):
        register_artifact(tmp_path, "disk", "treeless", ScorerRole.CHAMPION)


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

    from fleetpulse.models.artifact import load_artifact

    copy = tmp_path / "copy"
    shutil.copytree(artifact_dir, copy)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO((copy / MODEL_FILE).read_bytes())) as dump, zipfile.ZipFile(out, "w") as bad:
        for name in dump.namelist():
            corrupt = b"\x93NUMPY\x01\x00\x10\x00{'descr': 1}    "
            bad.writestr(name, corrupt if name.endswith(".npy") else dump.read(name))
    (copy / MODEL_FILE).write_bytes(out.getvalue())
    with pytest.raises(ArtifactError, match="does not load"):
        load_artifact(copy, artifact_digests(copy))
