"""Memory DoS against the real API server (``fleetpulse api``, uvicorn, as deployed).

The attack: 4 concurrent 52 MB POSTs to the bulk-transition route, with a Content-Length and
chunked, without credentials, with a wrong password and with a valid login. The server must
answer each (401 unread, or 413 at the limit; it hangs up on the unread rest, so the
client may see the reset rather than the answer, which the access log records) and its peak RSS over the whole attack, read
from /proc, must stay under 150 MB (the deployment's limit is 512 Mi).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetpulse.alerts.api.passwords import hash_secret
from tests.integration.api_attack import ATTACK_BYTES, ApiServer, basic_header, flood

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"
PEAK_RSS_LIMIT_KIB = 150 * 1000  # 150 MB


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ApiServer]:
    api = ApiServer(state=tmp_path, password_hash=hash_secret(PASSWORD))
    api.start()
    try:
        yield api
    finally:
        api.stop()


def test_four_concurrent_52mb_uploads_leave_the_server_small(server: ApiServer) -> None:
    assert server.get("/api/v1/me", "fm", PASSWORD) == 200  # warm: routes, hashing, store connection
    idle = server.memory_kib()
    attacks = {
        "anonymous, Content-Length": (False, {}, 401),
        "anonymous, chunked": (True, {}, 401),
        "wrong password, chunked": (True, basic_header("fm", "guess"), 401),
        "valid login, Content-Length": (False, basic_header("fm", PASSWORD), 413),
        "valid login, chunked": (True, basic_header("fm", PASSWORD), 413),
    }
    report = [f"idle: VmRSS {idle['VmRSS'] / 1000:.1f} MB"]
    for name, (chunked, headers, expected) in attacks.items():
        before = len(server.answered())
        outcomes = asyncio.run(flood(server.port, chunked, headers))
        assert server.answered()[before:] == [expected] * 4, (name, outcomes, server.log_tail())
        assert {o.status for o in outcomes} <= {expected, None}, (name, outcomes)  # None: reset after the answer
        assert all(o.sent < ATTACK_BYTES for o in outcomes), (name, outcomes)  # cut off, not read to the end
        memory = server.memory_kib()
        report.append(f"{name}: {expected}, peak so far {memory['VmHWM'] / 1000:.1f} MB")
    assert server.get("/api/v1/me", "fm", PASSWORD) == 200  # still serving
    peak = server.memory_kib()["VmHWM"]
    print("\n".join(report))
    assert peak < PEAK_RSS_LIMIT_KIB, "\n".join(report)
