"""Every setting can be given by an environment variable: ``--flag-name`` is
``LEARNSTREAM_FLAG_NAME`` (the Kafka connection keeps ``KAFKA_*``; ``demo`` and
``bench`` use ``LEARNSTREAM_DEMO_*`` and ``LEARNSTREAM_BENCH_*``). A variable is
read after the command line is parsed and checked as the flag is; a bad value
exits 2 with one line naming the variable and what it accepts, never a
traceback. The cases are read from the parser, so a setting added later is
covered without editing a list.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import typing
from collections import Counter
from pathlib import Path

import pytest

from stream import cliargs
from stream.cli import build_parser, main, parse_args
from stream.cliargs import Option, settings_table
from stream.config import (
    BenchModel,
    ClientName,
    KafkaSettings,
    ServeSettings,
    WorkerSettings,
    choices_of,
)

ROOT = Path(__file__).resolve().parents[2]

# What each command needs besides the setting under test.
REQUIRED = {("score",): ["rows.csv"]}


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


def _settings() -> list[tuple[tuple[str, ...], argparse.Action, Option]]:
    """(command, action, declared option) of every setting of every command."""
    return [
        (path, action, action.option)
        for path, parser in _commands(build_parser())
        for action in parser._actions
        if hasattr(action, "option")
    ]


SETTINGS = _settings()
IDS = [f"{' '.join(path)} {option.env}" for path, _, option in SETTINGS]


def _scalar_kind(option: Option) -> tuple[typing.Any, tuple | None]:
    return cliargs._base_and_choices(option.kind)


def _element_text(kind: typing.Any) -> tuple[str, typing.Any]:
    if kind is int:
        return "7,8", (7, 8)
    if kind is float:
        return "0.25,0.75", (0.25, 0.75)
    choices = choices_of(kind)
    return choices[-1], (choices[-1],)


def valid(option: Option) -> tuple[str, typing.Any]:
    """A value the setting accepts, other than its default where there is one, and
    the value the command then holds."""
    base, choices = _scalar_kind(option)
    if base is bool:
        return "true", not option.default
    element = cliargs._element(base)
    if element is not None:
        if typing.get_origin(element) is tuple:
            return (
                "ssl_check_hostname=false,request_timeout_ms=5000",
                [("ssl_check_hostname", False), ("request_timeout_ms", 5000)],
            )
        return _element_text(element)
    if choices:
        other = [c for c in choices if c != option.default] or list(choices)
        return other[0], other[0]
    if base is Path:
        return "/tmp/learnstream-env-dir", Path("/tmp/learnstream-env-dir")
    le = option.bounds[2]
    if base is int:
        value = (option.default or 0) + 1
        if le is not None and value > le:
            value = int(le) - 1
        return str(value), value
    if base is float:
        value = option.default / 2 if option.default else 0.5
        return repr(value), value
    if option.dest.endswith("crash_at"):
        return "worker.after_commit", "worker.after_commit"
    return "env-value", "env-value"


def invalid(option: Option) -> str:
    """A value the setting refuses: not a number, not a choice, not a pair, empty."""
    base, choices = _scalar_kind(option)
    if base is bool:
        return "maybe"
    element = cliargs._element(base)
    if element is not None:
        return "no-equals-sign" if typing.get_origin(element) is tuple else "nope"
    if choices:
        return "no-such-choice"
    if base in (int, float):
        return "twelve"
    return ""  # a path or a name: empty is refused (Path("") would be the current directory)


def out_of_range(option: Option) -> str | None:
    """A number just outside the declared range (None: no range)."""
    ge, gt, le, lt = option.bounds
    base, _ = _scalar_kind(option)
    if ge is not None:
        return str(int(ge) - 1) if base is int or cliargs._element(base) is int else str(ge - 1)
    if gt is not None:
        return str(gt)
    if le is not None:
        return str(le * 10)
    if lt is not None:
        return str(lt)
    return None


def _argv(path: tuple[str, ...]) -> list[str]:
    return [*path, *REQUIRED.get(path, [])]


def _one_line_error(capsys, path, environ) -> str:
    with pytest.raises(SystemExit) as exit_:
        parse_args(_argv(path), environ)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err
    return err


def test_every_command_has_settings_to_try():
    commands = {path for path, _, _ in SETTINGS}
    for command in [
        ("work",),
        ("merge",),
        ("serve",),
        ("demo",),
        ("bench",),
        ("produce",),
        ("broker",),
        ("model", "show"),
        ("model", "export"),
        ("score",),
        ("predictions",),
        ("status",),
        ("report",),
    ]:
        assert command in commands
    assert len(SETTINGS) > 200


@pytest.mark.parametrize("path, action, option", SETTINGS, ids=IDS)
def test_a_valid_environment_value_is_taken(path, action, option):
    text, expected = valid(option)
    args = parse_args(_argv(path), {option.env: text})
    assert getattr(args, action.dest) == expected


@pytest.mark.parametrize("path, action, option", SETTINGS, ids=IDS)
def test_the_command_line_wins_over_the_environment(path, action, option):
    base, _ = _scalar_kind(option)
    if base is bool:
        argv, expected = [option.flag], not option.default
        environ = {option.env: "false"}
    else:
        text, expected = valid(option)
        argv = [option.flag, text.split(",")[0]] if cliargs._element(base) is None else []
        if not argv:
            pytest.skip("a list flag's own parsing is tested by test_a_valid_environment_value")
        environ = {option.env: invalid(option)}
    args = parse_args([*_argv(path), *argv], environ)
    value = getattr(args, action.dest)
    assert value == expected or [value] == expected


@pytest.mark.parametrize("path, action, option", SETTINGS, ids=IDS)
def test_a_bad_environment_value_exits_2_with_one_line_naming_the_variable(
    capsys, path, action, option
):
    err = _one_line_error(capsys, path, {option.env: invalid(option)})
    assert f"error: {option.env}=" in err
    assert f"must be {cliargs.accepts(option)}" in err


RANGED = [case for case in SETTINGS if out_of_range(case[2]) is not None]


@pytest.mark.parametrize(
    "path, action, option", RANGED, ids=[f"{' '.join(p)} {o.env}" for p, _, o in RANGED]
)
def test_an_environment_value_out_of_range_exits_2_naming_the_variable_and_range(
    capsys, path, action, option
):
    err = _one_line_error(capsys, path, {option.env: out_of_range(option)})
    assert f"error: {option.env}=" in err
    assert cliargs.describe_range(option.bounds) in err


def test_the_same_value_as_a_flag_is_refused_alike(capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(["work", "--merge-every", "0"], {})
    assert exit_.value.code == 2
    assert "argument --merge-every: must be an integer >= 1, got '0'" in capsys.readouterr().err


@pytest.mark.parametrize("path", [("work",), ("serve",), ("merge",), ("model", "show")])
def test_an_empty_checkpoint_dir_is_refused_not_taken_for_the_current_directory(capsys, path):
    err = _one_line_error(capsys, path, {"LEARNSTREAM_CHECKPOINT_DIR": ""})
    assert "LEARNSTREAM_CHECKPOINT_DIR='': must be a path, not empty" in err


def test_a_bad_variable_of_another_command_is_not_read(capsys):
    args = parse_args(["serve"], {"LEARNSTREAM_MERGE_EVERY": "twelve"})
    assert args.command == "serve"


def _with_bad_kafka_variable(*args: str) -> subprocess.CompletedProcess:
    """``learnstream ARGS`` in its own process, ``KAFKA_SECURITY_PROTOCOL=foo``:
    the environment is read at start, so only a real process shows what a user sees."""
    env = {**os.environ, "KAFKA_SECURITY_PROTOCOL": "foo", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "stream", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_bad_kafka_variable_with_version_prints_the_version_not_a_traceback():
    done = _with_bad_kafka_variable("--version")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith("learnstream ")


def test_a_bad_kafka_variable_exits_2_with_one_line_naming_it():
    done = _with_bad_kafka_variable("work")
    assert done.returncode == 2
    assert done.stderr == (
        "learnstream work: error: KAFKA_SECURITY_PROTOCOL='foo': must be one of "
        "PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL\n"
    )


def test_a_bad_secret_is_named_but_not_shown(capsys):
    err = _one_line_error(capsys, ("serve",), {"LEARNSTREAM_SERVE_TOKEN": ""})
    assert "LEARNSTREAM_SERVE_TOKEN=***" in err


def test_help_shows_every_variable():
    for path, action, option in SETTINGS:
        if action.help != argparse.SUPPRESS:
            assert f"env {option.env}" in action.help, (path, option.flag)


def test_the_configuration_table_shows_every_variable():
    table = settings_table()
    hidden = {"LEARNSTREAM_CRASH_AT"}
    for path, _, option in SETTINGS:
        tabled = ("work", "merge", "serve", "demo", "bench", "produce", "broker", "topics",
                  "model", "score", "predictions", "status", "report")  # fmt: skip
        if option.env not in hidden and path[0] in tabled:
            assert f"`{option.env}`" in table, option.env


def test_a_variable_names_one_setting_of_one_type():
    """Two commands may share a variable only when it means the same kind of value."""
    kinds: dict[str, set] = {}
    for _, _, option in SETTINGS:
        kinds.setdefault(option.env, set()).add(
            (cliargs._base_and_choices(option.kind), option.flag)
        )
    assert {env: k for env, k in kinds.items() if len(k) > 1} == {}


def test_a_flag_means_one_thing_in_every_command_that_has_it():
    """A variable several commands read is one setting, declared once: the same
    flag and the same help everywhere (``work`` and ``serve``'s
    ``--checkpoint-dir`` and ``--quality-window``, ``work`` and ``merge``'s
    ``--metrics-port``); only the default may differ."""
    meanings: dict[str, set] = {}
    for _, _, option in SETTINGS:
        meanings.setdefault(option.env, set()).add((option.flag, option.help))
    assert {env: m for env, m in meanings.items() if len(m) > 1} == {}
    commands = Counter(option.env for _, _, option in SETTINGS)
    assert commands["LEARNSTREAM_CHECKPOINT_DIR"] > 1 and commands["LEARNSTREAM_QUALITY_WINDOW"] > 1


def test_every_option_of_every_command_is_a_declared_setting():
    """No option is written by hand beside the declarations (each has a variable):
    only help, version and the commands' operands (``score FILE``) are not settings."""
    by_hand = [
        (" ".join(path), action.option_strings)
        for path, parser in _commands(build_parser())
        for action in parser._actions
        if action.option_strings
        and action.help != argparse.SUPPRESS
        and not hasattr(action, "option")
        and not isinstance(action, argparse._HelpAction | argparse._VersionAction)
    ]
    assert by_hand == []


