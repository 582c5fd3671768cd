"""Serving starts from the newest checkpoint, before (or without) a broker."""

from __future__ import annotations

import math

import pytest

from stream.config import KafkaSettings, ServeSettings
from stream.serve.holder import ModelHolder
from stream.serve.quality import RateMeter, RollingQuality
from stream.serve.runtime import ServeRuntime
from stream.sync.checkpoint import CheckpointStore
from tests.unit.serve_fixtures import snapshot
from tests.waiting import wait_for


def test_newest_checkpoint_is_served_before_the_broker_answers(tmp_path):
    store = CheckpointStore(tmp_path)
    store.write(snapshot(3))
    store.write(snapshot(7))
    # Nothing listens on port 9: the broker never answers.
    settings = ServeSettings(kafka=KafkaSettings("127.0.0.1:9"), checkpoint_dir=tmp_path)
    holder = ModelHolder()
    runtime = ServeRuntime(settings, holder, RollingQuality(10))
    runtime.start()
    try:
        assert holder.current is not None and holder.current.version == 7
    finally:
        runtime.stop(timeout_s=1)


def test_offline_picks_up_new_checkpoint_files(tmp_path):
    store = CheckpointStore(tmp_path)
    store.write(snapshot(1))
    settings = ServeSettings(offline=True, checkpoint_dir=tmp_path, checkpoint_poll_s=0.05)
    holder = ModelHolder()
    runtime = ServeRuntime(settings, holder, RollingQuality(10))
    runtime.start()
    try:
        assert holder.current.version == 1
        store.write(snapshot(2, seed=4))
        wait_for(lambda: holder.current.version == 2, 20, "version 2 to be served")
        assert holder.swaps == 1
    finally:
        runtime.stop()


def test_rolling_quality_and_rate():
    quality = RollingQuality(window=2)
    quality.add(True, 0.9)
    quality.add(False, 0.8)
    quality.add(True, 0.7)  # pushes the first out
    summary = quality.summary()
    assert summary["n"] == 2 and summary["accuracy"] == 0.5
    assert summary["calibration"] == pytest.approx(1.5)  # 0.8 + 0.7 predicted, 1 happened
    assert summary["normalized_entropy"] == pytest.approx(
        (-math.log(0.2) - math.log(0.7)) / 2 / math.log(2)
    )
    quality.add(False, 0.1)
    quality.add(False, 0.2)
    # No positive in the window: neither is defined, and JSON gets null, not NaN.
    assert quality.summary()["calibration"] is None
    assert quality.summary()["normalized_entropy"] is None
    rate = RateMeter(span_s=5)
    rate.tick(now=100.0)
    rate.count = 50
    rate.tick(now=102.0)
    assert rate.rate() == 25.0
