"""Settings of the model registry and scoring."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

SHIPPED_REGISTRY = Path(__file__).resolve().parent / "shipped"
"""The registry packaged with fleetpulse: the trained disk champion, served without a training step."""


class ModelSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    registry_dir: Path = Field(
        default=SHIPPED_REGISTRY,
        description="registry folder the worker loads scorers from (default: the champion shipped with the "
        "package; `fleetpulse train` writes .local/models)",
    )
    alert_cap: Literal["cap 0.1%", "cap 1%"] = Field(
        default="cap 1%",
        description="false-alarm cap whose stored operating point a trained champion suggests as its "
        "alert raise threshold (used for components without thresholds in [alerts.policy.components])",
    )
    signing_key: SecretStr | None = Field(
        default=None,
        description="HMAC key the registry index is signed with (``fleetpulse train``, ``fleetpulse models "
        "migrate``) and verified against before any model is served; at least 32 random characters",
        min_length=32,
    )
