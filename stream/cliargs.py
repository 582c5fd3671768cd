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
import sys
import types
import typing
from collections.abc import Collection, Iterator, Mapping
from dataclasses import MISSING, Field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

from stream.config import (
    BenchSettings,
    BrokerSettings,
    DemoSettings,
    EventLimits,
    GroupTimeouts,
    KafkaSettings,
    LogSettings,
    MergerSettings,
    MergeSettings,
    ModelExportSettings,
    ModelSettings,
    ModelShowSettings,
    PredictionsSettings,
    ProduceCommand,
    ProduceSettings,
    ReportSettings,
    RestartSettings,
    ScoreSettings,
    ServeSettings,
    SourceSettings,
    StatusSettings,
    TopicsCreateSettings,
    TopicSettings,
    WorkerSettings,
    WorkSettings,
    describe_range,
    out_of_range,
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
    LogSettings: "logging",
    GroupTimeouts: "consumer group timing",
    SourceSettings: "source (pick one; the synthetic stream by default)",
    ProduceSettings: "output",
}


class Option(typing.NamedTuple):
    """One declared setting as the command line sees it."""

    dest: str  # dotted path from the root settings class, e.g. "merge.every_events"
    flag: str
    kind: Any  # the field's resolved type
    default: Any  # the command line's default (cli_default, else the field's)
    help: str
    env: str  # the environment variable that stands in for the flag
    owner: type  # the settings class that declares it
    hidden: bool = False  # accepted, but not in --help or the docs
    bounds: tuple = (None, None, None, None)  # ge, gt, le, lt (see stream.config.setting)
    deprecated: tuple[str, ...] = ()  # old flags, accepted with a warning


DEFAULT_ENV_PREFIX = "LEARNSTREAM_"


def env_name(cls: type, flag: str) -> str:
    """``--flag-name`` of ``cls`` is ``LEARNSTREAM_FLAG_NAME`` (or the class's ``ENV_PREFIX``)."""
    prefix = getattr(cls, "ENV_PREFIX", DEFAULT_ENV_PREFIX)
    return prefix + flag.lstrip("-").replace("-", "_").upper()


def options(cls: type, prefix: str = "", skip: Collection[str] = ()) -> Iterator[Option]:
    """The declared settings of ``cls`` and of the settings nested in it, in order."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        dest = prefix + f.name
        if dest in skip or f.metadata.get("internal"):
            continue
        kind = hints[f.name]
        if is_dataclass(kind):
            inner = prefix if f.metadata.get("flatten") else dest + "."
            yield from options(kind, inner, skip)  # type: ignore[arg-type]
        elif "help" in f.metadata:
            flag = f.metadata["flag"] or "--" + f.name.replace("_", "-")
            yield Option(
                dest=dest,
                flag=flag,
                kind=kind,
                default=_cli_default(f),
                help=f.metadata["help"],
                env=f.metadata["env"] or env_name(cls, flag),
                owner=cls,
                hidden=f.metadata.get("hidden", False),
                bounds=f.metadata.get("range") or (None, None, None, None),
                deprecated=f.metadata.get("deprecated", ()),
            )


def _cli_default(f: Field) -> Any:
    if f.metadata.get("cli_default", MISSING) is not MISSING:
        return f.metadata["cli_default"]
    if f.default is not MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


def _base_and_choices(kind: Any) -> tuple[Any, tuple | None]:
    """``int``, ``Path | None``, ``Literal["a", "b"]``: the value type and any choices
    (the ``Literal``'s values: the one list of them)."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kind = next(a for a in args if a is not type(None))
        args = typing.get_args(kind)
    if typing.get_origin(kind) is Literal:
        return type(args[0]), args
    return kind, None


def _element(kind: Any) -> Any | None:
    """The element type of ``tuple[X, ...]`` (None for anything else)."""
    if typing.get_origin(kind) is tuple:
        return typing.get_args(kind)[0]
    return None


_NOUNS = {int: "an integer", float: "a number", Path: "a path", str: "a value"}


def accepts(option: Option) -> str:
    """What a flag or variable of ``option`` accepts, in words: ``an integer >= 1``,
    ``one of sgd, ftrl``, ``true or false``."""
    base, choices = _base_and_choices(option.kind)
    element = _element(base)
    if base is bool:
        return "true or false (1 or 0)"
    if element is not None:
        if _element(element) is not None or typing.get_origin(element) is tuple:
            return "comma-separated NAME=VALUE pairs"
        inner = option._replace(kind=element)
        return f"a comma-separated list, each {accepts(inner)}"
    if choices:
        return f"one of {', '.join(map(str, choices))}"
    noun = _NOUNS.get(base, "a value")
    bounds = describe_range(option.bounds)
    return f"{noun} {bounds}" if bounds else noun


def convert(option: Option, text: str) -> Any:
    """A flag's or a variable's text as the setting's value; ValueError (saying what
    is accepted) for a value that is not one: the same rules for both."""
    base, choices = _base_and_choices(option.kind)
    element = _element(base)
    if base is bool:
        lowered = text.strip().lower()
        if lowered not in ("1", "0", "true", "false", "yes", "no"):
            raise ValueError(accepts(option))
        given = lowered in ("1", "true", "yes")
        # The flag names the non-default choice: "true" means the flag is given.
        return (not option.default) if given else option.default
    if element is not None:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if typing.get_origin(element) is tuple:
            try:
                return tuple(_pair(item) for item in items)
            except argparse.ArgumentTypeError as exc:
                raise ValueError(accepts(option)) from exc
        inner = option._replace(kind=element)
        try:
            return tuple(convert(inner, item) for item in items)
        except ValueError as exc:
            raise ValueError(accepts(option)) from exc
    if not text.strip():
        # Path("") is the current directory: an empty value must not mean that.
        raise ValueError(f"{accepts(option)}, not empty")
    try:
        value = base(text)
    except ValueError as exc:
        raise ValueError(accepts(option)) from exc
    if choices and value not in choices:
        raise ValueError(accepts(option))
    if isinstance(value, int | float) and out_of_range(value, option.bounds):
        raise ValueError(accepts(option))
    return value


def _flag_type(option: Option) -> typing.Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return convert(option, text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"must be {exc}, got {text!r}") from exc

    parse.__name__ = option.flag  # argparse names the type in some messages
    return parse


def _pair(text: str) -> tuple[str, str | int | bool]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), _scalar(value.strip())


