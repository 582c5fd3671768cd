"""``learnstream bench --serve``: one ``learnstream serve`` process under a real load
generator (wrk for throughput, hey for a fixed rate), on loopback.

Measures single-event requests/s and latency, p99 at a fixed 500 requests/s,
events/s through batches of 1,000, and latency and correctness while the model
is swapped 100 times under load: a checker posts batches the whole time and
compares every answer with the p of the version it names (computed here with
the same scoring function), so a failed, mixed-version or wrong answer counts.
Last, p for the final version against ``learnstream score --offline``.
Every phase is bounded in time; nothing leaves loopback.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from stream.config import KafkaSettings, ModelSettings, TopicSettings
from stream.errors import StreamError
from stream.kafka import connect
from stream.kafka.embedded import EmbeddedBroker
from stream.kafka.topics import ensure_pipeline
from stream.model.online import OnlineModel
from stream.serve.holder import serving
from stream.sync.checkpoint import CheckpointStore, Snapshot

logger = logging.getLogger(__name__)

FEATURES = 10
SWAPS = 100


@dataclass
class ServeBenchSettings:
    bootstrap: str | None = None
    duration_s: float = 10.0
    connections: int = 32
    rate: int = 500
    batch: int = 1000
    swaps: int = SWAPS
    swap_interval_s: float = 0.05
    port: int = 0


@dataclass
class ServeBenchResult:
    machine: str = ""
    load_average: tuple = ()
    ceiling: dict = field(default_factory=dict)
    single: dict = field(default_factory=dict)
    fixed_rate: dict = field(default_factory=dict)
    batched: dict = field(default_factory=dict)
    swaps: dict = field(default_factory=dict)
    parity: dict = field(default_factory=dict)

    def format(self) -> str:
        s, r, b, w, p = self.single, self.fixed_rate, self.batched, self.swaps, self.parity
        c = self.ceiling
        return "\n".join(
            [
                f"learnstream serve benchmark ({self.machine}; load average at the end "
                f"{', '.join(f'{v:.1f}' for v in self.load_average)})",
                f"  ceiling: uvicorn with an empty app, wrk -c{c['connections']}: "
                f"{c['requests_per_s']:,.0f} requests/s, p50 {c['p50_ms']:.2f} ms "
                f"p99 {c['p99_ms']:.2f}",
                f"  single event, wrk -c{s['connections']} {s['duration_s']:.0f}s: "
                f"{s['requests_per_s']:,.0f} requests/s, latency p50 {s['p50_ms']:.2f} ms "
                f"p90 {s['p90_ms']:.2f} p99 {s['p99_ms']:.2f}, non-2xx {s['non_2xx']}, "
                f"errors {s['socket_errors']}; serve used {s['serve_cpu_s']:.1f} CPU-s: "
                f"{s['requests_per_cpu_s']:,.0f} requests per CPU-second",
                f"  fixed rate, hey -q: {r['requests_per_s']:,.0f} requests/s, latency p50 "
                f"{r['p50_ms']:.2f} ms p90 {r['p90_ms']:.2f} p99 {r['p99_ms']:.2f}, "
                f"non-200 {r['non_200']}",
                f"  batches of {b['batch']}, wrk -c{b['connections']}: "
                f"{b['events_per_s']:,.0f} events/s ({b['requests_per_s']:,.1f} requests/s, "
                f"p50 {b['p50_ms']:.1f} ms p99 {b['p99_ms']:.1f}), non-2xx {b['non_2xx']}; "
                f"{b['events_per_cpu_s']:,.0f} events per serve CPU-second",
                f"  {w['swaps_seen']} hot swaps under load (versions {w['first_version']}-"
                f"{w['last_version']}): wrk {w['requests_per_s']:,.0f} requests/s p99 "
                f"{w['p99_ms']:.2f} ms non-2xx {w['non_2xx']}; checker {w['checked']} batches: "
                f"failed {w['failed']}, mixed versions {w['mixed']}, wrong p {w['wrong_p']}",
                f"  parity with score --offline (version {p['version']}, {p['events']} events): "
                f"{'identical' if p['identical'] else 'DIFFERENT'}",
            ]
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_generators() -> tuple[str, str]:
    """wrk and hey, which the user installs (a library does not run the system's
    package manager): without them the benchmark stops and says how."""
    wrk, hey = shutil.which("wrk"), shutil.which("hey")
    if wrk is None or hey is None:
        missing = " ".join(tool for tool, path in (("wrk", wrk), ("hey", hey)) if path is None)
        raise StreamError(
            f"the serve benchmark needs Debian's wrk and hey; missing: {missing}"
            " (apt-get install wrk hey)"
        )
    return wrk, hey


# An ASGI app that reads the body and answers "{}": what uvicorn alone does here.
_EMPTY_APP = """
import sys, uvicorn
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=False, log_level="warning")
"""


def _ceiling(wrk: str, body: Path, settings: ServeBenchSettings) -> dict:
    """wrk against uvicorn serving an empty app: the ceiling for any app on it, now."""
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-c", _EMPTY_APP, str(port)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise StreamError("the empty uvicorn app did not start") from None
                time.sleep(0.1)
        return _wrk(
            wrk, f"http://127.0.0.1:{port}/", body, settings.connections, settings.duration_s
        )
    finally:
        server.terminate()
        server.wait(15)


def _versions(n: int, seed: int = 0) -> list[Snapshot]:
    """``n`` global versions of one model learning on: each differs from the last."""
    rng = random.Random(seed)
    model = OnlineModel(ModelSettings())
    truth = [rng.gauss(0, 1) for _ in range(FEATURES)]
    out = []
    for version in range(1, n + 1):
        for _ in range(20):
            x = {f"f{j}": rng.gauss(0, 1 + j) for j in range(FEATURES)}
            logit = sum(
                t * v / (1 + j) for j, (t, v) in enumerate(zip(truth, x.values(), strict=True))
            )
            model.learn(x, rng.random() < 1 / (1 + math.exp(-logit)))
        out.append(
            Snapshot(
                version=version,
                state=model.state(),
                model_config=ModelSettings().as_dict(),
                created_at=time.time(),
            )
        )
    return out


def _events(n: int, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    return [
        {"id": f"b-{i}", "x": {f"f{j}": rng.gauss(0, 1 + j) for j in range(FEATURES)}}
        for i in range(n)
    ]


def _publish(producer, topic: str, snapshot: Snapshot) -> None:
    producer.send(topic, snapshot.to_bytes(), b"global", None, 0)
    producer.flush(30)


_WRK_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open("{body}", "rb"):read("*a")
"""
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"unreadable wrk duration {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _wrk(wrk: str, url: str, body: Path, connections: int, duration_s: float) -> dict:
    script = body.with_suffix(".lua")
    script.write_text(_WRK_LUA.format(body=body))
    out = subprocess.run(
        [
            wrk,
            "-t1",
            f"-c{connections}",
            f"-d{duration_s:.0f}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=duration_s + 60,
        check=True,
    ).stdout
    logger.debug("wrk output:\n%s", out)
    latency = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", out, re.M))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "connections": connections,
        "duration_s": duration_s,
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "p50_ms": _ms(latency["50"]),
        "p90_ms": _ms(latency["90"]),
        "p99_ms": _ms(latency["99"]),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": sum(map(int, errors.groups())) if errors else 0,
    }


