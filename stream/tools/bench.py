"""``learnstream bench``: throughput, latency and their ceilings, in one run.

For every client x feature count x model, the same run measures:

- *model only*: the worker's model (the compiled kernel where it covers the
  settings) predicting and learning pre-decoded events in batches, no Kafka;
  and river's own predict + learn per event, for reference;
- *bare loop*: the same client's bare per-record transport loop: consume,
  ``msgpack.unpackb``, build a prediction, pack it (reused Packer), produce,
  flush and commit per batch; no validation, no model;
- *worker*: the real worker (default settings) draining a preloaded topic;

so every worker figure is also a ratio to the bare loop of its client,
measured minutes apart on the same broker. Then, for the first model and
feature count: two workers on two partitions (scaling), the worker with
merging at its default intervals and the merger (checkpoints included) running
beside it (merging cost), and event-to-prediction latency at fixed fractions
of the measured maximum rate. Off the broker: the worker's resident memory
with 100,000 distinct features, and the merger's capacity (contributions
decoded, fenced and folded per second) at 10, 1,000 and 100,000 features.

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
import multiprocessing
import platform
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from stream.config import (
    BenchModel,
    BenchSettings,
    ClientName,
    EventLimits,
    GroupTimeouts,
    KafkaSettings,
    MergerSettings,
    MergeSettings,
    ModelSettings,
    TopicSettings,
    WorkerSettings,
)
from stream.errors import StreamError
from stream.events.codec import decode_map, encode, prediction_record
from stream.events.sources import SyntheticStream
from stream.kafka import connect
from stream.kafka.embedded import EmbeddedBroker
from stream.kafka.reader import records
from stream.kafka.topics import delete_topics, ensure_pipeline, pipeline_specs
from stream.kafka.transport import ReadRecord, Record
from stream.model.factory import build_model
from stream.model.merge import copy_state
from stream.model.online import OnlineModel
from stream.model.state import ModelState
from stream.observe.quality import percentiles
from stream.runtime.supervisor import Supervisor
from stream.runtime.worker import Worker
from stream.sync.chain import DeltaVersion, delta_of
from stream.sync.checkpoint import Snapshot
from stream.sync.contribution import Contribution
from stream.sync.feed import ModelFeed
from stream.sync.fence import Changes, merge_records
from stream.tools.produce import ProduceSettings, produce

logger = logging.getLogger(__name__)

# One per BenchModel choice (tests/unit/test_settings_env.py checks they match).
MODELS: dict[BenchModel, ModelSettings] = {
    "lr": ModelSettings(scale=False),
    "scaler+lr": ModelSettings(),
    "ftrl": ModelSettings(optimizer="ftrl", learning_rate=0.1, scale=False),
}

# Group timing for bench workers: the embedded broker holds a join this long.
_GROUP = GroupTimeouts(
    max_poll_interval_ms=3_000, session_timeout_ms=3_000, heartbeat_interval_ms=1_000
)


@dataclass
class BenchResult:
    machine: dict
    settings: dict
    throughput: list[dict] = field(default_factory=list)
    scaling: list[dict] = field(default_factory=list)
    merging: list[dict] = field(default_factory=list)
    latency: list[dict] = field(default_factory=list)
    memory: list[dict] = field(default_factory=list)
    merger: list[dict] = field(default_factory=list)
    cold_start: list[dict] = field(default_factory=list)
    decoding: list[dict] = field(default_factory=list)

    def to_json(self) -> str:
        # default=str: the settings hold paths (--out), which JSON has no type for.
        return json.dumps(asdict(self), indent=2, default=str)

    def format(self) -> str:
        lines = [
            "throughput, one worker, one partition (events/s; ratio = worker / bare loop of "
            "the same client)",
            f"  {'client':<13} {'feat':>4} {'model':<10} {'kernel':>10} {'river':>8} "
            f"{'bare loop':>10} {'worker':>9} {'us/ev':>6} {'ratio':>6}",
        ]
        for r in self.throughput:
            lines.append(
                f"  {r['client']:<13} {r['features']:>4} {r['model']:<10} "
                f"{r['model_only_eps']:>10,.0f} {r['river_only_eps']:>8,.0f} "
                f"{r['bare_loop_eps']:>10,.0f} {r['worker_eps']:>9,.0f} {r['worker_us']:>6.1f} "
                f"{r['ratio_to_bare']:>6.2f}"
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
        for r in self.decoding:
            lines.append(
                f"decoding {r['features']} features: general {r['general_us']:.2f} us/record, "
                f"batch {r['batch_us']:.2f}; packing a prediction: packb {r['packb_us']:.2f} us, "
                f"reused Packer {r['packer_us']:.2f}"
            )
        for r in self.memory:
            lines.append(
                f"memory {r['model']}: {r['features']:,} distinct features, RSS "
                f"{r['rss_before_mb']:.0f} MB -> {r['rss_after_mb']:.0f} MB "
                f"(+{r['rss_after_mb'] - r['rss_before_mb']:.0f} MB)"
            )
        for r in self.merger:
            lines.append(
                f"merger: {r['features']:>7,}-slot deltas on a {r['model_slots']:,}-slot model: "
                f"{r['contributions_per_s']:>9,.1f} contributions/s folded in place "
                f"({r.get('copying_contributions_per_s', float('nan')):,.1f}/s copying the model); "
                f"delta record {r['delta_record_ms']:.1f} ms, snapshot {r['publish_ms']:.0f} ms"
            )
        for r in self.cold_start:
            lines.append(
                f"cold start: {r['distinct_features']:,} features ({r['slots']:,} slots, "
                f"{r['snapshot_mb']:.0f} MB snapshot) + {r['deltas']} deltas of "
                f"{r['delta_slots']:,} slots: {r['cold_start_s']:.2f} s"
            )
        return "\n".join(lines)


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


def river_only_eps(model: ModelSettings, n_features: int, n: int) -> float:
    """river's predict + learn per event, in memory."""
    events = [(x, y) for _, x, y in _rows(n_features, n)]
    online = OnlineModel(model)
    start = time.perf_counter()
    for x, y in events:
        online.predict_proba(x)
        online.learn(x, y)
    return n / (time.perf_counter() - start)


