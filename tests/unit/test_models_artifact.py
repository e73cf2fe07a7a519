"""Artifacts: skops round trip, digest and type checks, registry champion/challenger, served scorer.

The attacks on the registry (edited threshold, swapped model, paths out of the folder) are in
``test_models_registry_integrity.py``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import zipfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio
from sklearn.metrics import average_precision_score

from fleetpulse.agents.simulator import FleetSimulator
from fleetpulse.contract import Component, Factor, ScorerRole
from fleetpulse.models.artifact import (
    EXPLAIN_MIN_DROP,
    EXPLANATION_GROUPS,
    PROBE_ALARMS,
    PROBE_ROWS,
    TrainedDiskScorer,
    content_digest,
    load_artifact,
    probe_features,
    recorded_predictions,
    save_artifact,
)
from fleetpulse.models.base import MAX_FACTORS
from fleetpulse.models.disk_model import DiskRiskModel
from fleetpulse.models.drift import build_profile, check_drift
from fleetpulse.models.explain import factor
from fleetpulse.models.feature_cache import disk_features, shared_features
from fleetpulse.models.features import DISK_FEATURES
from fleetpulse.models.index import METADATA_FILE, MODEL_FILE, ArtifactError, Registry, artifact_digests
from fleetpulse.models.pipeline import healthy_reference
from fleetpulse.models.registry import load_scorers, register_artifact, write_registry
from fleetpulse.models.settings import ModelSettings
from fleetpulse.models.state import DeviceState, apply_report
from fleetpulse.models.training import TrainingSet, fit_calibrated
from tests.unit.test_models_scorers import NOW, check_conformance, fleet


def tiny_training_set(seed: int = 0) -> TrainingSet:
    """Synthetic drives: failure odds rise with SMART 5; other features are noise or missing."""
    rng = np.random.default_rng(seed)
    n = 3000
    x = np.full((n, len(DISK_FEATURES)), np.nan)
    smart5 = rng.poisson(0.3, n) * rng.integers(0, 50, n)
    x[:, DISK_FEATURES.index("smart_5")] = smart5
    x[:, DISK_FEATURES.index("power_on_hours")] = rng.uniform(0, 40_000, n)
    y = (rng.random(n) < np.where(smart5 > 0, 0.3, 0.01)).astype(float)
    return TrainingSet(x, y, np.ones(n), np.arange(n) // 3)


@pytest.fixture(scope="module")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tiny_training_set()

    def objective(score: np.ndarray) -> float:
        return float(average_precision_score(data.y, score))

    models = {
        h: fit_calibrated(data, seed=seed, also_score=(data.features, data.groups), objective=objective)
        for h, seed in ((7, 0), (30, 1))
    }
    reference = healthy_reference(data.features, data.y)
    directory = tmp_path_factory.mktemp("registry") / "disk-gbm-test"
    scores = models[30].predict_proba(np.nan_to_num(data.features, nan=0.0))[:, 1]
    meta = {
        "name": "disk-gbm",
        "version": "test-1",
        "horizons": [7, 30],
        "feature_names": list(DISK_FEATURES),
        "drift_profile": build_profile(data.features, scores),
        "operating_points": {"30": {"cap 0.1%": {"threshold": 0.16}, "cap 1%": {"threshold": 0.045}}},
        "predictions": recorded_predictions(
            TrainedDiskScorer(name="disk-gbm", version="", models=dict(models), reference=reference)
        ),
    }
    save_artifact(directory, {"horizon_7": models[7], "horizon_30": models[30], "reference": reference}, meta)
    return directory


def test_round_trip_gives_identical_predictions(artifact_dir: Path) -> None:
    payload, meta = load_artifact(artifact_dir, artifact_digests(artifact_dir))
    assert meta["sha256"]
    assert set(meta["libraries"]) >= {"python", "scikit-learn", "skops", "numpy"}
    x = tiny_training_set(seed=5).features
    reloaded = payload["horizon_30"].predict_proba(x)[:, 1]
    assert payload["horizon_30"].counter_weight_ in payload["horizon_30"].counter_weights
    assert np.isfinite(payload["horizon_30"].objective_values_).all()
    again = load_artifact(artifact_dir, artifact_digests(artifact_dir))[0]["horizon_30"].predict_proba(x)[:, 1]
    np.testing.assert_array_equal(reloaded, again)
    high = x.copy()
    high[:, DISK_FEATURES.index("smart_5")] = 200
    assert reloaded.mean() < payload["horizon_30"].predict_proba(high)[:, 1].mean()


def test_tampered_model_is_refused(artifact_dir: Path, tmp_path: Path) -> None:
    digests = artifact_digests(artifact_dir)
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in artifact_dir.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    data = bytearray((copy / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"model\.skops: SHA-256 \w+ does not match the registry index"):
        load_artifact(copy, digests)


def predicting_copy(artifact_dir: Path, tmp_path: Path, edit: Any = None) -> tuple[Path, dict[str, str]]:
    """``artifact_dir`` copied (``edit`` may change its recorded predictions), and the copy's digests
    (whoever can write the registry index can write these: the check is not against tampering)."""
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in artifact_dir.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    meta = json.loads((copy / METADATA_FILE).read_text())
    if edit is not None:
        edit(meta["predictions"])
    (copy / METADATA_FILE).write_text(json.dumps(meta))
    return copy, artifact_digests(copy)


def test_an_artifact_predicting_as_when_it_was_trained_loads(artifact_dir: Path, tmp_path: Path) -> None:
    copy, digests = predicting_copy(artifact_dir, tmp_path)
    scorer = TrainedDiskScorer.from_artifact(copy, digests)
    recorded = json.loads((copy / METADATA_FILE).read_text())["predictions"]
    assert recorded["rows"] == PROBE_ROWS
    assert len(set(recorded["horizons"]["30"])) > 10, "the probe rows reach more than a few leaves"
    np.testing.assert_array_equal(scorer.predict(probe_features(scorer.reference), 30), recorded["horizons"]["30"])


def test_a_model_read_otherwise_by_this_environment_is_refused(
    artifact_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another scikit-learn or numpy unpickling the same, verified bytes into a model that scores differently
    (Python 3.10 only gets scikit-learn 1.7, which merely warns about a model saved by a newer one)."""
    copy, digests = predicting_copy(artifact_dir, tmp_path)
    register_artifact(copy.parent, "disk", copy.name, ScorerRole.CHAMPION)  # verified here: it loads and predicts
    read_otherwise = DiskRiskModel.predict_proba

    def drifted(self: DiskRiskModel, x: np.ndarray) -> np.ndarray:
        proba = read_otherwise(self, x)
        proba[:, 1] = np.minimum(proba[:, 1] * (1 + 1e-6), 1.0)
        proba[:, 0] = 1 - proba[:, 1]
        return proba

    monkeypatch.setattr(DiskRiskModel, "predict_proba", drifted)
    with pytest.raises(ArtifactError, match=r"the 7-day model predicts otherwise here than when it was trained"):
        TrainedDiskScorer.from_artifact(copy, digests)
    scorers = load_scorers(ModelSettings(registry_dir=copy.parent))
    assert scorers.champions[0].name == "disk-rule", "the worker serves the rule, not a model read otherwise"
    assert len(scorers.refused) == 1
    assert re.search(r"scikit-learn \S+ then, \S+ here, numpy \S+ then, \S+ here", scorers.refused[0])


