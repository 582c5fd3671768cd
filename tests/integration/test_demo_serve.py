"""``learnstream demo --serve`` as a user runs it: the demo keeps replaying its
dataset, prints the dashboard's address, the dashboard's series move while it
runs, and SIGTERM (or Ctrl-C) ends it cleanly."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import urllib.request

import pytest

from stream.kafka.embedded import free_port

from .helpers import wait_for

pytestmark = pytest.mark.integration

STOP_LIMIT_S = 10  # `docker stop` kills at 10 s; the demo must be gone by then
STARTUP_S = 120


def _get_json(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return json.load(answer)
    except OSError:
        return None  # not listening yet


def test_demo_serve_prints_the_dashboard_address_streams_until_sigterm_and_exits_0(tmp_path):
    port = free_port()
    log = tmp_path / "demo.log"
    with open(log, "wb") as stderr:
        demo = subprocess.Popen(
            [sys.executable, "-m", "stream", "demo", "--serve", "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    lines: list[str] = []

    def read() -> None:
        assert demo.stdout is not None
        lines.extend(line.rstrip("\n") for line in demo.stdout)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:

        def address() -> str | None:
            found = [re.search(r"dashboard at (http://\S+/)$", line) for line in lines]
            return next((m[1] for m in found if m), None)

        url = wait_for(address, STARTUP_S, "the dashboard's address on stdout")
        assert url == f"http://127.0.0.1:{port}/"
        page = wait_for(lambda: _page(url), STARTUP_S, f"{url} to answer")
        assert "<title>learnstream serve</title>" in page  # serve's own dashboard page

        def scoring() -> dict | None:
            """The newest closed bucket, once it holds scored events and a global version."""
            series = _get_json(f"{url}v1/series")
            if not series or not series["t"]:
                return None
            newest = {name: series[name][-1] for name in ("t", "scored_per_s", "model_version")}
            if newest["scored_per_s"] > 0 and newest["model_version"] is not None:
                return newest
            return None

        first = wait_for(scoring, STARTUP_S, "events scored on the dashboard")
        # Moving: a later bucket holds scored events too, and a newer global version.
        later = wait_for(
            lambda: (
                (now := scoring())
                and now["t"] > first["t"]
                and now["model_version"] > first["model_version"]
                and now
            ),
            60,
            f"the dashboard's stream to move on from {first}",
        )
        assert later["scored_per_s"] > 0
    finally:
        if demo.poll() is None:
            demo.send_signal(signal.SIGTERM)
        try:
            code = demo.wait(timeout=STOP_LIMIT_S)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait()
            raise AssertionError(
                f"demo --serve still running {STOP_LIMIT_S} s after SIGTERM\n{log.read_text()}"
            ) from None
        reader.join(timeout=5)
    assert code == 0, log.read_text()
    assert "processes stopped" in log.read_text()
    assert "embedded broker stopped" in log.read_text()


def _page(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.read().decode()
    except OSError:
        return None
