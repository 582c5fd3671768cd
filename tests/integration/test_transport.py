"""The transport's group-less reader behaves the same on both clients."""

from __future__ import annotations

import threading
import uuid

import pytest

from stream.config import MergerSettings, TopicSettings
from stream.events.codec import encode, event_to_map
from stream.kafka import connect
from stream.kafka.topics import ensure_pipeline
from stream.runtime.merger import Merger

from .helpers import WorkerThread, create_topics, merging, wait_for, worker_settings

pytestmark = pytest.mark.integration


def _read_all(reader, expected: int) -> list:
    got: list = []

    def more() -> bool:
        got.extend(reader.poll(timeout_ms=200, max_records=500))
        return len(got) >= expected

    wait_for(more, 30, f"{expected} records")
    return got


def test_reader_reads_partitions_from_a_chosen_offset_with_headers(kafka, client):
    tag = uuid.uuid4().hex[:10]
    ensure_pipeline(kafka, TopicSettings(features=f"reader-{tag}", predictions=f"p-{tag}"), 2)
    topic = f"reader-{tag}"
    producer = connect.producer(client, kafka, "test-reader-producer")
    for i in range(30):
        producer.send(topic, f"v{i}".encode(), f"k{i}".encode(), [("h", b"%d" % i)], i % 2)
    producer.flush(30)
    producer.close()

    reader = connect.reader(client, kafka, topic, "test-reader")
    try:
        assert reader.partitions(wait_s=10) == [0, 1]
        reader.assign({0: None, 1: 10})
        records = _read_all(reader, 15 + 5)
        by_partition = {p: [r for r in records if r.partition == p] for p in (0, 1)}
        assert [r.offset for r in by_partition[0]] == list(range(15))
        assert [r.offset for r in by_partition[1]] == list(range(10, 15))
        first = by_partition[1][0]
        assert (first.key, first.value, first.headers) == (b"k21", b"v21", [("h", b"21")])
        assert reader.position(0) == reader.position(1) == 15
        assert reader.highwater(0) == reader.highwater(1) == 15
        assert reader.poll(timeout_ms=100, max_records=10) == []
    finally:
        reader.close()


def test_reader_of_a_missing_topic_says_so(kafka, client):
    reader = connect.reader(client, kafka, f"missing-{uuid.uuid4().hex[:10]}", "test-reader")
    try:
        assert reader.partitions() == []
    finally:
        reader.close()


def test_with_the_confluent_client_no_kafka_python_consumer_or_producer_runs_the_pipeline(
    kafka, topics, monkeypatch
):
    """--client confluent means confluent for every process on the hot path: the
    worker, its model feed, the merger. (Topic administration at start still
    uses kafka-python's admin client, which is not on the hot path.)"""
    import kafka as kafka_python

    created: list[str] = []
    for cls in (kafka_python.KafkaConsumer, kafka_python.KafkaProducer):
        original = cls.__init__

        def init(self, *args, _original=original, _name=cls.__name__, **kwargs):
            created.append(_name)
            _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", init)

    create_topics(kafka, topics, partitions=2)
    producer = connect.producer("confluent", kafka, "test-events")
    for i in range(200):
        x = {"a": float(i % 7), "b": float(i % 3)}
        producer.send(topics.features, encode(event_to_map(i, x, i % 2 == 0, None), "msgpack"))
    producer.flush(30)
    producer.close()

    settings = worker_settings(kafka, topics, client="confluent", merge=merging())
    merger = Merger(MergerSettings.for_workers(settings), "test-merger")
    merging_thread = threading.Thread(target=merger.run, daemon=True)
    merging_thread.start()
    try:
        with WorkerThread(settings) as running:
            wait_for(lambda: running.worker.n_scored >= 200, 60, "every event scored")
            wait_for(
                lambda: merger.snapshot is not None and merger.snapshot.n_learned == 200,
                60,
                "the global model to learn every event",
            )
    finally:
        merger.stop()
        merging_thread.join(30)
    assert created == []
