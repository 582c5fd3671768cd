"""Every choice of every option of `learnstream work` and `learnstream produce`,
run for real: a few runs, each taking a different choice of every option at
once (a covering plan read from the parser), each producing labeled events,
reading their predictions and stopping cleanly with no traceback.

Only ``--security-protocol`` values other than PLAINTEXT are left out (they need
a secured broker); tests/unit/test_cli_choices.py parses them and builds their
client configuration.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest

from stream.events.codec import decode_map
from stream.kafka.reader import records

from ..cli_choices import FLAG, as_args, choices
from .helpers import FAST_GROUP_FLAGS, create_topics, wait_for

pytestmark = pytest.mark.integration

LEFT_OUT = {"--security-protocol"}
N_EVENTS = 300
# produce's sources are exclusive: one pseudo-option instead of --synthetic/--dataset.
SOURCES = [["--synthetic"], ["--dataset", "phishing"], ["--dataset", "bananas"], []]


def plan(path: tuple[str, ...], runs: int, offsets: dict[str, int]) -> list[dict[str, str]]:
    """Run i takes choice (i + offset) mod n of every option: with as many runs as
    the longest choice list, every choice of every option is taken at least once."""
    options = [(o, values) for p, o, values in choices() if p == path and o not in LEFT_OUT]
    return [
        {option: values[(i + offsets.get(option, 0)) % len(values)] for option, values in options}
        for i in range(runs)
    ]


def _work_runs() -> list[dict[str, str]]:
    # Merging is on in the even runs: run 0 without a merger here (--no-merger),
    # run 2 with one, merging by the rule that is not the default.
    runs = plan(("work",), 4, {"--no-merger": 1, "--merge-rule": 1})
    runs[2]["--no-merger"] = FLAG[0]
    for run in runs:
        if run["--on-drift"] == "reset":
            run["--no-merge"] = FLAG[1]  # reset needs merging off
        if run["--log-level"] in ("WARNING", "ERROR"):
            # Without INFO lines the test cannot see the assignment, which
            # --from latest must wait for before events are sent.
            run["--from"] = "earliest"
    return runs


def _produce_runs() -> list[dict[str, str]]:
    runs = plan(("produce",), 4, {})
    for run in runs:
        run.pop("--synthetic"), run.pop("--dataset")
    return runs


WORK_RUNS, PRODUCE_RUNS = _work_runs(), _produce_runs()


def test_the_plan_takes_every_choice():
    for path, runs in (("work",), WORK_RUNS), (("produce",), PRODUCE_RUNS):
        taken = {(o, v) for run in runs for o, v in run.items()}
        for p, option, values in choices():
            if p != path or option in LEFT_OUT or option in ("--synthetic", "--dataset"):
                continue
            missing = [v for v in values if (option, v) not in taken]
            assert not missing, f"{' '.join(path)} {option}: {missing} never run"


def _argv(run: dict[str, str]) -> list[str]:
    return [arg for option, choice in run.items() for arg in as_args(option, choice)]


def _unique_prediction_ids(kafka, topic: str, expected: int, timeout_s: float) -> int:
    seen: set = set()
    deadline = time.monotonic() + timeout_s
    for record in records(kafka, topic, idle_timeout_s=timeout_s):
        seen.add(decode_map(record.value)[0]["id"])
        if len(seen) >= expected or time.monotonic() > deadline:
            break
    return len(seen)


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("index", range(4), ids=[f"run{i}" for i in range(4)])
def test_every_choice_runs(kafka, topics, tmp_path, index):
    work_run, produce_run = WORK_RUNS[index], PRODUCE_RUNS[index]
    create_topics(kafka, topics, partitions=2)
    common = [
        "--bootstrap",
        kafka.bootstrap_servers,
        "--features-topic",
        topics.features,
        "--predictions-topic",
        topics.predictions,
    ]
    log = tmp_path / "work.log"
    with open(log, "w") as out:
        work = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stream",
                "work",
                "--processes",
                "1",
                "--metrics-port",
                "0",
                "--group-id",
                topics.group_id,
                "--checkpoint-dir",
                str(tmp_path / "ckpt"),
                *FAST_GROUP_FLAGS,
                *common,
                *_argv(work_run),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        if work_run["--from"] == "latest":

            def assigned() -> bool:
                assert work.poll() is None, log.read_text()
                return bool(
                    re.search(r"partitions assigned worker=\S+ partitions=[0-9]", log.read_text())
                )

            wait_for(assigned, 60, "the worker to hold partitions")
        produced = subprocess.run(
            [
                sys.executable,
                "-m",
                "stream",
                "produce",
                *SOURCES[index],
                "--limit",
                str(N_EVENTS),
                *common,
                *_argv(produce_run),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert produced.returncode == 0, produced.stderr
        assert "Traceback" not in produced.stderr
        found = _unique_prediction_ids(kafka, topics.predictions, N_EVENTS, timeout_s=120)
        assert found == N_EVENTS, log.read_text()[-3000:]
    finally:
        work.send_signal(signal.SIGTERM)
        work.wait(timeout=120)
    text = log.read_text()
    assert work.returncode == 0, text[-3000:]
    assert "Traceback" not in text
