"""``learnstream produce``: events from a synthetic stream, a river dataset or a file."""

from __future__ import annotations

import argparse

from stream import cliargs
from stream.config import ProduceCommand, SourceSettings
from stream.events.sources import SyntheticStream, dataset_rows, file_rows
from stream.kafka.topics import ensure_pipeline
from stream.tools.produce import produce


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "produce",
        help="send events to the features topic",
        description="Send events to the features topic (msgpack or JSON, keyed by id).",
    )
    cliargs.add_settings(parser, ProduceCommand, skip=("topics.group_id",))
    cliargs.add_logging(parser)
    parser.set_defaults(func=run)


def _rows(source: SourceSettings, limit: int | None):
    if source.dataset:
        dataset = source.dataset
        return _passes(lambda: dataset_rows(dataset), source.passes)
    if source.file:
        path = source.file
        if not path.exists():
            raise SystemExit(f"learnstream produce: error: {path} does not exist")
        return _passes(
            lambda: file_rows(
                path, label_column=source.label_column or None, id_column=source.id_column
            ),
            source.passes,
        )
    if limit is None:
        raise SystemExit(
            "learnstream produce: error: the synthetic stream is endless; give --limit"
        )
    return iter(
        SyntheticStream(n_features=source.features, seed=source.seed, drift_at=source.drift_at)
    )


def _passes(make, passes: int):
    if passes == 1:
        return make()
    return ((f"{p}-{event_id}", x, y) for p in range(passes) for event_id, x, y in make())


def run(args: argparse.Namespace) -> int:
    command = cliargs.build(ProduceCommand, args)
    settings = command.produce
    # Before the first record: a broker that auto-creates topics would otherwise
    # pick the partition count, and the pipeline's other topics would be left
    # to whoever touches them first.
    ensure_pipeline(settings.kafka, command.topics)
    result = produce(_rows(command.source, settings.limit), settings, progress=command.progress)
    print(
        f"sent {result.sent} events to {settings.topic} "
        f"in {result.elapsed_s:.2f}s ({result.rate:,.0f}/s)"
    )
    return 0
