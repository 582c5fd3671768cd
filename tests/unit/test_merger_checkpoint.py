"""A checkpoint directory that cannot be written does not stop the merger: it
keeps serving versions, says so once, and writes again when it can (issue 16,
the "checkpoint directory not writable" fault). A path under a regular file
is unwritable even for root, unlike a chmod."""

from __future__ import annotations

import logging

import pytest

from stream.config import MergerSettings, MergeSettings
from stream.model.state import ModelState
from stream.observe.metrics import MergerCollector
from stream.runtime import merger as merger_module
from stream.runtime.merger import Merger
from stream.sync.checkpoint import CheckpointStore, Snapshot

PIPELINE = {"features": "events", "cluster": "c1"}


def _snapshot(version: int) -> Snapshot:
    return Snapshot(version=version, epoch=1, state=ModelState(n_learned=version))


@pytest.fixture
def blocked(tmp_path):
    """A checkpoint directory whose parent is a regular file."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file")
    return blocker


def _merger(directory, monkeypatch) -> Merger:
    # Every version is due for a checkpoint, and a failed one is retried at once.
    monkeypatch.setattr(merger_module, "CHECKPOINT_RETRY_S", 0.0)
    settings = MergerSettings(
        merge=MergeSettings(checkpoint_dir=directory, checkpoint_interval_s=0)
    )
    return Merger(settings, "m1")


def test_an_unwritable_directory_is_said_once_counted_and_survived(blocked, monkeypatch, caplog):
    merger = _merger(blocked / "ckpt", monkeypatch)
    with caplog.at_level(logging.DEBUG, logger="stream.runtime.merger"):
        for version in range(1, 6):
            merger._checkpoint(_snapshot(version), force=False)
        merger._checkpoint(_snapshot(6), force=True)  # at stop or handover too
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(problems) == 1 and problems[0].levelno == logging.ERROR
    assert "keeps publishing versions" in problems[0].getMessage()
    assert str(blocked / "ckpt") in problems[0].getMessage()
    assert merger.checkpoint_failures == 6
    assert merger.checkpoint_written_at == 0.0
    metrics = {m.name: m.samples[0].value for m in MergerCollector(merger, lambda: 0.0).collect()}
    assert metrics["learnstream_merger_checkpoint_failures"] == 6


def test_writing_resumes_when_the_directory_becomes_writable(blocked, monkeypatch, caplog):
    merger = _merger(blocked / "ckpt", monkeypatch)
    merger._checkpoint(_snapshot(1), force=False)
    merger._checkpoint(_snapshot(2), force=False)
    blocked.unlink()  # the operator fixes it
    with caplog.at_level(logging.INFO, logger="stream.runtime.merger"):
        merger._checkpoint(_snapshot(3), force=False)
    (recovered,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "written again" in recovered.getMessage() and "failures=2" in recovered.getMessage()
    assert CheckpointStore(blocked / "ckpt").latest().version == 3
    # A later failure is a new episode, said once again.
    caplog.clear()
    merger.store = CheckpointStore(blocked / "ckpt" / "model-x" / "sub", pipeline=PIPELINE)
    (merger.store.directory.parent).write_text("a file again")
    with caplog.at_level(logging.INFO, logger="stream.runtime.merger"):
        merger._checkpoint(_snapshot(4), force=False)
        merger._checkpoint(_snapshot(5), force=False)
    assert [r.levelno for r in caplog.records if r.levelno >= logging.WARNING] == [logging.ERROR]


def test_a_failed_checkpoint_is_not_retried_before_its_delay(blocked, monkeypatch):
    merger = _merger(blocked / "ckpt", monkeypatch)
    monkeypatch.setattr(merger_module, "CHECKPOINT_RETRY_S", 3600.0)
    merger._checkpoint(_snapshot(1), force=False)
    merger._checkpoint(_snapshot(2), force=False)
    assert merger.checkpoint_failures == 1
