"""The main job in one command: broker, topics, workers, a real dataset, a summary.

The summary compares the pipeline's predictions with one in-process river
model that saw the same stream in the order it was produced. With ``--serve``
(:func:`run_live_demo`) the demo is live instead: the dataset is replayed at a
steady pace until Ctrl-C or SIGTERM, and ``serve`` runs beside the pipeline,
so its dashboard shows the stream moving.
"""

from __future__ import annotations

import itertools
import logging
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from stream.config import (
    DemoSettings,
    GroupTimeouts,
    KafkaSettings,
    MergerSettings,
    ServeSettings,
    WorkerSettings,
)
from stream.errors import StreamError
from stream.events.codec import decode_map
from stream.events.sources import dataset_rows
from stream.kafka.embedded import EmbeddedBroker
from stream.kafka.reader import records
from stream.kafka.topics import ensure_pipeline
from stream.observe.quality import Quality, percentiles, prequential, single_model_baseline
from stream.runtime.supervisor import Supervisor
from stream.serve.server import run_server
from stream.sync.feed import published_model
from stream.tools.produce import ProduceSettings, event_producer, produce

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoSummary:
    events: int
    predictions: int
    workers: dict[str, int]
    elapsed_s: float
    throughput: float
    latency_ms: dict[str, float]
    pipeline: Quality
    single_model: Quality
    global_version: int | None = None
    global_n_learned: int | None = None
    checkpoint_dir: Path | None = None

    def format(self) -> str:
        lat = "  ".join(f"{k}={v:.1f}" for k, v in self.latency_ms.items())
        per_worker = ", ".join(f"{w}: {n}" for w, n in sorted(self.workers.items()))
        return "\n".join(
            [
                "learnstream demo summary",
                f"  events produced          {self.events}",
                f"  predictions (unique ids) {self.predictions}",
                f"  predictions per worker   {per_worker}",
                f"  drain time               {self.elapsed_s:.2f} s "
                "(first event sent to last prediction)",
                f"  throughput               {self.throughput:,.0f} events/s",
                f"  latency event->pred (ms) {lat}",
                f"  pipeline     {_quality(self.pipeline)}",
                f"  single river {_quality(self.single_model)}",
                "  global model             "
                + (
                    f"version {self.global_version}, learned {self.global_n_learned} events, "
                    f"checkpoints in {self.checkpoint_dir}"
                    if self.global_version is not None
                    else "merging off"
                ),
            ]
        )


def _quality(q: Quality) -> str:
    """Accuracy, log loss, normalized entropy and calibration (see :class:`Quality`)."""
    return (
        f"accuracy {q.accuracy:.4f}  log loss {q.log_loss:.4f}  "
        f"NE {q.normalized_entropy:.4f}  calibration {q.calibration:.3f}  (n={q.n})"
    )


def _rows(settings: DemoSettings, run_id: str):
    for p in range(settings.passes):
        for i, x, y in dataset_rows(settings.dataset):
            yield f"{run_id}-{p}-{i}", x, y


def run_demo(settings: DemoSettings) -> DemoSummary:
    kafka, broker = _broker(settings)
    try:
        return _run(settings, kafka)
    finally:
        if broker is not None:
            broker.stop()


def run_live_demo(settings: DemoSettings, announce: Callable[[str], None] = print) -> None:
    """``demo --serve``: the pipeline, a paced replay of the dataset and
    ``serve`` beside them, until SIGTERM or Ctrl-C; ``announce`` gets the
    dashboard's address once the followers run (the CLI prints it).

    The main thread runs ``serve`` (uvicorn takes the signals there and shuts
    down gracefully); the replay and the supervisor's watch run in threads and
    stop once it has: the replay first, so the workers' last contributions
    are merged before the merger stops.
    """
    kafka, broker = _broker(settings)
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        worker_settings, checkpoint_dir, merger = _pipeline(settings, kafka)
        supervisor = Supervisor(worker_settings, settings.workers, merger)
        run_id = uuid.uuid4().hex[:8]
        rows = itertools.takewhile(lambda _: not stop.is_set(), _endless_rows(settings, run_id))
        replay = ProduceSettings(kafka=kafka, topic=settings.topics.features, rate=settings.rate)
        threads = [
            threading.Thread(target=supervisor.run_until, args=(stop,), name="demo-supervisor"),
            threading.Thread(target=produce, args=(rows, replay), name="demo-replay"),
        ]
        for thread in threads:
            thread.start()
        serve = ServeSettings(
            kafka=kafka, topics=settings.topics, checkpoint_dir=checkpoint_dir, port=settings.port
        )
        url = f"http://{serve.host}:{serve.port}/"
        run_server(serve, started=lambda: announce(f"learnstream demo: dashboard at {url}"))
    finally:
        if threading.current_thread() is threading.main_thread():
            # A second SIGTERM must not interrupt the stop and orphan processes.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop.set()
        for thread in threads:
            thread.join()
        if broker is not None:
            broker.stop()


