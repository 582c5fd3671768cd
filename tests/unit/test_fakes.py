"""The in-memory Kafka (tests/fakes.py) behaves as the protocol relies on the
real clients to: eager rebalances through the hooks, commits refused outside
the current generation, flushes that lose a tail, crashes that lose what was
not flushed, zombies that still read."""

from __future__ import annotations

import pytest

from stream.errors import DeliveryError
from tests.fakes import FakeKafka


def _cluster(partitions: int = 2) -> FakeKafka:
    kafka = FakeKafka({"events": partitions})
    for p in range(partitions):
        for i in range(3):
            kafka.append("events", p, f"{p}-{i}".encode())
    return kafka


def _member(kafka: FakeKafka, name: str, calls: list, starts=None):
    consumer = kafka.consumer("events", "group", name)

    def assigned(partitions):
        calls.append((name, "assigned", partitions))
        return starts

    consumer.subscribe(
        assigned,
        lambda partitions: calls.append((name, "revoked", partitions)),
        lambda partitions: calls.append((name, "lost", partitions)),
    )
    return consumer


def test_a_rebalance_revokes_everything_held_then_assigns_and_reads_where_the_hook_says():
    kafka, calls = _cluster(), []
    a = _member(kafka, "a", calls, starts={1: 2})
    b = _member(kafka, "b", calls)
    kafka.group("group").rebalance({"a": [0, 1]})
    assert (
        a.poll_batch(0, 10)
        == {
            0: kafka.records("events", 0),  # not in the hook's answer: no commit, earliest
            1: kafka.records("events", 1)[2:],  # the hook's start
        }
    )
    assert a.commit({0: 3})
    kafka.group("group").rebalance({"a": [1], "b": [0]})
    assert calls == [
        ("a", "assigned", [0, 1]),
        ("b", "assigned", []),
        ("a", "revoked", [0, 1]),
        ("a", "assigned", [1]),
        ("b", "assigned", [0]),
    ]
    assert b.poll_batch(0, 10) == {}  # from the committed offset: the end


def test_commits_are_refused_outside_the_current_generation_and_for_ever_for_a_zombie():
    kafka, calls = _cluster(), []
    a = _member(kafka, "a", calls)
    group = kafka.group("group")
    group.rebalance({"a": [0, 1]})
    _member(kafka, "b", calls)  # joins: a rebalance is under way
    assert not a.commit({0: 1})
    group.rebalance({"a": [0, 1], "b": []})
    assert a.commit({0: 1})
    group.evict("a")  # session timed out; a is not told
    group.rebalance({"b": [0, 1]})
    assert not a.commit({0: 2}) and group.committed == {0: 1}
    assert a.assignment() == [0, 1] and a.poll_batch(0, 1)  # a zombie still reads
    assert a.lose() == [0, 1] and calls[-1] == ("a", "lost", [0, 1])


def test_a_failed_flush_delivers_a_prefix_and_a_crash_loses_what_was_not_flushed():
    kafka = FakeKafka({"out": 1})
    producer = kafka.producer()
    for i in range(3):
        producer.send("out", b"%d" % i, partition=0)
    producer.fail_next_flush(deliver=1)
    with pytest.raises(DeliveryError):
        producer.flush()
    assert [r.value for r in kafka.records("out")] == [b"0"]
    producer.send("out", b"3", partition=0)
    producer.deliver()  # the client's background sending
    producer.send("out", b"4", partition=0)
    producer.crash()
    producer.flush()
    assert [r.value for r in kafka.records("out")] == [b"0", b"3"]
