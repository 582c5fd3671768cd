"""Every command documents every option, with its default; the docs'
configuration table is the one the settings declarations produce."""

from __future__ import annotations

import argparse
from pathlib import Path

from stream.cli import build_parser
from stream.cliargs import settings_table

CONFIGURATION_PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def _commands(parser: argparse.ArgumentParser, path: str = "learnstream"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, f"{path} {name}")


def _undocumented() -> list[str]:
    problems = []
    for command, parser in _commands(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            if isinstance(action, argparse._VersionAction):
                continue
            if action.help == argparse.SUPPRESS:
                continue  # hidden on purpose (test-only switches)
            name = f"{command} {'/'.join(action.option_strings) or action.dest}"
            if not action.help:
                problems.append(f"{name}: no help")
            elif action.option_strings and action.nargs != 0 and "default" not in action.help:
                problems.append(f"{name}: help does not show the default: {action.help!r}")
    return problems


def test_every_option_of_every_command_has_help_showing_its_default():
    assert _undocumented() == []


def test_readme_configuration_table_is_generated_from_the_settings():
    page = CONFIGURATION_PAGE.read_text()
    start = page.index("<!-- settings-table:start -->\n") + len("<!-- settings-table:start -->\n")
    end = page.index("<!-- settings-table:end -->")
    assert page[start:end] == settings_table(), (
        "docs/configuration.md's table is stale: regenerate it with `learnstream settings`"
    )


def test_settings_command_prints_the_table(capsys):
    from stream.cli import main

    assert main(["settings"]) == 0
    assert capsys.readouterr().out == settings_table()
