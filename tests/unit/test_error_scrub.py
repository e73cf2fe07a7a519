"""Error texts that reach the outbox, the logs and the admin API: scrubbed and bounded;
configuration errors that name the field and never the value."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from fleetpulse.config import KafkaSettings, describe_config_error
from fleetpulse.redact import MAX_ERROR_CHARS, scrub

SECRET = 'pa$$ w"rd/üñí+='


@pytest.mark.parametrize(
    "echo",
    [
        f"rejected password {SECRET}",
        f'{{"password": {json.dumps(SECRET)}}}',
        f"password={quote(SECRET, safe='')}",
        "Authorization: Basic " + base64.b64encode(f"svc:{SECRET}".encode()).decode(),
        '{"headers": {"Authorization": "Basic c3ZjOnB3"}, "x": 1}',
        "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.sig",
        "proxy at https://svc:hunter2@proxy.example.org/ refused",
        "Cookie: JSESSIONID=abc123; glide_user_route=xyz",
    ],
)
def test_echoed_credentials_are_removed(echo: str) -> None:
    cleaned = scrub(f"HTTP 401: {echo}", [SECRET, f"svc:{SECRET}"])
    for leaked in (SECRET, "c3ZjOnB3", "eyJhbGciOiJIUzI1NiJ9", "hunter2", "abc123"):
        assert leaked not in cleaned
    assert cleaned.startswith("HTTP 401: ")


def test_length_is_bounded_and_control_characters_dropped() -> None:
    cleaned = scrub("HTTP 500: " + "x" * 100_000 + "\x1b[31m\r\n")
    assert len(cleaned) == MAX_ERROR_CHARS
    assert "\x1b" not in scrub("a\x1b[31mb\x00c")


@settings(max_examples=500)
@given(
    secret=st.one_of(st.text(min_size=1, max_size=40), st.sampled_from(["e", "d]", "held", "[redacted]"])).filter(
        str.strip
    ),
    noise=st.text(max_size=200),
)
def test_a_configured_secret_never_survives(secret: str, noise: str) -> None:
    assert secret not in scrub(f"{noise}{secret}{noise}", [secret])


def test_a_secret_respelt_by_the_marker_is_withheld() -> None:
    """``d]ab`` around a redaction: ``ab[redacted]ab`` would contain it again."""
    assert scrub("abd]abab", ["d]ab"]) == "error text withheld: it echoed a configured secret"


def test_config_errors_name_the_field_not_the_value() -> None:
    with pytest.raises(ValidationError) as raised:
        KafkaSettings.model_validate({"sasl_pasword": "typo-secret-1", "request_timeout_ms": "secret-2"})
    text = describe_config_error(raised.value)
    assert "typo-secret-1" not in text
    assert "secret-2" not in text
    assert "sasl_pasword: Extra inputs are not permitted" in text
    assert "request_timeout_ms: Input should be a valid integer" in text


def test_a_value_quoted_by_the_error_message_is_hidden() -> None:
    """pydantic quotes an unknown discriminator tag; someone may have pasted a password there."""
    from pydantic import TypeAdapter

    from fleetpulse.alerts.connectors import ConnectorConfig

    with pytest.raises(ValidationError) as raised:
        TypeAdapter(ConnectorConfig).validate_python({"kind": "pasted-secret-3", "name": "x"})
    text = describe_config_error(raised.value)
    assert "pasted-secret-3" not in text
    assert "<value hidden>" in text
