"""The docs site builds strictly, its links hold, its claims name their tests,
and its shell examples are run or explained.

The site is ``docs/`` built by mkdocs from ``mkdocs.yml``; the README lives
outside it (it is the package's long description), so its links are checked
here. A claim that something is "tested", that "a test checks" it, or that it
is "bit-identical" must name the test that backs it, so claims and tests stay
together.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from markdown.extensions.toc import slugify

from stream.kafka.embedded import free_port
from stream.sync.checkpoint import CheckpointStore
from tests.doc_examples import (
    NOT_RUN,
    ROOT,
    RUN_ON_BROKER,
    RUN_ON_SERVE,
    RUN_WITHOUT_BROKER,
    Example,
    commands_and_answers,
    doc_files,
    run_example,
    shell_examples,
)
from tests.unit.serve_fixtures import snapshot
from tests.waiting import wait_for

CLAIM = re.compile(r"\btested\b|\ba test checks\b|\bbit-identical\b", re.IGNORECASE)
TEST_REFERENCE = re.compile(r"\btests/(?:unit|integration)/[\w/]+\.py(?:::\w+)?")
# The settings table is generated from the help texts in stream/config.py
# (test_cli_help.py keeps it so); a claim there is backed in the prose of the
# same page ("The compiled model"), not in a table cell.
GENERATED = re.compile(r"<!-- settings-table:start -->.*?<!-- settings-table:end -->", re.DOTALL)
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
# A new list item or table row starts a new unit of text: a claim in one item
# is not backed by a test named in the next.
UNIT_START = re.compile(r"^\s*(?:[-*] |\d+\. |\|)")


def _build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_the_site_builds_strictly(tmp_path):
    built = _build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "site" / "index.html").exists()


def test_the_strict_build_fails_on_a_broken_link_or_a_page_missing_from_the_nav(tmp_path):
    """The build is a check only if a broken link and an orphan page fail it."""
    for name, change in {
        "broken link": lambda docs: (docs / "index.md").open("a").write("\n[x](nowhere.md)\n"),
        "broken anchor": lambda docs: (
            (docs / "index.md").open("a").write("\n[x](protocol.md#nowhere)\n")
        ),
        "page missing from the nav": lambda docs: (docs / "orphan.md").write_text("# Orphan\n"),
    }.items():
        copy = tmp_path / name.replace(" ", "-")
        shutil.copytree(ROOT / "docs", copy / "docs")
        shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
        change(copy / "docs")
        built = _build(copy / "mkdocs.yml", copy / "site")
        assert built.returncode != 0, f"a {name} did not fail the build"
        assert "WARNING" in built.stderr, built.stderr


def _anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slugify(h, "-") for h in re.findall(r"^#+\s+(.+?)\s*$", text, re.MULTILINE)}


def _relative_links(text: str) -> list[str]:
    text = FENCE.sub("", text)
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    return [link for link in links if not re.match(r"[a-z]+:", link)]


def test_readme_links_exist():
    readme = ROOT / "README.md"
    broken = []
    for link in _relative_links(readme.read_text()):
        target, _, anchor = link.partition("#")
        page = (ROOT / target) if target else readme
        if not page.exists():
            broken.append(f"{link}: no such file")
        elif anchor and anchor not in _anchors(page):
            broken.append(f"{link}: no heading with that anchor in {target or 'README.md'}")
    assert broken == []


def _units(text: str) -> list[str]:
    """Paragraphs, with each list item and table row on its own."""
    text = GENERATED.sub("", FENCE.sub("", text))
    units = []
    for paragraph in re.split(r"\n\s*\n", text):
        current: list[str] = []
        for line in paragraph.splitlines():
            if UNIT_START.match(line) and current:
                units.append("\n".join(current))
                current = []
            current.append(line)
        if current:
            units.append("\n".join(current))
    return units


def _reference_problem(reference: str) -> str | None:
    path, _, name = reference.partition("::")
    file = ROOT / path
    if not file.is_file():
        return f"{reference}: no such file"
    if name and not re.search(rf"^\s*(?:async\s+)?def {name}\(", file.read_text(), re.MULTILINE):
        return f"{reference}: no test function {name} in {path}"
    return None


def claim_problems(text: str) -> list[str]:
    """What is wrong with the test citations of one document: a claim naming no
    test, or a named test that does not exist."""
    problems = []
    for unit in _units(text):
        references = TEST_REFERENCE.findall(unit)
        for reference in references:
            if problem := _reference_problem(reference):
                problems.append(problem)
        if CLAIM.search(unit) and not references:
            problems.append(f"claim names no test: {' '.join(unit.split())[:200]!r}")
    return problems


def test_the_claim_checker_catches_what_it_should():
    assert claim_problems("The decoder is tested.") != []
    assert claim_problems("A test checks it (`tests/unit/test_nowhere.py`).") != []
    assert claim_problems("Bit-identical (`tests/unit/test_kernel.py::test_not_there`).") != []
    assert claim_problems("- tested\n- `tests/unit/test_kernel.py`") != []
    assert claim_problems("Untested on purpose.") == []
    assert (
        claim_problems(
            "Bit-identical to river"
            " (`tests/unit/test_kernel.py::test_kernel_equals_river_bit_for_bit`)."
        )
        == []
    )


@pytest.mark.parametrize("page", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_claim_names_an_existing_test(page):
    assert claim_problems(page.read_text()) == []


def test_every_shell_example_is_run_or_says_why_not():
    examples = shell_examples()
    assert examples, "no shell examples found"
    known = RUN_WITHOUT_BROKER | RUN_ON_BROKER | set(RUN_ON_SERVE) | set(NOT_RUN)
    unknown = sorted({f"{e.path}: {e.first_line}" for e in examples if e.first_line not in known})
    assert unknown == [], "add each to tests/doc_examples.py: run it, or say why not"
    stale = known - {e.first_line for e in examples}
    assert stale == set(), "tests/doc_examples.py names examples no page has any more"


@pytest.mark.parametrize(
    "example",
    [e for e in shell_examples() if e.first_line in RUN_WITHOUT_BROKER],
    ids=lambda e: f"{e.path}:{e.first_line.split('#')[0].strip()}",
)
def test_shell_example_without_a_broker_runs(example, tmp_path):
    done = run_example(example, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout


# Answers that depend on when the example ran, not on the model.
TIME_DEPENDENT = {"created_at", "age_s", "loaded_at"}


def _as_shown(shown, actual) -> bool:
    """Whether ``actual`` is what the docs show: the keys shown (``...`` stands
    for the rest), numbers to the digits shown, time-dependent values aside."""
    if isinstance(shown, dict):
        return isinstance(actual, dict) and all(
            key in TIME_DEPENDENT or (key in actual and _as_shown(value, actual[key]))
            for key, value in shown.items()
        )
    if isinstance(shown, list):
        return (
            isinstance(actual, list)
            and len(shown) == len(actual)
            and all(map(_as_shown, shown, actual))
        )
    if isinstance(shown, float) and isinstance(actual, float) and shown != actual:
        digits = len(repr(shown).split(".")[1]) if "." in repr(shown) else 0
        return round(actual, digits) == shown
    return shown == actual


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
            return answer.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def test_serve_examples_answer_as_the_docs_show(tmp_path):
    """The curl examples, against `learnstream serve --offline` on the checkpoint
    their answers came from, in the order the page shows them (the metrics
    counts shown are those of the requests before)."""
    CheckpointStore(tmp_path / "ckpt").write(snapshot(7))
    port = free_port()
    serve = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stream",
            "serve",
            "--offline",
            "--checkpoint-dir",
            str(tmp_path / "ckpt"),
            "--port",
            str(port),
            "--log-level",
            "WARNING",
        ],
        cwd=ROOT,
    )
    try:
        wait_for(lambda: _healthy(port), 60, "learnstream serve to load the checkpoint")
        examples = {e.first_line: e for e in shell_examples() if e.first_line in RUN_ON_SERVE}
        assert sorted(examples) == sorted(RUN_ON_SERVE)
        for first_line in RUN_ON_SERVE:
            example = examples[first_line]
            for command in commands_and_answers(example):
                text = command.text.replace("localhost:8000", f"localhost:{port}")
                done = run_example(Example(example.path, example.language, text), tmp_path)
                assert done.returncode == 0, (command.text, done.stderr)
                shown = "\n".join(command.answer)
                if not shown:
                    continue
                if shown.startswith(("{", "[")):
                    expected = json.loads(shown.replace(",...", ""))
                    actual = json.loads(done.stdout)
                    assert _as_shown(expected, actual), (command.text, shown, done.stdout)
                else:
                    assert set(done.stdout.splitlines()) == set(command.answer), command.text
    finally:
        serve.terminate()
        serve.wait(timeout=30)
