"""Command-line options derived from the settings declarations in :mod:`stream.config`.

Every user-facing setting is declared once, as a field of a frozen settings
dataclass with :func:`stream.config.setting` (default, help, flag, env var).
This module turns those declarations into argparse options and back into
settings objects, and renders the configuration table (docs/configuration.md), so the CLI,
the environment fallbacks and the documentation cannot drift apart.

Environment variables are fallbacks for flags (shown in ``--help``); they are
read here, at the edge, and nowhere in the library.
"""

from __future__ import annotations

import argparse
import os
import types
import typing
from collections.abc import Collection, Iterator
from dataclasses import MISSING, Field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

from stream.config import (
    EventLimits,
    KafkaSettings,
    MergerSettings,
    MergeSettings,
    ModelSettings,
    RestartSettings,
    ServeSettings,
    TopicSettings,
    WorkerSettings,
)
from stream.errors import ConfigError

# argparse group titles of the nested settings.
_GROUP_TITLES = {
    KafkaSettings: "Kafka connection",
    TopicSettings: "topics",
    ModelSettings: "model",
    MergeSettings: "merging and checkpoints",
    EventLimits: "event limits (what exceeds one is dead-lettered with its own reason)",
    RestartSettings: "restarts",
}


class Option(typing.NamedTuple):
    """One declared setting as the command line sees it."""

    dest: str  # dotted path from the root settings class, e.g. "merge.every_events"
    flag: str
    kind: Any  # the field's resolved type
    default: Any  # the command line's default (cli_default, else the field's)
    help: str
    env: str | None
    owner: type  # the settings class that declares it
    hidden: bool = False  # accepted, but not in --help or the docs


def options(cls: type, prefix: str = "", skip: Collection[str] = ()) -> Iterator[Option]:
    """The declared settings of ``cls`` and of the settings nested in it, in order."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        dest = prefix + f.name
        if dest in skip:
            continue
        kind = hints[f.name]
        if is_dataclass(kind):
            yield from options(kind, dest + ".", skip)
        elif "help" in f.metadata:
            yield Option(
                dest=dest,
                flag=f.metadata["flag"] or "--" + f.name.replace("_", "-"),
                kind=kind,
                default=_cli_default(f),
                help=f.metadata["help"],
                env=f.metadata["env"],
                owner=cls,
                hidden=f.metadata.get("hidden", False),
            )


def _cli_default(f: Field) -> Any:
    if f.metadata.get("cli_default", MISSING) is not MISSING:
        return f.metadata["cli_default"]
    if f.default is not MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


def _base_and_choices(kind: Any) -> tuple[type, tuple | None]:
    """``int``, ``Path | None``, ``Literal["a", "b"]``: the value type and any choices."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kind = next(a for a in args if a is not type(None))
        args = typing.get_args(kind)
    if typing.get_origin(kind) is Literal:
        return type(args[0]), args
    return kind, None


def _parse(option: Option, text: str) -> Any:
    """A value from the environment, with the same conversion as the flag."""
    base, choices = _base_and_choices(option.kind)
    if base is bool:
        if text.lower() not in ("1", "0", "true", "false"):
            raise ConfigError(f"{option.env} must be true or false, got {text!r}")
        return text.lower() in ("1", "true")
    value = base(text)
    if choices and value not in choices:
        raise ConfigError(f"{option.env} must be one of {list(choices)}, got {text!r}")
    return value


def _pair(text: str) -> tuple[str, str | int | bool]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), _scalar(value.strip())


def _scalar(value: str) -> str | int | bool:
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    try:
        return int(value)
    except ValueError:
        return value


def _add(group: argparse._ActionsContainer, option: Option) -> None:
    env_value = os.environ.get(option.env) if option.env else None
    default = _parse(option, env_value) if env_value is not None else option.default
    env_note = f"; env {option.env}" if option.env else ""
    base, choices = _base_and_choices(option.kind)
    if option.hidden:
        group.add_argument(option.flag, dest=option.dest, default=default, help=argparse.SUPPRESS)
        return
    if base is bool:
        # The flag names the choice that is not the default, so it is off by default.
        group.add_argument(
            option.flag,
            dest=option.dest,
            action="store_false" if option.default else "store_true",
            default=default,
            help=f"{option.help} (default: off{env_note})",
        )
        return
    if typing.get_origin(base) is tuple or base is tuple:
        group.add_argument(
            option.flag,
            dest=option.dest,
            action="append",
            type=_pair,
            default=[],
            metavar="NAME=VALUE",
            help=f"{option.help} (default: none{env_note})",
        )
        return
    shown = "%(default)s" if default is not None else "unset"
    group.add_argument(
        option.flag,
        dest=option.dest,
        type=base,
        choices=choices,
        metavar=None if choices else option.flag.lstrip("-").replace("-", "_").upper(),
        default=default,
        help=f"{option.help} (default: {shown}{env_note})",
    )


