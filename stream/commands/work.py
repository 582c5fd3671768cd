"""``learnstream work``: N worker processes in the consumer group."""

from __future__ import annotations

import argparse

from stream import cliargs
from stream.api import run_workers
from stream.config import WorkerSettings, WorkSettings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "work",
        help="run worker processes: score, publish, learn",
        description="Run N worker processes that join the consumer group and split the partitions. "
        "Ctrl-C or SIGTERM: each finishes its batch, flushes, commits and exits.",
    )
    cliargs.add_settings(parser, WorkSettings)
    parser.set_defaults(func=run)


def work_settings(args: argparse.Namespace) -> WorkSettings:
    return cliargs.build(WorkSettings, args)


def settings_from(args: argparse.Namespace) -> WorkerSettings:
    return work_settings(args).worker


def run(args: argparse.Namespace) -> int:
    return run_workers(work_settings(args))
