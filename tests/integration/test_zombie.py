"""A merger that lost its role but still runs (a zombie) cannot publish a version
that anyone takes for newer: versions are ordered by (epoch, version)."""

from __future__ import annotations

import threading

import pytest

from stream.config import MergerSettings, ModelSettings
from stream.kafka import clients
from stream.model.state import ModelState
from stream.runtime.merger import Merger
from stream.sync.checkpoint import Snapshot
from stream.sync.feed import published_model

from .helpers import FAST_GROUP, merging, wait_for

pytestmark = pytest.mark.integration


def _start(settings: MergerSettings, name: str) -> tuple[Merger, threading.Thread]:
    merger = Merger(settings, name)
    thread = threading.Thread(target=merger.run, name=name, daemon=True)
    thread.start()
    wait_for(lambda: merger.active and merger.snapshot is not None, 60, f"{name} to be active")
    return merger, thread


def test_a_zombies_higher_version_is_ignored_by_readers_and_by_the_next_merger(kafka, topics):
    settings = MergerSettings(kafka=kafka, topics=topics, merge=merging(), **FAST_GROUP)
    first, thread = _start(settings, "merger-a")
    active_epoch = first.snapshot.epoch
    assert active_epoch >= 1
    # The zombie: an older epoch, a much higher version, a model nobody learned.
    zombie = Snapshot(
        version=999,
        epoch=active_epoch - 1,
        state=ModelState(n_learned=12_345),
        model_config=ModelSettings().as_dict(),
    )
    producer = clients.producer(kafka, client_id="test-zombie")
    producer.send(topics.model, key=b"global", value=zombie.to_bytes(), partition=0).get(10)
    producer.close()

    seen = published_model(kafka, topics, "test-reader")
    assert seen.order == first.snapshot.order and seen.n_learned == 0

    first.stop()
    thread.join(30)
    second, thread = _start(settings, "merger-b")
    try:
        assert second.snapshot.epoch > active_epoch
        assert second.snapshot.n_learned == 0  # continued from the active history
        assert published_model(kafka, topics, "test-reader").order == second.snapshot.order
    finally:
        second.stop()
        thread.join(30)
