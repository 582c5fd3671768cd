"""The shell examples of the README and the docs pages, and what becomes of each.

Every ``sh``, ``bash`` or ``console`` code block is an example a reader may
paste. Each one is named here by its first line (comment dropped) and is
either run by a test (``RUN_WITHOUT_BROKER`` and ``RUN_ON_SERVE`` by
tests/unit/test_docs.py, ``RUN_ON_BROKER`` by
tests/integration/test_doc_examples.py) or listed in ``NOT_RUN`` with the
reason. tests/unit/test_docs.py fails on a block that is in none of them, so a
new example has to be run or explained.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHELL_LANGUAGES = ("sh", "bash", "console")

# Cheap and self-contained: no broker, no files.
RUN_WITHOUT_BROKER = {
    "learnstream --help",
    "learnstream settings",
}

# Run against the test broker, in a directory holding a checkpoint
# (checkpoints/) and a labeled holdout.csv.
RUN_ON_BROKER = {
    "learnstream model show",
    "learnstream model export --format json > model.json",
}

# Run in this order against `learnstream serve --offline` on the checkpoint the
# docs' answers came from (version 7 of tests/unit/serve_fixtures.py); each
# answer a block shows is compared with the real one.
RUN_ON_SERVE = [
    "curl -s localhost:8000/v1/predict -H 'content-type: application/json' \\",
    "curl -s 'localhost:8000/v1/model?top=2'",
]

_SERVE_TESTS = "the same requests are made by tests/unit/test_serve_app.py"
NOT_RUN = {
    "python producers/send_events.py --bootstrap localhost:9092 --topic features --count 1000": (
        "needs a broker on localhost:9092; the three example programs are run together by "
        "tests/integration/test_examples.py"
    ),
    "make demo": (
        "creates a virtual environment and installs the project; `learnstream demo` itself is run "
        "by tests/integration/test_cli.py::test_demo_prints_a_summary_with_every_event_predicted, "
        "and the test command is what is running this"
    ),
    ". .venv/bin/activate": (
        "long-running foreground processes (broker, work), one terminal each; the same commands "
        "are run by tests/integration/test_cli.py::"
        "test_topics_produce_and_read_predictions_from_a_file"
    ),
    "learnstream bench": (
        "minutes of load on purpose; the parts are tested by tests/unit/test_bench_parts.py"
    ),
    "learnstream bench --out bench-results/bench.json": ("minutes of load on purpose"),
    "learnstream bench --features 10 --scale-workers 1 --no-merge-cost --latency-fractions ''": (
        "minutes of load on purpose"
    ),
    "learnstream bench --clients kafka-python,confluent --models scaler+lr,lr,ftrl --features 10 "
    "--events 50000": "minutes of load on purpose",
    "learnstream bench --serve": ("needs wrk and hey, and minutes of load"),
    "learnstream work --optimizer ftrl --learning-rate 0.2 --ftrl-beta 1 --ftrl-l1 1 --l2 0 \\": (
        "a long-running worker; tests/integration/test_ctr.py runs work with these flags"
    ),
    "export KAFKA_BOOTSTRAP_SERVERS=broker1:9093,broker2:9093": ("needs a real, secured cluster"),
    "docker compose up -d kafka topics": (
        "needs Docker; the files its prometheus and grafana services mount are checked by "
        "tests/unit/test_monitoring.py"
    ),
    "learnstream serve": (
        f"long-running servers; {_SERVE_TESTS} and tests/unit/test_serve_runtime.py"
    ),
    'curl -s localhost:8000/v1/events -d \'{"id": "e-9", "x": {"f1": 4.2}, "y": 1}\'': (
        f"needs a running `learnstream serve` and broker; {_SERVE_TESTS}"
    ),
    "LEARNSTREAM_CHAOS_EVENTS=50000 LEARNSTREAM_CHAOS_S=40 \\": (
        "the chaos test at full size, minutes long; it runs at CI size in the test command"
    ),
}


@dataclass(frozen=True)
class Example:
    """One shell code block: where it is, and its text."""

    path: str  # relative to the repository root
    language: str
    text: str

    @property
    def first_line(self) -> str:
        """The block's name: its first line without its comment, spaces collapsed."""
        line = re.sub(r"\s+#.*$", "", self.text.splitlines()[0])
        return " ".join(line.split())


def doc_files() -> list[Path]:
    """The README and every docs page."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def shell_examples() -> list[Example]:
    examples = []
    for path in doc_files():
        for match in _FENCE.finditer(path.read_text()):
            if match.group(1) in SHELL_LANGUAGES and match.group(2).strip():
                examples.append(
                    Example(str(path.relative_to(ROOT)), match.group(1), match.group(2))
                )
    return examples


# Python blocks (```python): run by tests/unit/test_python_api.py in a directory
# holding checkpoints/ (version 7 of tests/unit/serve_fixtures.py), or listed
# here, by first line, with the reason.
PYTHON_LANGUAGES = ("python", "py")
PYTHON_NOT_RUN = {
    "import threading": (
        "starts worker processes on a broker for a minute; `learnstream work` runs the same "
        "function (tests/unit/test_settings_env.py::test_work_gives_its_settings_to_run_workers) "
        "and tests/integration/test_cli.py runs `learnstream work`"
    ),
}


def python_examples() -> list[Example]:
    return [
        Example(str(path.relative_to(ROOT)), match.group(1), match.group(2))
        for path in doc_files()
        for match in _FENCE.finditer(path.read_text())
        if match.group(1) in PYTHON_LANGUAGES and match.group(2).strip()
    ]


def run_example(example: Example, cwd: Path, env: dict[str, str] | None = None):
    """Run a block with bash -e in ``cwd``, where ``learnstream`` is this
    checkout's code run by this interpreter (whatever is installed)."""
    bin_dir = cwd / ".doc-bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "learnstream"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m stream "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    full_env = {
        **os.environ,
        **(env or {}),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
        ),
    }
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", example.text],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=240,
    )


@dataclass(frozen=True)
class Command:
    """One command of a block, with the answer the block shows for it."""

    text: str
    answer: tuple[str, ...]


def commands_and_answers(example: Example, starts: tuple[str, ...] = ("curl ",)) -> list[Command]:
    """Split a block that shows commands and their answers: a line starting
    with one of ``starts`` (or continuing one that ends in a backslash) is a
    command; the other non-empty lines are its answer."""
    commands: list[Command] = []
    text: list[str] = []
    answer: list[str] = []
    continued = False
    for line in example.text.splitlines():
        if continued or line.startswith(starts):
            if not continued and text:
                commands.append(Command("\n".join(text), tuple(answer)))
                text, answer = [], []
            text.append(line)
            continued = line.rstrip().endswith("\\")
        elif line.strip():
            answer.append(line)
    if text:
        commands.append(Command("\n".join(text), tuple(answer)))
    return commands
