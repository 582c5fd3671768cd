"""Freshness: how far several workers trail one model on a drifting stream.

What cheaper sync is for. Workers learn apart between merges: each sees a
share of the stream and takes the others' learning only when a new global
version reaches it. On a stationary stream that costs little; right after a
concept changes, every worker must relearn, and a worker whose model hears of
the others' learning late predicts with an older concept for longer.

The measurement: river's SEA stream (three features in [0, 10], the label is
whether the first two sum above a threshold), whose threshold switches from
variant ``before`` to variant ``after`` at ``switch_at``; paced at ``rate``
events/s into ``partitions`` partitions read by ``workers`` worker processes
and a merger on the broker, once per merge interval of ``intervals``. For
each run: prequential accuracy over the ``window`` events after the switch
and over the whole stream, from the predictions topic, beside one river model
that learns the same stream in order (:func:`stream.observe.quality.single_model_baseline`'s
model, event by event). ``deficit_after_switch``: the single model's accuracy
minus the pipeline's, in points (the issue's bound: 0.5).

``learnstream bench --freshness`` runs it on the embedded broker (or
``--bootstrap``); ``python -m stream.tools.freshbench --help`` for the knobs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from river.datasets import synth

from stream.config import (
    GroupTimeouts,
    KafkaSettings,
    MergerSettings,
    MergeSettings,
    ModelSettings,
    ProduceSettings,
    TopicSettings,
    WorkerSettings,
)
from stream.events.sources import Row
from stream.kafka.embedded import EmbeddedBroker
from stream.kafka.topics import delete_topics, ensure_pipeline, pipeline_specs
from stream.observe.quality import prequential, single_model_pairs
from stream.runtime.supervisor import Supervisor
from stream.tools.demo import collect_predictions
from stream.tools.produce import event_producer, produce

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FreshnessSettings:
    """One freshness measurement per merge interval in ``intervals`` (seconds)."""

    events: int = 20_000
    switch_at: int = 10_000
    window: int = 5_000
    rate: float = 800.0
    workers: int = 4
    partitions: int = 4
    intervals: tuple[float, ...] = (0.25, 1.0, 4.0)
    before: int = 0
    after: int = 3
    seed: int = 7
    model: ModelSettings = field(default_factory=ModelSettings)

    def __post_init__(self) -> None:
        if not 0 < self.switch_at < self.events:
            raise ValueError(f"switch_at must be inside the stream, got {self.switch_at}")
        if self.switch_at + self.window > self.events:
            raise ValueError(
                f"the window of {self.window} after the switch at {self.switch_at} "
                f"passes the end of {self.events} events"
            )


def sea_rows(settings: FreshnessSettings, run_id: str) -> Iterator[Row]:
    """The SEA stream with its concept switched at ``switch_at``; ids ``<run_id>-<i>``."""
    before = synth.SEA(variant=settings.before, seed=settings.seed)
    after = synth.SEA(variant=settings.after, seed=settings.seed + 1)
    streams = (
        iter(before.take(settings.switch_at)),
        iter(after.take(settings.events - settings.switch_at)),
    )
    i = 0
    for stream in streams:
        for x, y in stream:
            yield f"{run_id}-{i}", {f"x{k}": float(v) for k, v in x.items()}, bool(y)
            i += 1


def accuracy(pairs: list[tuple[bool, float]]) -> float:
    """Prequential accuracy of ``(y, p)`` pairs (the one quality computation's)."""
    return float(prequential(pairs).accuracy)


@dataclass
class FreshnessResult:
    settings: dict
    single_after_switch: float = 0.0
    single_whole: float = 0.0
    runs: list[dict] = field(default_factory=list)

    def format(self) -> str:
        s = self.settings
        lines = [
            f"freshness: SEA variant {s['before']} -> {s['after']} at event {s['switch_at']:,} "
            f"of {s['events']:,}, {s['rate']:,.0f} events/s, {s['workers']} workers",
            f"  one model in order: {100 * self.single_after_switch:.2f}% over the "
            f"{s['window']:,} events after the switch, {100 * self.single_whole:.2f}% overall",
        ]
        for run in self.runs:
            lines.append(
                f"  merge interval {run['interval_s']:>5.2f} s: "
                f"{100 * run['after_switch']:.2f}% after the switch "
                f"({run['deficit_after_switch']:+.2f} points behind), "
                f"{100 * run['whole']:.2f}% overall ({run['deficit_whole']:+.2f}), "
                f"global version {run['versions']}"
            )
        return "\n".join(lines)


def run_freshness(
    settings: FreshnessSettings, kafka: KafkaSettings | None = None
) -> FreshnessResult:
    """Every run of ``settings`` on ``kafka`` (None: an embedded broker, stopped after)."""
    broker = None
    if kafka is None:
        broker = EmbeddedBroker(port=0).start()
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
    try:
        pairs = single_model_pairs(sea_rows(settings, "ref"), settings.model)
        after = slice(settings.switch_at, settings.switch_at + settings.window)
        result = FreshnessResult(
            settings=asdict(settings),
            single_after_switch=accuracy(pairs[after]),
            single_whole=accuracy(pairs),
        )
        for interval in settings.intervals:
            run = _pipeline_run(settings, kafka, interval)
            run["deficit_after_switch"] = round(
                100 * (result.single_after_switch - run["after_switch"]), 3
            )
            run["deficit_whole"] = round(100 * (result.single_whole - run["whole"]), 3)
            result.runs.append(run)
        return result
    finally:
        if broker is not None:
            broker.stop()


def _pipeline_run(settings: FreshnessSettings, kafka: KafkaSettings, interval: float) -> dict:
    run_id = uuid.uuid4().hex[:8]
    topics = TopicSettings(
        features=f"fresh-{run_id}-f", predictions=f"fresh-{run_id}-p", group_id=f"fresh-{run_id}"
    )
    ensure_pipeline(kafka, topics, settings.partitions)
    with tempfile.TemporaryDirectory(prefix="learnstream-fresh-") as checkpoints:
        worker_settings = WorkerSettings(
            kafka=kafka,
            topics=topics,
            model=settings.model,
            merge=MergeSettings(
                interval_s=interval, checkpoint_dir=Path(checkpoints), catch_up_timeout_s=3.0
            ),
            group=GroupTimeouts(
                max_poll_interval_ms=5_000, session_timeout_ms=5_000, heartbeat_interval_ms=1_000
            ),
        )
        merger = MergerSettings.for_workers(worker_settings)
        supervisor = Supervisor(worker_settings, settings.workers, merger, log_level="WARNING")
        supervisor.start()
        paced = ProduceSettings(kafka=kafka, topic=topics.features, rate=settings.rate)
        producer = event_producer(paced)
        try:
            supervisor.wait_assigned(settings.partitions, timeout_s=120)
            rows = list(sea_rows(settings, run_id))
            produce(rows, paced, producer=producer)
            predictions = collect_predictions(
                kafka, topics.predictions, run_id, len(rows), timeout_s=120
            )
        finally:
            producer.close()
            supervisor.stop()
    delete_topics(kafka, [spec.name for spec in pipeline_specs(topics, settings.partitions)])
    # In stream order: what the single model's pairs are compared with.
    pairs = [(y, predictions[event_id]["p"]) for event_id, _, y in rows]
    after = slice(settings.switch_at, settings.switch_at + settings.window)
    return {
        "interval_s": interval,
        "after_switch": accuracy(pairs[after]),
        "whole": accuracy(pairs),
        "versions": max(int(p.get("model_version", 0)) for p in predictions.values()),
    }


def main(argv: list[str] | None = None) -> int:
    defaults = FreshnessSettings()
    parser = argparse.ArgumentParser(prog="python -m stream.tools.freshbench")
    parser.add_argument("--events", type=int, default=defaults.events)
    parser.add_argument("--switch-at", type=int, default=defaults.switch_at)
    parser.add_argument("--window", type=int, default=defaults.window)
    parser.add_argument("--rate", type=float, default=defaults.rate, help="events/s")
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument(
        "--intervals",
        default=",".join(map(str, defaults.intervals)),
        help="comma-separated merge intervals (s), one run each",
    )
    parser.add_argument("--bootstrap", default=None, help="broker; unset: the embedded one")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    settings = replace(
        defaults,
        events=args.events,
        switch_at=args.switch_at,
        window=args.window,
        rate=args.rate,
        workers=args.workers,
        partitions=max(args.workers, defaults.partitions),
        intervals=tuple(float(v) for v in args.intervals.split(",")),
    )
    kafka = KafkaSettings(bootstrap_servers=args.bootstrap) if args.bootstrap else None
    result = run_freshness(settings, kafka)
    print(result.format())
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(asdict(result), indent=2) + "\n")
        print(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
