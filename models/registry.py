"""Which scorers run: champions (may raise alerts) and challengers (scored and stored only).

``load_scorers`` reads the registry index ``<registry_dir>/registry.json`` written by
``fleetpulse train``::

    {"format": 2,
     "champions": {"disk": "<artifact id>"}, "challengers": {"disk": ["<id>", ...]},
     "artifacts": {"<id>": {"model.skops": "<sha256>", "metadata.json": "<sha256>"}},
     "hmac": "<hex>"}

Integrity is anchored outside the artifact: the index holds the SHA-256 of both files of
every registered artifact, and with ``models.signing_key`` set the index itself carries
an HMAC-SHA256 under that key, so whoever can write the registry folder but not the
server's configuration cannot change a model or its alert threshold. A packaged registry
(inside the installed ``fleetpulse.models`` package) is trusted like the code next to it: its
own index's digests are verified, no signature is needed, nothing is written.

Artifact ids are plain folder names of the registry folder: no ``..``, no separators,
no symlink leading out of it. An artifact that fails any check is refused with the
reason, logged, and the worker serves the rule scorer for its component instead:
never the changed model. Without an index the rule scorers are champions.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from fleetpulse.contract import Component, RiskScore, ScorerRole
from fleetpulse.models.anomaly import AnomalyScorer
from fleetpulse.models.artifact import TrainedDiskScorer
from fleetpulse.models.base import Scorer
from fleetpulse.models.device_rules import MemoryRuleScorer, ThermalRuleScorer
from fleetpulse.models.feature_cache import shared_features
from fleetpulse.models.fleet import load_disk_scorer, recorded_metadata
from fleetpulse.models.index import (
    ARTIFACT_FILES,
    METADATA_FILE,
    MODEL_FILE,
    REGISTRY_FILE,
    REGISTRY_FORMAT,
    ArtifactError,
    Registry,
    _parse,
    _structure,
    artifact_digests,
    artifact_dir,
    index_mac,
    is_packaged,
    read_registry,
    sha256_file,
    signing_key,
    staged,
    write_atomically,
)
from fleetpulse.models.rules import BatteryRuleScorer, DiskRuleScorer
from fleetpulse.models.settings import ModelSettings
from fleetpulse.models.state import DeviceState

log = logging.getLogger(__name__)


ScorerLabels = tuple[str, str, str, str]
"""(component, role, name, version) of a served scorer, as the model-info metric labels it."""


@dataclass
class ScorerSet:
    champions: list[Scorer] = field(default_factory=list)
    challengers: list[Scorer] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    """Why registered artifacts are not served (shown in the worker's start-up line)."""
    generation: int = 0
    """The registry index's generation these scorers were loaded from."""
    logged_failures: set[ScorerLabels] = field(default_factory=set, init=False, repr=False, compare=False)
    """Scorers whose failure is logged already: a broken scorer fails every call, its traceback is told once."""

    def score(
        self, states: Sequence[DeviceState], now: datetime, failures: Counter[ScorerLabels] | None = None
    ) -> list[RiskScore]:
        """All scores for ``states``, each labelled with its scorer's role.

        A scorer that raises costs only its own scores of this call: one broken model must not leave every
        other component of the batch's devices unscored, nor crash-loop the worker. Its first failure is logged
        with the traceback; every failure adds the states it left unscored to ``failures`` under the scorer's
        labels (the stream worker's ``fleetpulse_stream_scorer_errors_total``).
        """
        out: list[RiskScore] = []
        with shared_features():  # a disk's features serve its champion and its challengers
            for role, group in ((ScorerRole.CHAMPION, self.champions), (ScorerRole.CHALLENGER, self.challengers)):
                for scorer in group:
                    try:
                        scores = [
                            score if score.role is role else score.model_copy(update={"role": role})
                            for score in scorer.score_batch(states, now)
                        ]
                    except Exception:
                        self._failed(
                            (scorer.component.value, role.value, scorer.name, scorer.version), states, failures
                        )
                        continue
                    out.extend(scores)
        return out

    def _failed(
        self, labels: ScorerLabels, states: Sequence[DeviceState], failures: Counter[ScorerLabels] | None
    ) -> None:
        """Log (once per scorer, with the exception being handled) and count a scorer's failed call."""
        if failures is not None:
            failures[labels] += len(states)
        if labels not in self.logged_failures:
            self.logged_failures.add(labels)
            component, role, name, version = labels
            log.exception(
                "scorer failed: its scores are missing, the other scorers' are published (its later failures are "
                "counted, not logged)",
                extra={
                    "fields": {
                        "component": component,
                        "role": role,
                        "model": f"{name}:{version}",
                        "states": len(states),
                    }
                },
            )

    def fit_baselines(self, states: Sequence[DeviceState]) -> None:
        """Refresh cohort baselines (anomaly scorer) from a population of states; call periodically."""
        for scorer in [*self.champions, *self.challengers]:
            fit = getattr(scorer, "fit_baseline", None)
            if fit is not None:
                fit(states)

    def alert_thresholds(self, cap: str) -> dict[Component, tuple[float, float]]:
        """(raise, clear) per component suggested by champions with stored operating points.

        The stream worker merges these under the configured policy
        (``AlertPolicy.with_defaults``): configured per-component thresholds always win.
        """
        out: dict[Component, tuple[float, float]] = {}
        for scorer in self.champions:
            suggest = getattr(scorer, "alert_thresholds", None)
            pair = suggest(cap) if suggest is not None else None
            if pair is not None:
                out[scorer.component] = pair
        return out

    def served(self) -> list[ScorerLabels]:
        """(component, role, name, version) of every scorer: what the model-info metric and the TSDB show."""
        return [
            (scorer.component.value, role.value, scorer.name, scorer.version)
            for role, group in ((ScorerRole.CHAMPION, self.champions), (ScorerRole.CHALLENGER, self.challengers))
            for scorer in group
        ]

    def describe(self) -> dict[str, list[str]]:
        return {
            "champions": [f"{s.name}:{s.version}" for s in self.champions],
            "challengers": [f"{s.name}:{s.version}" for s in self.challengers],
            "refused": list(self.refused),
        }


def rule_scorers() -> ScorerSet:
    return ScorerSet(
        champions=[DiskRuleScorer(), BatteryRuleScorer(), ThermalRuleScorer(), MemoryRuleScorer(), AnomalyScorer()]
    )


def load_scorers(settings: ModelSettings) -> ScorerSet:
    """Scorers for the stream processor; rule scorers when no trained artifact is registered.

    A trained disk champion replaces the disk rule, which then runs as a challenger so the
    two stay comparable. A registry or artifact that fails verification is refused: the
    error is logged and kept in ``ScorerSet.refused``, and its component keeps the rule
    scorer, so a tampered threshold is never served and the worker still runs. With a signing key,
    a missing index is refused too.
    """
    key = signing_key(settings)
    try:
        registry = read_registry(settings.registry_dir, key, required=key is not None)
    except ArtifactError as exc:
        return _refused(rule_scorers(), settings.registry_dir / REGISTRY_FILE, exc)
    scorers = rule_scorers()
    scorers.generation = registry.generation
    if key is None and registry.champions and not is_packaged(settings.registry_dir):
        log.warning(
            "registry index is not signed (models.signing_key unset): whoever can write the folder chooses the "
            "served models and their alert thresholds",
            extra={"fields": {"registry": str(settings.registry_dir)}},
        )
    champion_id = registry.champions.get(Component.DISK.value)
    if champion_id is not None:
        try:
            champion = load_artifact(registry, settings.registry_dir, champion_id)
        except ArtifactError as exc:
            _refused(scorers, champion_id, exc)
        else:
            scorers.champions = [champion, *(s for s in scorers.champions if s.component is not Component.DISK)]
            scorers.challengers.append(DiskRuleScorer())
    for artifact_id in registry.challengers.get(Component.DISK.value, []):
        try:
            scorers.challengers.append(load_artifact(registry, settings.registry_dir, artifact_id))
        except ArtifactError as exc:
            _refused(scorers, artifact_id, exc)
    return scorers


def _refused(scorers: ScorerSet, what: str | Path, exc: ArtifactError) -> ScorerSet:
    log.error(
        "model artifact refused: serving without it",
        extra={"fields": {"artifact": str(what), "error": str(exc)}},
    )
    scorers.refused.append(f"{what}: {exc}")
    return scorers


def write_registry(registry_dir: Path, registry: Registry, key: bytes | None = None) -> None:
    """Write the index atomically, signed when ``key`` is given; digests only of referenced artifacts."""
    registry.artifacts = {i: registry.artifacts[i] for i in registry.referenced() if i in registry.artifacts}
    registry.generation += 1
    body: dict[str, Any] = registry.body()
    if key is not None:
        body["hmac"] = index_mac(registry.body(), key)
    registry_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(registry_dir / REGISTRY_FILE, (json.dumps(body, indent=2, sort_keys=True) + "\n").encode())


def register_artifact(
    registry_dir: Path,
    component: str,
    artifact_id: str,
    role: ScorerRole,
    keep_challengers: int = 2,
    key: bytes | None = None,
    digests: dict[str, str] | None = None,
) -> Registry:
    """Record ``artifact_id`` with ``digests``, or the digests of its files as they are now (just written by
    training); a new champion demotes the previous one to challenger. The files must match ``digests``:
    promoting passes the ones the gate checked, so no edit made since is signed into the index."""
    registry = read_registry(registry_dir, key)
    digests = digests if digests is not None else artifact_digests(artifact_dir(registry_dir, artifact_id))
    load_disk_scorer(registry_dir / artifact_id, digests)  # never register what cannot be served
    registry.artifacts[artifact_id] = digests
    challengers = [c for c in registry.challengers.get(component, []) if c != artifact_id]
    if role is ScorerRole.CHAMPION:
        previous = registry.champions.get(component)
        if previous and previous != artifact_id:
            challengers.insert(0, previous)
        registry.champions[component] = artifact_id
    else:
        challengers.insert(0, artifact_id)
    registry.challengers[component] = challengers[:keep_challengers]
    write_registry(registry_dir, registry, key)
    return registry


def load_artifact(registry: Registry, registry_dir: Path, artifact_id: str) -> TrainedDiskScorer:
    """The artifact as the worker serves it, after its files match the index's digests."""
    return load_disk_scorer(artifact_dir(registry_dir, artifact_id), registry.digests(artifact_id))


@dataclass
class Verdict:
    artifact_id: str
    error: str | None


def verify_registry(registry_dir: Path, key: bytes | None = None) -> list[Verdict]:
    """Every registered artifact checked as the worker would load it (the index errors raise)."""
    registry = read_registry(registry_dir, key)
    verdicts = []
    for artifact_id in registry.referenced():
        try:
            load_artifact(registry, registry_dir, artifact_id)
            verdicts.append(Verdict(artifact_id, None))
        except ArtifactError as exc:
            verdicts.append(Verdict(artifact_id, str(exc)))
    return verdicts


def migrate_registry(registry_dir: Path, key: bytes | None = None) -> tuple[Registry, list[str]]:
    """Rewrite the index in the current format, signed when ``key`` is given; the index and the artifacts
    whose predictions it recorded (:func:`~fleetpulse.models.fleet.recorded_metadata`).

    An index of the old format gets the digests of the files as they are now: the operator
    vouches for them (``fleetpulse models migrate`` says so). Each artifact must still pass
    its old self-check (model digest inside its metadata) and the type check. An index
    already in the current format is re-signed only if every artifact matches its recorded
    digests: migration never launders a file changed after registration.
    """
    path = registry_dir / REGISTRY_FILE
    data = _parse(registry_dir)
    if data is None:
        raise ArtifactError(f"{path} not found: nothing to migrate")
    recorded = []
    if data.get("format") == REGISTRY_FORMAT:
        registry = _structure(path, data)
        checked = [(artifact_id, registry.digests(artifact_id)) for artifact_id in registry.referenced()]
    else:
        registry = _structure(path, {**data, "artifacts": {}})
        checked = []
        for artifact_id in registry.referenced():
            directory = artifact_dir(registry_dir, artifact_id)
            digests = artifact_digests(directory)
            try:
                meta = json.loads((directory / METADATA_FILE).read_bytes())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ArtifactError(f"{directory / METADATA_FILE}: invalid JSON ({exc})") from None
            if not isinstance(meta, dict) or meta.get("sha256") != digests[MODEL_FILE]:
                raise ArtifactError(f"{directory}: model file does not match the digest in its own metadata")
            checked.append((artifact_id, digests))
    pending = []
    for artifact_id, digests in checked:
        directory = artifact_dir(registry_dir, artifact_id)
        metadata = recorded_metadata(directory, digests)
        if metadata is not None:
            pending.append((directory, metadata))
            recorded.append(artifact_id)
            digests = {**digests, METADATA_FILE: hashlib.sha256(metadata).hexdigest()}
        registry.artifacts[artifact_id] = digests
    # Only once every artifact passed (a refusal changes no file), and crash-safe: the new metadata is staged
    # beside the old, the index naming its digest is the one commit, then each staged file replaces the old.
    # Stopped before the commit, the old index names the old files; after it, the loader reads a staged file
    # the index names in place of the old one; running migrate again finishes the renames.
    for directory, metadata in pending:
        write_atomically(staged(directory / METADATA_FILE), metadata)
    write_registry(registry_dir, registry, key)
    settle_staged(registry_dir, registry)
    return registry, recorded


def settle_staged(registry_dir: Path, registry: Registry) -> None:
    """Rename each staged file the committed ``registry`` names over its artifact's file; remove the others
    (staged by a migration that stopped before its commit, named by no index)."""
    for artifact_id, digests in registry.artifacts.items():
        directory = artifact_dir(registry_dir, artifact_id)
        for name in ARTIFACT_FILES:
            next_version = staged(directory / name)
            if not next_version.is_file():
                continue
            if sha256_file(next_version) == digests[name]:
                next_version.replace(directory / name)
            else:
                next_version.unlink()
