"""Four workers, one global model: as good as one river model, identical after
a merge settles, and continuing across a full restart from checkpoints."""

from __future__ import annotations

import time

import pytest

from stream import clients
from stream.codec import encode, event_to_map
from stream.config import KafkaSettings, MergeSettings, ModelSettings, TopicSettings
from stream.feed import ModelFeed
from stream.merger import MergerSettings
from stream.processes import Supervisor
from stream.quality import Quality, prequential, single_model_baseline
from stream.sources import river_dataset

from .helpers import NO_MERGE, create_topics, merging, read_predictions, worker_settings

pytestmark = pytest.mark.integration

PARTITIONS = 4


def phishing_partition(x: dict) -> int:
    """Partition by domain age and HTTPS, so each worker sees a different slice."""
    return 2 * int(x["age_of_domain"] > 0.5) + int(x["https"] > 0.5)


def send_phishing(kafka: KafkaSettings, topic: str, rate: float, passes: int = 1) -> list:
    """Phishing in order, at ``rate`` events/s, each event on its slice's partition."""
    producer = clients.producer(kafka, client_id="test-phishing", linger_ms=0)
    rows = [(f"{p}-{i}", x, y) for p in range(passes) for i, x, y in river_dataset("phishing")]
    start = time.monotonic()
    for n, (event_id, x, y) in enumerate(rows):
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        value = encode(event_to_map(event_id, x, y, None), "msgpack")
        producer.send(topic, key=event_id.encode(), value=value, partition=phishing_partition(x))
    producer.flush()
    producer.close()
    return rows


def latest_model(kafka: KafkaSettings, topics: TopicSettings):
    feed = ModelFeed(kafka, topics, "test-reader")
    try:
        return feed.initial()
    finally:
        feed.close()


def run_pipeline(
    kafka, topics, merge: MergeSettings, workers: int, rate: float, checkpoint_dir=None
):
    create_topics(kafka, topics, PARTITIONS)
    if checkpoint_dir is not None:
        merge = MergeSettings(**{**merge.__dict__, "checkpoint_dir": checkpoint_dir})
    settings = worker_settings(kafka, topics, merge=merge)
    merger = MergerSettings.for_workers(settings) if merge.enabled else None
    supervisor = Supervisor(settings, workers, merger).start()
    try:
        supervisor.wait_assigned(PARTITIONS, timeout_s=60)
        rows = send_phishing(kafka, topics.features, rate)
        predictions = read_predictions(kafka, topics.predictions, {r[0] for r in rows}, settle_s=1)
    finally:
        supervisor.stop()
    first = {}
    for p in predictions:
        first.setdefault(p["id"], p)
    quality = prequential((bool(p["y"]), p["p"]) for p in first.values())
    return rows, first, quality


def test_merged_workers_match_one_river_model_and_unmerged_ones_do_not(kafka, tmp_path):
    results: dict[str, Quality] = {}
    runs = {
        "4 workers merged (sum)": merging(every_events=10, interval_s=0.2),
        "4 workers merged (average)": merging(every_events=10, interval_s=0.2, rule="average"),
        "4 workers unmerged": NO_MERGE,
    }
    for n, (label, merge) in enumerate(runs.items()):
        tag = f"acc{n}-{tmp_path.name}"
        topics = TopicSettings(features=f"{tag}-f", predictions=f"{tag}-p", group_id=tag)
        rows, _, results[label] = run_pipeline(kafka, topics, merge, workers=4, rate=500)
        if merge.enabled:
            assert latest_model(kafka, topics).n_learned == len(rows)
    single = single_model_baseline(rows, ModelSettings())
    table = "\n".join(
        f"  {name:<28} accuracy {q.accuracy:.4f}  log loss {q.log_loss:.4f}  n={q.n}"
        for name, q in [("single river model", single), *results.items()]
    )
    print("\nPhishing, 4 partitions by (age_of_domain, https), 500 events/s\n" + table)
    merged = results["4 workers merged (sum)"]
    assert abs(merged.accuracy - single.accuracy) <= 0.015, table
    assert results["4 workers unmerged"].accuracy < merged.accuracy - 0.01, table
