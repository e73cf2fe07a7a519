"""Turn a trained experiment into a versioned, verifiable artifact in the registry folder."""

from __future__ import annotations

import ast
import hashlib
import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from fleetpulse.compat import UTC
from fleetpulse.models.artifact import TrainedDiskScorer, recorded_predictions, save_artifact
from fleetpulse.models.data import Instants, code_digest
from fleetpulse.models.disk_model import ALARM_SECTORS
from fleetpulse.models.drift import build_profile
from fleetpulse.models.features import DISK_FEATURES
from fleetpulse.models.index import METADATA_FILE
from fleetpulse.models.pipeline import ExperimentResult
from fleetpulse.models.thresholds import COVERAGE
from fleetpulse.models.training import Split

MODEL_NAME = "disk-gbm"
PROFILE_SAMPLE = 50_000


def _metrics(result: ExperimentResult) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for horizon in result.horizons:
        out[f"{horizon.horizon}d"] = {
            scorer.name: {"pr_auc": scorer.pr_auc, "brier": scorer.brier, "points": scorer.points}
            for scorer in horizon.scorers
        }
    return out


def model_code_digest() -> str:
    """Digest of the code a trained disk model depends on (syntax trees, so formatting does not
    count): the shipped artifact is current only while it matches."""
    from fleetpulse.models import data, disk_model, features, pipeline, state, thresholds, training

    sha = hashlib.sha256()
    for module in (state, features, data, disk_model, training, pipeline, thresholds):
        sha.update(ast.dump(ast.parse(Path(str(module.__file__)).read_text())).encode())
    return sha.hexdigest()[:12]


def ship_disk_model(
    result: ExperimentResult, instants: Instants, ship_dir: Path, seed: int, data_ref: dict[str, str]
) -> Path:
    """Publish the trained champion into ``ship_dir`` as its only artifact and register it
    there: the registry packaged with fleetpulse (rerun by ``make train`` whenever the model,
    its code or the artifact format changes; the same seed and data give the same version)."""
    from fleetpulse.contract import ScorerRole
    from fleetpulse.models.index import REGISTRY_FILE
    from fleetpulse.models.registry import register_artifact

    ship_dir.mkdir(parents=True, exist_ok=True)
    directory = publish_disk_model(result, instants, ship_dir, seed, data_ref)
    for old in ship_dir.iterdir():
        if old.is_dir() and old != directory:
            shutil.rmtree(old)
    (ship_dir / REGISTRY_FILE).unlink(missing_ok=True)
    register_artifact(ship_dir, "disk", directory.name, ScorerRole.CHAMPION)
    return directory


def publish_disk_model(
    result: ExperimentResult, instants: Instants, registry_dir: Path, seed: int, data_ref: dict[str, str]
) -> Path:
    """Write ``<registry_dir>/disk-gbm-<content digest>/`` and return it (not yet registered)."""
    exp = result.experiment
    train, _ = Split(cutoff_day=float(exp.cutoff.toordinal())).masks(instants)
    rng = np.random.default_rng(seed)
    index = np.flatnonzero(train)
    sample = np.sort(rng.choice(index, size=min(PROFILE_SAMPLE, len(index)), replace=False))
    horizon = max(result.models)
    scores = result.models[horizon].predict_proba(instants.features[sample])[:, 1]
    payload = {f"horizon_{h}": model for h, model in result.models.items()}
    payload["reference"] = result.reference
    meta: dict[str, Any] = {
        "name": MODEL_NAME,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "horizons": sorted(result.models),
        "feature_names": list(DISK_FEATURES),
        "feature_code_digest": code_digest(),
        "model_code_digest": model_code_digest(),
        "data": data_ref,
        "split": {"experiment": exp.name, "cutoff": exp.cutoff.isoformat(), "description": exp.description},
        "metrics": _metrics(result),
        "models": {str(h): model.describe() for h, model in sorted(result.models.items())},
        "operating_points": {
            str(h.horizon): {
                "basis": "leave-model-out probabilities of the training drives before the cut-off; threshold = "
                f"lowest probability that keeps the cap on at least {100 * COVERAGE:g} % of the training drive models (too few "
                f"models to measure a cap: the pooled drives); {ALARM_SECTORS:,} bad sectors score at least the highest",
                **h.alert_thresholds,
            }
            for h in result.horizons
        },
        "drift_profile": build_profile(instants.features[sample], scores),
        "predictions": recorded_predictions(
            TrainedDiskScorer(name=MODEL_NAME, version="", models=dict(result.models), reference=result.reference)
        ),
    }
    staging = registry_dir / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    meta = save_artifact(staging, payload, meta)
    version = meta["content_sha256"][:12]
    meta["version"] = version
    (staging / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    final = registry_dir / f"{MODEL_NAME}-{version}"
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    return final
