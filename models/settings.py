"""Settings of the model registry and scoring."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict


class ModelSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    registry_dir: Path = Path(".local/models")
