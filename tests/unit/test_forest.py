"""The flat tree evaluation is the forest's own ``decision_function``, bit for bit, and refuses
trees scikit-learn could not have built."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from fleetpulse.models import forest
from fleetpulse.models.disk_model import DiskRiskModel
from fleetpulse.models.features import DISK_FEATURES
from fleetpulse.models.registry import load_scorers
from fleetpulse.models.threads import single_thread
from fleetpulse.settings import ServerSettings


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def sklearn_scores(model: HistGradientBoostingClassifier, x: np.ndarray) -> np.ndarray:
    with single_thread():
        out: np.ndarray = model.decision_function(x)
        return out


@pytest.fixture(scope="module")
def missing_aware_model() -> HistGradientBoostingClassifier:
    """Missing values in training send them left at some nodes and right at others; feature 3 is
    constant when present, so its only split is "missing or not" (threshold +inf)."""
    rng = np.random.default_rng(7)
    n = 2000
    x = rng.normal(size=(n, 4))
    x[:, 3] = 1.0
    x[rng.random(n) < 0.3, 0] = np.nan
    x[rng.random(n) < 0.4, 3] = np.nan
    logit = np.nan_to_num(x[:, 0], nan=2.0) + x[:, 1] - np.isnan(x[:, 3]) * 1.5
    y = (logit + rng.normal(scale=0.5, size=n) > 0).astype(int)
    with single_thread():  # OpenMP threads spinning against other processes make fitting crawl
        return HistGradientBoostingClassifier(max_iter=30, max_depth=6, random_state=0).fit(x, y)


def hostile_rows(n: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.integers(-4, 60, size=(n, width)) / 4.0
    x[rng.random(x.shape) < 0.1] = np.nan
    x[rng.random(x.shape) < 0.02] = np.inf
    x[rng.random(x.shape) < 0.02] = -np.inf
    x[rng.random(x.shape) < 0.02] = 1e300
    return x


def test_missing_values_go_where_each_node_sends_them(missing_aware_model: HistGradientBoostingClassifier) -> None:
    flat = forest.flatten(missing_aware_model)
    assert flat is not None
    inner = flat.child[0::2] != np.arange(0, len(flat.child), 2)
    assert np.isinf(flat.threshold[0::2][inner]).any(), "the fixture must include a split on missing values"
    assert (flat.feature[0::2][inner] >= flat.n_features).any()
    assert (flat.feature[0::2][inner] < flat.n_features).any()
    x = hostile_rows(3000, 4, seed=1)
    assert same_bits(flat.decision_function(x), sklearn_scores(missing_aware_model, x))


@pytest.fixture(scope="module")
def shipped_disk_models() -> list[DiskRiskModel]:
    disk = load_scorers(ServerSettings().models).champions[0]
    models = [m for m in getattr(disk, "models", {}).values() if isinstance(m, DiskRiskModel)]
    assert models, "the shipped champion is the trained disk model"
    return models


@pytest.mark.parametrize("rows", [1, 2, 17, forest.SMALL_CALL_ROWS, forest.SMALL_CALL_ROWS + 1, 900])
def test_the_shipped_disk_model_scores_identically_at_every_call_size(
    shipped_disk_models: list[DiskRiskModel], rows: int
) -> None:
    for seed, model in enumerate(shipped_disk_models):
        x = hostile_rows(rows, model.trees_.n_features_in_, seed=seed)
        assert same_bits(forest.decision_function(model.trees_, x), sklearn_scores(model.trees_, x))
        x_tree = model._tree_input(hostile_rows(rows, len(DISK_FEATURES), seed=seed + 10))  # what serving feeds it
        assert same_bits(forest.decision_function(model.trees_, x_tree), sklearn_scores(model.trees_, x_tree))


def test_a_refit_model_is_flattened_again(missing_aware_model: HistGradientBoostingClassifier) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(500, 4))
    model = HistGradientBoostingClassifier(max_iter=10, random_state=0)
    with single_thread():
        model.fit(x, (x[:, 0] > 0).astype(int))
    first = forest.flat_forest(model)
    assert forest.flat_forest(model) is first
    with single_thread():
        model.fit(x, (x[:, 1] > 0).astype(int))
    again = forest.flat_forest(model)
    assert again is not first
    assert same_bits(forest.decision_function(model, x[:5]), sklearn_scores(model, x[:5]))


def test_categorical_splits_are_left_to_scikit_learn() -> None:
    rng = np.random.default_rng(4)
    x = np.column_stack([rng.integers(0, 5, size=600), rng.normal(size=600)]).astype(float)
    y = (x[:, 0] % 2 == 0).astype(int)
    with single_thread():
        model = HistGradientBoostingClassifier(max_iter=10, categorical_features=[0], random_state=0).fit(x, y)
    assert forest.flatten(model) is None
    assert same_bits(forest.decision_function(model, x[:8]), sklearn_scores(model, x[:8]))


def test_rows_of_the_wrong_width_are_refused(missing_aware_model: HistGradientBoostingClassifier) -> None:
    flat = forest.flatten(missing_aware_model)
    assert flat is not None
    with pytest.raises(ValueError, match="expected rows of 4 inputs"):
        flat.decision_function(np.zeros((2, 5)))


def tampered(model: HistGradientBoostingClassifier, field: str, value: float) -> HistGradientBoostingClassifier:
    """The model with its first tree's root split changed in place (the caller's copy)."""
    nodes = model._predictors[0][0].nodes
    nodes[field][0] = value
    return model


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("left", 0, "a child does not follow its parent"),  # a loop: scikit-learn's own walk never ends
        ("right", 10**6, "a child does not follow its parent"),  # a read past the tree
        ("feature_idx", 9, "reads an input the model does not have"),
        ("num_threshold", np.nan, "reads an input the model does not have"),
    ],
)
def test_trees_scikit_learn_could_not_have_built_are_refused(
    missing_aware_model: HistGradientBoostingClassifier, field: str, value: float, reason: str
) -> None:
    model = tampered(copy.deepcopy(missing_aware_model), field, value)
    with pytest.raises(ValueError, match=reason):
        forest.flatten(model)


@pytest.fixture
def native() -> Any:
    return pytest.importorskip(
        "fleetpulse.streams._native", reason="the native extension is not built here (`make native` needs cargo)"
    )


@pytest.mark.parametrize("rows", [0, 1, 17, 900])
def test_the_compiled_forest_scores_identically(
    native: Any,
    shipped_disk_models: list[DiskRiskModel],
    missing_aware_model: HistGradientBoostingClassifier,
    rows: int,
) -> None:
    from fleetpulse.streams.processing import compiled_forest

    for seed, model in enumerate([missing_aware_model, *(m.trees_ for m in shipped_disk_models)]):
        flat = forest.flatten(model)
        assert flat is not None
        x = hostile_rows(rows, flat.n_features, seed=seed)
        compiled = np.frombuffer(compiled_forest(flat).decision(x.tobytes()), dtype=np.float64)
        assert same_bits(compiled, sklearn_scores(model, x) if rows else np.zeros(0))
        assert same_bits(compiled, flat.decision_function(x) if rows else np.zeros(0))


def test_a_worker_evaluates_every_forest_compiled(
    native: Any, shipped_disk_models: list[DiskRiskModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fleetpulse.alerts.policy import AlertPolicy
    from fleetpulse.contract import Topics
    from fleetpulse.models.registry import rule_scorers
    from fleetpulse.streams.processing import Processor
    from fleetpulse.streams.settings import StreamSettings

    monkeypatch.setattr(forest, "_compiler", [])
    monkeypatch.setattr(forest, "_FLAT", forest.weakref.WeakKeyDictionary())
    trees = shipped_disk_models[0].trees_
    x = hostile_rows(forest.SMALL_CALL_ROWS + 50, trees.n_features_in_, seed=5)
    before = forest.decision_function(trees, x)
    Processor(StreamSettings(), Topics(prefix="t."), rule_scorers(), AlertPolicy())
    _, compiled = forest._forms(trees)
    assert isinstance(compiled, native.Forest)
    assert same_bits(forest.decision_function(trees, x), before)


@pytest.mark.parametrize(
    "attack",
    ["feature past the inputs", "child past the end", "odd child", "half a node", "root past the end", "short rows"],
)
def test_attack_flat_arrays_that_would_read_out_of_bounds_are_refused(
    native: Any, missing_aware_model: HistGradientBoostingClassifier, attack: str
) -> None:
    flat = forest.flatten(missing_aware_model)
    assert flat is not None
    parts = {
        "feature": flat.feature.astype("<i8"),
        "threshold": flat.threshold.astype("<f8"),
        "child": flat.child.astype("<i8"),
        "value": flat.value.astype("<f8"),
        "roots": flat.roots.astype("<i8"),
    }
    if attack == "feature past the inputs":
        parts["feature"][3] = 2 * flat.n_features
    elif attack == "child past the end":
        parts["child"][5] = len(parts["child"]) + 2
    elif attack == "odd child":
        parts["child"][5] = 3
    elif attack == "half a node":
        parts = {name: array[:-1] for name, array in parts.items() if name != "roots"} | {"roots": parts["roots"]}
    elif attack == "root past the end":
        parts["roots"][0] = len(parts["child"])
    args = [parts[name].tobytes() for name in ("feature", "threshold", "child", "value", "roots")]
    if attack == "short rows":
        compiled = native.Forest(flat.n_features, *args, flat.depth, flat.baseline)
        with pytest.raises(ValueError, match="rows of"):
            compiled.decision(b"\0" * (8 * flat.n_features + 8))
        return
    with pytest.raises(ValueError, match=r"out of range|differ in length"):
        native.Forest(flat.n_features, *args, flat.depth, flat.baseline)
