"""A worker process SIGKILLed and restarted by the supervisor, under the same
name, is a new life (issue 16.1): it takes over at a version that has not
caught up with its predecessor's last contribution, finds its own first
contribution fenced out, re-learns from the model's offsets and keeps learning.
The global model ends with every labeled event learned exactly once.

The merger is frozen (SIGSTOP) across the restart, so the take-over is stale
for certain: the old life's last contribution is on the topic, not in the model.
"""

from __future__ import annotations

import os
import re
import signal

import pytest

from stream.config import MergerSettings, RestartSettings
from stream.events.codec import encode, event_to_map
from stream.kafka.reader import records
from stream.runtime.supervisor import Supervisor
from stream.sync.contribution import Contribution

from .helpers import create_topics, merging, send_raw, wait_for, worker_settings
from .test_crashpoints import wait_for_learned

pytestmark = pytest.mark.integration


def _label(i: int) -> bool | None:
    return None if i % 3 == 2 else i % 2 == 0


def _send(kafka, topics, first: int, end: int) -> None:
    send_raw(
        kafka,
        topics.features,
        (
            (
                str(i).encode(),
                encode(event_to_map(str(i), {"a": float(i % 7)}, _label(i), None), "json"),
            )
            for i in range(first, end)
        ),
    )


def _labeled_below(end: int) -> int:
    return sum(1 for i in range(end) if _label(i) is not None)


def _contributions(kafka, topics) -> list[Contribution]:
    return [
        Contribution.from_bytes(r.value)
        for r in records(kafka, topics.contributions, idle_timeout_s=1.0)
    ]


def _covers(kafka, topics, end: int, lives: set[str] | None = None) -> bool:
    """Some contribution (of one of ``lives``, if given) ends at ``end``."""
    return any(
        c.ranges.get(0, (0, 0))[1] == end and (lives is None or c.worker in lives)
        for c in _contributions(kafka, topics)
    )


def test_a_worker_restarted_under_its_name_keeps_learning_every_labeled_event_once(kafka, topics):
    create_topics(kafka, topics, 1)
    settings = worker_settings(kafka, topics, merge=merging(every_events=10, interval_s=0.2))
    restart = RestartSettings(delay_s=0.2, max_delay_s=0.2, max_restarts=10)
    supervisor = Supervisor(settings, 1, MergerSettings.for_workers(settings), restart=restart)
    supervisor.start()
    merger = supervisor.processes["merger"]
    try:
        supervisor.wait_assigned(1, timeout_s=60)
        _send(kafka, topics, 0, 300)
        assert wait_for_learned(kafka, topics, _labeled_below(300)).offsets == {0: 300}
        first_life = supervisor.lives["w0"]

        # The merger freezes; the worker contributes [.., 400) and is SIGKILLed.
        os.kill(merger.pid, signal.SIGSTOP)
        _send(kafka, topics, 300, 400)
        wait_for(lambda: _covers(kafka, topics, 400), 60, "the first life to contribute to 400")
        os.kill(supervisor.processes["w0"].pid, signal.SIGKILL)

        # The supervisor restarts it under its name: a new life, which takes over
        # at the stale version (offset 300) and reads on.
        def restarted() -> bool:
            supervisor.check()
            return supervisor.lives["w0"] != first_life

        wait_for(restarted, 30, "the supervisor to restart the worker")
        second_life = supervisor.lives["w0"]
        _send(kafka, topics, 400, 500)
        wait_for(
            lambda: supervisor.check() or _covers(kafka, topics, 500, {second_life}),
            60,
            "the second life to contribute up to 500",
        )
        os.kill(merger.pid, signal.SIGCONT)

        _send(kafka, topics, 500, 600)
        settled = wait_for_learned(kafka, topics, _labeled_below(600))
    finally:
        os.kill(merger.pid, signal.SIGCONT)  # harmless if it runs already
        supervisor.stop()

    assert settled.offsets == {0: 600}
    assert settled.n_learned == _labeled_below(600)
    lives = {c.worker for c in _contributions(kafka, topics)}
    assert lives == {first_life, second_life}
    name = supervisor.names["w0"]
    assert all(re.fullmatch(rf"{re.escape(name)}~[0-9a-f]{{12}}", life) for life in lives)
