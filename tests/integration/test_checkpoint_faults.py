"""Checkpoints around the real merger (issue 16): a directory that cannot be
written, and a directory shared by two pipelines. Exact counts: the global
model learns every labeled event once."""

from __future__ import annotations

import itertools
import signal
import subprocess
import uuid

import pytest

from stream.config import TopicSettings
from stream.events.sources import SyntheticStream
from stream.sync.checkpoint import CheckpointStore
from stream.tools.produce import ProduceSettings, produce

from .helpers import final_model, read_predictions, wait_for_learned, work_command

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _topics() -> TopicSettings:
    tag = uuid.uuid4().hex[:10]
    return TopicSettings(features=f"ck-{tag}-f", predictions=f"ck-{tag}-p", group_id=f"ck-{tag}")


def _work(kafka, topics, checkpoint_dir, log_path) -> subprocess.Popen:
    """`learnstream work`: one worker and a merger, a checkpoint for every version."""
    log = open(log_path, "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        work_command(
            kafka,
            topics,
            "--merge-every",
            "100",
            "--checkpoint-interval-s",
            "0",
            checkpoint_dir=checkpoint_dir,
        ),
        stdout=subprocess.DEVNULL,
        stderr=log,
    )


def _stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=60)


def _produce(kafka, topics, ids: range) -> None:
    rows = itertools.islice(SyntheticStream(seed=5), ids.start, ids.stop)
    produce(rows, ProduceSettings(kafka=kafka, topic=topics.features, limit=len(ids)))


def _learned(kafka, topics, n: int, timeout_s: float = 120.0) -> int:
    """n_learned of the first version that has learned ``n`` events or more (a
    condition; what is learned later shows in the model read after exit)."""
    return wait_for_learned(kafka, topics, n, timeout_s).n_learned


def _run_until_learned(kafka, topics, ids: range) -> int:
    _produce(kafka, topics, ids)
    read_predictions(kafka, topics.predictions, {str(i) for i in ids}, settle_s=0.2)
    return _learned(kafka, topics, ids.stop)


def test_an_unwritable_checkpoint_directory_is_said_once_and_learning_goes_on(kafka, tmp_path):
    """Its parent is a regular file (unwritable even for root). The merger keeps
    publishing versions, logs one error, and writes again once it can."""
    topics = _topics()
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the directory's parent should be")
    directory = blocker / "checkpoints"
    log_path = tmp_path / "work.log"
    work = _work(kafka, topics, directory, log_path)
    try:
        assert _run_until_learned(kafka, topics, range(0, 600)) == 600
        assert not directory.exists()
        blocker.unlink()  # the operator fixes it
        assert _run_until_learned(kafka, topics, range(600, 1200)) == 1200
    finally:
        code = _stop(work)
    log = log_path.read_text()
    assert code == 0, log[-3000:]
    assert log.count("checkpoint not written") == 1, log[-3000:]
    assert log.count("checkpoints written again") == 1
    assert "merger failed" not in log
    assert CheckpointStore(directory).latest().n_learned == 1200
    assert final_model(kafka, topics).n_learned == 1200


def test_two_pipelines_sharing_a_checkpoint_directory_keep_their_own_models(kafka, tmp_path):
    """The bug: the second pipeline's merger adopted the first one's newer model
    (and its n_learned), then pruned the first one's files."""
    shared = tmp_path / "checkpoints"
    first, second = _topics(), _topics()
    work = _work(kafka, first, shared, tmp_path / "first.log")
    try:
        assert _run_until_learned(kafka, first, range(0, 800)) == 800
    finally:
        assert _stop(work) == 0
    first_files = sorted(shared.iterdir())
    assert first_files
    work = _work(kafka, second, shared, tmp_path / "second.log")
    try:
        assert _run_until_learned(kafka, second, range(0, 300)) == 300
    finally:
        assert _stop(work) == 0
    assert all(path.exists() for path in first_files)
    assert not [p for p in shared.iterdir() if ".tmp-" in p.name]
    mine = CheckpointStore(shared, pipeline={"features": second.features}).latest()
    theirs = CheckpointStore(shared, pipeline={"features": first.features}).latest()
    assert (mine.n_learned, theirs.n_learned) == (300, 800)
    # And on the model topics, read after both commands exited.
    assert (final_model(kafka, second).n_learned, final_model(kafka, first).n_learned) == (300, 800)
    assert mine.pipeline["features"] == second.features and mine.pipeline["cluster"]
