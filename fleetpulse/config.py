"""Settings shared by every deployable, and the one loader the CLIs call.

Each deployable (agent, server) has one TOML file plus environment variables
(``FLEETPULSE_...``, nested with ``__``). Only the command line calls
:func:`load_settings`; library code receives settings objects as arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr

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
    if kafka.ssl_key_password is not None:
        options["ssl_password"] = kafka.ssl_key_password.get_secret_value()
    return options


def masked_dump(settings: BaseModel) -> dict[str, Any]:
    """Settings as a dict for display: secrets stay masked (pydantic prints ``**********``)."""
    return settings.model_dump(mode="json")


def load_settings(cls: type[S], toml_path: Path | None) -> S:
    """Build settings from init defaults < TOML file < environment variables."""
    from pydantic_settings import (
        PydanticBaseSettingsSource,
        SettingsConfigDict,
        TomlConfigSettingsSource,
    )

    class _FromFile(cls):  # type: ignore[valid-type,misc]
        model_config = SettingsConfigDict(toml_file=toml_path)

        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if toml_path is not None:
                if not toml_path.is_file():
                    raise FileNotFoundError(f"config file not found: {toml_path}")
                sources.append(TomlConfigSettingsSource(settings_cls))
            return tuple(sources)

    loaded = _FromFile()
    return cls.model_validate(loaded.model_dump())
