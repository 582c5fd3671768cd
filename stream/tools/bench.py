"""``learnstream bench``: throughput, latency and their ceilings, in one run.

For every client x feature count x model, the same run measures:

- *model only*: river predict + learn on in-memory events (no Kafka);
- *transport only*: a real worker with a model that does nothing: consume,
  decode, encode, produce, acknowledge, commit;
- *worker*: the real worker draining a preloaded topic;

so every worker figure is also a ratio: ``worker time per event / (transport
+ model time per event)``, our own overhead. Then, for the first model and
feature count: two workers on two partitions (scaling), the worker with
merging at its default intervals (merging cost), and event-to-prediction
latency at fixed fractions of the measured maximum rate.

Drain throughput is timed from the worker's first batch to its last, so the
group join is not in it. Latency is ``ts_scored - ts_record``: from the
producer's send to the worker scoring the event; the prediction is then
published in that batch and acknowledged before the commit (the worker's
batch time, reported too, bounds that extra).
"""

from __future__ import annotations

import itertools
import json
import logging
import platform
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from kafka.errors import KafkaError

from stream.config import (
    ClientName,
    Encoding,
    KafkaSettings,
    MergerSettings,
    MergeSettings,
    ModelSettings,
    TopicSettings,
    WorkerSettings,
)
from stream.errors import ConfigError, StreamError
from stream.events.codec import decode_map
from stream.events.sources import SyntheticStream
from stream.kafka import clients
from stream.kafka.embedded import EmbeddedBroker
from stream.kafka.reader import records
from stream.kafka.topics import ensure_pipeline, pipeline_specs
from stream.model.online import OnlineModel
from stream.model.state import ModelState
from stream.observe.quality import percentiles
from stream.runtime.supervisor import Supervisor
from stream.runtime.worker import Worker
from stream.tools.produce import ProduceSettings, produce

logger = logging.getLogger(__name__)

MODELS: dict[str, ModelSettings] = {
    "lr": ModelSettings(scale=False),
    "scaler+lr": ModelSettings(),
    "ftrl": ModelSettings(optimizer="ftrl", learning_rate=0.1, scale=False),
}

# Group timing for bench workers: the embedded broker holds a join this long.
_GROUP = {
    "max_poll_interval_ms": 3_000,
    "session_timeout_ms": 3_000,
    "heartbeat_interval_ms": 1_000,
}


@dataclass(frozen=True)
class BenchSettings:
    bootstrap: str | None = None
    clients: tuple[ClientName, ...] = ("kafka-python",)
    models: tuple[str, ...] = ("scaler+lr",)
    features: tuple[int, ...] = (10,)
    encoding: Encoding = "msgpack"
    events: int = 100_000
    scale_workers: int = 2
    latency_fractions: tuple[float, ...] = (0.25, 0.5, 0.75)
    latency_duration_s: float = 5.0
    merge_cost: bool = True

    def __post_init__(self) -> None:
        unknown = set(self.models) - set(MODELS)
        if unknown:
            raise ConfigError(f"unknown models {sorted(unknown)}; known: {sorted(MODELS)}")
        if self.events < 1000:
            raise ConfigError(f"events must be >= 1000 for a stable figure, got {self.events}")
        bad = [f for f in self.latency_fractions if not 0 < f < 1]
        if bad:
            raise ConfigError(f"latency fractions must be in (0, 1), got {bad}")


