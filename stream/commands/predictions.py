"""``learnstream predictions``: tail the predictions topic, with a rolling accuracy."""

from __future__ import annotations

import argparse
import json
import sys
from collections import deque

from stream import cliargs
from stream.events.codec import decode_map
from stream.kafka.reader import records


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predictions",
        help="tail the predictions topic",
        description="Print predictions as they arrive; labeled ones update a rolling accuracy.",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--from-beginning", action="store_true", help="start at the oldest prediction"
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="stop after this many predictions (default: no limit)",
    )
    parser.add_argument(
        "--idle-timeout-s",
        type=float,
        default=None,
        help="stop after this long without a prediction (default: never)",
    )
    parser.add_argument(
        "--window", type=int, default=1000, help="rolling accuracy window (default %(default)s)"
    )
    cliargs.add_kafka(parser)
    cliargs.add_topics(parser, group_id=False)
    cliargs.add_logging(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    window: deque[bool] = deque(maxlen=args.window)
    stream = records(
        cliargs.kafka_settings(args),
        cliargs.topic_settings(args).predictions,
        from_beginning=args.from_beginning,
        idle_timeout_s=args.idle_timeout_s,
    )
    for shown, record in enumerate(stream, start=1):
        prediction, _ = decode_map(record.value)
        if "y" in prediction:
            window.append(prediction["y"] == prediction["y_pred"])
        accuracy = sum(window) / len(window) if window else None
        if args.json:
            line = json.dumps({**prediction, "rolling_accuracy": accuracy})
        else:
            label = f" y={prediction['y']}" if "y" in prediction else ""
            acc = f" acc@{len(window)}={accuracy:.3f}" if accuracy is not None else ""
            line = (
                f"id={prediction['id']} p={prediction['p']:.4f}"
                f" y_pred={prediction['y_pred']}{label}"
                f" v={prediction['model_version']} worker={prediction['worker']}"
                f" p{prediction['partition']}@{prediction['offset']}{acc}"
            )
        print(line, flush=True)
        if args.limit is not None and shown >= args.limit:
            break
    sys.stdout.flush()
    return 0
