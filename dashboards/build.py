"""Generate every dashboard as Grafana JSON, deterministically.

The committed files under ``dashboards/json/`` are this module's output with the
default data source UID; a test regenerates them and fails when they differ, so
the JSON never drifts from the code. File-based Grafana provisioning mounts that
folder (compose) or a ConfigMap built from its copy (Kubernetes);
``fleetpulse dashboards push`` uses :func:`build_all` directly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dm

from fleetpulse.dashboards import device, fleet_health, model_quality, pipeline
from fleetpulse.dashboards.common import UID_PREFIX, ds_ref
from fleetpulse.dashboards.settings import GrafanaSettings

JSON_DIR = Path(__file__).resolve().parent / "json"
# Kustomize only reads files below its root, so the Kubernetes base keeps a copy (checked by tests).
K8S_COPY_DIR = Path(__file__).resolve().parents[1] / "deploy" / "k8s" / "base" / "grafana" / "dashboards"
DEFAULT_DATASOURCE_UID = GrafanaSettings().datasource_uid

DASHBOARDS: dict[str, Callable[[dm.DataSourceRef], db.Dashboard]] = {
    fleet_health.UID: fleet_health.build,
    device.UID: device.build,
    pipeline.UID: pipeline.build,
    model_quality.UID: model_quality.build,
}


def build_all(datasource_uid: str = DEFAULT_DATASOURCE_UID) -> dict[str, dict[str, Any]]:
    """Dashboard JSON by file name (``<uid>.json``), in a stable order."""
    ds = ds_ref(datasource_uid)
    out: dict[str, dict[str, Any]] = {}
    for suffix, build in DASHBOARDS.items():
        model = build(ds).build()
        out[f"{UID_PREFIX}{suffix}.json"] = json.loads(json.dumps(model, cls=JSONEncoder))
    return out


def render(dashboard: dict[str, Any]) -> str:
    return json.dumps(dashboard, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_all(directory: Path = JSON_DIR, datasource_uid: str = DEFAULT_DATASOURCE_UID) -> list[Path]:
    """Write the JSON files and remove stale ``fleetpulse-*.json`` ones left by renamed dashboards."""
    directory.mkdir(parents=True, exist_ok=True)
    dashboards = build_all(datasource_uid)
    for stale in directory.glob(f"{UID_PREFIX}*.json"):
        if stale.name not in dashboards:
            stale.unlink()
    written = []
    for name, dashboard in dashboards.items():
        path = directory / name
        path.write_text(render(dashboard), encoding="utf-8")
        written.append(path)
    return written


def default_directories() -> list[Path]:
    """Where ``fleetpulse dashboards build`` writes in a source checkout: the JSON folder and the k8s copy."""
    return [JSON_DIR] + ([K8S_COPY_DIR] if K8S_COPY_DIR.is_dir() else [])
