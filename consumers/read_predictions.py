"""Read learnstream's predictions from your own program: a plain Kafka consumer.

No learnstream import: a prediction is a JSON or msgpack map ``{"id", "p",
"y_pred", "y"?, "model_version", ...}`` keyed like its event (the contract:
docs/contracts.md). Prints one line per prediction and, at the end, the
accuracy over the labeled ones.

    python consumers/read_predictions.py --bootstrap localhost:9092 --topic predictions --limit 1000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import msgpack
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition


def decode(value: bytes) -> dict:
    """The contract's two encodings: a JSON object starts with ``{``."""
    return json.loads(value) if value[:1] == b"{" else msgpack.unpackb(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092")
    )
    parser.add_argument("--topic", default="predictions")
    parser.add_argument(
        "--group-id", default=None, help="read as this consumer group; unset: every partition"
    )
    parser.add_argument("--limit", type=int, default=None, help="stop after this many")
    parser.add_argument("--idle-s", type=float, default=30.0, help="stop after this long idle")
    args = parser.parse_args(argv)

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group_id or "read-predictions",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": args.group_id is not None,
        }
    )
    if args.group_id is not None:
        consumer.subscribe([args.topic])
    else:  # no group to join: every partition, from its beginning
        partitions = consumer.list_topics(args.topic, timeout=30).topics[args.topic].partitions
        consumer.assign([TopicPartition(args.topic, p, OFFSET_BEGINNING) for p in partitions])
    seen = labeled = correct = 0
    last = time.monotonic()
    try:
        while args.limit is None or seen < args.limit:
            message = consumer.poll(1.0)
            if message is None or message.error() is not None:
                if time.monotonic() - last > args.idle_s:
                    break
                continue
            last = time.monotonic()
            prediction = decode(message.value())
            seen += 1
            print(f"{prediction['id']} p={prediction['p']:.4f} v{prediction['model_version']}")
            if prediction.get("y") is not None:
                labeled += 1
                correct += int(prediction["y_pred"] == int(prediction["y"]))
    finally:
        consumer.close()
    accuracy = f"{correct / labeled:.4f}" if labeled else "-"
    print(f"read {seen} predictions, accuracy {accuracy} over {labeled} labeled", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