def model_only_eps(model: ModelSettings, n_features: int, n: int, batch: int = 1000) -> float:
    """The worker's model on pre-decoded events, in batches as the worker runs it
    (river per event when the kernel does not cover the settings)."""
    impl = build_model(model)
    if not hasattr(impl, "score_and_learn"):
        return river_only_eps(model, n_features, n)
    rows = list(_rows(n_features, n))
    batches = []
    for i in range(0, n, batch):
        chunk = rows[i : i + batch]
        columns = np.concatenate([impl.columns_of(x) for _, x, _ in chunk])
        values = np.concatenate([np.fromiter(x.values(), np.float64, len(x)) for _, x, _ in chunk])
        offsets = np.zeros(len(chunk) + 1, np.int64)
        np.cumsum([len(x) for _, x, _ in chunk], out=offsets[1:])
        labels = np.array([-1 if y is None else int(y) for _, _, y in chunk], np.int8)
        batches.append((columns, values, offsets, labels))
    best = float("inf")
    for _ in range(3):  # the fastest of three passes: the machine is shared
        impl = build_model(model)
        start = time.perf_counter()
        for b in batches:
            impl.score_and_learn(*b)
        best = min(best, time.perf_counter() - start)
    return n / best


def decoding_us(n_features: int, n: int = 10_000, repeats: int = 5) -> dict:
    """Microseconds per record: the general decoder (one dict per event) and the
    batch decoder (compiled scanner, batches of 1000), best of ``repeats``; and
    packing a prediction with ``msgpack.packb`` and with a reused Packer."""
    import msgpack

    from stream.events.batch import BatchDecoder, packer
    from stream.events.codec import decode_event

    records = [
        encode({"id": row_id, "x": x, "y": int(y), "ts": 1.7e9}, "msgpack")
        for row_id, x, y in _rows(n_features, n)
    ]
    impl = build_model(MODELS["scaler+lr"])
    decoder = BatchDecoder(getattr(impl, "column", lambda name: 0), EventLimits())
    prediction = prediction_record("e-1", 0.25, 3, 1, "w-0", 1, 123456, 1.7e9, 1.7e9, 1.7e9)
    pack = packer()

    def best(run) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return 1e6 * min(times) / n

    return {
        "features": n_features,
        "general_us": best(lambda: [decode_event(v) for v in records]),
        "batch_us": best(
            lambda: [decoder.decode(records[i : i + 1000]) for i in range(0, n, 1000)]
        ),
        "packb_us": best(lambda: [msgpack.packb(prediction, use_bin_type=True) for _ in range(n)]),
        "packer_us": best(lambda: [pack(prediction) for _ in range(n)]),
    }


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def memory_with_features(model_name: str, n_features: int = 100_000, per_event: int = 100) -> dict:
    """Resident memory of this process before and after the worker's model and
    decoder learned ``n_features`` distinct names (``per_event`` new ones per
    labeled event), as the worker would hold them."""
    from stream.events.batch import BatchDecoder

    before = _rss_mb()
    impl = build_model(MODELS[model_name])
    decoder = (
        BatchDecoder(impl.column, EventLimits(max_event_bytes=10_000_000))
        if hasattr(impl, "column")
        else None
    )
    for start in range(0, n_features, per_event * 100):
        records = [
            encode(
                {
                    "id": i,
                    "x": {f"feature-{j}": 1.0 + j % 7 for j in range(i, i + per_event)},
                    "y": 1,
                },
                "msgpack",
            )
            for i in range(start, min(start + per_event * 100, n_features), per_event)
        ]
        if decoder is not None:
            d = decoder.decode(records)
            impl.score_and_learn(d.columns, d.values, d.offsets, d.labels)
        else:
            for value in records:
                obj, _ = decode_map(value)
                impl.predict_proba(obj["x"])
                impl.learn(obj["x"], True)
    state = impl.state()  # a contribution copies the whole state: count it too
    after = _rss_mb()
    return {
        "model": model_name,
        "implementation": type(impl).__name__,
        "features": len(state.weights),
        "rss_before_mb": before,
        "rss_after_mb": after,
    }