@pytest.mark.parametrize(
    "path, old, new",
    [
        (("predictions",), "--window", "--quality-window"),
        (("report",), "--window", "--quality-window"),
    ],
)
def test_an_old_flag_still_works_and_warns_with_the_new_name(capsys, path, old, new):
    args = parse_args([*path, old, "7"], {"LEARNSTREAM_QUALITY_WINDOW": "9"})
    assert args.quality_window == 7  # given on the command line: the variable stands aside
    err = capsys.readouterr().err
    assert err == f"learnstream {path[0]}: warning: {old} is deprecated, use {new}\n"
    assert parse_args([*path], {"LEARNSTREAM_QUALITY_WINDOW": "9"}).quality_window == 9
    (help_text,) = [parser.format_help() for p, parser in _commands(build_parser()) if p == path]
    assert new in help_text and old not in help_text


def test_every_export_format_is_one_the_exporter_writes():
    from stream.config import ExportFormat
    from stream.model.export import export_bytes
    from stream.model.state import ModelState

    for fmt in choices_of(ExportFormat):
        assert export_bytes(ModelState(weights={"a": 1.0}), True, {}, fmt, "none")


def test_secrets_never_appear_in_reprs():
    kafka = KafkaSettings(
        sasl_password="hunter2", client_options=(("ssl_password", "keypass"), ("api_version", 1))
    )
    shown = repr(WorkerSettings(kafka=kafka, client="kafka-python")) + repr(
        ServeSettings(token="s3cret")
    )
    for secret in ("hunter2", "keypass", "s3cret"):
        assert secret not in shown
    assert "('api_version', 1)" in shown
    assert kafka.options["sasl_plain_password"] == "hunter2"


