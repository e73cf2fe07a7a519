"""Gradient-boosted trees evaluated level by level over flat arrays, for small scoring calls.

scikit-learn's ``HistGradientBoostingClassifier`` predicts one tree per Python call: input
validation, then for each of the model's trees a call into compiled code with its own OpenMP
region. For the few drives a stream batch scores, that fixed cost is nearly all of the work
(about 1 ms per 150 trees, however few rows). Here every tree of the model advances one level
per numpy step, so a call costs about the trees' depth in array operations.

The result is bit for bit the forest's own ``decision_function``: the same ``<=`` comparison
against the same float64 thresholds, missing values sent where each node sends them, and the
leaf values added to the baseline in tree order (``np.add.accumulate`` is sequential, as
scikit-learn's ``+=`` per tree is). ``tests/unit/test_forest.py`` checks it on real drives.
Large calls go to scikit-learn, whose compiled walk is cheaper per row, unless a compiled
evaluator of the flat form is in use (:func:`use_compiler`: the stream worker's native
extension walks it row by row, faster than both at every size).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from fleetpulse.models.threads import single_thread

SMALL_CALL_ROWS = 128
"""Up to this many rows the flat evaluation is cheaper; beyond, scikit-learn's per-row walk wins
(``python benchmarks/tree_evaluation.py``)."""


@dataclass(frozen=True, slots=True)
class FlatForest:
    """All trees of a binary gradient-boosted model in flat arrays indexed by ``2 * node + goes_left``.

    Node ``g`` owns slots ``2g`` (taken when the row goes right) and ``2g + 1`` (left); a leaf's
    two slots lead back to itself, so rows that reach a leaf early stay there. A node that sends
    missing values left reads the row's second half, where NaN is -inf (``-inf <= threshold``);
    one that sends them right reads the first half, where NaN compares false.
    """

    n_features: int
    feature: np.ndarray
    """per slot: the input column read, offset by ``n_features`` when missing values go left"""
    threshold: np.ndarray
    child: np.ndarray
    """per slot: the doubled index of the next node"""
    value: np.ndarray
    roots: np.ndarray
    depth: int
    baseline: float

    def rows(self, x: np.ndarray) -> np.ndarray:
        """``x`` as contiguous float64 rows of this forest's inputs; ValueError for another shape."""
        rows = np.ascontiguousarray(x, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != self.n_features:
            raise ValueError(f"expected rows of {self.n_features} inputs, got shape {rows.shape}")
        return rows

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """Raw score per row: baseline plus the leaf value of every tree, summed in tree order."""
        x = self.rows(x)
        n = len(x)
        both = np.concatenate([x, np.where(np.isnan(x), -np.inf, x)], axis=1).ravel()
        row_start = (np.arange(n, dtype=np.intp) * (2 * self.n_features))[:, None]
        node = np.repeat(self.roots[None, :], n, axis=0)
        for _ in range(self.depth):
            column = self.feature[node]
            column += row_start
            node += both[column] <= self.threshold[node]
            node = self.child[node]
        leaves = np.empty((n, len(self.roots) + 1))
        leaves[:, 0] = self.baseline
        leaves[:, 1:] = self.value[node]
        out: np.ndarray = np.add.accumulate(leaves, axis=1)[:, -1]
        return out


def flatten(model: Any) -> FlatForest | None:
    """The flat form of a fitted binary ``HistGradientBoostingClassifier``; None for a model it
    does not cover (categorical splits, several trees per iteration), which scikit-learn predicts.

    Raises ``ValueError`` for trees that scikit-learn could never have built (a child index that is
    not after its parent, an input column out of range, a NaN threshold): a tampered artifact must
    not steer reads out of bounds or loop.
    """
    predictors = getattr(model, "_predictors", None)
    baseline = np.asarray(getattr(model, "_baseline_prediction", np.zeros(0)), dtype=np.float64)
    n_features = int(getattr(model, "n_features_in_", 0))
    if not predictors or baseline.size != 1 or any(len(iteration) != 1 for iteration in predictors):
        return None
    trees = [iteration[0].nodes for iteration in predictors]
    if any(bool(np.any(nodes["is_categorical"])) for nodes in trees):
        return None
    features, thresholds, children, values, roots = [], [], [], [], []
    depth, offset = 0, 0
    for t, nodes in enumerate(trees):
        size = len(nodes)
        if size == 0:
            raise ValueError(f"tree {t} has no nodes")
        leaf = nodes["is_leaf"].astype(bool)
        index = np.arange(size)
        left, right = nodes["left"].astype(np.intp), nodes["right"].astype(np.intp)
        feature = nodes["feature_idx"].astype(np.intp)
        threshold = nodes["num_threshold"].astype(np.float64)
        inner = ~leaf
        if np.any(inner & ((left <= index) | (right <= index) | (left >= size) | (right >= size))):
            raise ValueError(f"tree {t}: a child does not follow its parent")
        if np.any(inner & ((feature < 0) | (feature >= n_features) | np.isnan(threshold))):
            raise ValueError(f"tree {t}: a split reads an input the model does not have")
        level = np.zeros(size, dtype=np.intp)
        for g in np.flatnonzero(inner):  # children follow parents: one pass fills every depth
            level[left[g]] = level[right[g]] = level[g] + 1
        depth = max(depth, int(level.max()))
        goes_left = nodes["missing_go_to_left"].astype(bool)
        slot_feature = np.where(inner, feature + n_features * goes_left, 0)
        features.append(np.repeat(slot_feature, 2))
        thresholds.append(np.repeat(np.where(inner, threshold, np.inf), 2))
        to = np.empty(2 * size, dtype=np.intp)
        to[0::2] = 2 * (offset + np.where(inner, right, index))
        to[1::2] = 2 * (offset + np.where(inner, left, index))
        children.append(to)
        values.append(np.repeat(nodes["value"].astype(np.float64), 2))
        roots.append(2 * offset)
        offset += size
    return FlatForest(
        n_features=n_features,
        feature=np.concatenate(features),
        threshold=np.concatenate(thresholds),
        child=np.concatenate(children),
        value=np.concatenate(values),
        roots=np.asarray(roots, dtype=np.intp),
        depth=depth,
        baseline=float(baseline.ravel()[0]),
    )


class CompiledForest(Protocol):
    """A flat forest in compiled code: the raw score of float64 rows, the same bits as ``FlatForest``'s."""

    def decision(self, rows: bytes) -> bytes: ...


Compiler = Callable[[FlatForest], CompiledForest]
_compiler: list[Compiler] = []


def use_compiler(compiler: Compiler) -> None:
    """Evaluate every flat forest with ``compiler``'s evaluator from now on, at every call size.

    The stream worker passes its native extension's (``streams/native``): models stay free of
    the stream layer, and an install without the extension predicts as before.
    """
    if _compiler != [compiler]:  # every worker's processor passes the same: the forms built stay valid
        _compiler[:] = [compiler]
        _FLAT.clear()


_FLAT: weakref.WeakKeyDictionary[Any, tuple[object, FlatForest | None, CompiledForest | None]] = (
    weakref.WeakKeyDictionary()
)


def _forms(model: Any) -> tuple[FlatForest | None, CompiledForest | None]:
    """``model``'s flat and compiled forms, built once per fitted tree list (a refit builds new ones)."""
    cached = _FLAT.get(model)
    predictors = getattr(model, "_predictors", None)
    if cached is not None and cached[0] is predictors:
        return cached[1], cached[2]
    flat = flatten(model)
    compiled = _compiler[0](flat) if flat is not None and _compiler else None
    _FLAT[model] = (predictors, flat, compiled)
    return flat, compiled


def flat_forest(model: Any) -> FlatForest | None:
    """``model``'s flat form, built once per fitted tree list (a refit builds a new one)."""
    return _forms(model)[0]


def decision_function(model: Any, x: np.ndarray) -> np.ndarray:
    """``model.decision_function(x)``: compiled where a compiler is in use, else flat for small calls."""
    flat, compiled = _forms(model)
    if compiled is not None and flat is not None:
        rows = flat.rows(x).astype("<f8", copy=False).tobytes()  # the extension reads little-endian float64
        return np.frombuffer(compiled.decision(rows), dtype="<f8").astype(np.float64)
    if flat is not None and len(x) <= SMALL_CALL_ROWS:
        return flat.decision_function(x)
    with single_thread():
        out: np.ndarray = model.decision_function(x)
        return out