# The merger's measurements: a hashed model of this many slots (--hash-bits 20).
MODEL_SLOTS = 1 << 20


def _slot_state(slots: np.ndarray, rng: np.random.Generator, n_learned: int) -> ModelState:
    """A scaler+lr learning state over ``slots`` (keys as a hashed model names them)."""
    names = [str(int(slot)) for slot in slots]
    weights = rng.standard_normal(len(names)).tolist()
    means = rng.standard_normal(len(names)).tolist()
    return ModelState(
        weights=dict(zip(names, weights, strict=True)),
        intercept=0.1,
        scaler_counts=dict.fromkeys(names, 1.0),
        scaler_means=dict(zip(names, means, strict=True)),
        scaler_vars=dict.fromkeys(names, 0.5),
        n_learned=n_learned,
    )


def merger_capacity(delta_slots: int, seconds: float = 2.0, old_path: bool = True) -> dict:
    """Contributions decoded, fenced and folded per second by the merger, each
    touching ``delta_slots`` random slots of a model holding all
    :data:`MODEL_SLOTS`: through the in-place fold (the merger's path), and,
    with ``old_path``, through the pure step that copies the model (what the
    merger did before), timed over a few contributions. Also the time to
    encode a version's delta record of those slots, and a full snapshot's.
    Encoding the contributions (the workers' work) is outside the timings."""
    rng = np.random.default_rng(0)
    base = _slot_state(np.arange(MODEL_SLOTS), rng, 1)
    deltas = [
        _slot_state(rng.choice(MODEL_SLOTS, delta_slots, replace=False), rng, 1)
        for _ in range(8 if delta_slots > 10_000 else 64)
    ]

    def record(k: int) -> Record:
        delta = deltas[k % len(deltas)]
        c = Contribution("w~1", k, 0, {0: (k, k + 1)}, delta, 0.0, frozenset({0}))
        return Record(k, b"w~1", c.to_bytes(), 0)

    def run(in_place: bool, budget_s: float, at_least: int) -> tuple[float, Snapshot, Changes]:
        snapshot = Snapshot(version=1, state=copy_state(base), offsets={})
        spent, folded = 0.0, 0
        changes = Changes(frozenset(), {}, {})
        while spent < budget_s or folded < at_least:
            one = record(folded)
            started = time.perf_counter()
            merged = merge_records(snapshot, [one], "sum", None, None, in_place=in_place)
            spent += time.perf_counter() - started
            snapshot, changes = merged.snapshot, merged.changes
            if merged.applied != 1:
                raise StreamError(f"bench contribution {folded} was not applied")
            folded += 1
        return folded / spent, snapshot, changes

    per_s, snapshot, changes = run(True, seconds, 3)
    started = time.perf_counter()
    delta_bytes = len(delta_of(snapshot, snapshot.version - 1, changes).to_bytes())
    delta_ms = 1000 * (time.perf_counter() - started)
    started = time.perf_counter()
    snapshot_bytes = len(snapshot.to_bytes())
    snapshot_ms = 1000 * (time.perf_counter() - started)
    result = {
        "features": delta_slots,
        "model_slots": MODEL_SLOTS,
        "contributions_per_s": per_s,
        "delta_record_ms": delta_ms,
        "delta_record_bytes": delta_bytes,
        "publish_ms": snapshot_ms,
        "snapshot_bytes": snapshot_bytes,
    }
    if old_path:
        result["copying_contributions_per_s"] = run(False, 0.0, 3)[0]
    return result