def _scalar(value: str) -> str | int | bool:
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    try:
        return int(value)
    except ValueError:
        return value


# Which settings a command line named explicitly: the environment stands in
# for the others only. Kept on the namespace under a name no flag can have.
_GIVEN = "_learnstream_given"


class _Given(argparse.Action):
    """Mixin: remember that this option was on the command line."""

    option: Option

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[override]
        given = getattr(namespace, _GIVEN, None)
        if given is None:
            given = set()
            setattr(namespace, _GIVEN, given)
        given.add(self.dest)
        super().__call__(parser, namespace, values, option_string)  # type: ignore[misc]


class _Store(_Given, argparse._StoreAction):
    pass


class _StoreTrue(_Given, argparse._StoreTrueAction):
    pass


class _StoreFalse(_Given, argparse._StoreFalseAction):
    pass


class _Append(_Given, argparse._AppendAction):
    pass


class _Deprecated(_Store):
    """An old flag of a setting: stores as the new one does, and says so on stderr
    (logging is not configured yet while the command line is parsed)."""

    new_flag: str

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[override]
        print(
            f"{parser.prog}: warning: {option_string} is deprecated, use {self.new_flag}",
            file=sys.stderr,
        )
        super().__call__(parser, namespace, values, option_string)


def _add(group: argparse._ActionsContainer, option: Option) -> None:
    env_note = f"; env {option.env}"
    base, choices = _base_and_choices(option.kind)
    if option.hidden:
        action = group.add_argument(
            option.flag,
            dest=option.dest,
            default=option.default,
            action=_Store,
            type=_flag_type(option),
            help=argparse.SUPPRESS,
        )
    elif base is bool:
        # The flag names the choice that is not the default, so it is off by default.
        action = group.add_argument(
            option.flag,
            dest=option.dest,
            action=_StoreFalse if option.default else _StoreTrue,
            default=option.default,
            help=f"{option.help} (default: off{env_note})",
        )
    elif typing.get_origin(_element(base)) is tuple:
        action = group.add_argument(
            option.flag,
            dest=option.dest,
            action=_Append,
            type=_pair,
            default=[],
            metavar="NAME=VALUE",
            help=f"{option.help} (default: none{env_note})",
        )
    else:
        if _element(base) is not None:
            shown = ",".join(map(str, option.default))
            metavar = option.flag.lstrip("-").replace("-", "_").upper()
        else:
            shown = "unset" if option.default is None else str(option.default)
            metavar = None if choices else option.flag.lstrip("-").replace("-", "_").upper()
        action = group.add_argument(
            option.flag,
            dest=option.dest,
            action=_Store,
            type=_flag_type(option),
            choices=None if _element(base) is not None else choices,
            metavar=metavar,
            default=option.default,
            help=f"{option.help} (default: {shown.replace('%', '%%')}{env_note})",
        )
    action.option = option  # type: ignore[attr-defined]
    for old in option.deprecated:
        alias = group.add_argument(
            old,
            dest=option.dest,
            default=option.default,
            action=_Deprecated,
            type=_flag_type(option),
            help=argparse.SUPPRESS,
        )
        alias.new_flag = option.flag  # type: ignore[attr-defined]


