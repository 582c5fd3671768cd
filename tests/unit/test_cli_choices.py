"""Every choice of every CLI option parses and, where the command builds settings,
builds valid settings: no option is shipped untried. (Which of them run for real
against a broker: tests/integration/test_cli_choices.py.)"""

from __future__ import annotations

import pytest

from consumers import merge, work
from stream.cli import build_parser
from stream.config import MergerSettings
from stream.kafka import confluent

from ..cli_choices import as_args, choices

# What each command needs besides the option under test.
REQUIRED = {("score",): ["rows.csv"], ("produce",): []}
# Options whose choice needs another option with it.
NEEDS = {("--on-drift", "reset"): ["--no-merge"]}

CASES = [(path, option, choice) for path, option, values in choices() for choice in values]


def test_the_cli_has_choices_to_try():
    commands = {path for path, _, _ in CASES}
    assert ("work",) in commands and ("produce",) in commands
    assert (("work",), "--drift-detector", "page-hinkley") in CASES


@pytest.mark.parametrize(
    "path, option, choice", CASES, ids=[f"{' '.join(p)} {o} {c}" for p, o, c in CASES]
)
def test_every_choice_parses_and_builds_its_settings(path, option, choice):
    argv = [
        *path,
        *REQUIRED.get(path, []),
        *as_args(option, choice),
        *NEEDS.get((option, choice), []),
    ]
    args = build_parser().parse_args(argv)
    if path == ("work",):
        settings = work.settings_from(args)
        MergerSettings.for_workers(settings)
        confluent._base_config(settings.kafka, "test")
    elif path == ("merge",):
        merge.settings_from(args)
