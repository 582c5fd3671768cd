"""Every choice of every CLI option parses and, where the command builds settings,
builds valid settings: no option is shipped untried. (Which of them run for real
against a broker: tests/integration/test_cli_choices.py.)"""

from __future__ import annotations

import pytest
from river import drift

from stream import cliargs
from stream.cli import build_parser
from stream.commands import merge, work
from stream.config import MergerSettings, WorkerSettings
from stream.kafka import confluent
from stream.model.factory import build_model
from stream.model.kernel import KernelModel
from stream.model.online import OnlineModel
from stream.observe.monitor import Monitor

from ..cli_choices import FLAG, as_args, choices

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
        _assert_chosen(settings, option, choice)
    elif path == ("merge",):
        _assert_chosen(merge.settings_from(args), option, choice)


def _dotted(obj: object, dest: str) -> object:
    for part in dest.split("."):
        obj = getattr(obj, part)
    return obj


def _assert_chosen(settings, option: str, choice: str) -> None:
    """The built settings hold the choice at the setting the option declares
    (an on/off flag: its default when absent, the other value when present).
    Options that are not settings (--log-level, --no-merger, ...) are the
    command's own, and its tests check them."""
    declared = {o.flag: o for o in cliargs.options(type(settings))}
    if option not in declared:
        return
    held = _dotted(settings, declared[option].dest)
    if choice == FLAG[0]:
        assert held == declared[option].default
    elif choice == FLAG[1]:
        assert held is (not declared[option].default)
    else:
        assert held == choice


WORK_SETTINGS = [o.flag for o in cliargs.options(WorkerSettings)]


def test_the_options_whose_choice_must_reach_the_worker_are_settings():
    for flag in ("--model-impl", "--drift-detector", "--output-encoding", "--optimizer"):
        assert flag in WORK_SETTINGS


def _work(*argv: str) -> WorkerSettings:
    return work.settings_from(build_parser().parse_args(["work", *argv]))


@pytest.mark.parametrize(
    "choice, implementation",
    [("auto", KernelModel), ("kernel", KernelModel), ("river", OnlineModel)],
)
def test_each_model_impl_builds_its_implementation(choice, implementation):
    s = _work("--model-impl", choice)
    assert type(build_model(s.model, s.model_impl, s.max_abs_weight)) is implementation


@pytest.mark.parametrize(
    "choice, detector", [("adwin", drift.ADWIN), ("page-hinkley", drift.PageHinkley)]
)
def test_each_drift_detector_is_the_one_monitoring(choice, detector):
    s = _work("--drift-detector", choice)
    assert type(Monitor("w", s.quality_window, s.drift_detector).detector) is detector


@pytest.mark.parametrize("choice", ["same", "msgpack", "json"])
def test_each_output_encoding_is_the_workers(choice):
    # What each encoding writes on the predictions topic:
    # tests/integration/test_cli_choices.py::test_every_choice_runs.
    assert _work("--output-encoding", choice).output_encoding == choice