@pytest.mark.parametrize(
    "edit",
    [
        lambda p: p.update(horizons={"30": p["horizons"]["30"]}),  # a horizon missing
        lambda p: p["horizons"].update({"7": p["horizons"]["7"][:-1]}),  # a row missing
        lambda p: p["horizons"]["7"].__setitem__(3, "0.5"),  # not a float
        lambda p: p["horizons"]["7"].__setitem__(3, [0.5] * 1000),  # nested
        lambda p: p.update(horizons=None),
        lambda p: p["horizons"]["30"].__setitem__(0, p["horizons"]["30"][0] + 1e-3),  # another model's
    ],
)
def test_recorded_predictions_that_do_not_fit_are_a_clear_refusal(
    artifact_dir: Path, tmp_path: Path, edit: Any
) -> None:
    copy, digests = predicting_copy(artifact_dir, tmp_path, edit)
    with pytest.raises(ArtifactError, match=r"recorded predictions|predicts otherwise"):
        TrainedDiskScorer.from_artifact(copy, digests)


@pytest.mark.parametrize(
    "reference",
    [
        np.float64(0.0),
        np.zeros(len(DISK_FEATURES) - 1),
        np.zeros((2, len(DISK_FEATURES))),
        np.full(len(DISK_FEATURES), np.inf),
    ],
    ids=["scalar", "short", "two-rows", "infinite"],
)
def test_an_artifact_with_a_malformed_reference_row_is_refused_not_a_crashed_start(
    artifact_dir: Path, tmp_path: Path, reference: np.ndarray
) -> None:
    """A worker loads every registered artifact at start: an error other than ``ArtifactError`` ended it."""
    payload, meta = load_artifact(artifact_dir, artifact_digests(artifact_dir))
    broken = tmp_path / "broken"
    save_artifact(broken, {**payload, "reference": reference}, {k: v for k, v in meta.items() if k != "libraries"})
    with pytest.raises(ArtifactError, match="reference row"):
        TrainedDiskScorer.from_artifact(broken, artifact_digests(broken))