def _hey(hey: str, url: str, body: Path, rate: int, duration_s: float) -> dict:
    workers = 10
    out = subprocess.run(
        [
            hey,
            "-z",
            f"{duration_s:.0f}s",
            "-c",
            str(workers),
            "-q",
            str(rate / workers),
            "-m",
            "POST",
            "-T",
            "application/json",
            "-D",
            str(body),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=duration_s + 60,
        check=True,
    ).stdout
    logger.debug("hey output:\n%s", out)
    latency = {q: float(v) * 1e3 for q, v in re.findall(r"(\d+)% in ([\d.]+) secs", out)}
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", out)}
    return {
        "target_rate": rate,
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": latency["50"],
        "p90_ms": latency["90"],
        "p99_ms": latency["99"],
        "non_200": sum(n for c, n in codes.items() if c != 200),
        "responses": sum(codes.values()),
    }


def _post(url: str, body: bytes, timeout_s: float = 10.0) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def _cpu_s(base: str) -> float:
    """CPU seconds the serve process has used (its own Prometheus process metrics)."""
    text = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
    found = re.search(r"^process_cpu_seconds_total ([\d.e+]+)$", text, re.M)
    return float(found.group(1)) if found else float("nan")


def _per_cpu(phase: dict, cpu_s: float, per_request: int = 1) -> None:
    """Add the serve process's CPU seconds and what one CPU-second of it served:
    a figure that does not depend on what else the machine is running."""
    phase["serve_cpu_s"] = cpu_s
    phase["requests_per_cpu_s"] = phase.get("requests", 0) / cpu_s if cpu_s > 0 else 0.0
    phase["events_per_cpu_s"] = phase["requests_per_cpu_s"] * per_request


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


class _Checker(threading.Thread):
    """Posts a batch again and again; checks each answer against its named version."""

    def __init__(self, url: str, events: list[dict], expected: dict[int, list[float]]) -> None:
        super().__init__(daemon=True)
        self.url, self.events, self.expected = url, events, expected
        self.body = json.dumps(events).encode()
        self.stop = threading.Event()
        self.checked = self.failed = self.mixed = self.wrong_p = 0
        self.versions: set[int] = set()

    def run(self) -> None:
        while not self.stop.is_set():
            status, raw = _post(self.url, self.body)
            self.checked += 1
            if status != 200:
                self.failed += 1
                continue
            answer = json.loads(raw)
            versions = {item["model_version"] for item in answer}
            if len(versions) != 1:
                self.mixed += 1
                continue
            (version,) = versions
            self.versions.add(version)
            if [item["p"] for item in answer] != self.expected[version]:
                self.wrong_p += 1


def _wait_version(base: str, version: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if _get_json(f"{base}/v1/model").get("model_version") == version:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise StreamError(f"serve did not reach model version {version} within {timeout_s}s")


def run_serve_bench(settings: ServeBenchSettings, out: Path | None = None) -> ServeBenchResult:
    wrk, hey = load_generators()
    result = ServeBenchResult(
        machine=f"{os.cpu_count()} cores, {sys.platform}, python {sys.version.split()[0]}"
    )
    broker = EmbeddedBroker(port=0).start() if settings.bootstrap is None else None
    bootstrap = settings.bootstrap or broker.bootstrap_servers
    topics = TopicSettings(features=f"servebench-{os.getpid()}")
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    versions = _versions(settings.swaps + 1)
    events = _events(settings.batch)
    checker_events = events[:100]
    expected = {
        s.version: [serving(s).predict_proba(e["x"]) for e in checker_events] for s in versions
    }
    producer = connect.producer("confluent", kafka, "servebench", linger_ms=0)
    work = Path(tempfile.mkdtemp(prefix="learnstream-servebench-"))
    server = None
    try:
        ensure_pipeline(kafka, topics, partitions=1)
        _publish(producer, topics.model, versions[0])
        port = settings.port or _free_port()
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stream",
                "serve",
                "--port",
                str(port),
                "--bootstrap",
                bootstrap,
                "--features-topic",
                topics.features,
                "--checkpoint-dir",
                str(work / "none"),
                "--log-level",
                "WARNING",
            ],
        )
        _wait_version(base, 1)
        single = work / "single.json"
        single.write_text(json.dumps(events[0]))
        batch = work / "batch.json"
        batch.write_text(json.dumps(events))
        predict = f"{base}/v1/predict"

        logger.info("ceiling: an empty app on uvicorn")
        result.ceiling = _ceiling(wrk, single, settings)
        logger.info("single-event throughput")
        cpu = _cpu_s(base)
        result.single = _wrk(wrk, predict, single, settings.connections, settings.duration_s)
        _per_cpu(result.single, _cpu_s(base) - cpu)
        logger.info("fixed rate %d/s", settings.rate)
        cpu = _cpu_s(base)
        result.fixed_rate = _hey(hey, predict, single, settings.rate, settings.duration_s)
        result.fixed_rate["requests"] = result.fixed_rate["responses"]
        _per_cpu(result.fixed_rate, _cpu_s(base) - cpu)
        logger.info("batches of %d", settings.batch)
        cpu = _cpu_s(base)
        batched = _wrk(wrk, predict, batch, 4, settings.duration_s)
        _per_cpu(batched, _cpu_s(base) - cpu, settings.batch)
        batched["batch"] = settings.batch
        batched["events_per_s"] = batched["requests_per_s"] * settings.batch
        result.batched = batched

        logger.info("%d hot swaps under load", settings.swaps)
        checker = _Checker(predict, checker_events, expected)
        swap_time = settings.swaps * settings.swap_interval_s
        holder: dict = {}
        load = threading.Thread(
            target=lambda: holder.update(
                _wrk(wrk, predict, single, settings.connections // 2, swap_time + 6)
            ),
            daemon=True,
        )
        load.start()
        checker.start()
        time.sleep(2.0)  # load running before the first swap
        for snapshot in versions[1:]:
            _publish(producer, topics.model, snapshot)
            time.sleep(settings.swap_interval_s)
        _wait_version(base, versions[-1].version)
        time.sleep(2.0)  # and after the last one
        checker.stop.set()
        checker.join(30)
        load.join(swap_time + 90)
        swaps = holder
        metrics = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
        seen = re.search(r"^learnstream_serve_model_swaps_total ([\d.]+)$", metrics, re.M)
        swaps.update(
            swaps_seen=int(float(seen.group(1))) if seen else -1,
            first_version=versions[0].version,
            last_version=versions[-1].version,
            checked=checker.checked,
            failed=checker.failed,
            mixed=checker.mixed,
            wrong_p=checker.wrong_p,
            versions_answered=len(checker.versions),
        )
        result.swaps = swaps

        logger.info("parity with score --offline")
        store = CheckpointStore(work / "ckpt")
        store.write(versions[-1])
        rows = work / "events.csv"
        with rows.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["id", *events[0]["x"]])
            writer.writeheader()
            for event in events:
                writer.writerow({"id": event["id"], **event["x"]})
        scored = subprocess.run(
            [
                sys.executable,
                "-m",
                "stream",
                "score",
                str(rows),
                "--offline",
                "--checkpoint-dir",
                str(work / "ckpt"),
                "--id-column",
                "id",
                "--log-level",
                "WARNING",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout
        offline = [json.loads(line) for line in scored.splitlines()]
        status, raw = _post(predict, json.dumps(events).encode())
        served = json.loads(raw) if status == 200 else []
        result.parity = {
            "version": versions[-1].version,
            "events": len(events),
            "identical": [o["p"] for o in offline] == [s["p"] for s in served]
            and {s["model_version"] for s in served} == {versions[-1].version},
        }
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
        producer.close()
        shutil.rmtree(work, ignore_errors=True)
        if broker is not None:
            broker.stop()
    result.load_average = os.getloadavg()
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(asdict(result), indent=2))
    return result
