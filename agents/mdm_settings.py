"""Settings of the MDM bridge (``[mdm]`` section of the server TOML, ``FLEETPULSE_MDM__...``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class MdmSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    secret: SecretStr | None = Field(
        default=None,
        description="HMAC key that turns Intune device ids into pseudonyms; held by IT, never in exports",
    )
    state_path: Path = Field(
        default=Path(".local/mdm/state.sqlite"),
        description="per-device seq memory: re-ingesting an export yields the same seq, so consumers dedup",
    )
    dead_letter_path: Path | None = Field(
        default=None,
        description="JSON lines file for rejected rows: location, reason, and only the values proven non-personal",
    )
