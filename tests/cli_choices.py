"""Every choice of every CLI option, read from the parser itself (so an option
added later is covered without editing a list)."""

from __future__ import annotations

import argparse

from stream.cli import build_parser

# A flag without choices is tried absent and present.
FLAG = ("<absent>", "<present>")


def choices(parser: argparse.ArgumentParser | None = None, path: tuple[str, ...] = ()) -> list:
    """(command path, option string, list of choices) for every option with choices
    and every on/off flag, across all subcommands."""
    parser = parser or build_parser()
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += choices(sub, (*path, name))
        elif not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        elif action.choices is not None:
            found.append((path, action.option_strings[0], list(action.choices)))
        elif isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
            found.append((path, action.option_strings[0], list(FLAG)))
    return found


def as_args(option: str, choice: str) -> list[str]:
    if choice == FLAG[0]:
        return []
    if choice == FLAG[1]:
        return [option]
    return [option, choice]
