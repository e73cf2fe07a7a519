"""Settings of the endpoint agent: one TOML file (``deploy/agent/agent.toml``) plus environment.

Environment variables use the prefix ``FLEETPULSE_AGENT_`` and ``__`` for nesting, e.g.
``FLEETPULSE_AGENT_KAFKA__BOOTSTRAP_SERVERS`` or ``FLEETPULSE_AGENT_IDENTITY__SECRET``.
Only the CLI loads these (:func:`load_agent_settings`); library code receives the objects.

Secrets (the Kafka SASL and key passwords, the fleet secret) can also come from files, so they
need not sit in the environment or the TOML: ``<field>_file = "/path"`` next to the field (TOML,
or ``FLEETPULSE_AGENT_KAFKA__SASL_PASSWORD_FILE``), or a systemd credential named after the
field's dotted path (``LoadCredential=kafka.sasl_password:...``, read from
``$CREDENTIALS_DIRECTORY``). A value set directly wins over the credentials folder; a value and
a ``_file`` for the same field is an error.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic.fields import FieldInfo

from fleetpulse.agents.collectors.config import CollectorConfig, default_collectors
from fleetpulse.agents.trust import check_private, check_trusted
from fleetpulse.compat import tomllib
from fleetpulse.config import KafkaSettings, deep_update
from fleetpulse.contract import MDM_DEVICE_ID_PREFIX, DeviceKind

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

    @field_validator("device_id")
    @classmethod
    def _not_an_mdm_pseudonym(cls, value: str | None) -> str | None:
        if value is not None and value.startswith(MDM_DEVICE_ID_PREFIX):
            raise ValueError(
                f"ids starting with {MDM_DEVICE_ID_PREFIX!r} are the MDM bridge's pseudonyms; the server refuses "
                "an agent's enrolment under one"
            )
        return value


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
FILE_OPTION_SUFFIX = "_file"
CREDENTIALS_DIRECTORY_ENV = "CREDENTIALS_DIRECTORY"
MAX_SECRET_FILE_BYTES = 64 * 1024


class AgentSettings(BaseModel):
    """A plain model, not a pydantic-settings class: see :func:`load_agent_settings` for why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    log_level: str = "INFO"
    kafka: KafkaSettings = KafkaSettings()
    identity: IdentitySettings = IdentitySettings()
    delivery: DeliverySettings = DeliverySettings()
    interval_s: float = Field(
        default=900.0, ge=0.05, description="seconds between health reports; health events are sent at once"
    )
    event_probe_interval_s: float = Field(
        default=60.0,
        ge=0.0,
        description="seconds between cheap checks for health events (crash, battery, SMART growth); 0: off",
    )
    smart_interval_s: float = Field(
        default=3600.0, ge=0.0, description="SMART is polled at most this often: it can wake disks and costs I/O"
    )
    smart_snapshot_dir: Path | None = Field(
        default=None,
        description="read SMART from the snapshot fleetpulse-smart.service writes here (Linux: /run/fleetpulse-smart) "
        "instead of running smartctl, so the agent needs no capabilities; None: run smartctl itself",
    )
    inventory_interval_s: float = Field(default=86_400.0, ge=0.0)
    spool_dir: Path = Field(default_factory=default_spool_dir)
    spool_max_bytes: int = Field(default=50 * MB, ge=64 * 1024)
    device_kind: DeviceKind | None = Field(default=None, description="None: laptop if a battery is present")
    collectors: Annotated[list[CollectorConfig], Field(max_length=32)] = Field(default_factory=default_collectors)

    @field_validator("smart_snapshot_dir")
    @classmethod
    def _absolute_snapshot_dir(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError("must be an absolute path: the helper writes it, the agent checks who owns it")
        return value


def load_agent_settings(
    toml_path: Path | None, environ: Mapping[str, str] | None = None, *, strict: bool = False
) -> AgentSettings:
    """Defaults < TOML file < ``FLEETPULSE_AGENT_*`` environment, as :func:`fleetpulse.config.load_settings` does.

    ``strict`` (the service, and any privileged run): the config file, secret files and Kafka TLS files must be
    safe from every non-administrator (:func:`fleetpulse.agents.trust.check_trusted`), and secret files, the
    TLS client key, or a config file holding a secret inline, readable by root only
    (:func:`fleetpulse.agents.trust.check_private`); else
    :class:`~fleetpulse.agents.trust.UntrustedPathError`.

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
        if strict:
            check_trusted(Path(os.path.abspath(toml_path)), "config file")
        with toml_path.open("rb") as fh:
            try:
                data = tomllib.load(fh)
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"{toml_path}: {exc}") from None
        if strict and (inline := [".".join(p) for p in secret_fields(AgentSettings) if _lookup(data, p)]):
            files = ", ".join(name + FILE_OPTION_SUFFIX for name in inline)
            fix = f"it holds {', '.join(inline)} inline: chmod 600 it, or name a root-only file instead ({files})"
            check_private(Path(os.path.abspath(toml_path)), "config file", fix)
    source = os.environ if environ is None else environ
    env = {k.lower(): v for k, v in source.items()}
    merged = deep_update(data, _from_env(AgentSettings, ENV_PREFIX.lower(), env))
    credentials = source.get(CREDENTIALS_DIRECTORY_ENV)
    for path in secret_fields(AgentSettings):
        _resolve_secret(merged, path, Path(credentials) if credentials else None, strict)
    settings = AgentSettings.model_validate(merged)
    if strict:
        _check_tls_files(settings)
    return settings


def _check_tls_files(settings: AgentSettings) -> None:
    """The Kafka TLS files as the config and secret files: whoever can replace the CA file chooses the broker the
    agent trusts (and hands the agents' SASL password to), and the client key is a secret."""
    kafka = settings.kafka
    for name, path in (("ssl_cafile", kafka.ssl_cafile), ("ssl_certfile", kafka.ssl_certfile)):
        if path is not None:
            check_trusted(Path(os.path.abspath(path)), f"kafka.{name}")
    if kafka.ssl_keyfile is not None:
        keyfile = Path(os.path.abspath(kafka.ssl_keyfile))
        check_trusted(keyfile, "kafka.ssl_keyfile")
        check_private(keyfile, "kafka.ssl_keyfile")


def secret_fields(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Dotted paths of every secret in the settings tree, e.g. ``("kafka", "sasl_password")``."""
    found: list[tuple[str, ...]] = []
    for name, field in model.model_fields.items():
        if _is_secret(field):
            found.append((*prefix, name))
        elif (nested := _model_of(field.annotation)) is not None:
            found.extend(secret_fields(nested, (*prefix, name)))
    return found


def _lookup(data: Any, path: tuple[str, ...]) -> Any:
    """The value at ``path`` in nested tables, or None when any step is missing or not a table."""
    for part in path:
        data = data.get(part) if isinstance(data, dict) else None
    return data


def _is_secret(field: FieldInfo) -> bool:
    annotation = field.annotation
    return annotation is SecretStr or SecretStr in get_args(annotation)


def _resolve_secret(data: dict[str, Any], path: tuple[str, ...], credentials: Path | None, strict: bool) -> None:
    """Fill the secret at ``path`` from ``<name>_file`` or the credentials folder, in place."""
    *parents, name = path
    table: Any = data
    for part in parents:
        child = table.get(part) if isinstance(table, dict) else None
        if child is None and isinstance(table, dict):
            child = table[part] = {}
        table = child
    if not isinstance(table, dict):
        return  # not a table: validation reports the real problem
    dotted = ".".join(path)
    file_key = name + FILE_OPTION_SUFFIX
    if file_key in table:
        if table.get(name) is not None:
            raise ValueError(f"{dotted}: set either {name} or {file_key}, not both")
        file = table.pop(file_key)
        if file is not None:
            table[name] = read_secret_file(Path(str(file)), dotted, strict)
    elif table.get(name) is None and credentials is not None and (credentials / dotted).is_file():
        table[name] = read_secret_file(credentials / dotted, dotted, strict)


def read_secret_file(path: Path, field: str, strict: bool = False) -> str:
    """The secret in ``path``, without a trailing newline; errors name the file, never its content."""
    if strict:
        check_trusted(path, f"{field}: secret file")
        check_private(path, f"{field}: secret file")
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"{field}: cannot read secret file {path}: {exc.strerror or type(exc).__name__}") from None
    if len(raw) > MAX_SECRET_FILE_BYTES:
        raise ValueError(f"{field}: secret file {path} is larger than {MAX_SECRET_FILE_BYTES} bytes")
    try:
        value = raw.decode("utf-8").removesuffix("\n").removesuffix("\r")
    except UnicodeDecodeError:
        raise ValueError(f"{field}: secret file {path} is not UTF-8 text") from None
    if not value:
        raise ValueError(f"{field}: secret file {path} is empty")
    return value


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
            value = deep_update(value or {}, nested)
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
