"""Settings of the endpoint agent: one TOML file (``deploy/agent/agent.toml``) plus environment.

Environment variables use the prefix ``FLEETPULSE_AGENT_`` and ``__`` for nesting, e.g.
``FLEETPULSE_AGENT_KAFKA__BOOTSTRAP_SERVERS`` or ``FLEETPULSE_AGENT_IDENTITY__SECRET``.
Only the CLI loads these (:func:`load_agent_settings`); library code receives the objects.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import tomllib
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from fleetpulse.agents.collectors.config import CollectorConfig, default_collectors
from fleetpulse.config import KafkaSettings
from fleetpulse.contract import DeviceKind

MB = 1024 * 1024


def default_spool_dir() -> Path:
    """Where a service keeps state on each platform (systemd's StateDirectory on Linux)."""
    if sys.platform == "win32":
        return Path(os.environ.get("PROGRAMDATA", r"C:\ProgramData")) / "fleetpulse-agent"
    if sys.platform == "darwin":
        return Path("/Library/Application Support/fleetpulse-agent")
    return Path(os.environ.get("STATE_DIRECTORY", "/var/lib/fleetpulse-agent"))


class IdentitySettings(BaseModel):
    """Pseudonymous identity: the device id is an HMAC of the machine id under the fleet secret."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    secret: SecretStr | None = Field(
        default=None, description="fleet secret held by IT; without it ids are only unlinkable by obscurity"
    )
    device_id: str | None = Field(default=None, description="explicit override (tests, lab machines)")
    machine_id_file: Path | None = Field(default=None, description="override where the machine id is read")


class DeliverySettings(BaseModel):
    """Producer tuning. Defaults favour a quiet, durable agent over latency."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    compression: Literal["gzip", "none"] = "gzip"
    linger_ms: int = Field(default=200, ge=0)
    batch_size: int = Field(default=64 * 1024, ge=1024)
    max_block_ms: int = Field(default=10_000, ge=100, description="how long send() may wait for metadata")
    delivery_timeout_ms: int = Field(default=60_000, ge=1_000)
    flush_timeout_s: float = Field(default=30.0, gt=0)
    max_batch_records: int = Field(default=200, ge=1, description="spooled records sent per attempt")
    backoff_initial_s: float = Field(default=2.0, gt=0)
    backoff_max_s: float = Field(default=300.0, gt=0)


ENV_PREFIX = "FLEETPULSE_AGENT_"
ENV_NESTED_DELIMITER = "__"


class AgentSettings(BaseModel):
    """A plain model, not a pydantic-settings class: see :func:`load_agent_settings` for why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    log_level: str = "INFO"
    kafka: KafkaSettings = KafkaSettings()
    identity: IdentitySettings = IdentitySettings()
    delivery: DeliverySettings = DeliverySettings()
    interval_s: float = Field(default=60.0, ge=0.05, description="seconds between health reports")
    smart_interval_s: float = Field(
        default=3600.0, ge=0.0, description="SMART is polled at most this often: it can wake disks and costs I/O"
    )
    inventory_interval_s: float = Field(default=86_400.0, ge=0.0)
    spool_dir: Path = Field(default_factory=default_spool_dir)
    spool_max_bytes: int = Field(default=50 * MB, ge=64 * 1024)
    device_kind: DeviceKind | None = Field(default=None, description="None: laptop if a battery is present")
    collectors: Annotated[list[CollectorConfig], Field(max_length=32)] = Field(default_factory=default_collectors)


def load_agent_settings(toml_path: Path | None, environ: Mapping[str, str] | None = None) -> AgentSettings:
    """Defaults < TOML file < ``FLEETPULSE_AGENT_*`` environment, as :func:`fleetpulse.config.load_settings` does.

    Why not pydantic-settings, as the server does: importing it loads asyncio, python-dotenv and
    its cloud secret providers, about 3 MB that would stay resident on every endpoint for a TOML
    read and an environment overlay. The environment rules are pydantic-settings' (names
    case-insensitive, ``__`` nests, values of model/list fields are JSON, JSON ``null`` = unset);
    tests/unit/agent/test_settings_loader.py checks both loaders agree.
    """
    data: dict[str, Any] = {}
    if toml_path is not None:
        if not toml_path.is_file():
            raise FileNotFoundError(f"config file not found: {toml_path}")
        with toml_path.open("rb") as fh:
            try:
                data = tomllib.load(fh)
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"{toml_path}: {exc}") from None
    env = {k.lower(): v for k, v in (os.environ if environ is None else environ).items()}
    return AgentSettings.model_validate(_deep_update(data, _from_env(AgentSettings, ENV_PREFIX.lower(), env)))


def _is_complex(annotation: Any) -> bool:
    """Fields whose environment value is JSON: models, lists, dicts (also inside ``X | None``)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _is_complex(get_args(annotation)[0])
    if origin is Union or (origin is None and type(annotation).__name__ == "UnionType"):
        return any(_is_complex(arg) for arg in get_args(annotation) if arg is not type(None))
    if origin in (list, dict, set, tuple, frozenset):
        return True
    return isinstance(annotation, type) and issubclass(annotation, (BaseModel, list, dict, set, tuple))


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if get_origin(annotation) is Annotated:
        return _model_of(get_args(annotation)[0])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    models = [m for arg in get_args(annotation) if (m := _model_of(arg)) is not None]
    return models[0] if len(models) == 1 else None


def _decode(name: str, value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        raise ValueError(f'error parsing value for field "{name}" from the environment') from None


def _from_env(model: type[BaseModel], prefix: str, env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        key = prefix + name
        if not _is_complex(field.annotation):
            if key in env:
                out[name] = env[key]
            continue
        value = _decode(name, env[key]) if key in env else None
        nested = (
            _explode(field.annotation, key + ENV_NESTED_DELIMITER, env)
            if key not in env or isinstance(value, dict)
            else {}
        )
        if nested:
            value = _deep_update(value or {}, nested)
        if value is not None:
            out[name] = value
    return out


def _explode(annotation: Any, prefix: str, env: Mapping[str, str]) -> dict[str, Any]:
    """``PREFIX_A__B__C=v`` -> ``{"b": {"c": v}}``; a non-empty leaf naming a model/list field is JSON."""
    result: dict[str, Any] = {}
    for key, raw in env.items():
        if not key.startswith(prefix):
            continue
        *parents, leaf = key[len(prefix) :].split(ENV_NESTED_DELIMITER)
        model = _model_of(annotation)
        target: Any = result
        for part in parents:
            field = model.model_fields.get(part) if model is not None else None
            model = _model_of(field.annotation) if field is not None else None
            if isinstance(target, dict):
                target = target.setdefault(part, {})
        field = model.model_fields.get(leaf) if model is not None else None
        value: Any = _decode(leaf, raw) if raw and field is not None and _is_complex(field.annotation) else raw
        if isinstance(target, dict):
            target[leaf] = value
    return result


def _deep_update(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_update(merged[key], value)
        else:
            merged[key] = value
    return merged
