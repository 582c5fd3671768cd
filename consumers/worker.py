"""Run learnstream workers from your own Python program (``stream.run_workers``).

The same as ``learnstream work --processes 2``: worker processes join the
consumer group, score and publish every event, learn from labeled ones, and a
merger keeps the global model. SIGTERM or Ctrl-C stops them cleanly.

    python consumers/worker.py --bootstrap localhost:9092 --topic features
"""

from __future__ import annotations

import argparse
import os
import sys

import stream
from stream.config import KafkaSettings, TopicSettings, WorkerSettings, WorkSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092")
    )
    parser.add_argument("--topic", default="features")
    parser.add_argument("--predictions-topic", default="predictions")
    parser.add_argument("--group-id", default="learnstream")
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args(argv)
    worker = WorkerSettings(
        kafka=KafkaSettings(bootstrap_servers=args.bootstrap),
        topics=TopicSettings(
            features=args.topic, predictions=args.predictions_topic, group_id=args.group_id
        ),
    )
    return stream.run_workers(WorkSettings(worker=worker, processes=args.processes))


if __name__ == "__main__":
    sys.exit(main())
