"""Collecting the schemathesis test module must not create or write a database (setup lives in fixtures)."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import pytest

from fleetpulse.alerts.store.repository import TicketStore

MODULE = "tests.integration.test_tickets_api_schemathesis"


def test_importing_the_schemathesis_module_opens_only_in_memory_stores(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    real_open = TicketStore.open

    def recording_open(url: str, *args: Any, **kwargs: Any) -> TicketStore:
        opened.append(url)
        return real_open(url, *args, **kwargs)

    monkeypatch.setattr(TicketStore, "open", recording_open)
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    importlib.import_module(MODULE)
    monkeypatch.delitem(sys.modules, MODULE)
    assert opened, "the module no longer builds its spec from the app: update this test"
    assert [url for url in opened if url != "sqlite://"] == []