def add_settings(
    parser: argparse.ArgumentParser,
    cls: type,
    prefix: str = "",
    skip: Collection[str] = (),
    only: Collection[str] | None = None,
) -> None:
    """Add the options of ``cls`` (and its nested settings), grouped by settings class."""
    groups: dict[type, argparse._ActionsContainer] = {}
    for option in options(cls, prefix, skip):
        if only is not None and option.dest not in only:
            continue
        owner = option.owner
        if owner not in groups:
            title = _GROUP_TITLES.get(owner)
            groups[owner] = parser.add_argument_group(title) if title else parser
        _add(groups[owner], option)


def build(cls: type, args: argparse.Namespace, prefix: str = "", **overrides: Any) -> Any:
    """The settings object of ``cls`` from parsed arguments; settings not on this
    command line keep their library default."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in fields(cls):
        dest = prefix + f.name
        if is_dataclass(hints[f.name]):
            values[f.name] = build(hints[f.name], args, dest + ".")
        elif hasattr(args, dest):
            value = getattr(args, dest)
            values[f.name] = tuple(value) if isinstance(value, list) else value
    values.update(overrides)
    return cls(**values)


# Shorthands for the commands: which settings each part of the pipeline takes.


def add_kafka(parser: argparse.ArgumentParser) -> None:
    add_settings(parser, KafkaSettings, "kafka.")


def kafka_settings(args: argparse.Namespace) -> KafkaSettings:
    return build(KafkaSettings, args, "kafka.")


def add_topics(parser: argparse.ArgumentParser, group_id: bool = True) -> None:
    add_settings(parser, TopicSettings, "topics.", skip=() if group_id else ("topics.group_id",))


def topic_settings(args: argparse.Namespace) -> TopicSettings:
    return build(TopicSettings, args, "topics.")


def add_model(parser: argparse.ArgumentParser) -> None:
    add_settings(parser, ModelSettings, "model.")


def model_settings(args: argparse.Namespace) -> ModelSettings:
    return build(ModelSettings, args, "model.")


def add_checkpoint_dir(parser: argparse.ArgumentParser) -> None:
    add_settings(parser, MergeSettings, "merge.", only=("merge.checkpoint_dir",))


def checkpoint_dir(args: argparse.Namespace) -> Path | None:
    return getattr(args, "merge.checkpoint_dir")


def add_client(parser: argparse.ArgumentParser) -> None:
    """``--client`` alone, for commands that are not workers (produce, ...)."""
    add_settings(parser, WorkerSettings, only=("client",))


# Merging flags that only a worker acts on.
WORKER_ONLY_MERGE = ("merge.enabled", "merge.every_events", "merge.interval_s")
MERGER_SKIP = (*WORKER_ONLY_MERGE, "merge.catch_up_timeout_s")


def add_logging(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("logging")
    group.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="(default: %(default)s)",
    )
    group.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="json: one object per line, for log shippers (default: %(default)s)",
    )


def settings_table() -> str:
    """The configuration table of docs/configuration.md: every declared setting of the worker, the
    merger, the supervisor's restarts and the HTTP server, with its flag, env var,
    default and help (a flag shared by several commands is listed once)."""
    rows = ["| flag | env | default | what |", "|---|---|---|---|"]
    seen: set[str] = set()
    for cls in (WorkerSettings, MergerSettings, RestartSettings, ServeSettings):
        for option in options(cls):
            if option.flag in seen or option.hidden:
                continue
            seen.add(option.flag)
            base, choices = _base_and_choices(option.kind)
            if base is bool:
                default = "off"  # the flag names the choice that is not the default
            elif option.default in (None, ()):
                default = ""
            else:
                default = f"`{option.default}`"
            what = option.help.replace("|", "\\|")
            if choices:
                what += " (" + ", ".join(f"`{c}`" for c in choices) + ")"
            env = f"`{option.env}`" if option.env else ""
            rows.append(f"| `{option.flag}` | {env} | {default} | {what} |")
    return "\n".join(rows) + "\n"
