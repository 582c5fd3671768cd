"""Per-record isolation end to end: `learnstream work` on the default compiled path,
with a batch decoder or a kernel that raises on one record (tests/poison.py,
installed in every process through tests/integration/poisoned/sitecustomize.py).

The poisoned record is dead-lettered as a ``processing_error`` naming the stage
that raised; every other event is predicted; the global model learns exactly the
valid labeled events, once each; no process restarts.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
from pathlib import Path

import msgpack
import pytest

from stream.events import codec
from stream.events.sources import SyntheticStream
from tests.poison import DECODER_POISON, ENV, KERNEL_POISON, DecoderPoisoned, KernelPoisoned

from .helpers import (
    create_topics,
    final_model,
    read_dead_letters,
    read_predictions,
    send_raw,
    wait_for_learned,
    work_command,
)

pytestmark = pytest.mark.integration

N_GOOD = 1_000
POISONED_AT = 400  # in the middle of a batch (the worker polls up to 200 here)
SITE = Path(__file__).parent / "poisoned"

CASES = {
    "kernel": (
        {"id": "poison", "x": {"f0": 0.5, "f1": KERNEL_POISON}, "y": 1},
        f"the kernel raised {KernelPoisoned('kernel poisoned by event 0')!r}",
    ),
    "decoder": (
        {"id": "poison", "x": {"f0": 0.5, DECODER_POISON.decode(): 1.0}, "y": 0},
        f"the batch decoder raised {DecoderPoisoned('batch decoder poisoned')!r}",
    ),
}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("which", sorted(CASES))
def test_a_record_that_makes_the_compiled_path_raise_costs_only_itself(
    kafka, topics, tmp_path, which
):
    poison, error = CASES[which]
    create_topics(kafka, topics, partitions=1)
    good = [
        (event_id.encode(), codec.encode(codec.event_to_map(event_id, x, y, None), "msgpack"))
        for event_id, x, y in itertools.islice(SyntheticStream(seed=13), N_GOOD)
    ]
    records = [*good[:POISONED_AT], (b"poison", msgpack.packb(poison)), *good[POISONED_AT:]]
    send_raw(kafka, topics.features, records)

    log = tmp_path / "work.log"
    env = {**os.environ, ENV: which}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(SITE), *filter(None, [os.environ.get("PYTHONPATH")]), str(SITE.parents[2])]
    )
    with open(log, "w") as log_file:
        work = subprocess.Popen(
            work_command(
                kafka,
                topics,
                "--max-poll-records",
                "200",
                checkpoint_dir=tmp_path / "checkpoints",
            ),
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            env=env,
        )
    try:
        good_ids = {key.decode() for key, _ in good}
        predictions = read_predictions(
            kafka, topics.predictions, good_ids, timeout_s=300, settle_s=0.5
        )
        letters = read_dead_letters(kafka, topics.dead_letter, 1, timeout_s=120)
        wait_for_learned(kafka, topics, N_GOOD, timeout_s=300)
    finally:
        work.send_signal(signal.SIGTERM)
        work.wait(timeout=60)
    settled = final_model(kafka, topics)  # `work` has exited
    text = log.read_text()
    assert work.returncode == 0, text[-3000:]

    assert sorted(p["id"] for p in predictions) == sorted(good_ids)
    assert [(letter.key, letter.offset, letter.reason, letter.error) for letter in letters] == [
        (b"poison", POISONED_AT, codec.PROCESSING_ERROR, error)
    ]
    assert letters[0].value == msgpack.packb(poison)
    assert settled.n_learned == N_GOOD
    assert settled.offsets == {0: N_GOOD + 1}
    # The batch that held it was scored record by record; nothing restarted.
    assert "records raised" in text and "processing them one by one" in text
    assert "restart" not in text and "process exited" not in text
    assert "Traceback" not in text and "crash loop" not in text
