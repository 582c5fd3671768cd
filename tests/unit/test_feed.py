"""The model feed: a model topic record that is not a possible version is
skipped, counted and logged; it never wedges a reader nor replaces the version held."""

from __future__ import annotations

import logging

import msgpack

from stream.config import KafkaSettings, TopicSettings
from stream.kafka.transport import ReadRecord
from stream.model.state import ModelState, pack_state
from stream.sync.checkpoint import Snapshot
from stream.sync.feed import ModelFeed


class FakeReader:
    """The model topic as a list of values; a poll returns all from the position on."""

    topic = "model"

    def __init__(self, values: list[bytes | None]) -> None:
        self.records = [ReadRecord(0, i, b"k", v, 0, []) for i, v in enumerate(values)]
        self.at = 0

    def end_offset(self, partition: int) -> int:
        return len(self.records)

    def assign(self, starts: dict[int, int | None]) -> None:
        self.at = starts[0] or 0

    def poll(self, timeout_ms: int, max_records: int) -> list[ReadRecord]:
        records = self.records[self.at :]
        self.at = len(self.records)
        return records

    def position(self, partition: int) -> int:
        return self.at

    def close(self) -> None:
        pass


def _version(version: int, epoch: int = 1) -> Snapshot:
    return Snapshot(
        version=version,
        epoch=epoch,
        state=ModelState(weights={"a": float(version)}, n_learned=version),
        created_at=1.0,
    )


def test_hostile_model_records_are_skipped_and_the_newest_good_version_wins(caplog):
    good = _version(3).to_bytes()
    fields = msgpack.unpackb(good)
    hostile = [
        msgpack.packb([1, 2]),  # not a map
        None,  # a tombstone
        msgpack.packb({**fields, "version": 99, "offsets": [5]}),  # wrong type
        msgpack.packb({**fields, "version": 99, "epoch": -1}),  # impossible
        # A higher version whose scaler variance is negative (complex scaling).
        _bad_state(
            fields, ModelState(scaler_counts={"a": 1}, scaler_means={"a": 0}, scaler_vars={"a": -1})
        ),
        _bad_state(fields, ModelState(weights={"a": float("nan")})),
    ]
    # After the newest good version: a reader starting cold reads back past
    # them to it, and takes (and counts) each on its way to the end.
    reader = FakeReader([_version(1).to_bytes(), good, *hostile])
    caplog.set_level(logging.ERROR)
    feed = ModelFeed(KafkaSettings(), TopicSettings(), "test", reader=reader)
    latest = feed.poll()
    assert latest is not None and latest.order == (1, 3)
    assert feed.n_invalid == len(hostile)
    skipped = [r.getMessage() for r in caplog.records if "model record skipped" in r.getMessage()]
    assert [line.split()[4] for line in skipped] == [f"offset={i}" for i in range(2, 8)]


def _bad_state(fields: dict, state: ModelState) -> bytes:
    return msgpack.packb(
        {**fields, "version": 99, "state": pack_state(state), "n_learned": state.n_learned},
        use_bin_type=True,
    )


def test_changed_since_the_version_held_is_nothing_and_otherwise_unknown():
    feed = ModelFeed(
        KafkaSettings(), TopicSettings(), "test", reader=FakeReader([_version(2).to_bytes()])
    )
    assert feed.poll() is not None
    assert feed.changed_since((1, 2)) == frozenset()
    assert feed.changed_since((1, 1)) is None
    assert feed.changed_since((0, 2)) is None
