"""Versioned model artifacts: ``model.skops`` + ``metadata.json``, and the scorer serving them.

Loading never trusts the files: both must match SHA-256 digests held outside them (the
registry index, :mod:`fleetpulse.models.registry`; a digest inside ``metadata.json``
would protect nothing, since whoever edits the file can edit the digest), and the skops
dump may only contain the types in ``TRUSTED_TYPES`` (an explicit list in code, not read
from the artifact). The bytes verified are the bytes loaded, inflated under bounds before
skops reads them (:mod:`fleetpulse.models.dump`). Anything else raises :class:`ArtifactError`.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import re
import zipfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import skops.io as sio
from sklearn.calibration import CalibratedClassifierCV, _CalibratedClassifier, _SigmoidCalibration
from sklearn.ensemble import HistGradientBoostingClassifier

from fleetpulse.contract import Component, Factor, RiskScore
from fleetpulse.contract.v1 import MAX_HORIZON_DAYS
from fleetpulse.models import forest
from fleetpulse.models.base import make_score, scorable
from fleetpulse.models.disk_model import DiskRiskModel
from fleetpulse.models.dump import MAX_DUMP_BYTES, stored_dump
from fleetpulse.models.explain import factor
from fleetpulse.models.feature_cache import disk_features, disk_vector
from fleetpulse.models.features import CURRENT_DISK, DISK_FEATURES, GROWTH_COUNTERS
from fleetpulse.models.index import (
    ARTIFACT_FILES,
    METADATA_FILE,
    MODEL_FILE,
    ArtifactError,
    sha256_file,
    stored_threshold,
    verified_bytes,
)
from fleetpulse.models.rules import RISK_CRITICAL, critical_signs
from fleetpulse.models.state import DeviceState
from fleetpulse.models.threads import single_thread

# Everything a calibrated HistGradientBoosting dump legitimately contains beyond skops' defaults.
TRUSTED_TYPES = frozenset(
    {
        "fleetpulse.models.disk_model.DiskRiskModel",
        "sklearn.linear_model._logistic.LogisticRegression",
        # artifacts trained before the stacked model (still loadable as challengers)
        "sklearn.calibration.CalibratedClassifierCV",
        "sklearn.calibration._CalibratedClassifier",
        "sklearn.calibration._SigmoidCalibration",
        "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
        "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn._loss.loss.HalfBinomialLoss",
        "sklearn._loss.link.LogitLink",
        "sklearn._loss.link.Interval",
        "sklearn._loss._loss.CyHalfBinomialLoss",
        "sklearn.model_selection._split.GroupKFold",
        "builtins.slice",
        "numpy.int64",
        "numpy.float64",
        "numpy.dtype",
        "numpy.ndarray",
    }
)


MAX_METADATA_BYTES = 16 * 1024 * 1024
"""Far above any real metadata (the shipped model's is about 40 KB): read before it is parsed."""


def _read_bounded(path: Path) -> bytes:
    """The file's bytes, refused once it holds more than its bound: read in steps, since one read of the
    bound allocates it all, and a huge file (or a device in its place) is never read whole."""
    limit = MAX_DUMP_BYTES if path.name.startswith(MODEL_FILE) else MAX_METADATA_BYTES
    chunks, size = [], 0
    with path.open("rb") as file:
        while chunk := file.read(min(1024 * 1024, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise ArtifactError(f"{path}: larger than {limit} bytes")
    return b"".join(chunks)


def _verified_bytes(directory: Path, digests: dict[str, str]) -> dict[str, bytes]:
    """Each file's bytes, checked against ``digests``: the bytes checked are the bytes returned (a file
    :func:`~fleetpulse.models.index.staged` by a migration stopped after its index commit stands in for it)."""
    out: dict[str, bytes] = {}
    for name in ARTIFACT_FILES:
        path = directory / name
        expected = digests.get(name)
        if expected is None:
            raise ArtifactError(f"{path}: the registry index holds no digest for it")
        out[name] = verified_bytes(path, expected, _read_bounded)
    return out


_EMPTY_TUPLE_ID = re.compile(r'("__loader__": "TupleNode",\s*"content": \[\],\s*"__id__": )(\d+)')


def content_digest(path: Path) -> str:
    """SHA-256 of a skops dump's content, independent of zip timestamps and of the member
    names skops derives from memory addresses: the same fitted model always gets the same
    digest, so a retrain with the same seed and data reproduces the artifact's version.

    Every empty tuple counts as one object, as on Python 3.11+: on 3.10 skops loads them as
    separate objects, which would give a loaded and saved again model another digest. Not when an
    empty tuple's id is also another object's: skops would load that object in its place, and the
    dump must not share a digest with one that loads the tuple.
    """
    sha = hashlib.sha256()
    with zipfile.ZipFile(path) as archive:
        schema = archive.read("schema.json").decode()
        empty = Counter(match.group(2) for match in _EMPTY_TUPLE_ID.finditer(schema))
        if empty:
            every = Counter(re.findall(r'"__id__": (\d+)', schema))
            if all(every[node] == count for node, count in empty.items()):
                first = next(iter(empty))
                schema = _EMPTY_TUPLE_ID.sub(lambda match: match.group(1) + first, schema)
        members = list(dict.fromkeys(re.findall(r"\d+\.npy", schema)))
        ids: dict[str, str] = {}

        def canonical(match: re.Match[str]) -> str:
            return f'"__id__": {ids.setdefault(match.group(1), str(len(ids)))}'

        for index, name in enumerate(members):
            schema = schema.replace(f'"{name}"', f'"member-{index}"')
        sha.update(re.sub(r'"__id__": (\d+)', canonical, schema).encode())
        for name in members:
            sha.update(archive.read(name))
    return sha.hexdigest()


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in ("scikit-learn", "skops", "numpy", "pandas", "fleetpulse"):
        try:
            versions[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            versions[dist] = "unknown"
    return versions


def save_artifact(directory: Path, payload: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Write ``payload`` (estimators and arrays) and its metadata; returns the final metadata."""
    directory.mkdir(parents=True, exist_ok=True)
    model_path = directory / MODEL_FILE
    sio.dump(payload, model_path)
    untrusted = set(sio.get_untrusted_types(file=model_path)) - TRUSTED_TYPES
    if untrusted:
        raise ArtifactError(f"refusing to write an artifact with types outside TRUSTED_TYPES: {sorted(untrusted)}")
    meta = {
        **meta,
        "model_file": MODEL_FILE,
        "sha256": sha256_file(model_path),
        "content_sha256": content_digest(model_path),
        "libraries": library_versions(),
    }
    (directory / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    return meta


def load_artifact(directory: Path, digests: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(payload, metadata) after verifying both files against ``digests`` and the dump's types."""
    files = _verified_bytes(directory, digests)
    try:
        meta = json.loads(files[METADATA_FILE])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{directory / METADATA_FILE}: invalid JSON ({exc})") from None
    except RecursionError:
        raise ArtifactError(f"{directory / METADATA_FILE}: nested too deeply") from None
    if not isinstance(meta, dict):
        raise ArtifactError(f"{directory / METADATA_FILE}: expected an object")
    model = _retried(lambda: stored_dump(directory / MODEL_FILE, files[MODEL_FILE]))
    try:
        untrusted = sio.get_untrusted_types(data=model)
    except (zipfile.BadZipFile, ValueError, KeyError) as exc:
        raise ArtifactError(f"{directory / MODEL_FILE}: not a skops dump ({exc})") from None
    unexpected = set(untrusted) - TRUSTED_TYPES
    if unexpected:
        raise ArtifactError(f"{directory / MODEL_FILE}: contains types outside TRUSTED_TYPES: {sorted(unexpected)}")
    try:
        payload = _retried(lambda: sio.loads(model, trusted=list(untrusted)))
    except (SystemError, MemoryError):
        raise  # may pass (Python 3.11's AST race, memory): a worker tries again at its next registry check
    except Exception as exc:  # a corrupt or hostile dump: refused for good
        raise ArtifactError(
            f"{directory / MODEL_FILE}: does not load ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None
    if not isinstance(payload, dict):
        raise ArtifactError(f"{directory / MODEL_FILE}: payload is not a dict")
    return payload, meta


# CPython 3.11 keeps one AST recursion counter per interpreter (python/cpython#106905, fixed in
# 3.12): numpy parses every array header with ``ast.literal_eval``, so a traceback formatted by another
# thread (which parses source on 3.11) while an artifact loads can fail the load with this error.
_SPURIOUS_AST_ERROR = "AST constructor recursion depth mismatch"
_LOAD_ATTEMPTS = 3
_T = TypeVar("_T")


def _retried(call: Callable[[], _T]) -> _T:
    """``call()``, retried when it meets the spurious 3.11 error above (nothing else is retried): skops'
    load and the array header checks before it parse headers with ``ast.literal_eval``."""
    attempt = 1
    while True:
        try:
            return call()
        except SystemError as exc:
            if attempt == _LOAD_ATTEMPTS or not str(exc).startswith(_SPURIOUS_AST_ERROR):
                raise
            attempt += 1


def _explanation_groups() -> list[tuple[str, list[int]]]:
    """Features that are reset together when measuring a contribution (a counter and its trends)."""
    groups: list[tuple[str, list[int]]] = []
    for name in CURRENT_DISK:
        if name in GROWTH_COUNTERS:
            members = [i for i, f in enumerate(DISK_FEATURES) if f == name or f.startswith(f"{name}_")]
        else:
            members = [DISK_FEATURES.index(name)]
        groups.append((name, members))
    return groups


EXPLANATION_GROUPS = _explanation_groups()


def _group_columns() -> np.ndarray:
    """(groups, features): which columns each of ``EXPLANATION_GROUPS`` resets."""
    columns = np.zeros((len(EXPLANATION_GROUPS), len(DISK_FEATURES)), dtype=bool)
    for k, (_, members) in enumerate(EXPLANATION_GROUPS):
        columns[k, members] = True
    return columns


_GROUP_COLUMNS = _group_columns()
_COLUMN = {name: i for i, name in enumerate(DISK_FEATURES)}
"""Column of each feature in the model's input (``DISK_FEATURES.index`` without the scan)."""
EXPLAIN_MIN_DROP = 0.001
"""Risk drops up to this are not worth a line on a ticket."""


def reference_row(value: Any) -> np.ndarray:
    """The artifact's typical healthy row (what explanations reset to, the probe's first row): one finite or
    missing value per feature; ``ValueError`` for anything else."""
    row = np.asarray(value, dtype=float)
    if row.shape != (len(DISK_FEATURES),) or np.isinf(row).any():
        raise ValueError(f"reference row of shape {row.shape}, expected {len(DISK_FEATURES)} finite or missing values")
    return row


def _check_trees(trees: Any) -> None:
    """Raise ``ValueError`` unless ``trees`` is a binary gradient-boosted model whose every walk provably ends
    (:func:`~fleetpulse.models.forest.flatten`): a child pointing back at its parent would loop scikit-learn's
    own prediction forever, and trees flatten does not cover (categorical splits, several per iteration) are
    not proven at all."""
    if not isinstance(trees, HistGradientBoostingClassifier):
        raise ValueError(f"has no fitted trees ({type(trees).__name__})")
    if getattr(trees, "n_trees_per_iteration_", None) != 1:
        raise ValueError("has trees for several classes: only binary models are served")
    try:
        flat = forest.flat_forest(trees)
    except ValueError as exc:
        raise ValueError(f"has malformed trees ({exc})") from None
    except Exception as exc:  # node arrays of another layout than scikit-learn writes
        raise ValueError(f"has unreadable trees ({type(exc).__name__}: {str(exc)[:200]})") from None
    if flat is None:
        raise ValueError("has trees that cannot be checked (categorical splits, several trees per iteration, or none)")


def _check_model(model: Any) -> None:
    """Raise ``ValueError`` unless ``model`` is a kind of model fleetpulse serves and every tree its prediction
    walks is checked (:func:`_check_trees`): the disk model, plain gradient-boosted trees, or either calibrated
    by sigmoids (the calibrated wrapper predicts with its inner models and calibrators, not with its own)."""
    if isinstance(model, DiskRiskModel):
        _check_trees(getattr(model, "trees_", None))
    elif isinstance(model, HistGradientBoostingClassifier):
        _check_trees(model)
    elif isinstance(model, CalibratedClassifierCV):
        calibrated = getattr(model, "calibrated_classifiers_", None)
        if not isinstance(calibrated, list) or not calibrated:
            raise ValueError("is calibrated without fitted classifiers")
        for inner in calibrated:
            estimator = getattr(inner, "estimator", None)
            calibrators = getattr(inner, "calibrators", None)
            if (
                not isinstance(inner, _CalibratedClassifier)
                or not isinstance(estimator, DiskRiskModel | HistGradientBoostingClassifier)
                or not isinstance(calibrators, list)
                or not calibrators
                or not all(isinstance(c, _SigmoidCalibration) for c in calibrators)
            ):
                raise ValueError("is calibrated otherwise than by sigmoids over a disk model or trees")
            _check_model(estimator)
    else:
        raise ValueError(f"is a {type(model).__name__}, not a kind of model fleetpulse serves")


def horizon_models(directory: Path, payload: dict[str, Any], meta: dict[str, Any]) -> dict[int, Any]:
    """The artifact's model per horizon of its metadata, refused unless the horizons are distinct whole days a
    risk score can state, at least one, naming exactly the dump's models, each proven servable
    (:func:`_check_model`): a scorer without a model fails every scoring call, one whose model cannot predict
    fails them too, one whose tree loops never returns."""
    horizons = meta.get("horizons")
    if (
        not isinstance(horizons, list)
        or not horizons
        or not all(type(h) is int and 1 <= h <= MAX_HORIZON_DAYS for h in horizons)
        or len(set(horizons)) != len(horizons)
    ):
        raise ArtifactError(
            f"{directory}: the metadata's horizons must be distinct whole days from 1 to {MAX_HORIZON_DAYS}, at "
            f"least one (got {str(horizons)[:100]})"
        )
    stored = sorted(str(key) for key in payload if str(key).startswith("horizon_"))
    if stored != sorted(f"horizon_{h}" for h in horizons):
        raise ArtifactError(
            f"{directory}: the metadata's horizons {sorted(horizons)} do not name the models in {MODEL_FILE} "
            f"({', '.join(stored[:10]) or 'none'})"
        )
    models = {h: payload[f"horizon_{h}"] for h in horizons}
    for horizon, model in models.items():
        try:
            _check_model(model)
        except ValueError as exc:
            raise ArtifactError(f"{directory}: the {horizon}-day model {exc}") from None
    return models


PROBE_ROWS = 2 * forest.SMALL_CALL_ROWS
"""Rows of the predictions an artifact records: one call over all of them takes scikit-learn's walk, calls of
``forest.SMALL_CALL_ROWS`` rows the flat evaluation, so both are checked."""
PREDICTION_TOLERANCE = 1e-9
"""Largest difference in a probability accepted between the recorded predictions and this environment's: a few
ulps from another summation order, not a model read differently."""


PROBE_ALARMS = (("smart_failed", 1.0), ("critical_warning", 1.0), ("media_errors", 3.0), ("spare_margin_pct", 0.0))
"""The drive's own alarms (``rules.critical_signs``), each set alone in one of the last probe rows: values the
hashed rows almost never reach, and inputs of a fleet challenger's stacked layer."""


def probe_features(reference: np.ndarray, rows: int = PROBE_ROWS) -> np.ndarray:
    """The model's typical healthy row, rows that change some of its values, fixed by a hash (a random
    generator's stream may change between numpy versions), then one row per drive alarm: in row ``r``, each
    value changes with probability ``r / rows``, to a missing value or one over six magnitudes, so the rows
    range from healthy to failing."""
    width = len(reference)
    out = np.tile(np.asarray(reference, dtype=float), (rows, 1))
    for row, (name, value) in enumerate(PROBE_ALARMS, start=rows - len(PROBE_ALARMS)):
        out[row, _COLUMN[name]] = value
    for row in range(1, rows - len(PROBE_ALARMS)):
        raw = hashlib.shake_256(f"fleetpulse-prediction-probe-{row}".encode()).digest(4 * width)
        for column in range(width):
            word = int.from_bytes(raw[4 * column : 4 * column + 4], "little")
            if word % rows < row:
                magnitude = 10.0 ** ((word >> 12) % 6 - 1)
                out[row, column] = math.nan if (word >> 9) % 4 == 0 else (word >> 16) % 1000 * magnitude
    return out


class Predicts(Protocol):
    models: dict[int, Any]
    reference: np.ndarray

    def predict(self, features: np.ndarray, horizon: int) -> np.ndarray: ...


def recorded_predictions(scorer: Predicts) -> dict[str, Any]:
    """What ``scorer`` predicts for :func:`probe_features`, per horizon, for its metadata: a loaded artifact must
    predict the same (:func:`check_predictions`)."""
    probe = probe_features(scorer.reference)
    return {"rows": len(probe), "horizons": {str(h): scorer.predict(probe, h).tolist() for h in sorted(scorer.models)}}


def check_predictions(directory: Path, scorer: Predicts, meta: dict[str, Any]) -> None:
    """Refuse an artifact that predicts here otherwise than when it was trained.

    The digests prove the files unchanged, not that this environment reads them the same: another
    scikit-learn or numpy (Python 3.10 installs an older scikit-learn than the model was trained with,
    which only warns) could unpickle a model that scores differently. Making it predict here also proves it
    predicts at all, before a worker serves it. An artifact that records no predictions (registered before
    artifacts recorded them) is refused: ``fleetpulse models migrate`` records them once its models are
    proven servable."""
    recorded = meta.get("predictions")
    if recorded is None:
        raise ArtifactError(
            f"{directory}: records no predictions to check this environment against (written before artifacts "
            "recorded them): record them with `fleetpulse models migrate`, which first proves its trees walkable, "
            "or retrain it"
        )
    horizons = recorded.get("horizons") if isinstance(recorded, dict) else None
    if not isinstance(horizons, dict) or sorted(horizons) != sorted(str(h) for h in scorer.models):
        raise ArtifactError(f"{directory}: malformed recorded predictions (one list per horizon expected)")
    probe = probe_features(scorer.reference)
    libraries = meta.get("libraries")
    trained_with, here = libraries if isinstance(libraries, dict) else {}, library_versions()
    for horizon in sorted(scorer.models):
        values = horizons[str(horizon)]
        if not isinstance(values, list) or len(values) != len(probe) or not all(type(v) is float for v in values):
            raise ArtifactError(
                f"{directory}: malformed recorded predictions ({len(probe)} floats per horizon expected)"
            )
        expected = np.asarray(values)
        try:
            whole = scorer.predict(probe, horizon)
            small = np.concatenate(
                [
                    scorer.predict(probe[i : i + forest.SMALL_CALL_ROWS], horizon)
                    for i in range(0, len(probe), forest.SMALL_CALL_ROWS)
                ]
            )
            worst = float(np.max(np.abs(np.concatenate([whole, small]) - np.tile(expected, 2)), initial=0.0))
        except Exception as exc:  # a model that cannot even predict the rows is refused, not a crashed start
            raise ArtifactError(
                f"{directory}: the {horizon}-day model does not predict ({type(exc).__name__}: {str(exc)[:200]})"
            ) from None
        if not worst <= PREDICTION_TOLERANCE:  # NaN included
            versions = ", ".join(
                f"{dist} {trained_with.get(dist, '?')} then, {here[dist]} here" for dist in ("scikit-learn", "numpy")
            )
            raise ArtifactError(
                f"{directory}: the {horizon}-day model predicts otherwise here than when it was trained (largest "
                f"difference {worst:.3g}; {versions}): install the versions it was trained with, or retrain it here"
            )


@dataclass
class TrainedDiskScorer:
    """Calibrated probabilities of disk failure within 7 and 30 days from the shared features.

    Backblaze data has neither the drive's SMART verdict nor NVMe health logs, so the
    model cannot weigh them; when a drive declares itself failing (``critical_signs``)
    the risk is raised to the rule's critical level and the reason is the first factor.
    """

    name: str
    version: str
    models: dict[int, Any]
    reference: np.ndarray
    drift_profile: dict[str, Any] | None = None
    operating_points: dict[str, Any] | None = None
    component: Component = Component.DISK

    @classmethod
    def from_artifact(cls, directory: Path, digests: dict[str, str]) -> TrainedDiskScorer:
        """The scorer of the artifact in ``directory``, verified against the registry's ``digests``, once it
        predicts what it recorded."""
        payload, meta = load_artifact(directory, digests)
        scorer = cls.from_loaded(directory, payload, meta)
        check_predictions(directory, scorer, meta)
        return scorer

    @classmethod
    def from_loaded(cls, directory: Path, payload: dict[str, Any], meta: dict[str, Any]) -> TrainedDiskScorer:
        """The scorer of an artifact :func:`load_artifact` verified and loaded, its models proven servable
        (:func:`horizon_models`); not served before :func:`check_predictions` passes."""
        if tuple(meta.get("feature_names", ())) != DISK_FEATURES:
            raise ArtifactError(f"{directory}: trained on different features than this code computes")
        models = horizon_models(directory, payload, meta)
        try:
            return cls(
                name=str(meta["name"]),
                version=str(meta["version"]),
                models=models,
                reference=reference_row(payload["reference"]),
                operating_points=meta.get("operating_points"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{directory}: incomplete artifact ({type(exc).__name__}: {exc})") from None

    def alert_thresholds(self, cap: str) -> tuple[float, float] | None:
        """(raise, clear) suggested for alerts on this scorer's risk (the longest horizon):
        raise at the stored operating point for ``cap``, clear at half of it (hysteresis).
        None for artifacts without stored operating points."""
        return stored_threshold(self.operating_points, self.models, cap)

    def critical(self, feats: dict[str, float]) -> list[str]:
        """The drive's own alarms that raise the risk to critical whatever the model says."""
        return critical_signs(feats)

    def predict(self, features: np.ndarray, horizon: int) -> np.ndarray:
        model = self.models[horizon]
        if isinstance(model, DiskRiskModel):  # it limits scikit-learn's threads where it calls it
            return np.asarray(model.predict_proba(features)[:, 1], dtype=float)
        with single_thread():
            return np.asarray(model.predict_proba(features)[:, 1], dtype=float)

    def contributions(self, features: np.ndarray, horizon: int, base: np.ndarray | None = None) -> np.ndarray:
        """(n, groups) drop in risk when a group is reset to a typical healthy value.

        A drop can never exceed the risk itself, so rows at or below ``EXPLAIN_MIN_DROP`` get
        zeros without predicting: at a healthy fleet that skips nearly all of the g extra
        predictions per drive, the bulk of the scoring time.
        """
        base = self.predict(features, horizon) if base is None else base
        drop = np.zeros((len(features), len(EXPLANATION_GROUPS)))
        explain = base > EXPLAIN_MIN_DROP
        if explain.any():
            drop[explain] = self._drops(features[explain], base[explain], horizon)
        return drop

    def _drops(self, features: np.ndarray, base: np.ndarray, horizon: int) -> np.ndarray:
        """Only rows a reset changes are predicted: a group already at its typical value (or
        missing) drops nothing, exactly, since a row's prediction depends on that row alone.
        At a healthy fleet that is about three groups in four."""
        # only values the drive reports are reset; a missing value stays missing
        reset = _GROUP_COLUMNS & ~np.isnan(features)[:, None, :]  # (n, groups, features)
        changed = np.any(reset & (features != self.reference)[:, None, :], axis=2)
        drop = np.zeros(changed.shape)
        if changed.any():
            row, group = np.nonzero(changed)  # row-major: drive by drive, each drive's groups in order
            perturbed = features[row]
            np.copyto(perturbed, self.reference, where=reset[row, group])
            drop[changed] = base[row] - self.predict(perturbed, horizon)
        return drop

    def score_batch(self, states: Sequence[DeviceState], now: datetime) -> list[RiskScore]:
        rows, owners, feats = [], [], []
        for state in scorable(states):
            for key, disk in state.disks.items():
                rows.append(disk_vector(disk))
                feats.append(disk_features(disk))
                owners.append((state, key))
        if not rows:
            return []
        features = np.asarray(rows, dtype=float)
        horizon = max(self.models)
        risk = self.predict(features, horizon)
        overrides = [self.critical(row) for row in feats]
        short = self.predict(features, min(self.models)) if len(self.models) > 1 else risk
        contrib = self.contributions(features, horizon, risk)
        # one sort for the batch (the same per-row sort as argsort of each row), and only rows
        # with a drop worth a line are walked: at a healthy fleet, hardly any
        explained = np.any(contrib > EXPLAIN_MIN_DROP, axis=1)
        order = np.argsort(-contrib[explained], axis=1)[:, :3] if explained.any() else None
        ranks = iter(() if order is None else order.tolist())
        scores = []
        for i, (state, key) in enumerate(owners):
            factors: list[Factor] = []
            for k in next(ranks) if explained[i] else ():
                if contrib[i, k] <= EXPLAIN_MIN_DROP:
                    break
                name = EXPLANATION_GROUPS[k][0]
                value = float(features[i, _COLUMN[name]])
                delta_name = f"{name}_delta_7d"
                delta = features[i, _COLUMN[delta_name]] if delta_name in _COLUMN else math.nan
                # the 7-day growth joins the text only when it grew
                suffix = f", {delta:+.0f} in 7 days" if not math.isnan(delta) and delta > 0 else ""
                factors.append(factor(name, value, float(contrib[i, k]), suffix))
            if len(self.models) > 1:
                factors.append(
                    Factor(
                        feature=f"risk_{min(self.models)}d",
                        value=float(short[i]),
                        text=f"{100 * short[i]:.1f}% chance of failure within {min(self.models)} days",
                    )
                )
            value = float(risk[i])
            if overrides[i]:
                # signals the training data never carried (SMART verdict, NVMe health log):
                # the drive's own alarm wins over a model that cannot see it
                value = max(value, RISK_CRITICAL)
                names = overrides[i]
                factors = [factor(n, float(features[i, _COLUMN[n]]), 1.0) for n in names] + factors
            scores.append(
                make_score(self, state, now, risk=value, horizon_days=horizon, component_id=key, factors=factors)
            )
        return scores
