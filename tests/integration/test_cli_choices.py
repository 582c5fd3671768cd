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
import time

import pytest

from stream.events.codec import decode_map
from stream.kafka.reader import records

from ..cli_choices import FLAG, as_args, choices
from .helpers import create_topics, learnstream, pipeline_flags, wait_for, work_command

pytestmark = pytest.mark.integration

LEFT_OUT = {"--security-protocol"}
N_EVENTS = 300
# produce's sources are exclusive: one pseudo-option instead of --synthetic/--dataset.
# (bananas is read by the same code as phishing: tests/unit/test_sources.py reads it.)
SOURCES = [["--synthetic"], ["--dataset", "phishing"], ["--dataset", "ctr"], []]


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
    # --model-impl shifted by one: kernel and river fall in the runs at DEBUG and
    # INFO, whose "worker started" line says what was chosen.
    runs = plan(("work",), 4, {"--no-merger": 1, "--merge-rule": 1, "--model-impl": 1})
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


def _encoding(value: bytes) -> str:
    """How a prediction record is encoded: a JSON object starts with "{", a
    msgpack map with a map header byte."""
    if value[:1] == b"{":
        return "json"
    assert 0x80 <= value[0] <= 0x8F or value[0] in (0xDE, 0xDF), value[:16]
    return "msgpack"


def _predictions(kafka, topic: str, expected: int, timeout_s: float) -> tuple[int, set[str]]:
    """How many distinct event ids have a prediction, and the encodings seen."""
    seen: set = set()
    encodings: set[str] = set()
    deadline = time.monotonic() + timeout_s
    for record in records(kafka, topic, idle_timeout_s=timeout_s):
        seen.add(decode_map(record.value)[0]["id"])
        encodings.add(_encoding(record.value))
        if len(seen) >= expected or time.monotonic() > deadline:
            break
    return len(seen), encodings


def _expected_start_line(work_run: dict[str, str]) -> str:
    """What the worker says it chose (the settings of every run are the kernel's)."""
    impl = "river" if work_run["--model-impl"] == "river" else "kernel"
    encoding = work_run["--output-encoding"]
    return (
        f"model_impl={impl} drift_detector={work_run['--drift-detector']} "
        f"output_encoding={encoding}"
    )


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("index", range(4), ids=[f"run{i}" for i in range(4)])
def test_every_choice_runs(kafka, topics, tmp_path, index):
    work_run, produce_run = WORK_RUNS[index], PRODUCE_RUNS[index]
    create_topics(kafka, topics, partitions=2)
    log = tmp_path / "work.log"
    with open(log, "w") as out:
        work = subprocess.Popen(
            work_command(kafka, topics, *_argv(work_run), checkpoint_dir=tmp_path / "ckpt"),
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
            learnstream(
                "produce",
                *SOURCES[index],
                "--limit",
                str(N_EVENTS),
                *pipeline_flags(kafka, topics),
                *_argv(produce_run),
            ),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert produced.returncode == 0, produced.stderr
        assert "Traceback" not in produced.stderr
        found, encodings = _predictions(kafka, topics.predictions, N_EVENTS, timeout_s=120)
        assert found == N_EVENTS, log.read_text()[-3000:]
    finally:
        work.send_signal(signal.SIGTERM)
        work.wait(timeout=120)
    text = log.read_text()
    assert work.returncode == 0, text[-3000:]
    assert "Traceback" not in text
    # Each choice did what it says: predictions in the chosen encoding ("same":
    # the events', as produce wrote them), the chosen model implementation and
    # drift detector (said at INFO; the runs at WARNING and ERROR cannot show
    # it: tests/unit/test_cli_choices.py builds those from the same settings).
    chosen = work_run["--output-encoding"]
    assert encodings == {produce_run["--encoding"] if chosen == "same" else chosen}
    if work_run["--log-level"] in ("DEBUG", "INFO"):
        assert _expected_start_line(work_run) in text, text[-3000:]
