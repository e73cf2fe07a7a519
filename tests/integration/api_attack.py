"""The real API server in a subprocess and the oversized-upload attack against it.

Shared by tests/integration/test_api_memory_dos.py and benchmarks/api_body_attack.py. The
server is started exactly as deployed: ``fleetpulse api`` (uvicorn) configured from the
environment; its memory is read from /proc (``VmHWM`` is the peak RSS over its whole life).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.harness import free_port

ATTACK_PATH = "/api/v1/tickets/bulk-transition"
ATTACK_BYTES = 52 * 1024 * 1024
PIECE = b"1," * 32768  # 64 KiB of a JSON array that never ends


@dataclass
class ApiServer:
    """``python -m fleetpulse api`` with one fleet-manager login, on a SQLite store under ``state``."""

    state: Path
    password_hash: str
    pythonpath: str | None = None
    local_login: bool = True
    """Switch on the local login (and so HTTP Basic for API clients); revisions before it had no switch."""
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> None:
        self.port = self.port or free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPULSE_")}
        env.update(
            FLEETPULSE_ALERTS__STORE_URL=f"sqlite:///{self.state / 'tickets.db'}",
            FLEETPULSE_ALERTS__API__USERS=json.dumps(
                [{"name": "fm", "role": "fleet_manager", "password_hash": self.password_hash}]
            ),
            PYTHONDONTWRITEBYTECODE="1",
        )
        if self.local_login:
            env["FLEETPULSE_ALERTS__API__LOCAL_LOGIN"] = "true"
        if self.pythonpath is not None:
            env["PYTHONPATH"] = self.pythonpath
        self.state.mkdir(parents=True, exist_ok=True)
        log = (self.state / "server.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fleetpulse", "api", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env,
            cwd=self.state,  # `python -m` puts the working directory first on sys.path
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"API server exited {self.process.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        raise RuntimeError(f"API server not ready in {timeout_s} s: {self.log_tail()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def memory_kib(self) -> dict[str, int]:
        """``VmRSS`` (now) and ``VmHWM`` (peak since start) of the server process, in KiB."""
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        return {name: int(fields[name].split()[0]) for name in ("VmRSS", "VmHWM")}

    def log_tail(self) -> str:
        path = self.state / "server.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def answered(self, path: str = ATTACK_PATH) -> list[int]:
        """Statuses of the requests to ``path`` so far, from uvicorn's access log: what the server answered
        even where the client never saw it (the server hangs up on an unread upload, and the kernel's
        reset can overtake the answer)."""
        statuses = []
        for line in (self.state / "server.log").read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("logger") == "uvicorn.access" and f" {path} " in record.get("msg", ""):
                statuses.append(int(record["msg"].rsplit(" ", 1)[-1]))
        return statuses

    def get(self, path: str, user: str, password: str) -> int:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers=basic_header(user, password))
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)


def basic_header(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@dataclass(frozen=True)
class Outcome:
    status: int | None
    """HTTP status of the answer, None if the connection ended without one."""
    sent: int
    """Body bytes the client managed to hand to the kernel before the server answered or hung up."""


async def upload(
    port: int, chunked: bool, headers: dict[str, str], total: int = ATTACK_BYTES, timeout_s: float = 120.0
) -> Outcome:
    """POST ``total`` bytes of a never-ending JSON array, reading the answer while still sending."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = [f"POST {ATTACK_PATH} HTTP/1.1", "Host: fleetpulse", "Content-Type: application/json"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}")
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())

    sent = 0

    async def send_body() -> None:
        nonlocal sent
        try:
            while sent < total:
                piece = PIECE[: total - sent]
                writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece)
                await writer.drain()
                sent += len(piece)
            if chunked:
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (ConnectionError, OSError):
            pass  # the server answered and hung up: the point of the exercise

    sender = asyncio.create_task(send_body())
    try:
        status_line = await asyncio.wait_for(reader.readline(), timeout_s)
    except (ConnectionError, OSError, TimeoutError):
        status_line = b""
    sender.cancel()
    await asyncio.gather(sender, return_exceptions=True)
    writer.close()
    parts = status_line.split()
    return Outcome(int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None, sent)


async def flood(port: int, chunked: bool, headers: dict[str, str], clients: int = 4) -> list[Outcome]:
    """``clients`` concurrent 52 MB uploads."""
    return list(await asyncio.gather(*(upload(port, chunked, headers) for _ in range(clients))))
