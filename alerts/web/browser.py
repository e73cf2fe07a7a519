"""Headless Chromium over the DevTools protocol: screenshots of the page for the demo and the browser test.

The page needs a login, which ``chromium --screenshot`` cannot do; over DevTools we fill in
the login form once and then navigate, click and capture like a user would.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-port=0",
    "--window-size=1400,900",
]


def chromium_binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise FileNotFoundError("chromium not found (Debian package 'chromium')")
    return found


@contextmanager
def chromium_page(profile: Path | None = None, start_timeout_s: float = 30.0) -> Iterator[str]:
    """Start headless Chromium; yields the DevTools websocket URL of its first page. Stops it afterwards."""
    # Chromium's helper processes can still write into the profile for a moment after the browser
    # exits; a leftover temp folder is harmless, a failed cleanup must not fail the caller.
    with tempfile.TemporaryDirectory(prefix="fleetpulse-chromium-", ignore_cleanup_errors=True) as tmp:
        user_data = profile or Path(tmp)
        proc = subprocess.Popen(
            [chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={user_data}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            active = user_data / "DevToolsActivePort"
            deadline = time.monotonic() + start_timeout_s
            while not (active.exists() and active.read_text().count("\n") >= 1):
                if proc.poll() is not None:
                    raise RuntimeError(f"chromium exited with {proc.returncode}")
                if time.monotonic() > deadline:
                    raise TimeoutError("chromium did not open its DevTools port")
                time.sleep(0.1)
            port = int(active.read_text().splitlines()[0])
            pages: list[dict[str, Any]] = []
            while not pages:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as answer:
                    pages = [t for t in json.load(answer) if t["type"] == "page"]
            yield str(pages[0]["webSocketDebuggerUrl"])
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


class Cdp:
    """The few DevTools protocol calls we need, over one page's websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        my_id = self.next_id
        await self.ws.send_json({"id": my_id, "method": method, "params": params})
        while True:
            message = await self.ws.receive_json(timeout=30)
            if message.get("id") == my_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            self.events.append(message)

    async def wait_event(self, method: str, within_s: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + within_s
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(i)
            message = await self.ws.receive_json(timeout=max(0.1, deadline - time.monotonic()))
            self.events.append(message)

    async def start(self, authorization: str | None = None) -> None:
        for domain in ("Page", "Runtime", "Log", "Network"):
            await self.send(f"{domain}.enable")
        if authorization:
            await self.send("Network.setExtraHTTPHeaders", headers={"Authorization": authorization})
        await self.send("Emulation.setDeviceMetricsOverride", width=1400, height=900, deviceScaleFactor=1, mobile=False)

    async def navigate(self, url: str) -> None:
        self.events = [e for e in self.events if e.get("method") != "Page.loadEventFired"]
        await self.send("Page.navigate", url=url)
        await self.wait_event("Page.loadEventFired")

    async def log_in(self, base: str, username: str, password: str) -> None:
        """Through the page's local login form, as a person would (the session cookie is then the browser's)."""
        await self.navigate(base + "/auth/login")
        self.events = [e for e in self.events if e.get("method") != "Page.loadEventFired"]
        await self.js(
            f"document.querySelector('input[name=username]').value = {json.dumps(username)};"
            f"document.querySelector('input[name=password]').value = {json.dumps(password)};"
            "document.querySelector('form.login').submit()"
        )
        await self.wait_event("Page.loadEventFired")

    async def js(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, within_s: float = 15) -> Any:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            value = await self.js(expression)
            if value:
                return value
            await asyncio.sleep(0.2)
        raise TimeoutError(f"timed out waiting for {expression}")

    async def screenshot(self, path: Path, full_page: bool = True) -> Path:
        data = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=full_page)
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(path.write_bytes, base64.b64decode(data["data"]))
        return path

    def errors(self) -> list[str]:
        """JavaScript exceptions and console errors (including CSP violations and failed loads) so far."""
        found = []
        for event in self.events:
            if event.get("method") == "Runtime.exceptionThrown":
                found.append(json.dumps(event["params"])[:500])
            if event.get("method") == "Log.entryAdded" and event["params"]["entry"]["level"] == "error":
                found.append(str(event["params"]["entry"]["text"]))
        return found


def screenshot_pages(
    urls: dict[str, str], out_dir: Path, username: str, password: str, full_page: bool = False
) -> dict[str, Path]:
    """Capture each ``name -> url`` as ``out_dir/<name>.png`` as the given local user (the demo's closing proof).

    By default only the 1400x900 window, as a person would see it; ``full_page`` for long pages too.
    """

    async def run(ws_url: str) -> dict[str, Path]:
        shots: dict[str, Path] = {}
        async with aiohttp.ClientSession() as http, http.ws_connect(ws_url, max_msg_size=64 * 2**20) as ws:
            cdp = Cdp(ws)
            await cdp.start()
            first = urlsplit(next(iter(urls.values())))
            await cdp.log_in(f"{first.scheme}://{first.netloc}", username, password)
            for name, url in urls.items():
                await cdp.navigate(url)
                shots[name] = await cdp.screenshot(out_dir / f"{name}.png", full_page)
        return shots

    with chromium_page() as ws_url:
        return asyncio.run(run(ws_url))
