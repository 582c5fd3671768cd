"""Send events to learnstream from your own program: a plain Kafka producer.

No learnstream import: any client in any language can do the same. An event
is a JSON (or msgpack) map ``{"id", "x", "y"?, "ts"?}`` keyed by its id (the
contract: docs/contracts.md); here ``x`` mixes numbers and a categorical
value, and half the events carry their label.

    python producers/send_events.py --bootstrap localhost:9092 --topic features --count 1000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys

from confluent_kafka import Producer

SITES = ("news", "sports", "shop", "video")


def events(count: int, seed: int):
    rng = random.Random(seed)
    for i in range(count):
        x = {"age": rng.uniform(18, 80), "visits": rng.randint(0, 40), "site": rng.choice(SITES)}
        score = 0.04 * (x["age"] - 45) + 0.08 * (x["visits"] - 20) + (x["site"] == "shop")
        event = {"id": f"evt-{seed}-{i}", "x": x}
        if i % 2 == 0:
            event["y"] = int(rng.random() < 1 / (1 + math.exp(-score)))
        yield event


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092")
    )
    parser.add_argument("--topic", default="features")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    failed = []
    producer = Producer({"bootstrap.servers": args.bootstrap, "enable.idempotence": True})

    def delivered(error, _message) -> None:
        if error is not None:
            failed.append(error)

    for event in events(args.count, args.seed):
        producer.produce(
            args.topic, json.dumps(event).encode(), event["id"].encode(), on_delivery=delivered
        )
        producer.poll(0)
    left = producer.flush(30)
    if failed or left:
        print(f"{len(failed) + left} events not delivered", file=sys.stderr)
        return 1
    print(f"sent {args.count} events to {args.topic}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
