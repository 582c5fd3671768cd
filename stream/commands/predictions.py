"""``learnstream predictions``: tail the predictions topic, with a rolling accuracy."""

from __future__ import annotations

import argparse
import json
import sys
from collections import deque

from stream import cliargs
from stream.config import PredictionsSettings
from stream.events.codec import decode_map
from stream.kafka.reader import records


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predictions",
        help="tail the predictions topic",
        description="Print predictions as they arrive; labeled ones update a rolling accuracy.",
    )
    cliargs.add_settings(parser, PredictionsSettings)
    cliargs.add_kafka(parser)
    cliargs.add_topics(parser, group_id=False)
    cliargs.add_logging(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    s = cliargs.build(PredictionsSettings, args)
    window: deque[bool] = deque(maxlen=s.quality_window)
    stream = records(
        cliargs.kafka_settings(args),
        cliargs.topic_settings(args).predictions,
        from_beginning=s.from_beginning,
        idle_timeout_s=s.idle_timeout_s,
    )
    for shown, record in enumerate(stream, start=1):
        prediction, _ = decode_map(record.value)
        if "y" in prediction:
            window.append(prediction["y"] == prediction["y_pred"])
        accuracy = sum(window) / len(window) if window else None
        if s.json:
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
        if s.limit is not None and shown >= s.limit:
            break
    sys.stdout.flush()
    return 0
