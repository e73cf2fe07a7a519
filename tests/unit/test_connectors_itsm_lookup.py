"""Attack (or just a bad day): ServiceNow or TOPdesk creates the incident but the proxy in front loses the
answer (504), and on the outbox's retry the duplicate lookup fails too (503, a rate limit, a proxy's HTML
page). Only a definite answer may let the connector create the incident, else each such retry opens one
more incident for the same ticket.

The ITSM is a small fake on 127.0.0.1 that keeps the incidents it was sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from fleetpulse.alerts.connectors.base import Connector, DeliveryError, Notification, PermanentDeliveryError, Receipt
from fleetpulse.alerts.connectors.config import ServiceNowConfig, TopdeskConfig
from fleetpulse.alerts.connectors.http import ServiceNow, Topdesk
from tests.harness import http_server

Scripted = tuple[int, bytes]
"""A status and body answered instead of the normal answer."""


def sys_id(n: int) -> str:
    """The fake ServiceNow's sys_id of its ``n``-th incident: 32 hex digits, as ServiceNow's are."""
    return f"{n:032x}"


def topdesk_id(n: int) -> str:
    """The fake TOPdesk's id of its ``n``-th incident: a UUID, as TOPdesk's are."""
    return f"00000000-0000-4000-8000-{n:012x}"


@dataclass
class FakeItsm:
    """ServiceNow's Table API and TOPdesk's incidents API, as far as the connectors use them. A POST creates
    an incident (and is answered 504 if its number is in ``lost_posts``); a GET finds incidents by
    correlation id or external number, unless ``lookups`` scripts the answer to that GET (1 = the first)."""

    lost_posts: set[int] = field(default_factory=set)
    lookups: dict[int, Scripted] = field(default_factory=dict)
    incidents: list[str] = field(default_factory=list)
    gets: int = 0
    posts: int = 0

    def handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                fake.gets += 1
                if fake.gets in fake.lookups:
                    self.answer(*fake.lookups[fake.gets])
                    return
                query = parse_qs(urlsplit(self.path).query)
                if self.path.startswith("/api/now/"):
                    key = query["sysparm_query"][0].removeprefix("correlation_id=")
                    found = [{"number": f"INC{n + 1}", "sys_id": sys_id(n + 1)} for n in fake.matching(key)]
                    self.answer(200, json.dumps({"result": found[:1]}).encode())
                    return
                key = query["query"][0].removeprefix("externalNumber==")
                found = [{"id": topdesk_id(n + 1), "number": f"I {n + 1}"} for n in fake.matching(key)]
                self.answer(200, json.dumps(found[:1]).encode()) if found else self.answer(204, b"")

            def do_POST(self) -> None:
                fake.posts += 1
                record = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.incidents.append(record.get("correlation_id") or record["externalNumber"])
                n = len(fake.incidents)
                if fake.posts in fake.lost_posts:  # created, but the proxy in front gives up: the answer is lost
                    self.answer(504, b'{"error": "gateway timeout"}')
                elif self.path.startswith("/api/now/"):
                    self.answer(201, json.dumps({"result": {"number": f"INC{n}", "sys_id": sys_id(n)}}).encode())
                else:
                    self.answer(201, json.dumps({"id": topdesk_id(n), "number": f"I {n}"}).encode())

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def matching(self, key: str) -> list[int]:
        return [n for n, created in enumerate(self.incidents) if created == key]


@pytest.fixture
def itsm() -> Iterator[tuple[FakeItsm, str]]:
    fake = FakeItsm()
    with http_server(fake.handler()) as url:
        yield fake, url


def connector(kind: str, url: str) -> Connector:
    common: dict[str, Any] = {"username": "svc", "allow_insecure": True, "timeout_s": 5.0}
    if kind == "servicenow":
        return ServiceNow(ServiceNowConfig(name="snow", instance_url=url, password="pw", **common))
    return Topdesk(TopdeskConfig(name="td", url=url, app_password="pw", **common))


NOTE = Notification(subject="ticket", dedup_key="fleetpulse-ticket-1", title="t", body="b", urgency="high")
FIRST = {"servicenow": Receipt("INC1", sys_id(1)), "topdesk": Receipt("I 1", topdesk_id(1))}


@pytest.mark.parametrize("kind", ["servicenow", "topdesk"])
@pytest.mark.parametrize(
    "failed_lookup",
    [
        (503, b'{"error": "busy"}'),
        (500, b""),
        (502, b"<html>bad gateway</html>"),
        (429, b'{"error": "too many requests"}'),
        (408, b""),
        (200, b"<html>proxy maintenance</html>"),
        (200, b""),
        (200, b'{"error": "busy"}'),
        (200, b'["INC1"]'),
    ],
    ids=["503", "500", "502", "429", "408", "200-html", "200-empty", "200-error-object", "200-not-records"],
)
def test_attack_a_lost_answer_then_a_failed_lookup_still_makes_one_incident(
    kind: str, failed_lookup: Scripted, itsm: tuple[FakeItsm, str]
) -> None:
    fake, url = itsm
    fake.lost_posts = {1}
    fake.lookups = {2: failed_lookup}  # the retry's lookup
    itsm_connector = connector(kind, url)
    with pytest.raises(DeliveryError, match="HTTP 504"):
        itsm_connector.deliver(NOTE)  # created; the outbox retries it later
    with pytest.raises(DeliveryError) as raised:
        itsm_connector.deliver(NOTE)
    assert not isinstance(raised.value, PermanentDeliveryError)  # retried later, not parked
    assert itsm_connector.deliver(NOTE) == FIRST[kind]  # the next retry finds the incident
    assert fake.incidents == [NOTE.dedup_key]
    assert "pw" not in str(raised.value)


@pytest.mark.parametrize("kind", ["servicenow", "topdesk"])
@pytest.mark.parametrize(("status", "whole_target"), [(302, True), (400, False)])
def test_a_lookup_answer_no_retry_changes_needs_attention_instead_of_a_blind_create(
    kind: str, status: int, whole_target: bool, itsm: tuple[FakeItsm, str]
) -> None:
    fake, url = itsm
    fake.lookups = {1: (status, b'{"error": "no"}')}
    with pytest.raises(PermanentDeliveryError, match=f"lookup HTTP {status}") as raised:
        connector(kind, url).deliver(NOTE)
    assert raised.value.whole_target is whole_target
    assert fake.posts == 0


def test_a_partial_topdesk_page_names_the_incident(itsm: tuple[FakeItsm, str]) -> None:
    """TOPdesk answers 206 when more incidents match than the page holds: they exist, none is created."""
    fake, url = itsm
    fake.lookups = {1: (206, json.dumps([{"id": topdesk_id(7), "number": "I 7"}]).encode())}
    assert connector("topdesk", url).deliver(NOTE) == Receipt("I 7", topdesk_id(7))
    assert fake.posts == 0