def test_predictions_recorded_with_libraries_of_another_shape_are_refused_cleanly(
    artifact_dir: Path, tmp_path: Path
) -> None:
    def edit(predictions: dict[str, Any]) -> None:
        predictions["horizons"]["7"][0] += 0.5

    copy, _ = predicting_copy(artifact_dir, tmp_path, edit)
    meta = json.loads((copy / METADATA_FILE).read_text())
    meta["libraries"] = "scikit-learn 1.9"
    (copy / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=r"scikit-learn \? then"):
        TrainedDiskScorer.from_artifact(copy, artifact_digests(copy))


def test_metadata_nested_too_deeply_is_refused(artifact_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "deep"
    copy.mkdir()
    for f in artifact_dir.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    (copy / METADATA_FILE).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ArtifactError, match="nested too deeply"):
        load_artifact(copy, artifact_digests(copy))


def test_the_probe_sets_each_drive_alarm_in_a_row_of_its_own() -> None:
    """A fleet challenger's stacked layer reads the drive's alarms: a weight misread there must show too."""
    reference = np.zeros(len(DISK_FEATURES))
    probe = probe_features(reference)
    for name, value in PROBE_ALARMS:
        rows = np.flatnonzero(probe[:, DISK_FEATURES.index(name)] == value)
        assert any(np.count_nonzero(probe[row] != reference) == 1 for row in rows), name


def test_the_probe_rows_never_change() -> None:
    """Every artifact's recorded predictions are of these rows: changed, every artifact would be refused."""
    probe = probe_features(np.arange(len(DISK_FEATURES), dtype=float))
    assert probe.shape == (PROBE_ROWS, len(DISK_FEATURES))
    digest = hashlib.sha256(np.nan_to_num(probe, nan=-1.0).tobytes()).hexdigest()
    assert digest == "072748352d61f31f199eae066e6fbe2b7833199be731b5a0a6ee28ac3a2a66ea"


@pytest.mark.parametrize(
    ("failures", "message", "attempts"),
    [
        (2, "AST constructor recursion depth mismatch (before=258, after=80)", 3),
        (3, "AST constructor recursion depth mismatch (before=258, after=80)", 3),
        (1, "error return without exception set", 1),
    ],
)
def test_only_python_3_11s_spurious_ast_error_is_retried_and_only_twice(
    artifact_dir: Path, monkeypatch: pytest.MonkeyPatch, failures: int, message: str, attempts: int
) -> None:
    """On 3.11 numpy's array-header parse fails this way when another thread formats a traceback meanwhile."""
    import fleetpulse.models.artifact as artifact

    calls = []
    real_loads = sio.loads

    def flaky(data: bytes, trusted: list[str]) -> object:
        calls.append(1)
        if len(calls) <= failures:
            raise SystemError(message)
        return real_loads(data, trusted=trusted)

    monkeypatch.setattr(artifact.sio, "loads", flaky)
    if failures < attempts:
        assert "horizon_30" in load_artifact(artifact_dir, artifact_digests(artifact_dir))[0]
    else:
        with pytest.raises(SystemError, match=message[:20]):
            load_artifact(artifact_dir, artifact_digests(artifact_dir))
    assert len(calls) == attempts