def test_choices_come_from_the_literal_types():
    from stream.kafka.connect import CLIENTS
    from stream.tools.bench import MODELS

    assert choices_of(ClientName) == CLIENTS
    assert tuple(MODELS) == choices_of(BenchModel)
    for _, action, option in SETTINGS:
        _, choices = cliargs._base_and_choices(option.kind)
        if choices and cliargs._element(option.kind) is None:
            assert tuple(action.choices) == choices


def test_work_gives_its_settings_to_run_workers(monkeypatch):
    from stream.commands import work

    ran = []
    monkeypatch.setattr(work, "run_workers", lambda settings: ran.append(settings) or 0)
    environ = {"LEARNSTREAM_NO_MERGER": "1", "LEARNSTREAM_RESTART_DELAY_S": "2.5"}
    assert main(["work", "--processes", "3", "--log-level", "WARNING"], environ) == 0
    (settings,) = ran
    assert (settings.processes, settings.merger, settings.restart.delay_s) == (3, False, 2.5)
    assert settings.log.level == "WARNING"


def test_demo_and_bench_settings_are_built_from_their_declarations():
    from stream.config import BenchSettings, DemoSettings

    demo = cliargs.build(
        DemoSettings, parse_args(["demo", "--workers", "3"], {"LEARNSTREAM_DEMO_NO_MERGE": "1"})
    )
    assert (demo.workers, demo.merging, demo.merge.every_events) == (3, False, 25)
    assert demo.merge_settings.enabled is False
    bench = cliargs.build(
        BenchSettings,
        parse_args(
            ["bench"], {"LEARNSTREAM_BENCH_LATENCY_FRACTIONS": "", "LEARNSTREAM_FEATURES": "3"}
        ),
    )
    assert (bench.latency_fractions, bench.features) == ((), (10, 50))
