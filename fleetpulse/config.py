"""Settings shared by every deployable, and the one loader the CLIs call.

Each deployable (agent, server) has one TOML file plus environment variables
(``FLEETPULSE_...``, nested with ``__``). The server also reads secrets from files
(systemd credentials, Kubernetes secret mounts), so passwords need not sit in the
TOML file or the environment. Only the command line calls :func:`load_settings`;
library code receives settings objects as arguments.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

if TYPE_CHECKING:  # imported where used: the endpoint agent uses this module but never loads settings with it
    from pydantic_settings import BaseSettings

S = TypeVar("S", bound="BaseSettings")


class KafkaSettings(BaseModel):
    """How to reach Kafka. TLS and SASL/SCRAM or mTLS are configured here, never in code."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = Field(default="", description="lets several pipelines or test runs share a broker")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = Field(default=None, description="client certificate for mTLS")
    ssl_keyfile: Path | None = None
    ssl_key_password: SecretStr | None = None
    request_timeout_ms: int = Field(default=30_000, ge=1_000)
    allow_insecure: bool = Field(
        default=False, description="send the SASL password without TLS (SASL_PLAINTEXT): a lab, never production"
    )

    @model_validator(mode="after")
    def _no_password_in_clear(self) -> KafkaSettings:
        if self.security_protocol == "SASL_PLAINTEXT" and self.sasl_password is not None and not self.allow_insecure:
            raise ValueError(
                "security_protocol SASL_PLAINTEXT would send the SASL password in clear: use SASL_SSL "
                "(or set allow_insecure = true for a test system)"
            )
        return self


def refuse_credentials_in_clear(url: str, field: str, sends_credentials: bool, allow_insecure: bool) -> None:
    """Credentials go only over TLS: any URL but https:// with credentials needs an explicit ``allow_insecure``
    (a scheme-less ``//host`` is no exception: clients fall back to plain http for it)."""
    if urlsplit(url).scheme.lower() != "https" and sends_credentials and not allow_insecure:
        raise ValueError(
            f"{field} is not https://: the credentials would be sent in clear; use https:// "
            "(or set allow_insecure = true where the traffic never leaves a protected network)"
        )


TLS_CLIENT_CERTIFICATE_REFUSALS = ("BAD_CERTIFICATE", "CERTIFICATE_REQUIRED", "UNKNOWN_CA", "CERTIFICATE_UNKNOWN")
"""OpenSSL's names of the TLS alerts a broker sends when it refuses the client's certificate, or gets none."""


class KeyPasswordMissing(ValueError):
    """The Kafka client key is encrypted and ``kafka.ssl_key_password`` is not set."""


def _no_key_password() -> str:
    raise KeyPasswordMissing("kafka.ssl_keyfile is encrypted but kafka.ssl_key_password is not set")


def ssl_key_password(kafka: KafkaSettings) -> str | Callable[[], str]:
    """The client key's password as both Kafka client libraries hand it to ``SSLContext.load_cert_chain``.

    Without ``ssl_key_password`` it is a callable that refuses: OpenSSL would otherwise ask for an encrypted
    key's pass phrase on the terminal, and a service started from one would wait there for good. An unencrypted
    key (a Strimzi user's ``user.key``) never asks for it.
    """
    if kafka.ssl_key_password is not None:
        return kafka.ssl_key_password.get_secret_value()
    return _no_key_password


def kafka_python_security(kafka: KafkaSettings) -> dict[str, Any]:
    """kafka-python's TLS/SASL options from the shared settings: the one place secrets are unwrapped for it."""
    options: dict[str, Any] = {"security_protocol": kafka.security_protocol}
    if kafka.sasl_mechanism:
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
    for key, path in (
        ("ssl_cafile", kafka.ssl_cafile),
        ("ssl_certfile", kafka.ssl_certfile),
        ("ssl_keyfile", kafka.ssl_keyfile),
    ):
        if path is not None:
            options[key] = str(path)
    if kafka.ssl_key_password is not None or kafka.ssl_certfile is not None or kafka.ssl_keyfile is not None:
        options["ssl_password"] = ssl_key_password(kafka)
    return options


_URL_PASSWORD = re.compile(r"(?<=://)([^/@:\s]*):[^/@\s]*@")


