"""Recovery from a crash at each named point of the protocol, with exact counts.

Each test arms one crash point (``LEARNSTREAM_CRASH_AT``) in a real
``learnstream work`` command: the process dies by SIGKILL exactly there, its
supervisor restarts it (disarmed), and the global model ends up having learned
every labeled event exactly once. Topics are not pre-created.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from stream.config import TopicSettings
from stream.events.sources import SyntheticStream
from stream.faults import CRASH_POINTS
from stream.tools.produce import ProduceSettings, produce

from .helpers import (
    assert_learned_exactly_once,
    final_model,
    read_predictions,
    synthetic_features,
    wait_for,
    wait_for_learned,
    work_command,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_EVENTS = 2_000


def _work(
    kafka, topics, tmp_path, crash_at: str | None, log_name: str = "work.log"
) -> subprocess.Popen:
    """`learnstream work` with one worker (and a merger), ``crash_at`` armed."""
    log = open(tmp_path / log_name, "w")  # noqa: SIM115 - closed with the process
    env = {k: v for k, v in os.environ.items() if k != "LEARNSTREAM_CRASH_AT"}
    if crash_at:
        env["LEARNSTREAM_CRASH_AT"] = crash_at
    return subprocess.Popen(
        work_command(
            kafka,
            topics,
            "--merge-every",
            "200",
            # A full snapshot every third version: the others are deltas, and
            # the crash between a delta and its snapshot is reached.
            "--snapshot-every-versions",
            "3",
            "--checkpoint-interval-s",
            "0",
            checkpoint_dir=tmp_path / "checkpoints",
        ),
        stdout=subprocess.DEVNULL,
        stderr=log,
        env=env,
    )


CASES = [
    "worker.before_flush:2",
    "worker.after_flush_before_commit:2",
    "worker.after_commit:2",
    "worker.after_contribution_sent:2",
    "worker.on_revoke_after_contribution",
    "merger.after_merge_before_publish:1",
    "merger.after_delta_before_snapshot:1",
    "merger.after_publish_before_checkpoint:2",
    "merger.during_checkpoint_write:2",
    "merger.after_checkpoint:1",
]


def test_every_crash_point_has_a_test():
    assert {case.split(":")[0] for case in CASES} == set(CRASH_POINTS)


def _produce(kafka, topics, ids: range, rate: float | None = None) -> None:
    rows = itertools.islice(SyntheticStream(seed=21), ids.start, ids.stop)
    produce(rows, ProduceSettings(kafka=kafka, topic=topics.features, limit=len(ids), rate=rate))


def _settle(kafka, topics, work: list[subprocess.Popen]):
    """Every event predicted and learned, then every process stopped: the model
    is read after they have all exited, contributions sent at stop included."""
    try:
        predictions = read_predictions(
            kafka, topics.predictions, {str(i) for i in range(N_EVENTS)}, settle_s=0.5
        )
        wait_for_learned(kafka, topics, N_EVENTS)
    finally:
        for process in work:
            process.send_signal(signal.SIGTERM)
        for process in work:
            process.wait(timeout=60)
    assert [process.returncode for process in work] == [0] * len(work)
    return predictions, final_model(kafka, topics)


def _assert_recovered_exactly(tmp_path, point: str, predictions, settled) -> None:
    log = (tmp_path / "work.log").read_text()
    assert f"crash point reached, dying point={point}" in log
    assert "exitcode=-9; restart 1 of" in log
    assert {p["id"] for p in predictions} == {str(i) for i in range(N_EVENTS)}
    assert_learned_exactly_once(settled, N_EVENTS, synthetic_features())


def _one_crash(kafka, tmp_path, crash_at: str) -> str | None:
    """Run one scenario on its own topics; None if it recovered exactly, else why not."""
    tag = uuid.uuid4().hex[:10]
    topics = TopicSettings(features=f"cp-{tag}-f", predictions=f"cp-{tag}-p", group_id=f"cp-{tag}")
    directory = tmp_path / crash_at.replace(":", "-")
    directory.mkdir()
    work = _work(kafka, topics, directory, crash_at)

    def send_and_see_the_restart() -> None:
        _produce(kafka, topics, range(N_EVENTS))
        # Before the stop: a point hit right after the last version is published
        # (a checkpoint write) must kill a running process, not one stopping,
        # which the supervisor rightly does not restart.
        log = directory / "work.log"
        wait_for(
            lambda: "exitcode=-9; restart 1 of" in log.read_text(),
            120,
            f"the supervisor to restart the process killed at {crash_at}",
        )

    try:
        predictions, settled = _settle_after(kafka, topics, [work], send_and_see_the_restart)
        _assert_recovered_exactly(directory, crash_at.split(":")[0], predictions, settled)
    except (AssertionError, TimeoutError, subprocess.TimeoutExpired) as exc:
        return f"{crash_at}: {exc!r}"[:2000]
    return None


# Scenarios run side by side, a few at a time: most of each is waiting (process
# start, group joins, the dead member's session timeout), not computing.
SIDE_BY_SIDE = 4


@pytest.mark.parametrize("role", ["worker", "merger"], ids=["worker points", "merger points"])
def test_a_crash_at_each_point_loses_nothing_and_learns_nothing_twice(kafka, tmp_path, role):
    cases = [c for c in CASES if c.startswith(role) and "on_revoke" not in c]
    with ThreadPoolExecutor(SIDE_BY_SIDE) as pool:
        failures = [f for f in pool.map(lambda c: _one_crash(kafka, tmp_path, c), cases) if f]
    assert not failures, "\n".join(failures)


def test_a_crash_while_handing_partitions_over_loses_nothing_and_learns_nothing_twice(
    kafka, topics, tmp_path
):
    """A second `work` joins mid-stream (the second half of the events arrives
    slowly, over about 25 s, so it joins while they flow): the first one's
    partitions are revoked, it sends its hand-over contribution and dies right
    after."""
    point = "worker.on_revoke_after_contribution"
    first = _work(kafka, topics, tmp_path, point)
    work = [first]

    def stream() -> None:
        _produce(kafka, topics, range(N_EVENTS // 2))
        read_predictions(
            kafka, topics.predictions, {str(i) for i in range(N_EVENTS // 2)}, settle_s=0
        )
        rest = threading.Thread(
            target=_produce, args=(kafka, topics, range(N_EVENTS // 2, N_EVENTS), 40.0)
        )
        rest.start()
        work.append(_work(kafka, topics, tmp_path, None, log_name="second.log"))
        rest.join()

    predictions, settled = _settle_after(kafka, topics, work, stream)
    _assert_recovered_exactly(tmp_path, point, predictions, settled)


def _settle_after(kafka, topics, work: list[subprocess.Popen], send):
    try:
        send()
    except BaseException:
        for process in work:
            process.kill()
        raise
    return _settle(kafka, topics, work)
