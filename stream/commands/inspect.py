"""``learnstream status`` and ``learnstream report``: watch the pipeline from outside."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from stream import cliargs
from stream.config import ReportSettings, StatusSettings


def register(subparsers: argparse._SubParsersAction) -> None:
    status = subparsers.add_parser(
        "status",
        help="group, lag per partition, global model, recent quality",
        description="The pipeline at a glance, from Kafka and the checkpoints alone "
        "(works while it runs and after it stopped).",
    )
    cliargs.add_settings(status, StatusSettings)
    cliargs.add_kafka(status)
    cliargs.add_topics(status)
    cliargs.add_checkpoint_dir(status)
    cliargs.add_logging(status)
    status.set_defaults(func=run_status)

    report = subparsers.add_parser(
        "report",
        help="plots of quality, throughput and latency over time (HTML + PNG)",
        description="Read the predictions topic and write an HTML page with the learning "
        "curve (and where drift hit), throughput and latency; each plot also as a PNG.",
    )
    cliargs.add_settings(report, ReportSettings)
    cliargs.add_kafka(report)
    cliargs.add_topics(report, group_id=False)
    cliargs.add_logging(report)
    report.set_defaults(func=run_report)


def run_status(args: argparse.Namespace) -> int:
    from stream.observe.status import collect

    s = cliargs.build(StatusSettings, args)
    status = collect(
        cliargs.kafka_settings(args),
        cliargs.topic_settings(args),
        cliargs.checkpoint_dir(args),
        s.recent,
    )
    if s.json:
        print(json.dumps({**asdict(status), "total_lag": status.total_lag}, default=str))
    else:
        print(status.format())
    return 0


def run_report(args: argparse.Namespace) -> int:
    from stream.observe.report import report

    s = cliargs.build(ReportSettings, args)
    result = report(
        cliargs.kafka_settings(args),
        cliargs.topic_settings(args),
        s.out,
        s.limit,
        s.quality_window,
    )
    print(f"wrote {result.html_path} ({result.html_path.stat().st_size} bytes)")
    for png in result.pngs:
        print(f"wrote {png} ({png.stat().st_size} bytes)")
    return 0