@dataclass
class Smuggled:
    payload: str = "not a model"


def test_untrusted_types_are_refused_on_write_and_load(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="TRUSTED_TYPES"):
        save_artifact(tmp_path / "bad", {"horizon_30": Smuggled()}, {"name": "x"})
    # a dump written by someone else, with digests that match, is still refused on load
    forged = tmp_path / "forged"
    forged.mkdir()
    sio.dump({"horizon_30": Smuggled()}, forged / MODEL_FILE)
    (forged / "metadata.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(ArtifactError, match="TRUSTED_TYPES"):
        load_artifact(forged, artifact_digests(forged))


def test_missing_files_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="incomplete"):
        artifact_digests(tmp_path)
    with pytest.raises(ArtifactError, match="no digest"):
        load_artifact(tmp_path, {})


def test_trained_scorer_conforms_and_explains(artifact_dir: Path) -> None:
    scorer = TrainedDiskScorer.from_artifact(artifact_dir, artifact_digests(artifact_dir))
    check_conformance(scorer)
    scores = {s.component_id: s for s in scorer.score_batch(fleet(), NOW)}
    assert scores["s1"].risk > scores["n0"].risk
    assert any("reallocated sectors" in f.text for f in scores["s1"].factors)
    assert scores["s1"].horizon_days == 30


def test_registry_champion_and_challenger(artifact_dir: Path) -> None:
    registry_dir = artifact_dir.parent
    assert [s.name for s in load_scorers(ModelSettings(registry_dir=registry_dir / "empty")).champions] == [
        "disk-rule",
        "battery-fade",
        "thermal-rule",
        "memory-rule",
        "device-anomaly",
    ]
    register_artifact(registry_dir, "disk", artifact_dir.name, ScorerRole.CHAMPION)
    scorers = load_scorers(ModelSettings(registry_dir=registry_dir))
    assert [s.name for s in scorers.champions] == [
        "disk-gbm",
        "battery-fade",
        "thermal-rule",
        "memory-rule",
        "device-anomaly",
    ]
    assert [s.name for s in scorers.challengers] == ["disk-rule"]
    scores = scorers.score(fleet(), NOW)
    disk = {(s.model_name, s.role) for s in scores if s.component is Component.DISK}
    assert disk == {("disk-gbm", ScorerRole.CHAMPION), ("disk-rule", ScorerRole.CHALLENGER)}
    drift = check_drift(scorers, fleet() * 30, scores)
    assert drift == []  # fewer than MIN_SAMPLES disks per device model


def test_registering_a_missing_artifact_fails_and_an_index_naming_one_serves_the_rules(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="incomplete"):
        register_artifact(tmp_path, "disk", "missing-artifact", ScorerRole.CHAMPION)
    write_registry(tmp_path, Registry(champions={"disk": "missing-artifact"}))
    scorers = load_scorers(ModelSettings(registry_dir=tmp_path))
    assert scorers.champions[0].name == "disk-rule"
    assert "missing-artifact" in scorers.refused[0]


def test_content_digest_ignores_zip_timestamps_and_object_ids(artifact_dir: Path, tmp_path: Path) -> None:
    import copy

    from fleetpulse.models.artifact import content_digest

    payload, _ = load_artifact(artifact_dir, artifact_digests(artifact_dir))
    save_artifact(tmp_path / "again", copy.deepcopy(payload), {"name": "disk-gbm"})
    assert content_digest(tmp_path / "again" / MODEL_FILE) == content_digest(artifact_dir / MODEL_FILE)
    payload["horizon_30"] = payload["horizon_7"]
    save_artifact(tmp_path / "other", payload, {"name": "disk-gbm"})
    assert content_digest(tmp_path / "other" / MODEL_FILE) != content_digest(artifact_dir / MODEL_FILE)


