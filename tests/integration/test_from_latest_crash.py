"""`--from latest`: the first owner of a partition dies before any contribution of
its learning is merged, and still every event it predicted is learned, once.

A real `learnstream work --from latest` is killed (SIGKILL, by a crash point) in
its first batch: before its flush (nothing committed past where it began, and
nothing contributed), or right after its first commit. Its restarted worker
must find where learning began, in the group's committed offset or in the
global model's offsets, rather than start at the committed offset past it or
at the partition's end.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess

import pytest

from stream.events.sources import SyntheticStream
from stream.tools.produce import ProduceSettings, produce

from .helpers import (
    create_topics,
    final_model,
    read_predictions,
    wait_for,
    wait_for_learned,
    work_command,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_BEFORE, N_AFTER = 200, 1_000


@pytest.mark.timeout(900)
@pytest.mark.parametrize("crash_at", ["worker.before_flush:1", "worker.after_commit:1"])
def test_from_latest_a_first_owner_dying_early_leaves_nothing_predicted_unlearned(
    kafka, topics, tmp_path, crash_at
):
    create_topics(kafka, topics, 1)
    rows = list(itertools.islice(SyntheticStream(seed=31), N_BEFORE + N_AFTER))
    # Before the start: skipped. Paced, so that the partition does not end in one
    # large batch (the embedded broker answers "latest" with its last batch's start).
    produce(rows[:N_BEFORE], ProduceSettings(kafka=kafka, topic=topics.features, rate=2000))
    log = tmp_path / "work.log"
    with open(log, "w") as log_file:
        work = subprocess.Popen(
            work_command(
                kafka,
                topics,
                "--from",
                "latest",
                "--client",
                "kafka-python",  # resolves "latest" at assignment (see test_from_latest)
                "--merge-every",
                "200",
                checkpoint_dir=tmp_path / "checkpoints",
            ),
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            env={**os.environ, "LEARNSTREAM_CRASH_AT": crash_at},
        )
    try:
        wait_for(
            lambda: re.search(r"partitions assigned worker=\S+ partitions=0\b", log.read_text()),
            300,
            "the worker to hold the partition",
        )
        # Paced: the first batch is small, and events keep arriving while the
        # worker is dead and restarting.
        after = ProduceSettings(kafka=kafka, topic=topics.features, rate=200)
        produce(rows[N_BEFORE:], after)
        predictions = read_predictions(
            kafka, topics.predictions, {r[0] for r in rows[N_BEFORE:]}, timeout_s=300, settle_s=0.5
        )
        read = {p["id"] for p in predictions}
        wait_for_learned(kafka, topics, len(read), timeout_s=300)
    finally:
        work.send_signal(signal.SIGTERM)
        work.wait(timeout=60)
    settled = final_model(kafka, topics)  # `work` has exited
    text = log.read_text()
    assert f"crash point reached, dying point={crash_at.split(':')[0]}" in text
    assert "exitcode=-9; restart 1 of" in text
    assert read >= {r[0] for r in rows[N_BEFORE:]}
    # A few events before the start may be read (the broker's "latest" quirk, see
    # test_from_latest); every event read was learned, once, and no earlier one.
    assert settled.n_learned == len(read) < N_BEFORE + N_AFTER
    assert settled.offsets == {0: N_BEFORE + N_AFTER}
