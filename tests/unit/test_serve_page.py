"""The live dashboard in a real headless browser (Debian's chromium): the values
and charts appear and update in place, it fits a phone's width, and it asks for
the bearer token. Skipped, saying why, where no browser is installed."""

from __future__ import annotations

import json
import random
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import uvicorn

from stream.config import ServeSettings
from stream.observe.series import Series
from stream.serve.app import Backend, create_app
from stream.serve.holder import ModelHolder
from stream.serve.quality import RollingQuality
from tests.unit.serve_fixtures import snapshot
from tests.waiting import wait_for

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
BROWSER = next((found for name in BROWSERS if (found := shutil.which(name))), None)
TOKEN = "page-token"
PHONE_WIDTH = 390

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
    """Chromium driven over the DevTools protocol (a websocket, no extra driver).

    It starts on a blank page, so that console errors and uncaught exceptions
    of the page under test are all seen (``errors``) from its first line on."""

    def __init__(self, profile: Path, width: int | None = None) -> None:
        self.profile = profile
        self.width = width
        self.errors: list[str] = []
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
                "about:blank",
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
        self.call("Runtime.enable")
        if self.width is not None:
            self.call(
                "Emulation.setDeviceMetricsOverride",
                {"width": self.width, "height": 844, "deviceScaleFactor": 1, "mobile": True},
            )
        return self

    def call(self, method: str, params: dict | None = None):
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params or {}}))
        while True:
            message = json.loads(self.ws.recv(timeout=10))
            if message.get("id") == self._id:
                return message.get("result", {})
            self._note(message)

    def _note(self, message: dict) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.exceptionThrown":
            self.errors.append(json.dumps(params.get("exceptionDetails", {}))[:500])
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append(json.dumps(params.get("args", []))[:500])

    def open(self, url: str) -> None:
        self.call("Page.navigate", {"url": url})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return result["result"].get("value")

    def text(self, element_id: str) -> str | None:
        return self.evaluate(
            f"(document.getElementById({element_id!r}) || {{}}).textContent || null"
        )

    def points(self, chart: str) -> int:
        return int(self.evaluate(f"document.getElementById('chart-{chart}').dataset.points || 0"))

    def pixels(self, chart: str, rgb: tuple[int, int, int]) -> int:
        """Pixels of the chart's canvas within a few levels of colour ``rgb``."""
        r, g, b = rgb
        return self.evaluate(
            f"""(() => {{
              const c = document.querySelector('#chart-{chart} canvas');
              if (!c) return 0;
              const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
              let n = 0;
              for (let i = 0; i < px.length; i += 4)
                if (px[i + 3] > 200 && Math.abs(px[i] - {r}) < 40 && Math.abs(px[i + 1] - {g}) < 40
                    && Math.abs(px[i + 2] - {b}) < 40) n++;
              return n;
            }})()"""
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


BLUE = (0x1F, 0x77, 0xB4)  # the first line of every chart
RED = (0xD6, 0x27, 0x28)  # drift alarms
DRAWN = ("throughput", "latency", "quality", "model", "dead")


def _prediction(p: float, y: bool, latency_s: float) -> dict:
    now = time.time()
    return {"p": p, "y": int(y), "ts_record": now - latency_s, "ts_scored": now}


def _history(series: Series, now: float) -> None:
    """Ten seconds of past stream in which the model turns bad: a drift alarm."""
    rng = random.Random(3)
    for i in range(3_000):
        y = rng.random() < 0.5
        p = (0.9 if y else 0.1) if i < 1_500 else (0.1 if y else 0.9)
        series.add_predictions([_prediction(p, y, 0.01)], now=now - 10 + i / 300)
    series.add_model(1, 1_000, now - 10, now=now - 10)


class _Stream:
    """Feeds the series as serve's followers would, until stopped."""

    def __init__(self, series: Series, holder: ModelHolder) -> None:
        self.series, self.holder = series, holder
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng, learned, version = random.Random(5), 1_000, 1
        while not self._stop.wait(0.05):  # the stream's pace, not a wait in a test
            ys = [rng.random() < 0.5 for _ in range(10)]
            self.series.add_predictions(
                [_prediction(0.8 if y else 0.3, y, rng.uniform(0.005, 0.05)) for y in ys]
            )
            if rng.random() < 0.1:
                self.series.add_dead_letters(["invalid_json"])
            if rng.random() < 0.1:
                version, learned = version + 1, learned + 50
                self.series.add_model(version, learned, time.time())

    def __enter__(self) -> _Stream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def _backend() -> tuple[Backend, RollingQuality]:
    holder = ModelHolder()
    holder.offer(snapshot(1))
    quality = RollingQuality(100)
    for i in range(8):
        quality.add(i % 2 == 0, 0.9 if i % 4 == 0 else 0.2)
    series = Series(step_s=0.5, window_s=30.0, quality_window=200)
    _history(series, time.time())
    return Backend(holder, quality, series=series), quality


def test_live_page_shows_the_values_and_refreshes(tmp_path):
    backend, quality = _backend()
    app = create_app(ServeSettings(), backend)
    port = _free_port()
    with (
        _Server(app, port),
        _Stream(backend.series, backend.holder),
        _Browser(tmp_path / "profile") as browser,
    ):
        browser.open(f"http://127.0.0.1:{port}/")
        wait_for(lambda: browser.text("version") == "1", 30, "version 1 on the page")
        assert browser.text("n_learned") == str(snapshot(1).n_learned)
        expected = quality.summary()
        assert browser.text("accuracy") == f"{expected['accuracy']:.4f}"
        assert browser.text("log_loss") == f"{expected['log_loss']:.4f}"
        assert browser.text("quality_n") == "8"
        assert browser.text("rps") is not None and browser.text("rps") != "-"

        # Every chart with data is drawn: its first line's colour is on its canvas.
        for chart in DRAWN:
            wait_for(lambda c=chart: browser.points(c) >= 2, 30, f"points on the {chart} chart")
            wait_for(lambda c=chart: browser.pixels(c, BLUE) > 20, 30, f"the {chart} line")
        # The drift in the history is marked on the quality chart.
        assert int(browser.evaluate("document.getElementById('chart-quality').dataset.drifts")) >= 1
        assert browser.pixels("quality", RED) > 20
        # No lag is measured by serve: the chart says so rather than staying blank.
        assert "no lag measured" in browser.text("chart-lag")

        # Time goes on and a new global version arrives: the same document
        # shows both, its charts redrawn in place.
        browser.evaluate("window.loadedOnce = 'yes'")
        last_t = browser.evaluate("document.getElementById('chart-throughput').dataset.lastT")
        canvas = browser.evaluate("window.firstCanvas = document.querySelector('canvas'); 1")
        assert canvas == 1
        backend.holder.offer(snapshot(2, seed=3))
        wait_for(lambda: browser.text("version") == "2", 30, "version 2 on the page")
        wait_for(
            lambda: (
                browser.evaluate("document.getElementById('chart-throughput').dataset.lastT")
                != last_t
            ),
            30,
            "a newer point on the throughput chart",
        )
        assert browser.text("swaps") == "1"
        assert browser.evaluate("window.loadedOnce") == "yes"  # same document: no reload
        assert browser.evaluate("window.firstCanvas === document.querySelector('canvas')")
        assert browser.errors == []


def test_at_phone_width_nothing_overflows_and_the_charts_fit(tmp_path):
    backend, _ = _backend()
    app = create_app(ServeSettings(), backend)
    port = _free_port()
    with (
        _Server(app, port),
        _Stream(backend.series, backend.holder),
        _Browser(tmp_path / "profile", width=PHONE_WIDTH) as browser,
    ):
        browser.open(f"http://127.0.0.1:{port}/")
        for chart in DRAWN:
            wait_for(lambda c=chart: browser.pixels(c, BLUE) > 20, 30, f"the {chart} line")
        assert browser.evaluate("window.innerWidth") == PHONE_WIDTH
        assert browser.evaluate("document.documentElement.scrollWidth") <= PHONE_WIDTH
        widest = browser.evaluate(
            "Math.max(...[...document.querySelectorAll('body *')]"
            ".map(e => e.getBoundingClientRect().right))"
        )
        assert widest <= PHONE_WIDTH
        assert browser.errors == []


def test_with_a_token_the_page_opens_asks_for_it_once_and_again_when_refused(tmp_path):
    backend, _ = _backend()
    app = create_app(ServeSettings(token=TOKEN), backend)
    port = _free_port()
    form_shown = "!document.getElementById('token-form').hidden"
    with _Server(app, port), _Browser(tmp_path / "profile") as browser:
        browser.open(f"http://127.0.0.1:{port}/")
        wait_for(lambda: browser.evaluate(form_shown), 30, "the token form")
        assert browser.text("version") == "-"  # no data without the token
        assert browser.text("state") == "a token is needed"

        browser.evaluate(f"document.getElementById('token').value = {TOKEN!r}")
        browser.evaluate("document.getElementById('token-form').requestSubmit()")
        wait_for(lambda: browser.text("version") == "1", 30, "data once the token is given")
        wait_for(lambda: browser.points("throughput") >= 2, 30, "the charts' data")
        assert not browser.evaluate(form_shown)
        assert browser.evaluate("localStorage.getItem('learnstream.token')") == TOKEN

        # Opened again later: the stored token is used, nothing is asked.
        browser.open(f"http://127.0.0.1:{port}/")
        wait_for(lambda: browser.text("version") == "1", 30, "data with the stored token")
        assert not browser.evaluate(form_shown)

        # A token that stops working (changed on the server): asked again.
        browser.evaluate("localStorage.setItem('learnstream.token', 'old-token')")
        browser.open(f"http://127.0.0.1:{port}/")
        wait_for(lambda: browser.evaluate(form_shown), 30, "the token form again")
        assert browser.text("state") == "the token was refused: enter it again"
        assert browser.errors == []
