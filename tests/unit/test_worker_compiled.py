"""The worker's compiled path publishes exactly what its river path publishes.

Same batches (several partitions, msgpack and JSON events, bad records,
unlabeled events, events already predicted before a handover) through two
workers, one on river and one on the compiled kernel: the same records are
sent, byte for byte (predictions and dead letters), the same offsets are
committed, and the models end in the same state. No broker: the transport is
a fake that records what it is given.
"""

from __future__ import annotations

import random

from stream.config import MergeSettings, ModelSettings, WorkerSettings
from stream.events.codec import encode
from stream.kafka.transport import Record
from stream.model.kernel import KernelModel
from stream.model.online import OnlineModel
from stream.runtime.worker import Worker
from tests.unit.protocol_fakes import FakeConsumer, FakeProducer


def batches(seed: int) -> list[dict[int, list[Record]]]:
    rng = random.Random(seed)
    offsets = {0: 0, 1: 0, 2: 0}
    out = []
    for _ in range(6):
        batch: dict[int, list[Record]] = {}
        for partition in rng.sample(sorted(offsets), rng.randint(1, 3)):
            records = []
            for _ in range(rng.randint(1, 40)):
                n = rng.choice([3, 3, 3, 5])  # mostly one layout, sometimes another
                x = {f"f{j}": rng.gauss(0, 3) for j in range(n)}
                if rng.random() < 0.05:
                    x[f"new{rng.randint(0, 99)}"] = 2  # a new name, an int value
                obj = {"id": f"e-{partition}-{offsets[partition]}", "x": x}
                if rng.random() < 0.7:
                    obj["y"] = rng.randint(0, 1)
                if rng.random() < 0.5:
                    obj["ts"] = 1.7e9 + rng.random()
                value = encode(obj, "json" if rng.random() < 0.1 else "msgpack")
                bad = rng.random()
                if bad < 0.03:
                    value = b"\xc1garbage"
                elif bad < 0.06:
                    value = encode({"id": "b", "x": {"a": float("nan")}}, "msgpack")
                elif bad < 0.08:
                    value = None
                key = obj["id"].encode() if rng.random() < 0.8 else None
                records.append(Record(offsets[partition], key, value, 1_700_000_000_000))
                offsets[partition] += 1
            batch[partition] = records
        out.append(batch)
    return out


def run(model_impl: str, model: ModelSettings, seed: int):
    settings = WorkerSettings(
        model=model, model_impl=model_impl, merge=MergeSettings(enabled=False)
    )
    worker = Worker(settings, "w-test", clock=lambda: 1_700_000_001.0)
    producer, consumer = FakeProducer(), FakeConsumer()
    worker._producer, worker._consumer, worker._co_partitioned = producer, consumer, True
    # Partition 1 was handed over: offsets below 10 already have predictions.
    for partition, committed in ((0, None), (1, 10), (2, None)):
        worker.ledger.assign(partition, model_offset=None, committed=committed)
    for batch in batches(seed):
        worker._process(batch)
    return worker, producer, consumer


def test_compiled_worker_publishes_what_the_river_worker_publishes() -> None:
    for seed, model in enumerate(
        [
            ModelSettings(),
            ModelSettings(scale=False, l2=0.01),
            ModelSettings(optimizer="ftrl", learning_rate=0.1, ftrl_l1=0.1, l2=0.5),
        ]
    ):
        river, river_sent, river_commits = run("river", model, seed)
        kernel, kernel_sent, kernel_commits = run("kernel", model, seed)
        assert isinstance(river.model, OnlineModel)
        assert isinstance(kernel.model, KernelModel)
        assert kernel_sent.sent == river_sent.sent
        assert kernel_commits.commits == river_commits.commits
        assert kernel.model.state() == river.model.state()
        assert (kernel.n_scored, kernel.n_learned, kernel.n_replayed) == (
            river.n_scored,
            river.n_learned,
            river.n_replayed,
        )
        assert kernel.n_replayed > 0
        assert kernel.dead_letters.total == river.dead_letters.total > 0
