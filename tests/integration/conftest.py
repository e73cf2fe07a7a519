"""Fixtures the integration tests share: recording ITSM peers (HTTP and SMTP) on their own ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness import free_port
from tests.integration.test_connectors import RecordingHttp, RecordingSmtp


@pytest.fixture
def http_server() -> Iterator[RecordingHttp]:
    server = RecordingHttp(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def smtp_server() -> Iterator[RecordingSmtp]:
    server = RecordingSmtp(free_port())
    server.start()
    yield server
    server.stop()
