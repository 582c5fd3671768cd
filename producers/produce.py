"""``learnstream produce``: events from a synthetic stream, a river dataset or a file."""

from __future__ import annotations

import argparse
from pathlib import Path

from stream import cliargs
from stream.events.sources import DATASETS, SyntheticStream, file_rows, river_dataset
from stream.kafka.topics import ensure_pipeline
from stream.tools.produce import ProduceSettings, produce


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "produce",
        help="send events to the features topic",
        description="Send events to the features topic (msgpack or JSON, keyed by id).",
    )
    source = parser.add_argument_group("source (pick one)")
    choice = source.add_mutually_exclusive_group()
    choice.add_argument(
        "--synthetic", action="store_true", help="logistic data from a known model (default)"
    )
    choice.add_argument(
        "--dataset", choices=DATASETS, help="a dataset bundled with river (default: unset)"
    )
    choice.add_argument(
        "--file", type=Path, help="a .csv (with header) or .jsonl file (default: unset)"
    )
    source.add_argument(
        "--features",
        type=int,
        default=10,
        help="synthetic: features per event (default %(default)s)",
    )
    source.add_argument(
        "--seed", type=int, default=42, help="synthetic: random seed (default %(default)s)"
    )
    source.add_argument(
        "--drift-at",
        type=int,
        default=None,
        help="synthetic: event index where the true model changes (default: no drift)",
    )
    source.add_argument(
        "--label-column",
        default="y",
        help="file: label column, empty cell = unlabeled (default %(default)s)",
    )
    source.add_argument("--id-column", default=None, help="file: id column (default: row number)")
    source.add_argument(
        "--passes",
        type=int,
        default=1,
        help="dataset/file: replay this many times (default: %(default)s)",
    )
    out = parser.add_argument_group("output")
    out.add_argument(
        "--rate", type=float, default=None, help="events per second (default: as fast as possible)"
    )
    out.add_argument(
        "--limit", type=int, default=None, help="stop after this many events (default: no limit)"
    )
    out.add_argument(
        "--key", choices=["id", "none"], default="id", help="record key (default %(default)s)"
    )
    out.add_argument(
        "--encoding",
        choices=["msgpack", "json"],
        default="msgpack",
        help="event encoding (default: %(default)s)",
    )
    out.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bar on stderr",
    )
    cliargs.add_kafka(parser)
    cliargs.add_client(parser)
    cliargs.add_topics(parser, group_id=False)
    cliargs.add_logging(parser)
    parser.set_defaults(func=run)


def _rows(args: argparse.Namespace):
    if args.dataset:
        return _passes(lambda: river_dataset(args.dataset), args.passes)
    if args.file:
        if not args.file.exists():
            raise SystemExit(f"learnstream produce: error: {args.file} does not exist")
        return _passes(
            lambda: file_rows(
                args.file, label_column=args.label_column or None, id_column=args.id_column
            ),
            args.passes,
        )
    if args.limit is None:
        raise SystemExit(
            "learnstream produce: error: the synthetic stream is endless; give --limit"
        )
    return iter(SyntheticStream(n_features=args.features, seed=args.seed, drift_at=args.drift_at))


def _passes(make, passes: int):
    if passes == 1:
        return make()
    return ((f"{p}-{event_id}", x, y) for p in range(passes) for event_id, x, y in make())


def run(args: argparse.Namespace) -> int:
    # Before the first record: a broker that auto-creates topics would otherwise
    # pick the partition count, and the pipeline's other topics would be left
    # to whoever touches them first.
    ensure_pipeline(cliargs.kafka_settings(args), cliargs.topic_settings(args))
    settings = ProduceSettings(
        kafka=cliargs.kafka_settings(args),
        topic=cliargs.topic_settings(args).features,
        encoding=args.encoding,
        rate=args.rate,
        limit=args.limit,
        key=args.key,
        client=args.client,
    )
    result = produce(_rows(args), settings, progress=args.progress)
    print(
        f"sent {result.sent} events to {settings.topic} "
        f"in {result.elapsed_s:.2f}s ({result.rate:,.0f}/s)"
    )
    return 0
