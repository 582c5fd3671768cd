"""``learnstream work``: N worker processes in the consumer group."""

from __future__ import annotations

import argparse

from stream import cliargs
from stream.config import MergerSettings, RestartSettings, WorkerSettings
from stream.kafka.topics import ensure_pipeline
from stream.runtime.supervisor import Supervisor
from stream.sync.globalmodel import refuse_other_model_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "work",
        help="run worker processes: score, publish, learn",
        description="Run N worker processes that join the consumer group and split the partitions. "
        "Ctrl-C or SIGTERM: each finishes its batch, flushes, commits and exits.",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="worker processes on this machine (default: %(default)s)",
    )
    cliargs.add_settings(parser, WorkerSettings)
    cliargs.add_settings(parser, RestartSettings, "restart.")
    parser.add_argument(
        "--no-merger",
        dest="with_merger",
        action="store_false",
        help="do not start a merger here (one runs elsewhere: `learnstream merge`)",
    )
    cliargs.add_logging(parser)
    parser.set_defaults(func=run)


def settings_from(args: argparse.Namespace) -> WorkerSettings:
    return cliargs.build(WorkerSettings, args)


def run(args: argparse.Namespace) -> int:
    if args.processes < 1:
        raise SystemExit("learnstream work: error: --processes must be >= 1")
    settings = settings_from(args)
    # Once here, before any process starts: a wrong topic is one clear error,
    # not every worker failing (and being restarted) in turn.
    ensure_pipeline(settings.kafka, settings.topics)
    if settings.merge.enabled:
        refuse_other_model_settings(
            settings.kafka, settings.topics, settings.merge.checkpoint_dir, settings.model
        )
    merger = (
        MergerSettings.for_workers(settings)
        if settings.merge.enabled and args.with_merger
        else None
    )
    restart = cliargs.build(RestartSettings, args, "restart.")
    supervisor = Supervisor(
        settings, args.processes, merger, args.log_level, args.log_format, restart=restart
    )
    return supervisor.run_until_signal()