class EnvironmentValueError(ConfigError):
    """A variable's value is not one its setting accepts (exit 2, one line)."""


def apply_environment(
    parser: argparse.ArgumentParser, args: argparse.Namespace, environ: Mapping[str, str]
) -> None:
    """Fill each setting of the chosen command that the command line did not give
    from its environment variable, converted and checked as the flag would be.

    Called after parsing, never while the parser is built (an error here is the
    command's error, reported in one line, not a traceback from building
    ``--help``). Raises :class:`EnvironmentValueError` naming the variable, its
    value and what it accepts.
    """
    given = getattr(args, _GIVEN, set())
    for action in _chosen_actions(parser, args):
        option = getattr(action, "option", None)
        if option is None or action.dest in given or option.env not in environ:
            continue
        text = environ[option.env]
        try:
            value = convert(option, text)
        except ValueError as exc:
            shown = "***" if _is_secret(option) else repr(text)
            raise EnvironmentValueError(f"{option.env}={shown}: must be {exc}") from None
        if isinstance(action, argparse._AppendAction):
            value = list(value)
        setattr(args, action.dest, value)


def _is_secret(option: Option) -> bool:
    return any(
        f.name == option.dest.rpartition(".")[2] and f.metadata.get("secret")
        for f in fields(option.owner)
    )


def _chosen_actions(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> Iterator[argparse.Action]:
    """The actions of ``parser`` and of the subcommands ``args`` chose."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = getattr(args, action.dest, None)
            if chosen in action.choices:
                yield from _chosen_actions(action.choices[chosen], args)
        else:
            yield action


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
        if f.metadata.get("flatten"):
            values[f.name] = build(hints[f.name], args, prefix)
        elif is_dataclass(hints[f.name]):
            # Nested settings none of whose options are on this command keep their
            # default (the demo's merging cadence, say), not the class's.
            if not f.metadata.get("internal") and any(
                name.startswith(dest + ".") for name in vars(args)
            ):
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
    add_settings(parser, LogSettings, "log.")


def log_settings(args: argparse.Namespace) -> LogSettings:
    """The logging options of any command (their defaults where it has none)."""
    return build(LogSettings, args, "log.")


# The configuration table: the pipeline's commands, then the tools' own options
# (their topic and model options are the pipeline's, listed once).
_TABLE = (
    ("", WorkSettings),
    ("", MergerSettings),
    ("", ServeSettings),
    ("topics create ", TopicsCreateSettings),
    ("produce ", ProduceCommand),
    ("model show ", ModelShowSettings),
    ("model export ", ModelExportSettings),
    ("score ", ScoreSettings),
    ("predictions ", PredictionsSettings),
    ("status ", StatusSettings),
    ("report ", ReportSettings),
    ("demo ", DemoSettings),
    ("bench ", BenchSettings),
    ("broker ", BrokerSettings),
)
# Listed once, with the pipeline's commands (not again as `produce --bootstrap`, ...).
_SHARED = (KafkaSettings, TopicSettings, ModelSettings, LogSettings)


def settings_table() -> str:
    """The configuration table of docs/configuration.md: every declared setting of
    ``work`` (workers, restarts, logging), the merger, the HTTP server, then the own
    options of ``topics create``, ``produce``, ``model show``, ``model export``,
    ``score``, ``predictions``, ``status``, ``report``, ``demo``, ``bench`` and ``broker``,
    with its flag, environment variable, default and help (a variable shared by
    several commands is listed once)."""
    rows = ["| flag | env | default | what |", "|---|---|---|---|"]
    seen: set[str] = set()
    for command, cls in _TABLE:
        for option in options(cls):
            flag = command + option.flag
            if option.env in seen or option.hidden or (command and option.owner in _SHARED):
                continue
            seen.add(option.env)
            base, choices = _base_and_choices(option.kind)
            if base is bool:
                default = "off"  # the flag names the choice that is not the default
            elif option.default in (None, ()):
                default = ""
            elif isinstance(option.default, tuple):
                default = f"`{','.join(map(str, option.default))}`"
            else:
                default = f"`{option.default}`"
            what = option.help.replace("|", "\\|")
            if choices:
                what += " (" + ", ".join(f"`{c}`" for c in choices) + ")"
            bounds = describe_range(option.bounds)
            if bounds and base is not bool:
                what += f" ({bounds})"
            rows.append(f"| `{flag}` | `{option.env}` | {default} | {what} |")
    return "\n".join(rows) + "\n"