def _mask_url_passwords(value: Any) -> Any:
    if isinstance(value, str):
        return _URL_PASSWORD.sub(r"\1:**********@", value)
    if isinstance(value, dict):
        return {key: _mask_url_passwords(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_mask_url_passwords(item) for item in value]
    return value


def masked_dump(settings: BaseModel) -> dict[str, Any]:
    """Settings as a dict for display: secrets stay masked (pydantic prints ``**********``), and so do
    passwords inside URLs (``alerts.store_url = "postgresql+psycopg://user:password@host/db"``)."""
    dumped: dict[str, Any] = _mask_url_passwords(settings.model_dump(mode="json"))
    return dumped


def describe_config_error(exc: Exception) -> str:
    """A configuration error as the CLIs print it: where and what, never the offending value.

    pydantic's own text repeats each rejected ``input_value``, which for a misspelt key
    (``sasl_pasword``) or a connector lacking its username is the password itself.
    """
    if not isinstance(exc, ValidationError):
        return str(exc)
    lines = [f"{exc.error_count()} problem(s):"]
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"]
        quoted = [error.get("input"), error.get("ctx", {}).get("tag")]  # e.g. an unknown ``kind`` is quoted
        for rejected in quoted:
            if isinstance(rejected, str) and rejected:
                message = message.replace(repr(rejected), "<value hidden>").replace(f"'{rejected}'", "<value hidden>")
        lines.append(f"  {where}: {message}")
    return "\n".join(lines)


SECRET_FILE_PREFIX = "FLEETPULSE_"  # noqa: S105 (a file-name prefix, not a secret)
SECRETS_DIR_ENV = "FLEETPULSE_SECRETS_DIR"
SYSTEMD_CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"


def secrets_dirs_from_env(environ: Mapping[str, str]) -> list[Path]:
    """Where secret files are: systemd's ``$CREDENTIALS_DIRECTORY`` and ``$FLEETPULSE_SECRETS_DIR`` (a k8s mount)."""
    return [Path(environ[name]) for name in (SYSTEMD_CREDENTIALS_ENV, SECRETS_DIR_ENV) if environ.get(name)]


def read_secret_files(dirs: Sequence[Path]) -> dict[str, str]:
    """``FLEETPULSE_<PATH>`` files of ``dirs`` as ``{"<path>": value}`` (path lower-cased, one trailing newline cut).

    Other files are ignored: a credentials directory or secret mount may hold more than ours.
    """
    found: dict[str, str] = {}
    for directory in dirs:
        if not directory.is_dir():
            raise FileNotFoundError(f"secrets directory not found: {directory}")
        for path in sorted(directory.iterdir()):
            if not path.name.upper().startswith(SECRET_FILE_PREFIX) or not path.is_file():
                continue
            key = path.name[len(SECRET_FILE_PREFIX) :].lower()
            if key in found:
                raise ValueError(f"secret {path.name} is given in more than one secrets directory")
            found[key] = path.read_text(encoding="utf-8").removesuffix("\n").removesuffix("\r")
    return found


def overlay_secret_files(data: dict[str, Any], secrets: Mapping[str, str], delimiter: str = "__") -> dict[str, Any]:
    """Put each secret at its settings path (``kafka__sasl_password``) into ``data``.

    A list of named entries is addressed by the entry's ``name``:
    ``alerts__connectors__snow__password`` is the password of the connector named ``snow``.
    """
    for key, value in secrets.items():
        *parents, leaf = key.split(delimiter)
        node: Any = data
        walked: list[str] = []
        for part in parents:
            if isinstance(node, list):
                named = [item for item in node if isinstance(item, dict) and item.get("name") == part]
                if not named:
                    where = ".".join(walked)
                    raise ValueError(
                        f"secret file {SECRET_FILE_PREFIX}{key.upper()}: no entry named {part!r} in {where}"
                    )
                node = named[0]
            elif isinstance(node, dict):
                node = node.setdefault(part, {})
            else:
                raise ValueError(f"secret file {SECRET_FILE_PREFIX}{key.upper()} does not name a settings field")
            walked.append(part)
        if not isinstance(node, dict):
            raise ValueError(f"secret file {SECRET_FILE_PREFIX}{key.upper()} does not name a settings field")
        node[leaf] = value
    return data


def deep_update(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` merged in, tables merged key by key: how settings layers combine."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_update(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(cls: type[S], toml_path: Path | None, secrets_dirs: Sequence[Path] = ()) -> S:
    """Build settings from defaults < TOML file < environment variables < secret files in ``secrets_dirs``.

    A secret file wins over the environment: it is the deliberate, narrower channel
    (``LoadCredential=``, a mounted Secret), and it may fill a password the TOML leaves out.
    """
    from pydantic_settings import PydanticBaseSettingsSource, TomlConfigSettingsSource

    secrets = read_secret_files(secrets_dirs)
    if toml_path is not None and not toml_path.is_file():
        raise FileNotFoundError(f"config file not found: {toml_path}")

    class _Merged(PydanticBaseSettingsSource):
        """TOML, then the environment over it, then the secret files over both."""

        def __init__(self, settings_cls: type[BaseSettings], *layers: PydanticBaseSettingsSource) -> None:
            super().__init__(settings_cls)
            self.layers = layers

        def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
            return None, field_name, False

        def __call__(self) -> dict[str, Any]:
            data: dict[str, Any] = {}
            for layer in self.layers:
                data = deep_update(data, layer())
            return overlay_secret_files(data, secrets)

    class _FromFile(cls):  # type: ignore[valid-type,misc]
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            layers = [TomlConfigSettingsSource(settings_cls, toml_file=toml_path)] if toml_path is not None else []
            return (init_settings, _Merged(settings_cls, *layers, env_settings))

    loaded = _FromFile()
    return cls.model_validate(loaded.model_dump())
