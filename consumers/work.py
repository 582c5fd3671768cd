"""``learnstream work``: N worker processes in the consumer group."""

from __future__ import annotations

import argparse

from stream import cliargs
from stream.config import EventLimits, MergerSettings, RestartSettings, WorkerSettings
from stream.runtime.supervisor import Supervisor


def register(subparsers: argparse._SubParsersAction) -> None:
    defaults = WorkerSettings()
    limits = defaults.limits
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
        "--max-event-bytes",
        type=int,
        default=limits.max_event_bytes,
        help="larger records are dead-lettered as oversized (default %(default)s)",
    )
    parser.add_argument(
        "--max-depth",
        type=int,
        default=limits.max_depth,
        help="deeper-nested records are dead-lettered as too_deep; the event and its x "
        "map are 2 (default %(default)s)",
    )
    parser.add_argument(
        "--max-features",
        type=int,
        default=limits.max_features,
        help="events with more features are dead-lettered as too_many_features "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--max-feature-name-chars",
        type=int,
        default=limits.max_feature_name_chars,
        help="longer feature names are dead-lettered as feature_name_too_long "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--max-id-chars",
        type=int,
        default=limits.max_id_chars,
        help="longer string ids are dead-lettered as id_too_long (default %(default)s)",
    )
    parser.add_argument(
        "--max-abs-feature",
        type=float,
        default=limits.max_abs_feature,
        help="features beyond +-this are dead-lettered as feature_out_of_range, not clipped "
        "(default %(default)s; at most 1e150)",
    )
    parser.add_argument(
        "--max-abs-weight",
        type=float,
        default=defaults.max_abs_weight,
        help="a learning step that would put a weight beyond +-this (or make the model "
        "non-finite) is refused; the event is still predicted (default %(default)s)",
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
    restart = RestartSettings()
    supervise = parser.add_argument_group("restarts")
    supervise.add_argument(
        "--restart-delay-s",
        type=float,
        default=restart.delay_s,
        help="wait before restarting a crashed process, doubled per crash in a row "
        "(default %(default)s)",
    )
    supervise.add_argument(
        "--restart-max-delay-s",
        type=float,
        default=restart.max_delay_s,
        help="the longest wait between restarts (default %(default)s)",
    )
    supervise.add_argument(
        "--max-restarts",
        type=int,
        default=restart.max_restarts,
        help="crashes in a row (each within --restart-stable-after-s of its start) before "
        "giving up with an error (default %(default)s)",
    )
    supervise.add_argument(
        "--restart-stable-after-s",
        type=float,
        default=restart.stable_after_s,
        help="a process that ran this long has recovered: its crash count restarts "
        "(default %(default)s)",
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
        output_encoding=args.output_encoding,
        limits=EventLimits(
            max_event_bytes=args.max_event_bytes,
            max_depth=args.max_depth,
            max_features=args.max_features,
            max_feature_name_chars=args.max_feature_name_chars,
            max_id_chars=args.max_id_chars,
            max_abs_feature=args.max_abs_feature,
        ),
        max_abs_weight=args.max_abs_weight,
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
    restart = RestartSettings(
        delay_s=args.restart_delay_s,
        max_delay_s=args.restart_max_delay_s,
        max_restarts=args.max_restarts,
        stable_after_s=args.restart_stable_after_s,
    )
    supervisor = Supervisor(
        settings, args.processes, merger, args.log_level, args.log_format, restart=restart
    )
    return supervisor.run_until_signal()
