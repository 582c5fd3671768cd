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
from tests.fakes import FakeConsumer, FakeProducer

SITES = [f"site-{i}" for i in range(30)]


def batches(seed: int, categorical: bool = False) -> list[dict[int, list[Record]]]:
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
                if categorical and rng.random() < 0.6:
                    x["site"] = rng.choice(SITES)  # new names (site=...) keep arriving
                    x["tags"] = rng.sample(["a", "b", "c", "ü", "a=b"], rng.randint(0, 3))
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
                elif categorical and bad < 0.1:
                    value = encode({"id": "c", "x": {"tags": ["a", 1.0]}}, "msgpack")
                key = obj["id"].encode() if rng.random() < 0.8 else None
                records.append(Record(offsets[partition], key, value, 1_700_000_000_000))
                offsets[partition] += 1
            batch[partition] = records
        out.append(batch)
    return out


def run(model_impl: str, model: ModelSettings, seed: int, categorical: bool = False):
    settings = WorkerSettings(
        model=model, model_impl=model_impl, merge=MergeSettings(enabled=False)
    )
    producer, consumer = FakeProducer(), FakeConsumer()
    worker = Worker(
        settings, "w-test", clock=lambda: 1_700_000_001.0, consumer=consumer, producer=producer
    )
    worker._co_partitioned = True
    # Partition 1 was handed over: offsets below 10 already have predictions.
    for partition, committed in ((0, None), (1, 10), (2, None)):
        worker.ledger.assign(partition, model_offset=None, committed=committed)
    for batch in batches(seed, categorical):
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


def test_categorical_events_get_the_same_predictions_on_both_paths() -> None:
    """Strings and lists of strings (one-hot by the contract) through both
    workers: same records sent byte for byte, same state bit for bit."""
    for seed, model in enumerate([ModelSettings(), ModelSettings(optimizer="ftrl")], start=10):
        river, river_sent, river_commits = run("river", model, seed, categorical=True)
        kernel, kernel_sent, kernel_commits = run("kernel", model, seed, categorical=True)
        assert kernel_sent.sent == river_sent.sent
        assert kernel_commits.commits == river_commits.commits
        state = kernel.model.state()
        assert state == river.model.state()
        assert any(name.startswith("site=site-") for name in state.weights)
        assert "tags=a=b" in state.weights
        assert kernel.dead_letters.by_reason == river.dead_letters.by_reason
        assert kernel.dead_letters.by_reason["invalid_list"] > 0


def test_hashed_events_get_the_same_predictions_on_both_paths() -> None:
    """--hash-bits: both paths hash the contract's features into the same slots,
    sum the features of an event that share one, and publish the same bytes."""
    for seed, model in enumerate(
        [ModelSettings(hash_bits=4), ModelSettings(hash_bits=12, optimizer="ftrl")], start=20
    ):
        river, river_sent, river_commits = run("river", model, seed, categorical=True)
        kernel, kernel_sent, kernel_commits = run("kernel", model, seed, categorical=True)
        assert kernel_sent.sent == river_sent.sent
        assert kernel_commits.commits == river_commits.commits
        state = kernel.model.state()
        assert state == river.model.state()
        assert all(0 <= int(k) < 2**model.hash_bits for k in state.weights)
        assert kernel.hash_collisions_in_events == river.hash_collisions_in_events
        if model.hash_bits == 4:
            assert kernel.hash_collisions_in_events > 0


def test_a_hashed_worker_reports_slots_and_collisions_as_metrics() -> None:
    from stream.events.hashing import estimated_collisions
    from stream.observe.metrics import WorkerCollector

    worker, _, _ = run("kernel", ModelSettings(hash_bits=4), 3, categorical=True)
    samples = {
        sample.name: sample.value
        for family in WorkerCollector(worker).collect()
        for sample in family.samples
    }
    used = len(worker.model.state().weights)
    assert samples["learnstream_hash_slots_used"] == used
    assert samples["learnstream_hash_collisions_estimated"] == estimated_collisions(used, 16)
    assert samples["learnstream_hash_collisions_in_events_total"] == (
        worker.hash_collisions_in_events
    )
    assert worker.hash_collisions_in_events > 0
    unhashed, _, _ = run("kernel", ModelSettings(), 3)
    names = {family.name for family in WorkerCollector(unhashed).collect()}
    assert not any(name.startswith("learnstream_hash") for name in names)