def _broker(settings: DemoSettings) -> tuple[KafkaSettings, EmbeddedBroker | None]:
    """The broker given, or the embedded one started for the demo (the caller stops it)."""
    if settings.bootstrap is not None:
        return KafkaSettings(bootstrap_servers=settings.bootstrap), None
    log_path = settings.log_dir / "broker.log" if settings.log_dir else None
    broker = EmbeddedBroker(port=0, log_path=log_path).start()
    return KafkaSettings(bootstrap_servers=broker.bootstrap_servers), broker


def _pipeline(
    settings: DemoSettings, kafka: KafkaSettings
) -> tuple[WorkerSettings, Path, MergerSettings | None]:
    """The topics created; the workers' and the merger's settings, and the checkpoint directory."""
    # A fresh directory by default: a demo starts from scratch, so its summary
    # compares like with like; give one to keep (and resume from) checkpoints.
    merge = settings.merge_settings
    checkpoint_dir = merge.checkpoint_dir or Path(tempfile.mkdtemp(prefix="learnstream-"))
    ensure_pipeline(kafka, settings.topics, settings.partitions)
    worker_settings = WorkerSettings(
        kafka=kafka,
        topics=settings.topics,
        model=settings.model,
        merge=replace(merge, checkpoint_dir=checkpoint_dir),
        # The embedded broker holds a join open for about this long; keep it short.
        group=GroupTimeouts(
            max_poll_interval_ms=5_000, session_timeout_ms=5_000, heartbeat_interval_ms=1_000
        ),
    )
    merger = MergerSettings.for_workers(worker_settings) if merge.enabled else None
    return worker_settings, checkpoint_dir, merger


def _endless_rows(settings: DemoSettings, run_id: str):
    """The dataset pass after pass, ids unique per pass, until the caller stops reading."""
    for p in itertools.count():
        for i, x, y in dataset_rows(settings.dataset):
            yield f"{run_id}-{p}-{i}", x, y


def _run(settings: DemoSettings, kafka: KafkaSettings) -> DemoSummary:
    topics = settings.topics
    worker_settings, checkpoint_dir, merger = _pipeline(settings, kafka)
    merge = worker_settings.merge
    run_id = uuid.uuid4().hex[:8]
    supervisor = Supervisor(worker_settings, settings.workers, merger).start()
    # Started while the group settles: its start is not the pipeline's latency.
    replay = ProduceSettings(kafka=kafka, topic=topics.features)
    producer = event_producer(replay)
    try:
        assignment = supervisor.wait_assigned(settings.partitions, timeout_s=60)
        logger.info("group settled assignment=%s", assignment)
        started = time.time()
        sent = produce(_rows(settings, run_id), replay, producer=producer).sent
        predictions = collect_predictions(
            kafka, topics.predictions, run_id, sent, settings.timeout_s
        )
    finally:
        producer.close()
        supervisor.stop()
    final = published_model(kafka, topics, "learnstream-demo") if merge.enabled else None

    last = max(p["ts_scored"] for p in predictions.values())
    elapsed = last - started
    per_worker: dict[str, int] = {}
    for p in predictions.values():
        per_worker[p["worker"]] = per_worker.get(p["worker"], 0) + 1
    return DemoSummary(
        events=sent,
        predictions=len(predictions),
        workers=per_worker,
        elapsed_s=elapsed,
        throughput=len(predictions) / elapsed if elapsed > 0 else 0.0,
        latency_ms={
            k: v * 1000
            for k, v in percentiles(
                p["ts_scored"] - p["ts_record"] for p in predictions.values()
            ).items()
        },
        pipeline=prequential((bool(p["y"]), p["p"]) for p in predictions.values() if "y" in p),
        single_model=single_model_baseline(_rows(settings, run_id), settings.model),
        global_version=final.version if final else None,
        global_n_learned=final.n_learned if final else None,
        checkpoint_dir=checkpoint_dir if final else None,
    )


def collect_predictions(
    kafka: KafkaSettings, topic: str, run_id: str, expected: int, timeout_s: float
) -> dict:
    """First prediction per event id of this run, until all ``expected`` have one."""
    found: dict[str, dict] = {}
    prefix = f"{run_id}-"
    deadline = time.monotonic() + timeout_s
    for record in records(kafka, topic, idle_timeout_s=timeout_s):
        prediction, _ = decode_map(record.value)
        event_id = prediction.get("id")
        if isinstance(event_id, str) and event_id.startswith(prefix):
            found.setdefault(event_id, prediction)
        if len(found) >= expected:
            return found
        if time.monotonic() > deadline:
            break
    raise StreamError(f"only {len(found)} of {expected} events got a prediction in {timeout_s}s")
