"""SIGTERM (what ``docker stop``, systemd and ``kill`` send) ends every long-running
command within 10 s with exit code 0, having flushed, committed and checkpointed
what it owns.

Each command runs as a real ``learnstream`` subprocess. The 10 s are asserted as
``proc.wait(timeout=10)`` returning (not as a measured duration): the product's
limit, not a speed claim. For ``work`` and ``merge`` the checkpoint interval is
an hour, so the only checkpoint that holds every event is the one written on
the way out.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import TopicPartition

from stream.events.codec import encode
from stream.events.sources import SyntheticStream
from stream.kafka import clients
from stream.kafka.embedded import free_port
from stream.sync.checkpoint import CheckpointStore
from stream.sync.feed import published_model
from stream.tools.produce import ProduceSettings, produce

from .helpers import (
    create_topics,
    learnstream,
    pipeline_flags,
    read_predictions,
    send_raw,
    wait_for,
    wait_for_learned,
    work_command,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_EVENTS = 1_000
# The product's limit: every command ends this soon after SIGTERM.
STOP_LIMIT_S = 10


# Every Command started by the running test, killed at its end if still alive.
_STARTED: list[Command] = []
# Set at the end of each test: background producers stop.
_PRODUCING_UNTIL = threading.Event()


class Command:
    """A ``learnstream`` subprocess; its stdout is collected line by line."""

    def __init__(self, argv: list[str], log: Path) -> None:
        _STARTED.append(self)
        self.log = log
        self._stderr = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def sigterm(self) -> int:
        """SIGTERM, then the exit code; fails if the process outlives the limit."""
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=STOP_LIMIT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"still running {STOP_LIMIT_S} s after SIGTERM\n{self.log.read_text()}"
            ) from None
        finally:
            self._reader.join(5)
            self._stderr.close()
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def committed_offsets(kafka, topics, partitions: int) -> dict[int, int]:
    consumer = clients.consumer(kafka, client_id="test-committed", group_id=topics.group_id)
    try:
        return {
            p: consumer.committed(TopicPartition(topics.features, p)) or 0
            for p in range(partitions)
        }
    finally:
        consumer.close()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _produce_events(kafka, topics) -> None:
    produce(
        iter(SyntheticStream(seed=7)),
        ProduceSettings(kafka=kafka, topic=topics.features, limit=N_EVENTS),
    )


def _broker(kafka, topics, tmp_path) -> tuple[Command, Callable[[], None]]:
    port = free_port()
    command = Command(learnstream("broker", "--port", str(port)), tmp_path / "broker.log")
    wait_for(lambda: any("ready" in line for line in command.lines), 30, "the broker to be ready")

    def check() -> None:
        assert not _listening(port), "the embedded broker still listens"

    return command, check


def _work(kafka, topics, tmp_path) -> tuple[Command, Callable[[], None]]:
    create_topics(kafka, topics, partitions=2)
    checkpoints = tmp_path / "checkpoints"
    command = Command(
        work_command(
            kafka,
            topics,
            "--checkpoint-interval-s",
            "3600",
            processes=2,
            checkpoint_dir=checkpoints,
        ),
        tmp_path / "work.log",
    )
    _produce_events(kafka, topics)
    read_predictions(kafka, topics.predictions, {str(i) for i in range(N_EVENTS)}, settle_s=0.5)

    def check() -> None:
        committed = committed_offsets(kafka, topics, partitions=2)
        assert sum(committed.values()) == N_EVENTS, committed
        final = CheckpointStore(checkpoints).latest()
        assert final is not None and final.n_learned == N_EVENTS
        assert final.offsets == committed

    return command, check


def _merge(kafka, topics, tmp_path) -> tuple[Command, Callable[[], None]]:
    """The merger is stopped while workers keep contributing (events still flow)."""
    create_topics(kafka, topics, partitions=2)
    checkpoints = tmp_path / "checkpoints"
    Command(
        work_command(kafka, topics, "--no-merger", "--merge-every", "50", processes=None),
        tmp_path / "work.log",
    )
    command = Command(
        learnstream(
            "merge",
            "--group-id",
            topics.group_id,
            "--session-timeout-ms",
            "3000",
            "--heartbeat-interval-ms",
            "1000",
            "--max-poll-interval-ms",
            "3000",
            "--checkpoint-dir",
            str(checkpoints),
            "--checkpoint-interval-s",
            "3600",
            "--metrics-port",
            "0",
            *pipeline_flags(kafka, topics),
        ),
        tmp_path / "merge.log",
    )
    # Events keep arriving until the test ends: contributions never pause, so a
    # merger that drains "until quiet" would not stop by itself.
    rows = itertools.takewhile(lambda _: not _PRODUCING_UNTIL.is_set(), SyntheticStream(seed=7))
    endless = threading.Thread(
        target=produce,
        args=(rows, ProduceSettings(kafka=kafka, topic=topics.features, rate=200)),
        daemon=True,
    )
    endless.start()
    wait_for_learned(kafka, topics, N_EVENTS // 2)

    def check() -> None:
        # What the merger owns is the newest version: checkpointed on the way out.
        last = published_model(kafka, topics, "test-sigterm")
        final = CheckpointStore(checkpoints).latest()
        assert last is not None and final is not None
        assert final.order == last.order and final.n_learned == last.n_learned > 0

    return command, check


def _serve(kafka, topics, tmp_path) -> tuple[Command, Callable[[], None]]:
    create_topics(kafka, topics, partitions=2)
    port = free_port()
    command = Command(
        learnstream(
            "serve",
            "--port",
            str(port),
            "--checkpoint-dir",
            str(tmp_path / "checkpoints"),
            *pipeline_flags(kafka, topics),
        ),
        tmp_path / "serve.log",
    )

    def answers() -> bool:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
        except urllib.error.HTTPError:
            return True  # 503 before the first model: up all the same
        except OSError:
            return False
        return True

    wait_for(answers, 60, "serve to answer /healthz")

    def check() -> None:
        assert not _listening(port), "serve still listens"

    return command, check


def _predictions(kafka, topics, tmp_path) -> tuple[Command, Callable[[], None]]:
    create_topics(kafka, topics, partitions=2)
    prediction = {
        "p": 0.5,
        "y_pred": 1,
        "model_version": 0,
        "worker": "test",
        "partition": 0,
        "offset": 0,
    }
    send_raw(
        kafka,
        topics.predictions,
        [(None, encode({**prediction, "id": str(i)}, "json")) for i in range(5)],
    )
    command = Command(
        learnstream("predictions", "--from-beginning", *pipeline_flags(kafka, topics)),
        tmp_path / "predictions.log",
    )
    wait_for(lambda: len(command.lines) >= 5, 60, "five predictions printed")

    def check() -> None:
        assert len(command.lines) == 5 and all(line.startswith("id=") for line in command.lines)

    return command, check


COMMANDS = {
    "broker": _broker,
    "work": _work,
    "merge": _merge,
    "serve": _serve,
    "predictions": _predictions,
}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_sigterm_ends_the_command_in_time_with_exit_0_and_its_state_flushed(
    name, kafka, topics, tmp_path
):
    assert not os.environ.get("LEARNSTREAM_CRASH_AT"), "a crash point would change the test"
    _PRODUCING_UNTIL.clear()
    try:
        command, check = COMMANDS[name](kafka, topics, tmp_path)
        code = command.sigterm()
    finally:
        _PRODUCING_UNTIL.set()
        for started in _STARTED:
            started.kill()
        _STARTED.clear()
    assert code == 0, command.log.read_text()
    check()
