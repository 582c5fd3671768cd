"""Checkpoints: durable, portable, verified; bad files skipped, not trusted."""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import replace

import msgpack
import pytest

from stream.errors import CheckpointError
from stream.model.merge import state_to_dict
from stream.model.state import ModelState
from stream.sync.checkpoint import HEADER_SIZE, CheckpointStore, Snapshot


def _snapshot(version: int) -> Snapshot:
    return Snapshot(
        version=version,
        state=ModelState(
            weights={"a": 0.5 * version},
            intercept=-0.1,
            scaler_counts={"a": 3.0},
            scaler_means={"a": 1.0},
            scaler_vars={"a": 2.0},
            n_learned=10 * version,
        ),
        offsets={0: 100 * version, 3: 7},
        contributions_offset=version,
        applied={"w0": version},
        rejected={},
        model_config={"optimizer": "sgd"},
        created_at=1_700_000_000.0,
    )


def test_write_then_read_gives_the_same_snapshot(tmp_path):
    store = CheckpointStore(tmp_path)
    path = store.write(_snapshot(3))
    assert path.name == "model-000000-000000000003.ckpt"
    assert store.read(path) == _snapshot(3)
    assert store.latest() == _snapshot(3)


def test_payload_is_plain_msgpack_that_any_language_can_read(tmp_path):
    path = CheckpointStore(tmp_path).write(_snapshot(2))
    data = msgpack.unpackb(path.read_bytes()[HEADER_SIZE:], raw=False)
    assert data["schema"] == 2 and data["version"] == 2 and data["n_learned"] == 20
    assert data["offsets"] == {"0": 200, "3": 7}
    # The state: feature names once, each map's values as little-endian float64.
    state = data.pop("state")
    names, weights = state["names"], state["maps"]["weights"]["v"]
    unpacked = struct.unpack(f"<{len(names)}d", weights)
    assert dict(zip(names, unpacked, strict=True)) == _snapshot(2).state.weights
    json.dumps(data)  # nothing exotic in the rest


def test_keeps_only_the_newest_k(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    for version in range(1, 6):
        store.write(_snapshot(version))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model-000000-000000000004.ckpt",
        "model-000000-000000000005.ckpt",
    ]


@pytest.mark.parametrize("damage", ["torn", "flipped", "empty", "foreign"])
def test_a_damaged_newest_checkpoint_is_skipped_with_a_warning(tmp_path, caplog, damage):
    store = CheckpointStore(tmp_path)
    store.write(_snapshot(1))
    newest = store.write(_snapshot(2))
    raw = newest.read_bytes()
    newest.write_bytes(
        {
            "torn": raw[: len(raw) // 2],
            "flipped": raw[:-3] + bytes([raw[-3] ^ 0xFF]) + raw[-2:],
            "empty": b"",
            "foreign": b"PK\x03\x04" + raw[4:],
        }[damage]
    )
    with pytest.raises(CheckpointError):
        store.read(newest)
    with caplog.at_level(logging.WARNING):
        assert store.latest() == _snapshot(1)
    assert "checkpoint skipped" in caplog.text and newest.name in caplog.text


def test_no_directory_means_no_checkpoint(tmp_path):
    assert CheckpointStore(tmp_path / "missing").latest() is None


def test_no_temporary_files_are_left_behind(tmp_path):
    CheckpointStore(tmp_path).write(_snapshot(1))
    assert [p.name for p in tmp_path.iterdir()] == ["model-000000-000000000001.ckpt"]


def test_a_non_finite_newest_checkpoint_is_refused_for_the_previous_one(tmp_path, caplog):
    store = CheckpointStore(tmp_path, keep=5)
    store.write(_snapshot(1))
    poisoned = _snapshot(2)
    store.write(
        Snapshot(
            version=2,
            state=ModelState(weights={"a": float("nan")}, n_learned=20),
            offsets=poisoned.offsets,
        )
    )
    assert store.latest().version == 1
    assert "checkpoint skipped" in caplog.text and "not finite: weights['a'] = nan" in caplog.text


def test_the_newest_checkpoint_is_the_highest_epoch_not_the_highest_version(tmp_path):
    store = CheckpointStore(tmp_path)
    store.write(replace(_snapshot(9), epoch=1))  # a zombie merger kept writing
    store.write(replace(_snapshot(4), epoch=2))
    assert store.latest().order == (2, 4)


def test_schema_1_checkpoints_are_still_read(tmp_path):
    old = _snapshot(3)
    payload = msgpack.packb(
        {
            "schema": 1,
            "version": 3,
            "created_at": 1.0,
            "n_learned": old.n_learned,
            "state": state_to_dict(old.state),
            "offsets": {"0": 300, "3": 7},
            "contributions_offset": 3,
            "applied": {},
            "rejected": {},
            "model_config": {},
            "topic_ids": {},
        },
        use_bin_type=True,
    )
    assert Snapshot.from_bytes(payload).state == old.state
