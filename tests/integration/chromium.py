"""Headless Chromium driven over the DevTools protocol: load a page, run a script, screenshot.

Enough of the protocol for a test to log in, read what a page rendered, click
its buttons and keep a screenshot, with nothing but Debian's ``chromium`` and
Tornado's websocket client (Flower's own dependency).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from tornado.websocket import websocket_connect


class Chromium:
    def __init__(self, binary: str, profile: Path, *, width: int = 1400,
                 height: int = 1000) -> None:
        profile.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
             f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._ids = itertools.count(1)
        self._loop = asyncio.new_event_loop()
        try:
            port = self._port(profile / "DevToolsActivePort")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list",
                                        timeout=10) as response:
                pages = [t for t in json.load(response) if t.get("type") == "page"]

            async def connect() -> Any:  # the socket belongs to this object's own loop
                return await websocket_connect(pages[0]["webSocketDebuggerUrl"],
                                               max_message_size=256 * 1024 * 1024)

            self._socket = self._loop.run_until_complete(connect())
            self.call("Page.enable")
            self.call("Network.enable")
        except BaseException:
            self.close()
            raise

    def _port(self, path: Path, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists() and path.read_text().strip():
                return int(path.read_text().split()[0])
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.process.returncode}")
            time.sleep(0.1)
        raise TimeoutError("chromium did not open its DevTools port")

    def call(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        """Send one DevTools command; its result (events in between are skipped)."""
        number = next(self._ids)

        async def exchange() -> dict[str, Any]:
            await self._socket.write_message(json.dumps(
                {"id": number, "method": method, "params": params}))
            while True:
                raw = await self._socket.read_message()
                if raw is None:
                    raise ConnectionError("chromium closed the DevTools connection")
                message = json.loads(raw)
                if message.get("id") == number:
                    if "error" in message:
                        raise RuntimeError(f"{method}: {message['error']}")
                    return message.get("result", {})

        return self._loop.run_until_complete(asyncio.wait_for(exchange(), timeout))

    def basic_auth(self, user: str, password: str) -> None:
        """Send this login with every request from now on (what a browser does once asked)."""
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.call("Network.setExtraHTTPHeaders", headers={"Authorization": f"Basic {token}"})

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait(self, expression: str, timeout: float = 30) -> Any:
        """Poll ``expression`` in the page until it is truthy (page loads in between)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except RuntimeError:
                value = None  # the page is navigating
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"page never had {expression}")
            time.sleep(0.2)

    def open(self, url: str) -> str:
        """Load ``url`` and wait for it; the page's text."""
        self.call("Page.navigate", url=url)
        self.wait(f"document.readyState === 'complete' && location.href === {json.dumps(url)}")
        return self.evaluate("document.body ? document.body.innerText : ''")

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(data["data"]))

    def close(self) -> None:
        socket = getattr(self, "_socket", None)
        if socket is not None:
            socket.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._loop.close()