def _rewritten(src: Path, dst: Path, edit: Any) -> Path:
    """``src`` with its schema.json changed by ``edit``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            zout.writestr(item, edit(data.decode()).encode() if item.filename == "schema.json" else data)
    return dst


EMPTY_TUPLE_ID = re.compile(r'("__loader__": "TupleNode",\s*"content": \[\],\s*"__id__": )(\d+)')


def test_empty_tuples_count_as_one_object_but_not_one_standing_in_for_another_object(tmp_path: Path) -> None:
    """Python 3.10's skops gives each empty tuple its own id (3.11+ one for all): the same model, the same digest.
    An empty tuple given another object's id loads as that object: never the digest (version) of the original."""
    sio.dump({"t0": (), "x": [1, 2], "t1": ()}, tmp_path / "a.skops")
    ids = iter(range(10_000, 10_010))
    apart = _rewritten(
        tmp_path / "a.skops",
        tmp_path / "b.skops",
        lambda s: EMPTY_TUPLE_ID.sub(lambda m: m.group(1) + str(next(ids)), s),
    )
    assert content_digest(apart) == content_digest(tmp_path / "a.skops")

    def alias(schema: str) -> str:
        list_id = re.search(r'"__loader__": "ListNode",[^]]*\],\s*"__id__": (\d+)', schema)
        last = list(EMPTY_TUPLE_ID.finditer(schema))[-1]
        assert list_id is not None
        return schema[: last.start(2)] + list_id.group(1) + schema[last.end(2) :]

    aliased = _rewritten(tmp_path / "a.skops", tmp_path / "c.skops", alias)
    assert sio.load(aliased)["t1"] == [1, 2]
    assert content_digest(aliased) != content_digest(tmp_path / "a.skops")


def test_stored_operating_point_becomes_the_disk_alert_threshold(artifact_dir: Path) -> None:
    from fleetpulse.alerts.policy import AlertPolicy, Thresholds
    from fleetpulse.models.registry import rule_scorers

    scorer = TrainedDiskScorer.from_artifact(artifact_dir, artifact_digests(artifact_dir))
    assert scorer.alert_thresholds("cap 1%") == (0.045, 0.0225)
    assert scorer.alert_thresholds("cap 0.1%") == (0.16, 0.08)
    registry_dir = artifact_dir.parent
    register_artifact(registry_dir, "disk", artifact_dir.name, ScorerRole.CHAMPION)
    suggested = load_scorers(ModelSettings(registry_dir=registry_dir)).alert_thresholds("cap 1%")
    assert suggested == {Component.DISK: (0.045, 0.0225)}
    assert rule_scorers().alert_thresholds("cap 1%") == {}  # rule levels keep the fleet thresholds
    policy = AlertPolicy().with_defaults(
        {c: Thresholds(raise_threshold=r, clear_threshold=x) for c, (r, x) in suggested.items()}
    )
    assert policy.thresholds(Component.DISK).raise_threshold == 0.045
    assert policy.thresholds(Component.BATTERY).raise_threshold == 0.5


def test_artifact_without_operating_points_suggests_nothing(artifact_dir: Path) -> None:
    scorer = TrainedDiskScorer.from_artifact(artifact_dir, artifact_digests(artifact_dir))
    scorer.operating_points = None
    assert scorer.alert_thresholds("cap 1%") is None


