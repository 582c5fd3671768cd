"""Every producer learnstream makes is idempotent, and the broker accepts it: with
each client, records sent by an idempotent producer arrive, each exactly once."""

from __future__ import annotations

import uuid

import pytest

from stream.kafka import clients, connect
from stream.kafka.confluent import producer_config
from stream.kafka.reader import records

pytestmark = pytest.mark.integration

N_RECORDS = 300


def test_the_kafka_python_producer_stays_idempotent_on_this_broker(kafka):
    producer = clients.producer(kafka, client_id="test-idempotence")
    try:
        # kafka-python turns idempotence off (with a warning) when the broker or an
        # option does not allow it; set explicitly, it raises instead.
        assert producer.config["enable_idempotence"] is True
    finally:
        producer.close()


def test_the_confluent_producer_asks_for_idempotence(kafka):
    assert producer_config(kafka, "test-idempotence")["enable.idempotence"] is True


def test_an_idempotent_producer_delivers_every_record_exactly_once(kafka, client):
    topic = f"idempotence-{uuid.uuid4().hex[:10]}"
    producer = connect.producer(client, kafka, "test-idempotence")
    try:
        for i in range(N_RECORDS):
            producer.send(topic, str(i).encode(), key=str(i).encode())
        producer.flush(30)
    finally:
        producer.close(10)
    values = [r.value.decode() for r in records(kafka, topic, idle_timeout_s=2)]
    assert sorted(values, key=int) == [str(i) for i in range(N_RECORDS)]