@dataclass
class BenchResult:
    machine: dict
    settings: dict
    throughput: list[dict] = field(default_factory=list)
    scaling: list[dict] = field(default_factory=list)
    merging: list[dict] = field(default_factory=list)
    latency: list[dict] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def format(self) -> str:
        lines = [
            "throughput, one worker, one partition (events/s; us/event; ratio = worker / "
            "(transport + model))",
            f"  {'client':<13} {'feat':>4} {'model':<10} {'model only':>11} {'transport':>10} "
            f"{'worker':>9} {'us/ev':>7} {'ratio':>6}",
        ]
        for r in self.throughput:
            lines.append(
                f"  {r['client']:<13} {r['features']:>4} {r['model']:<10} "
                f"{r['model_only_eps']:>11,.0f} {r['transport_only_eps']:>10,.0f} "
                f"{r['worker_eps']:>9,.0f} {r['worker_us']:>7.1f} {r['overhead_ratio']:>6.2f}"
            )
        for r in self.scaling:
            lines.append(
                f"scaling {r['client']}: {r['workers']} workers {r['total_eps']:,.0f} events/s "
                f"(per worker {', '.join(f'{v:,.0f}' for v in r['per_worker_eps'])}) = "
                f"{r['speedup']:.2f}x one worker"
            )
        for r in self.merging:
            lines.append(
                f"merging {r['client']}: {r['merged_eps']:,.0f} events/s with merging vs "
                f"{r['unmerged_eps']:,.0f} without: cost {100 * r['cost']:.1f}%"
            )
        for r in self.latency:
            lat = r["latency_ms"]
            lines.append(
                f"latency {r['client']} {r['model']} at {r['fraction']:.0%} of max "
                f"({r['rate']:,.0f}/s): p50 {lat['p50']:.1f} ms  p95 {lat['p95']:.1f}  "
                f"p99 {lat['p99']:.1f}  max {lat['max']:.1f}  (batch mean {r['batch_ms']:.1f} ms)"
            )
        return "\n".join(lines)


class NullModel:
    """Scores 0.5 and learns nothing: the worker's cost without river."""

    n_learned = 0

    def predict_proba(self, x: dict[str, float]) -> float:
        return 0.5

    def learn(self, x: dict[str, float], y: bool) -> None:
        return None

    def state(self) -> ModelState:
        return ModelState()


def machine() -> dict:
    import os

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _rows(n_features: int, limit: int, prefix: str = ""):
    return itertools.islice(SyntheticStream(n_features=n_features, seed=1, id_prefix=prefix), limit)


def model_only_eps(model: ModelSettings, n_features: int, n: int) -> float:
    events = [(x, y) for _, x, y in _rows(n_features, n)]
    online = OnlineModel(model)
    start = time.perf_counter()
    for x, y in events:
        online.predict_proba(x)
        online.learn(x, y)
    return n / (time.perf_counter() - start)