class _ListReader:
    """A model topic held in memory (:class:`~stream.kafka.transport.Reader`)."""

    def __init__(self, values: list[bytes]) -> None:
        self.values, self.at = values, 0

    def end_offset(self, partition: int) -> int:
        return len(self.values)

    def assign(self, starts: dict[int, int | None]) -> None:
        self.at = starts[0] or 0

    def poll(self, timeout_ms: int, max_records: int) -> list[ReadRecord]:
        end = min(len(self.values), self.at + max_records)
        out = [ReadRecord(0, o, None, self.values[o], 0, []) for o in range(self.at, end)]
        self.at = end
        return out

    def position(self, partition: int) -> int:
        return self.at

    def close(self) -> None:
        pass


def cold_start(
    distinct_features: int = 1_000_000, deltas: int = 99, delta_slots: int = 1000
) -> dict:
    """How long a reader starting cold (a new worker, ``serve``, a merger taking
    over) takes to hold the newest version: the model topic holds a snapshot of
    the slots ``distinct_features`` hashed features fill at --hash-bits 20, then
    ``deltas`` delta versions of ``delta_slots`` slots each (the most the
    default cadence leaves after a snapshot). Read from memory: the broker's
    transfer and gzip are not in it."""
    rng = np.random.default_rng(1)
    slots = np.unique(rng.integers(0, MODEL_SLOTS, distinct_features))
    snapshot = Snapshot(version=1, epoch=1, state=_slot_state(slots, rng, 1))
    values = [snapshot.to_bytes()]
    for k in range(deltas):
        changed = _slot_state(rng.choice(MODEL_SLOTS, delta_slots, replace=False), rng, 2 + k)
        changed = replace(changed, scaler_counts=dict.fromkeys(changed.scaler_counts, 2.0))
        delta = DeltaVersion(epoch=1, version=2 + k, follows=1 + k, changed=changed)
        values.append(delta.to_bytes())
    started = time.perf_counter()
    feed = ModelFeed(KafkaSettings(), TopicSettings(), "bench", reader=_ListReader(values))
    latest = feed.initial()
    elapsed = time.perf_counter() - started
    assert latest is not None and latest.version == 1 + deltas
    return {
        "distinct_features": distinct_features,
        "slots": len(slots),
        "deltas": deltas,
        "delta_slots": delta_slots,
        "snapshot_mb": len(values[0]) / 1e6,
        "cold_start_s": elapsed,
    }


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
        delete_topics(self.kafka, self._created)
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
            group=_GROUP,
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
        self, client: ClientName, n_features: int, model_name: str, bare_eps: float
    ) -> dict:
        s = self.settings
        model = MODELS[model_name]
        topics = self._topics(f"{client}-{n_features}-{model_name}", 1)
        self._preload(topics, n_features, s.events, client)
        worker_eps = self.drain(topics, self._worker_settings(topics, client, model), s.events)
        model_eps = model_only_eps(model, n_features, min(s.events, 100_000))
        river_eps = river_only_eps(model, n_features, min(s.events, 20_000))
        result = {
            "client": client,
            "features": n_features,
            "model": model_name,
            "model_only_eps": model_eps,
            "river_only_eps": river_eps,
            "bare_loop_eps": bare_eps,
            "worker_eps": worker_eps,
            "worker_us": 1e6 / worker_eps,
            "ratio_to_bare": worker_eps / bare_eps,
        }
        logger.info("bench throughput %s", result)
        return result

    def bare_loop(self, client: ClientName, n_features: int) -> float:
        """Events/s of the client's bare per-record loop: consume, unpack, build and
        pack a prediction, produce; flush and commit per batch (as the worker does)."""
        import msgpack

        s = self.settings
        topics = self._topics(f"{client}-{n_features}-bare", 1)
        self._preload(topics, n_features, s.events, client)
        consumer = connect.consumer(
            client,
            self.kafka,
            topics.features,
            "bench-bare",
            group_id=topics.group_id,
            auto_offset_reset="earliest",
            max_poll_records=1000,
            timeouts=_GROUP,
        )
        producer = connect.producer(client, self.kafka, "bench-bare")
        consumer.subscribe(lambda assigned: None, lambda revoked: None, lambda lost: None)
        pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack
        unpack = msgpack.unpackb
        send, out = producer.send, topics.predictions
        n, first, last = 0, 0.0, 0.0
        deadline = time.monotonic() + 60 + s.events / 500
        try:
            while n < s.events and time.monotonic() < deadline:
                batch = consumer.poll_batch(100, 1000)
                if not batch:
                    continue
                first = first or time.perf_counter()
                offsets = {}
                for partition, records in batch.items():
                    for offset, key, value, timestamp_ms in records:
                        event = unpack(value)
                        ts_record = timestamp_ms / 1000.0
                        prediction = prediction_record(
                            event["id"],
                            0.5,
                            0,
                            event.get("y"),
                            "bare",
                            partition,
                            offset,
                            event.get("ts"),
                            ts_record,
                            time.time(),
                        )
                        send(out, pack(prediction), key, None, partition)
                    offsets[partition] = records[-1].offset + 1
                    n += len(records)
                producer.flush(30.0)
                consumer.commit(offsets)
                last = time.perf_counter()
        finally:
            consumer.close()
            producer.close()
        if n < s.events:
            raise StreamError(f"bare loop consumed {n} of {s.events} events in time")
        return n / (last - first)

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
                bare_eps = self.bare_loop(client, n_features)
                for model_name in s.models:
                    result.throughput.append(
                        self.throughput(client, n_features, model_name, bare_eps)
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
        # In a fresh process each: this one's heap already holds every earlier run.
        spawn = multiprocessing.get_context("spawn")
        for model_name in s.models:
            with spawn.Pool(1) as pool:
                result.memory.append(pool.apply(memory_with_features, (model_name,)))
        for delta_slots in (1_000, 100_000):
            result.merger.append(merger_capacity(delta_slots))
        result.cold_start.append(cold_start())
        for n_features in s.features:
            result.decoding.append(decoding_us(n_features))
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
