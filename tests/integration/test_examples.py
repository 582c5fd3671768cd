"""The example programs in producers/ and consumers/ work as their docstrings
say: events sent by a plain client are scored by workers started from
Python, and a plain consumer reads every prediction."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import create_topics, final_model, wait_for_learned

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _example(path: str, *args: str) -> list[str]:
    return [sys.executable, str(ROOT / path), *args]


def test_the_example_producer_worker_and_reader_run_the_pipeline(kafka, topics):
    create_topics(kafka, topics, 2)
    common = ["--bootstrap", kafka.bootstrap_servers]
    worker = subprocess.Popen(
        _example(
            "consumers/worker.py",
            *common,
            "--topic",
            topics.features,
            "--predictions-topic",
            topics.predictions,
            "--group-id",
            topics.group_id,
            "--processes",
            "1",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        sent = subprocess.run(
            _example(
                "producers/send_events.py", *common, "--topic", topics.features, "--count", "400"
            ),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert (sent.returncode, sent.stdout.strip()) == (
            0,
            f"sent 400 events to {topics.features}",
        )
        read = subprocess.run(
            _example(
                "consumers/read_predictions.py",
                *common,
                "--topic",
                topics.predictions,
                "--limit",
                "400",
                "--idle-s",
                "120",
            ),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert read.returncode == 0, read.stderr
        ids = {line.split()[0] for line in read.stdout.splitlines()}
        assert ids == {f"evt-0-{i}" for i in range(400)}
        assert "read 400 predictions, accuracy" in read.stderr
        assert read.stderr.strip().endswith("over 200 labeled")
        wait_for_learned(kafka, topics, 200)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=60)
    assert worker.returncode == 0, stderr
    # The merger started by stream.run_workers learned every labeled event once.
    assert final_model(kafka, topics).n_learned == 200
