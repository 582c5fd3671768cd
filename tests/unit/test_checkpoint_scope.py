"""Checkpoints belong to one pipeline (features topic and cluster): several can
share a directory without adopting or pruning each other's files (issue 16,
finding 3 and the temporary-file part of 6)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from stream.config import TopicSettings
from stream.errors import CheckpointError, StreamError
from stream.model.state import ModelState
from stream.sync.checkpoint import STALE_TMP_S, CheckpointStore, Snapshot
from stream.sync.globalmodel import load_latest

A = {"features": "events", "cluster": "cluster-a"}
B = {"features": "clicks", "cluster": "cluster-a"}
A_ELSEWHERE = {"features": "events", "cluster": "cluster-b"}
FEATURES_ID = "01a2309a-942e-7863-99f1-250d45b2afd4"


def _snapshot(version: int, epoch: int = 1, n_learned: int | None = None) -> Snapshot:
    return Snapshot(
        version=version,
        epoch=epoch,
        state=ModelState(weights={"a": float(version)}, n_learned=n_learned or 10 * version),
        offsets={0: version},
        topic_ids={"features": FEATURES_ID},
        created_at=1_700_000_000.0,
    )


def _names(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_a_pipeline_never_adopts_another_pipelines_newer_checkpoint(tmp_path, caplog):
    """The bug: the highest (epoch, version) in a shared directory won, whoever wrote it."""
    a, b = CheckpointStore(tmp_path, pipeline=A), CheckpointStore(tmp_path, pipeline=B)
    b.write(_snapshot(3, epoch=1))
    a_path = a.write(_snapshot(900, epoch=7))
    with caplog.at_level(logging.INFO, logger="stream.sync.checkpoint"):
        found = b.latest()
    assert found is not None and (found.epoch, found.version, found.pipeline) == (1, 3, B)
    assert a.latest().pipeline == A and a.latest().version == 900
    assert any(
        str(a_path) in r.getMessage() and "events@cluster-a" in r.getMessage()
        for r in caplog.records
    )


def test_a_checkpoint_written_without_a_cluster_id_is_read_by_its_features_topic(tmp_path):
    """A writer without a broker knows no cluster id; as in the content check, a key
    only one side knows is not compared, in the file name either."""
    CheckpointStore(tmp_path, pipeline={"features": "events"}).write(_snapshot(4))
    found = CheckpointStore(tmp_path, pipeline=A).latest()
    assert found is not None and found.version == 4
    assert CheckpointStore(tmp_path, pipeline=B).latest() is None


def test_the_same_topic_on_another_cluster_is_another_pipeline(tmp_path):
    CheckpointStore(tmp_path, pipeline=A_ELSEWHERE).write(_snapshot(9, epoch=9))
    assert CheckpointStore(tmp_path, pipeline=A).latest() is None


def test_a_file_renamed_into_a_pipelines_name_is_refused_by_its_content(tmp_path, caplog):
    b_path = CheckpointStore(tmp_path, pipeline=B).write(_snapshot(4))
    a = CheckpointStore(tmp_path, pipeline=A)
    disguised = a.path_for(4, 1)
    b_path.rename(disguised)
    with caplog.at_level(logging.WARNING, logger="stream.sync.checkpoint"):
        assert a.latest() is None
    (record,) = [r for r in caplog.records if "refused" in r.getMessage()]
    assert str(disguised) in record.getMessage() and "clicks" in record.getMessage()


def test_pruning_keeps_each_pipelines_newest_and_touches_no_other_file(tmp_path):
    legacy = CheckpointStore(tmp_path).write(_snapshot(1, epoch=0))
    a = CheckpointStore(tmp_path, keep=2, pipeline=A)
    b = CheckpointStore(tmp_path, keep=3, pipeline=B)
    for version in range(1, 8):
        a.write(_snapshot(version))
        b.write(_snapshot(version))
    assert _names(tmp_path) == sorted(
        [legacy.name]
        + [a.path_for(v, 1).name for v in (6, 7)]
        + [b.path_for(v, 1).name for v in (5, 6, 7)]
    )


def test_the_newest_by_epoch_then_version_is_kept_not_the_highest_name(tmp_path):
    a = CheckpointStore(tmp_path, keep=2, pipeline=A)
    a.write(_snapshot(500, epoch=1))
    a.write(_snapshot(2, epoch=2))
    a.write(_snapshot(3, epoch=2))
    assert _names(tmp_path) == [a.path_for(2, 2).name, a.path_for(3, 2).name]


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _temporary(store: CheckpointStore, version: int, pid: int, age_s: float):
    path = store.path_for(version, 1).with_suffix(f".tmp-{pid}")
    path.write_bytes(b"half a checkpoint")
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def test_stale_temporary_files_of_dead_writers_of_the_pipeline_are_pruned(tmp_path):
    a, b = CheckpointStore(tmp_path, pipeline=A), CheckpointStore(tmp_path, pipeline=B)
    dead, old = _dead_pid(), STALE_TMP_S + 60
    stale = _temporary(a, 97, dead, old)
    fresh = _temporary(a, 98, dead, 0)  # its writer may be on another host, mid-write
    live = _temporary(a, 99, os.getppid(), old)  # its writer still runs
    others = _temporary(b, 97, dead, old)  # another pipeline's: not ours to remove
    path = a.write(_snapshot(1))
    assert not stale.exists()
    assert _names(tmp_path) == sorted([path.name, fresh.name, live.name, others.name])


def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = CheckpointStore(blocker / "ckpt", pipeline=A)
    with pytest.raises(OSError):
        store.write(_snapshot(1))
    store = CheckpointStore(tmp_path / "ckpt", pipeline=A)
    store.directory.mkdir()
    store.path_for(1, 1).mkdir()  # os.replace onto a directory fails after the temp file
    with pytest.raises(OSError):
        store.write(_snapshot(1))
    assert _names(store.directory) == [store.path_for(1, 1).name]


def test_a_written_snapshot_records_its_pipeline(tmp_path):
    a = CheckpointStore(tmp_path, pipeline=A)
    assert a.read(a.write(_snapshot(2))).pipeline == A
    with pytest.raises(CheckpointError, match="another pipeline"):
        a.write(replace(_snapshot(3), pipeline=B))


def test_the_pipeline_round_trips_and_old_payloads_have_none():
    snapshot = replace(_snapshot(2), pipeline=A)
    assert Snapshot.from_bytes(snapshot.to_bytes()) == snapshot
    assert Snapshot.from_bytes(_snapshot(2).to_bytes()).pipeline == {}


def test_an_unscoped_checkpoint_is_adopted_only_for_the_features_topic_it_records(tmp_path):
    """Written before scopes existed: its features topic id ties it to a pipeline."""
    CheckpointStore(tmp_path).write(_snapshot(5, epoch=3))
    a = CheckpointStore(tmp_path, pipeline=A)
    assert a.latest(features_id=FEATURES_ID).version == 5
    assert a.latest(features_id="9d0c34e4-0000-4000-8000-000000000000") is None


def test_without_the_topic_id_an_unscoped_checkpoint_serves_only_until_a_scoped_one_exists(
    tmp_path,
):
    """Offline readers of an old directory still find its model; once the
    pipeline writes scoped checkpoints, unscoped ones (maybe anybody's) are refused."""
    CheckpointStore(tmp_path).write(_snapshot(5, epoch=3))
    a = CheckpointStore(tmp_path, pipeline=A)
    assert a.latest().version == 5
    a.write(_snapshot(1, epoch=1))
    assert a.latest().version == 1


def test_a_store_without_scope_reads_every_checkpoint_as_before(tmp_path):
    CheckpointStore(tmp_path, pipeline=A).write(_snapshot(2, epoch=3))
    CheckpointStore(tmp_path, pipeline=B).write(_snapshot(1, epoch=2))
    assert CheckpointStore(tmp_path).latest().pipeline == A


def test_a_reader_without_a_broker_matches_the_features_topic_only(tmp_path):
    CheckpointStore(tmp_path, pipeline=A).write(_snapshot(2))
    CheckpointStore(tmp_path, pipeline=B).write(_snapshot(3, epoch=5))
    found = CheckpointStore(tmp_path, pipeline={"features": "events"}).latest()
    assert found.pipeline == A


def test_load_latest_without_a_broker_gives_this_pipelines_checkpoint(tmp_path):
    CheckpointStore(tmp_path, pipeline=A).write(_snapshot(2, n_learned=20))
    CheckpointStore(tmp_path, pipeline=B).write(_snapshot(8, epoch=9, n_learned=999))
    snapshot = load_latest(None, TopicSettings(features="events"), tmp_path)
    assert (snapshot.pipeline, snapshot.n_learned) == (A, 20)


def test_an_offline_reader_of_a_directory_with_only_other_pipelines_names_them(tmp_path):
    CheckpointStore(tmp_path, pipeline=A).write(_snapshot(2))
    CheckpointStore(tmp_path, pipeline=B).write(_snapshot(3))
    with pytest.raises(StreamError) as raised:
        load_latest(None, TopicSettings(features="features"), tmp_path)
    assert str(raised.value) == (
        "no global model found for features topic 'features' (model topic 'features.model',"
        f" checkpoint dir {tmp_path}); the directory holds checkpoints of features topic(s)"
        " clicks, events: name yours with --features-topic"
    )
