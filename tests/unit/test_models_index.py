"""The registry index read without loading a model: the same thresholds the worker serves, refused the same way."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from fleetpulse.models.index import champion_thresholds
from fleetpulse.models.registry import load_scorers
from fleetpulse.models.settings import SHIPPED_REGISTRY, ModelSettings
from tests.harness import modules_loaded_by


def test_thresholds_match_what_the_loaded_champions_suggest() -> None:
    settings = ModelSettings()
    assert champion_thresholds(settings)
    assert champion_thresholds(settings) == load_scorers(settings).alert_thresholds(settings.alert_cap)


def test_an_edited_threshold_suggests_nothing(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    shutil.copytree(SHIPPED_REGISTRY, registry)
    (metadata,) = registry.glob("*/metadata.json")
    meta = json.loads(metadata.read_text())
    for caps in meta["operating_points"].values():
        for point in caps.values():
            if isinstance(point, dict):  # beside the caps: the basis, a sentence
                point["threshold"] = 1.0
    metadata.write_text(json.dumps(meta))
    assert champion_thresholds(ModelSettings(registry_dir=registry)) == {}


def test_reading_the_served_thresholds_loads_no_numeric_library() -> None:
    loaded = modules_loaded_by(
        "from fleetpulse.settings import ServerSettings\n"
        "from fleetpulse.serving import serving_policy\n"
        "serving_policy(ServerSettings())\n"
    )
    assert not {"numpy", "sklearn", "scipy", "pandas", "skops"} & {name.split(".")[0] for name in loaded}
