"""The live page in a real headless browser (Debian's chromium): the values appear
and refresh by themselves. Skipped, saying why, where no browser is installed."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import urllib.request
from pathlib import Path

import pytest
import uvicorn

from stream.config import ServeSettings
from stream.serve.app import Backend, create_app
from stream.serve.holder import ModelHolder
from stream.serve.quality import RollingQuality
from tests.unit.serve_fixtures import snapshot
from tests.waiting import wait_for

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
BROWSER = next((found for name in BROWSERS if (found := shutil.which(name))), None)
TOKEN = "page-token"

pytestmark = pytest.mark.skipif(
    BROWSER is None,
    reason="no headless browser: install Debian's chromium (apt-get install chromium) "
    "to run the live page test",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    def __init__(self, app, port: int) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        wait_for(lambda: self.server.started, 20, "uvicorn to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class _Browser:
    """Chromium driven over the DevTools protocol (a websocket, no extra driver)."""

    def __init__(self, url: str, profile: Path) -> None:
        self.profile = profile
        self.process = subprocess.Popen(
            [
                BROWSER,
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
                f"--user-data-dir={profile}",
                url,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._id = 0

    def __enter__(self) -> _Browser:
        active = self.profile / "DevToolsActivePort"
        wait_for(lambda: active.exists() and active.read_text().strip(), 30, "DevTools port")
        port = int(active.read_text().split()[0])

        def page_target():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                pages = [t for t in json.load(r) if t.get("type") == "page"]
            return pages[0]["webSocketDebuggerUrl"] if pages else None

        from websockets.sync.client import connect

        self._connection = connect(wait_for(page_target, 30, "the page target"), max_size=None)
        self.ws = self._connection.__enter__()
        return self

    def evaluate(self, expression: str):
        self._id += 1
        self.ws.send(
            json.dumps(
                {
                    "id": self._id,
                    "method": "Runtime.evaluate",
                    "params": {"expression": expression, "returnByValue": True},
                }
            )
        )
        while True:
            message = json.loads(self.ws.recv(timeout=10))
            if message.get("id") == self._id:
                return message["result"]["result"].get("value")

    def text(self, element_id: str) -> str | None:
        return self.evaluate(
            f"(document.getElementById({element_id!r}) || {{}}).textContent || null"
        )

    def __exit__(self, *exc: object) -> None:
        try:
            self._connection.__exit__(None, None, None)
        finally:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def test_live_page_shows_the_values_and_refreshes(tmp_path):
    holder = ModelHolder()
    holder.offer(snapshot(1))
    quality = RollingQuality(100)
    for i in range(8):
        quality.add(i % 2 == 0, 0.9 if i % 4 == 0 else 0.2)
    app = create_app(ServeSettings(token=TOKEN), Backend(holder, quality))
    port = _free_port()
    url = f"http://127.0.0.1:{port}/?access_token={TOKEN}"
    with _Server(app, port), _Browser(url, tmp_path / "profile") as browser:
        wait_for(lambda: browser.text("version") == "1", 30, "version 1 on the page")
        assert browser.text("n_learned") == str(snapshot(1).n_learned)
        expected = quality.summary()
        assert browser.text("accuracy") == f"{expected['accuracy']:.4f}"
        assert browser.text("log_loss") == f"{expected['log_loss']:.4f}"
        assert browser.text("quality_n") == "8"
        assert browser.text("rps") is not None and browser.text("rps") != "-"

        # A new global version arrives: the page shows it without being reloaded.
        browser.evaluate("window.loadedOnce = 'yes'")
        holder.offer(snapshot(2, seed=3))
        wait_for(lambda: browser.text("version") == "2", 30, "version 2 on the page")
        assert browser.text("swaps") == "1"
        refreshes = int(browser.evaluate("document.getElementById('state').dataset.refreshes"))
        assert refreshes >= 2
        assert browser.evaluate("window.loadedOnce") == "yes"  # same document: no reload
