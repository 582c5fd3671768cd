"""``learnstream work``: N worker processes in the consumer group."""

from __future__ import annotations

import argparse

from stream import cliargs
from stream.config import MergerSettings, WorkerSettings
from stream.runtime.supervisor import Supervisor


def register(subparsers: argparse._SubParsersAction) -> None:
    defaults = WorkerSettings()
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
        help="worker processes on this machine (default %(default)s)",
    )
    parser.add_argument(
        "--output-encoding",
        choices=["same", "msgpack", "json"],
        default=defaults.output_encoding,
        help="predictions encoding; 'same' mirrors each event's (default %(default)s)",
    )
    parser.add_argument(
        "--model-impl",
        choices=["auto", "kernel", "river"],
        default=defaults.model_impl,
        help="auto: the compiled kernel (bit-identical to river, much faster) where it covers "
        "the model settings, else river; kernel: fail if it does not (default %(default)s)",
    )
    parser.add_argument(
        "--max-event-bytes",
        type=int,
        default=defaults.max_event_bytes,
        help="larger records are dead-lettered (default %(default)s)",
    )
    parser.add_argument(
        "--max-poll-records",
        type=int,
        default=defaults.max_poll_records,
        help="batch size (default %(default)s)",
    )
    parser.add_argument(
        "--max-poll-interval-ms",
        type=int,
        default=defaults.max_poll_interval_ms,
        help="group rebalance timeout; the embedded broker holds each join this long "
        "(default %(default)s)",
    )
    parser.add_argument("--session-timeout-ms", type=int, default=defaults.session_timeout_ms)
    parser.add_argument("--heartbeat-interval-ms", type=int, default=defaults.heartbeat_interval_ms)
    parser.add_argument(
        "--from",
        dest="auto_offset_reset",
        choices=["earliest", "latest"],
        default="earliest",
        help="where a new group starts reading",
    )
    cliargs.add_kafka(parser)
    cliargs.add_topics(parser)
    cliargs.add_model(parser)
    cliargs.add_merge(parser)
    watch = parser.add_argument_group("watching")
    watch.add_argument(
        "--metrics-port",
        type=int,
        default=9400,
        help="Prometheus endpoint of worker i on PORT+i, of the merger on PORT+processes; "
        "0 turns metrics off (default %(default)s)",
    )
    watch.add_argument(
        "--quality-window",
        type=int,
        default=1000,
        help="labeled events in the rolling accuracy/log loss/ROC AUC (default %(default)s)",
    )
    watch.add_argument("--drift-detector", choices=["adwin", "page-hinkley"], default="adwin")
    watch.add_argument(
        "--on-drift",
        choices=["none", "reset"],
        default="none",
        help="reset: start the worker's model afresh when drift is detected (needs --no-merge)",
    )
    parser.add_argument(
        "--no-merger",
        dest="with_merger",
        action="store_false",
        help="do not start a merger here (one runs elsewhere: `learnstream merge`)",
    )
    cliargs.add_logging(parser)
    parser.set_defaults(func=run)


def settings_from(args: argparse.Namespace) -> WorkerSettings:
    return WorkerSettings(
        kafka=cliargs.kafka_settings(args),
        topics=cliargs.topic_settings(args),
        model=cliargs.model_settings(args),
        merge=cliargs.merge_settings(args),
        client=args.client,
        model_impl=args.model_impl,
        output_encoding=args.output_encoding,
        max_event_bytes=args.max_event_bytes,
        max_poll_records=args.max_poll_records,
        max_poll_interval_ms=args.max_poll_interval_ms,
        session_timeout_ms=args.session_timeout_ms,
        heartbeat_interval_ms=args.heartbeat_interval_ms,
        auto_offset_reset=args.auto_offset_reset,
        metrics_port=args.metrics_port,
        quality_window=args.quality_window,
        drift_detector=args.drift_detector,
        on_drift=args.on_drift,
    )


def run(args: argparse.Namespace) -> int:
    if args.processes < 1:
        raise SystemExit("learnstream work: error: --processes must be >= 1")
    settings = settings_from(args)
    merger = (
        MergerSettings.for_workers(settings)
        if settings.merge.enabled and args.with_merger
        else None
    )
    supervisor = Supervisor(settings, args.processes, merger, args.log_level, args.log_format)
    return supervisor.run_until_signal()
