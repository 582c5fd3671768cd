"""The docs' shell examples that need a broker, run on the test broker.

Each runs as the docs show it, in a directory holding what the example names:
a checkpoint in ``checkpoints/`` (the default ``--checkpoint-dir``) and a
labeled ``holdout.csv``, on topics created beforehand as the docs say to; the
broker and topics come from the environment variables the docs name
(``KAFKA_BOOTSTRAP_SERVERS``, ``LEARNSTREAM_*``).
"""

from __future__ import annotations

import csv
import json
import random
import re

import pytest

from stream.sync.checkpoint import CheckpointStore
from tests.doc_examples import RUN_ON_BROKER, run_example, shell_examples
from tests.unit.serve_fixtures import FEATURES, snapshot

from .helpers import create_topics

pytestmark = pytest.mark.integration

VERSION = 7
HOLDOUT_ROWS = 50


def _prepare(directory, features: str) -> None:
    """A checkpoint of the test's pipeline (one of another pipeline is never loaded)."""
    store = CheckpointStore(directory / "checkpoints", pipeline={"features": features})
    store.write(snapshot(VERSION))
    rng = random.Random(3)
    with (directory / "holdout.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*FEATURES, "y"])
        writer.writeheader()
        for _ in range(HOLDOUT_ROWS):
            x = {name: rng.gauss(j, 1 + j) for j, name in enumerate(FEATURES)}
            writer.writerow({**x, "y": int(x["f1"] > 1)})


@pytest.mark.parametrize(
    "example",
    [e for e in shell_examples() if e.first_line in RUN_ON_BROKER],
    ids=lambda e: f"{e.path}:{e.first_line.split('#')[0].strip()}",
)
def test_shell_example_on_the_test_broker_runs(example, kafka, topics, tmp_path):
    create_topics(kafka, topics, partitions=2)
    _prepare(tmp_path, topics.features)
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "LEARNSTREAM_FEATURES_TOPIC": topics.features,
        "LEARNSTREAM_PREDICTIONS_TOPIC": topics.predictions,
        "LEARNSTREAM_GROUP_ID": topics.group_id,
    }
    done = run_example(example, tmp_path, env)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    if "model show" in example.first_line:
        # model show, then the JSON export, then one line per holdout row.
        assert re.search(rf"^version\s+{VERSION}$", done.stdout, re.MULTILINE), done.stdout
        scored = [json.loads(line) for line in done.stdout.splitlines()[-HOLDOUT_ROWS:]]
        assert [row["model_version"] for row in scored] == [VERSION] * HOLDOUT_ROWS
        assert [row["id"] for row in scored] == list(range(HOLDOUT_ROWS))  # the row numbers
    else:
        assert json.loads((tmp_path / "model.json").read_text())["version"] == VERSION
        assert (tmp_path / "model.onnx").stat().st_size > 0
        assert (tmp_path / "model.msgpack").stat().st_size > 0
