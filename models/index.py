"""The model registry's index, read and verified without loading a model.

The worker loads models through :mod:`fleetpulse.models.registry`; processes that only need to
know what is registered and which alert thresholds the champions store (the API drawing the
served threshold on a device page) read it here, with the same checks and none of the numeric
libraries, so they stay small. Standard library and pydantic settings only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetpulse.contract import Component
from fleetpulse.models.settings import ModelSettings

MODEL_FILE = "model.skops"
METADATA_FILE = "metadata.json"
ARTIFACT_FILES = (MODEL_FILE, METADATA_FILE)
REGISTRY_FILE = "registry.json"
REGISTRY_FORMAT = 2
ARTIFACT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
PACKAGE_ROOT = Path(__file__).resolve().parent
"""The installed ``fleetpulse.models`` package: a registry inside it ships with the code."""


class ArtifactError(RuntimeError):
    """An artifact that is missing, tampered with, or contains types we do not trust."""


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


STAGED_SUFFIX = ".staged"


def staged(path: Path) -> Path:
    """Where ``fleetpulse models migrate`` writes the next version of an artifact's file before the index names
    its digest: it is read in place of ``path`` only while the index names it (a migration stopped between
    committing the index and renaming the file), so a crash leaves the old artifact or the new one."""
    return path.with_name(path.name + STAGED_SUFFIX)


def verified_bytes(path: Path, expected: str, read: Callable[[Path], bytes]) -> bytes:
    """The bytes of ``path``, or of its :func:`staged` version, whose SHA-256 is ``expected``; read once each,
    ``path`` again last (the staged file may have been renamed over it meanwhile)."""
    error: ArtifactError | None = None
    for candidate in (path, staged(path), path):
        try:
            data = read(candidate)
        except OSError as exc:
            if candidate == path and error is None:
                error = ArtifactError(f"artifact incomplete: cannot read {path} ({exc.strerror or type(exc).__name__})")
            continue
        actual = hashlib.sha256(data).hexdigest()
        if hmac.compare_digest(actual, expected):
            return data
        if candidate == path and error is None:
            error = ArtifactError(
                f"{path}: SHA-256 {actual} does not match the registry index ({expected}): "
                "the file changed after the artifact was registered"
            )
    assert error is not None
    raise error


def write_atomically(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` or what it held before, also after a crash: written beside it, flushed to
    disk, then renamed over it."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    tmp.replace(path)
    if os.name == "posix":  # the rename itself reaches the disk
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def artifact_digests(directory: Path) -> dict[str, str]:
    """SHA-256 of each file of the artifact in ``directory``, as the registry index records them."""
    missing = [name for name in ARTIFACT_FILES if not (directory / name).is_file()]
    if missing:
        raise ArtifactError(f"artifact incomplete: {directory} lacks {', '.join(missing)}")
    return {name: sha256_file(directory / name) for name in ARTIFACT_FILES}


def signing_key(settings: ModelSettings) -> bytes | None:
    return settings.signing_key.get_secret_value().encode() if settings.signing_key is not None else None


def is_packaged(registry_dir: Path) -> bool:
    return registry_dir.resolve().is_relative_to(PACKAGE_ROOT)


def artifact_dir(registry_dir: Path, artifact_id: str) -> Path:
    """The folder of ``artifact_id``, refused unless it stays inside ``registry_dir`` (also through symlinks)."""
    if not ARTIFACT_ID.fullmatch(artifact_id):  # a leading letter or digit: never ".", ".." or a path
        raise ArtifactError(f"artifact id {artifact_id!r} is not a plain folder name of the registry")
    root = registry_dir.resolve()
    directory = registry_dir / artifact_id
    files = [directory / name for name in ARTIFACT_FILES]
    for path in (directory, *files, *map(staged, files)):
        if not path.resolve().is_relative_to(root):
            raise ArtifactError(f"{path} leads outside the registry folder {root}")
    return directory


@dataclass
class Registry:
    """The verified content of a registry index."""

    champions: dict[str, str] = field(default_factory=dict)
    challengers: dict[str, list[str]] = field(default_factory=dict)
    artifacts: dict[str, dict[str, str]] = field(default_factory=dict)
    generation: int = 0
    """Counts the index's writes, under its signature: a worker refuses an older index than the one it
    serves (an old signed copy put back). Indexes written before it read as 0."""

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "format": REGISTRY_FORMAT,
            "champions": self.champions,
            "challengers": self.challengers,
            "artifacts": self.artifacts,
        }
        if self.generation:  # absent from older indexes, whose signatures must keep verifying
            body["generation"] = self.generation
        return body

    def referenced(self) -> list[str]:
        ids = list(self.champions.values()) + [i for group in self.challengers.values() for i in group]
        return list(dict.fromkeys(ids))

    def digests(self, artifact_id: str) -> dict[str, str]:
        entry = self.artifacts.get(artifact_id)
        if entry is None:
            raise ArtifactError(f"artifact {artifact_id!r} is registered without digests in {REGISTRY_FILE}")
        return entry


def index_mac(body: dict[str, Any], key: bytes) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()


def _migrate_hint(registry_dir: Path) -> str:
    return f"run `fleetpulse models migrate --registry-dir {registry_dir}` after checking its artifacts"


MAX_INDEX_BYTES = 1024 * 1024
"""Far above any real index (about 300 bytes an artifact): a larger one is refused before it is parsed,
since it is read at every registry check and parsed before its signature can be checked."""


def _parse(registry_dir: Path) -> dict[str, Any] | None:
    path = registry_dir / REGISTRY_FILE
    try:
        with path.open("rb") as index:
            raw = index.read(MAX_INDEX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:  # a folder in its place, no permission: refused, never read as "no index"
        raise ArtifactError(f"{path}: unreadable ({exc.strerror or type(exc).__name__})") from None
    if len(raw) > MAX_INDEX_BYTES:
        raise ArtifactError(f"{path}: larger than {MAX_INDEX_BYTES} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSON, UTF-8, a number too long to convert, nesting
        raise ArtifactError(f"{path}: invalid JSON ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: expected an object")
    return data


def _structure(path: Path, data: dict[str, Any]) -> Registry:
    champions, challengers, artifacts, generation = (
        data.get("champions", {}),
        data.get("challengers", {}),
        data.get("artifacts", {}),
        data.get("generation", 0),
    )
    valid = (
        type(generation) is int
        and generation >= 0
        and isinstance(champions, dict)
        and all(isinstance(v, str) for v in champions.values())
        and isinstance(challengers, dict)
        and all(isinstance(v, list) and all(isinstance(i, str) for i in v) for v in challengers.values())
        and isinstance(artifacts, dict)
        and all(
            isinstance(v, dict) and all(isinstance(d, str) for d in v.values()) and set(v) == set(ARTIFACT_FILES)
            for v in artifacts.values()
        )
    )
    if not valid:
        raise ArtifactError(f"{path}: malformed registry index")
    return Registry(dict(champions), {k: list(v) for k, v in challengers.items()}, dict(artifacts), generation)


def read_registry(registry_dir: Path, key: bytes | None = None, *, required: bool = False) -> Registry:
    """The index of ``registry_dir`` after checking its format and, with ``key``, its HMAC.

    No index is an empty registry, unless it is ``required`` (serving with a signing key: whoever
    deleted a signed index would otherwise demote every champion to the rules unnoticed). An index
    of the format before digests is refused with the command that migrates it.
    """
    path = registry_dir / REGISTRY_FILE
    data = _parse(registry_dir)
    if data is None:
        if required and not is_packaged(registry_dir):
            raise ArtifactError(f"{path} is missing, though models.signing_key is set: the index was deleted")
        return Registry()
    if data.get("format") != REGISTRY_FORMAT:
        raise ArtifactError(
            f"{path}: registry index without artifact digests (format {data.get('format', 1)}, "
            f"this version needs {REGISTRY_FORMAT}); {_migrate_hint(registry_dir)}"
        )
    registry = _structure(path, data)
    if key is not None and not is_packaged(registry_dir):
        mac = data.get("hmac")
        if not isinstance(mac, str) or not hmac.compare_digest(mac, index_mac(registry.body(), key)):
            state = "is not signed" if mac is None else "has a signature that does not match models.signing_key"
            raise ArtifactError(
                f"{path} {state}: the index or an artifact digest was changed, or the key differs from the "
                f"one it was signed with; {_migrate_hint(registry_dir)}"
            )
    return registry


def stored_threshold(
    operating_points: dict[str, Any] | None, horizons: Iterable[int], cap: str
) -> tuple[float, float] | None:
    """(raise, clear) an artifact suggests for alerts on its risk (its longest horizon): raise at the
    stored operating point for ``cap``, clear at half of it (hysteresis); None without one."""
    point = (operating_points or {}).get(str(max(horizons, default=0)), {}).get(cap)
    threshold = point.get("threshold") if isinstance(point, dict) else None
    if not isinstance(threshold, int | float) or isinstance(threshold, bool) or not 0.0 < threshold <= 1.0:
        return None
    return float(threshold), float(threshold) / 2


def champion_thresholds(settings: ModelSettings) -> dict[Component, tuple[float, float]]:
    """What :meth:`ScorerSet.alert_thresholds` gives for the registered champions, from their verified
    files' metadata without loading the models. A champion that fails a check suggests nothing
    (the worker refuses it too and serves its component's rule)."""
    key = settings.signing_key.get_secret_value().encode() if settings.signing_key is not None else None
    try:
        registry = read_registry(settings.registry_dir, key)
    except ArtifactError:
        return {}
    out: dict[Component, tuple[float, float]] = {}
    for component, artifact_id in registry.champions.items():
        try:
            directory = artifact_dir(settings.registry_dir, artifact_id)
            digests = registry.digests(artifact_id)
            verified_bytes(directory / MODEL_FILE, digests[MODEL_FILE], Path.read_bytes)
            meta = json.loads(verified_bytes(directory / METADATA_FILE, digests[METADATA_FILE], Path.read_bytes))
            horizons = [int(h) for h in meta.get("models", {})]
            pair = stored_threshold(meta.get("operating_points"), horizons, settings.alert_cap)
        except (ArtifactError, OSError, ValueError, TypeError, AttributeError):
            continue
        if pair is not None:
            out[Component(component)] = pair
    return out
