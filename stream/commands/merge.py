"""``learnstream merge``: the merger (also started by ``work`` and ``demo``)."""

from __future__ import annotations

import argparse
import logging
import signal

from stream import cliargs
from stream.config import MergerSettings
from stream.kafka.topics import ensure_internal
from stream.runtime.merger import Merger
from stream.runtime.supervisor import merger_name
from stream.sync.globalmodel import refuse_other_model_settings

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "merge",
        help="run a merger: combine contributions into the global model, checkpoint it",
        description="Run a merger. Several may run (on several machines): one merges, "
        "the others stand by in the merger group and take over if it dies.",
    )
    cliargs.add_settings(parser, MergerSettings, skip=cliargs.MERGER_SKIP)
    cliargs.add_logging(parser)
    parser.set_defaults(func=run)


def settings_from(args: argparse.Namespace) -> MergerSettings:
    return cliargs.build(MergerSettings, args)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    ensure_internal(settings.kafka, settings.topics)
    refuse_other_model_settings(
        settings.kafka, settings.topics, settings.merge.checkpoint_dir, settings.model
    )
    name = merger_name()
    merger = Merger(settings, name)

    def _stop(signum: int, _frame: object) -> None:
        logger.info("stop requested merger=%s signal=%s", name, signal.Signals(signum).name)
        merger.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    merger.run()
    return 0