def test_explanations_equal_resetting_every_group_bit_for_bit() -> None:
    """Only rows a group's reset changes are predicted; the drops equal predicting all of them,
    including exact zeros for groups already at the typical value or not reported."""
    scorer = next(s for s in load_scorers(ModelSettings()).champions if isinstance(s, TrainedDiskScorer))
    rng = np.random.default_rng(7)
    rows = np.tile(scorer.reference, (400, 1))
    noisy = rng.random(rows.shape) < 0.15
    rows[noisy] = rng.integers(0, 50, noisy.sum())
    rows[rng.random(rows.shape) < 0.1] = np.nan
    horizon = max(scorer.models)
    base = scorer.predict(rows, horizon)
    groups = len(EXPLANATION_GROUPS)
    perturbed = np.repeat(rows, groups, axis=0)
    for k, (_, members) in enumerate(EXPLANATION_GROUPS):
        block = perturbed[k::groups, members]
        perturbed[k::groups, members] = np.where(np.isnan(block), block, scorer.reference[members])
    every = base[:, None] - scorer.predict(perturbed, horizon).reshape(len(rows), groups)
    expected = np.where((base > EXPLAIN_MIN_DROP)[:, None], every, 0.0)
    assert scorer.contributions(rows, horizon).tobytes() == expected.tobytes()


def _factors_row_by_row(scorer: TrainedDiskScorer, states: list[DeviceState]) -> list[list[Factor]]:
    """The disk scorer's factors built the plain way, one drive at a time: the reference for its batch path."""
    rows = [[disk_features(disk)[name] for name in DISK_FEATURES] for state in states for disk in state.disks.values()]
    features = np.asarray(rows, dtype=float)
    horizon, shortest = max(scorer.models), min(scorer.models)
    risk = scorer.predict(features, horizon)
    short = scorer.predict(features, shortest)
    contrib = scorer.contributions(features, horizon, risk)
    out = []
    for i, row in enumerate(features):
        factors = []
        for k in np.argsort(-contrib[i])[:3]:
            if contrib[i, k] <= EXPLAIN_MIN_DROP:
                break
            name = EXPLANATION_GROUPS[k][0]
            fac = factor(name, float(row[DISK_FEATURES.index(name)]), float(contrib[i, k]))
            delta_name = f"{name}_delta_7d"
            if delta_name in DISK_FEATURES and not math.isnan(row[DISK_FEATURES.index(delta_name)]):
                delta = row[DISK_FEATURES.index(delta_name)]
                if delta > 0:
                    fac = fac.model_copy(update={"text": f"{fac.text}, {delta:+.0f} in 7 days"})
            factors.append(fac)
        factors.append(
            Factor(
                feature=f"risk_{shortest}d",
                value=float(short[i]),
                text=f"{100 * short[i]:.1f}% chance of failure within {shortest} days",
            )
        )
        alarms = scorer.critical(dict(zip(DISK_FEATURES, row.tolist(), strict=True)))
        factors = [factor(n, float(row[DISK_FEATURES.index(n)]), 1.0) for n in alarms] + factors
        out.append(factors[:MAX_FACTORS])
    return out


def test_batch_factors_equal_the_row_by_row_explanation(artifact_dir: Path) -> None:
    """The batch path (one sort, only rows with a drop worth a line, alarms read from the computed features)
    gives every drive the factors of the plain per-drive loop, texts and values exactly."""
    shipped = next(s for s in load_scorers(ModelSettings()).champions if isinstance(s, TrainedDiskScorer))
    trained = TrainedDiskScorer.from_artifact(artifact_dir, artifact_digests(artifact_dir))
    states = [s for s in fleet() if s.last_collected_at is not None]
    simulated: dict[str, DeviceState] = {}
    sim = FleetSimulator(60, seed=3, start=NOW - timedelta(days=150), days=150, failure_scale=30.0)
    for report in sim.reports():
        simulated[report.device_id] = apply_report(simulated.get(report.device_id), report)
    states += list(simulated.values())
    for scorer in (shipped, trained):
        with shared_features():
            scores = scorer.score_batch(states, NOW)
            expected = _factors_row_by_row(scorer, states)
        assert [s.factors for s in scores] == expected
        factors = [f for s in scores for f in s.factors]
        assert any(", +" in f.text and "in 7 days" in f.text for f in factors), "a 7-day growth must be exercised"
        assert any(0.0 < f.contribution < 1.0 for f in factors), "model drops must be exercised"
        assert any(f.contribution == 1.0 for f in factors), "drive alarms must be exercised"