class Bench:
    def __init__(self, settings: BenchSettings, kafka: KafkaSettings) -> None:
        self.settings = settings
        self.kafka = kafka
        self.run_id = uuid.uuid4().hex[:6]
        self._created: list[str] = []
        self.result = BenchResult(machine=machine(), settings=asdict(settings))

    def _topics(self, name: str, partitions: int) -> TopicSettings:
        """Fresh topics for one measurement; the previous measurement's are deleted
        first (the embedded broker holds everything in memory)."""
        self._drop_topics()
        tag = f"bench-{self.run_id}-{name}".replace("+", "_")
        topics = TopicSettings(features=f"{tag}-f", predictions=f"{tag}-p", group_id=tag)
        ensure_pipeline(self.kafka, topics, partitions)
        self._created = [spec.name for spec in pipeline_specs(topics, partitions)]
        return topics

    def _drop_topics(self) -> None:
        if not self._created:
            return
        admin = clients.admin(self.kafka, client_id="learnstream-bench")
        try:
            admin.delete_topics(self._created)
        except KafkaError as exc:
            logger.warning("bench topics not deleted topics=%s error=%s", self._created, exc)
        finally:
            admin.close()
        self._created = []

    def _preload(self, topics: TopicSettings, n_features: int, n: int, client: ClientName) -> None:
        settings = ProduceSettings(
            kafka=self.kafka,
            topic=topics.features,
            encoding=self.settings.encoding,
            key="id",
            timestamp=False,
            client=client,
        )
        produce(_rows(n_features, n), settings)

    def _worker_settings(
        self,
        topics: TopicSettings,
        client: ClientName,
        model: ModelSettings,
        merge: MergeSettings | None = None,
    ) -> WorkerSettings:
        return WorkerSettings(
            kafka=self.kafka,
            topics=topics,
            model=model,
            client=client,
            merge=merge or MergeSettings(enabled=False),
            **_GROUP,
        )

    def drain(self, topics: TopicSettings, settings: WorkerSettings, n: int, model=None) -> float:
        """Events/s of one in-process worker draining ``n`` preloaded events."""
        worker = Worker(settings, f"bench-{topics.group_id}", model=model)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                worker.run()
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60 + n / 500
        while worker.n_scored < n and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        worker.stop()
        thread.join(60)
        if errors:
            raise StreamError(f"bench worker failed: {errors[0]!r}") from errors[0]
        if worker.n_scored < n:
            raise StreamError(f"bench worker scored {worker.n_scored} of {n} events in time")
        return worker.n_scored / (worker.busy_until - worker.busy_since)

    def throughput(
        self, client: ClientName, n_features: int, model_name: str, transport_eps: float
    ) -> dict:
        s = self.settings
        model = MODELS[model_name]
        topics = self._topics(f"{client}-{n_features}-{model_name}", 1)
        self._preload(topics, n_features, s.events, client)
        worker_eps = self.drain(topics, self._worker_settings(topics, client, model), s.events)
        model_eps = model_only_eps(model, n_features, min(s.events, 50_000))
        ratio = (1 / worker_eps) / (1 / transport_eps + 1 / model_eps)
        result = {
            "client": client,
            "features": n_features,
            "model": model_name,
            "model_only_eps": model_eps,
            "transport_only_eps": transport_eps,
            "worker_eps": worker_eps,
            "worker_us": 1e6 / worker_eps,
            "overhead_ratio": ratio,
        }
        logger.info("bench throughput %s", result)
        return result

    def transport_only(self, client: ClientName, n_features: int) -> float:
        topics = self._topics(f"{client}-{n_features}-transport", 1)
        self._preload(topics, n_features, self.settings.events, client)
        settings = self._worker_settings(topics, client, ModelSettings())
        return self.drain(topics, settings, self.settings.events, model=NullModel())

    def scaling(self, client: ClientName, n_features: int, model_name: str, single_eps: float):
        s = self.settings
        workers = s.scale_workers
        topics = self._topics(f"{client}-scale", workers)
        self._preload(topics, n_features, s.events, client)
        settings = self._worker_settings(topics, client, MODELS[model_name])
        supervisor = Supervisor(settings, workers, log_level="WARNING").start()
        try:
            supervisor.wait_assigned(workers, timeout_s=60)
            spans = self._spans(topics, s.events)
        finally:
            supervisor.stop()
        per_worker = [n / (last - first) for first, last, n in spans.values()]
        first = min(f for f, _, _ in spans.values())
        last = max(t for _, t, _ in spans.values())
        total = s.events / (last - first)
        return {
            "client": client,
            "workers": workers,
            "model": model_name,
            "features": n_features,
            "total_eps": total,
            "per_worker_eps": per_worker,
            "speedup": total / single_eps,
        }

    def _spans(self, topics: TopicSettings, n: int) -> dict[str, tuple[float, float, int]]:
        """Per worker: first and last ts_scored and how many it scored."""
        spans: dict[str, list] = {}
        for seen, record in enumerate(
            records(self.kafka, topics.predictions, idle_timeout_s=60), 1
        ):
            prediction, _ = decode_map(record.value)
            ts, worker = prediction["ts_scored"], prediction["worker"]
            span = spans.setdefault(worker, [ts, ts, 0])
            span[0], span[1], span[2] = min(span[0], ts), max(span[1], ts), span[2] + 1
            if seen >= n:
                break
        return {w: (a, b, c) for w, (a, b, c) in spans.items()}

    def merging_cost(
        self, client: ClientName, n_features: int, model_name: str, unmerged_eps: float
    ) -> dict:
        s = self.settings
        topics = self._topics(f"{client}-merge", 1)
        self._preload(topics, n_features, s.events, client)
        merge = MergeSettings(catch_up_timeout_s=2.0)
        settings = self._worker_settings(topics, client, MODELS[model_name], merge)
        merger = Supervisor(settings, 0, MergerSettings.for_workers(settings), log_level="WARNING")
        merger.start()
        try:
            merged_eps = self.drain(topics, settings, s.events)
        finally:
            merger.stop()
        return {
            "client": client,
            "model": model_name,
            "features": n_features,
            "merge_every": merge.every_events,
            "merge_interval_s": merge.interval_s,
            "merged_eps": merged_eps,
            "unmerged_eps": unmerged_eps,
            "cost": 1 - merged_eps / unmerged_eps,
        }

    def latency(
        self, client: ClientName, n_features: int, model_name: str, max_eps: float, fraction: float
    ) -> dict:
        s = self.settings
        rate = fraction * max_eps
        n = int(rate * s.latency_duration_s)
        topics = self._topics(f"{client}-lat-{int(fraction * 100)}", 1)
        settings = self._worker_settings(topics, client, MODELS[model_name])
        supervisor = Supervisor(settings, 1, log_level="WARNING").start()
        try:
            supervisor.wait_assigned(1, timeout_s=60)
            produce(
                _rows(n_features, n, prefix="lat-"),
                ProduceSettings(
                    kafka=self.kafka,
                    topic=topics.features,
                    encoding=s.encoding,
                    rate=rate,
                    client=client,
                ),
            )
            latencies, batches = [], []
            for record in records(self.kafka, topics.predictions, idle_timeout_s=30):
                prediction, _ = decode_map(record.value)
                latencies.append(prediction["ts_scored"] - prediction["ts_record"])
                batches.append(prediction["ts_scored"])
                if len(latencies) >= n:
                    break
        finally:
            supervisor.stop()
        lat = {k: v * 1000 for k, v in percentiles(latencies).items()}
        # Mean time between the first and last scoring of a batch is not visible
        # from outside; the gap between consecutive scores bounds batch time.
        gaps = np.diff(np.sort(np.array(batches)))
        return {
            "client": client,
            "model": model_name,
            "features": n_features,
            "fraction": fraction,
            "rate": rate,
            "events": n,
            "latency_ms": lat,
            "batch_ms": float(np.mean(gaps[gaps > 0.0005]) * 1000) if gaps.size else 0.0,
        }

    def run(self) -> BenchResult:
        s = self.settings
        result = self.result
        for client in s.clients:
            for n_features in s.features:
                transport_eps = self.transport_only(client, n_features)
                for model_name in s.models:
                    result.throughput.append(
                        self.throughput(client, n_features, model_name, transport_eps)
                    )
            first = next(r for r in result.throughput if r["client"] == client)
            if s.scale_workers > 1:
                result.scaling.append(
                    self.scaling(client, first["features"], first["model"], first["worker_eps"])
                )
            if s.merge_cost:
                result.merging.append(
                    self.merging_cost(
                        client, first["features"], first["model"], first["worker_eps"]
                    )
                )
            for fraction in s.latency_fractions:
                result.latency.append(
                    self.latency(
                        client, first["features"], first["model"], first["worker_eps"], fraction
                    )
                )
        self._drop_topics()
        return result


def run_bench(settings: BenchSettings, out: Path | None = None) -> BenchResult:
    broker = None
    if settings.bootstrap is None:
        broker = EmbeddedBroker(port=0).start()
    try:
        kafka = KafkaSettings(bootstrap_servers=settings.bootstrap or broker.bootstrap_servers)
        bench = Bench(settings, kafka)
        try:
            return bench.run()
        finally:
            # Whatever was measured is kept, also when a later measurement failed.
            if out is not None:
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(bench.result.to_json())
    finally:
        if broker is not None:
            broker.stop()
