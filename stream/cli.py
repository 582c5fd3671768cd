"""``learnstream``: the command line. ``main(argv) -> exit code``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path

from consumers import inspect, merge, model, predictions, serve, work
from producers import produce
from stream import __version__, cliargs
from stream.errors import StreamError
from stream.kafka.embedded import EmbeddedBroker
from stream.kafka.topics import ensure_pipeline
from stream.observe.logs import configure

logger = logging.getLogger(__name__)


def _broker(args: argparse.Namespace) -> int:
    """Run until the broker exits or SIGTERM/Ctrl-C (then stop it and return 0).

    The stop happens here, never in a signal handler: the handler runs on top
    of the main thread's ``Popen.wait``, which holds the lock that ``stop()``'s
    own wait needs (it hung until SIGKILL). SIGTERM raises KeyboardInterrupt
    (see :func:`_sigterm_as_interrupt`), which unwinds that wait first.
    """
    broker = EmbeddedBroker(host=args.host, port=args.port, log_path=args.log_file)
    try:
        broker.start()
        print(f"learnstream broker ready at {broker.bootstrap_servers}", flush=True)
        return broker.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        # A second SIGTERM must not interrupt the stop and orphan the broker.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        broker.stop()


def _topics_create(args: argparse.Namespace) -> int:
    topics = cliargs.topic_settings(args)
    counts = ensure_pipeline(
        cliargs.kafka_settings(args), topics, args.partitions, args.replication_factor
    )
    for name, count in sorted(counts.items()):
        print(f"{name}\tpartitions={count}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from stream.tools.demo import DemoSettings, run_demo

    summary = run_demo(
        DemoSettings(
            workers=args.workers,
            partitions=args.partitions,
            dataset=args.dataset,
            passes=args.passes,
            bootstrap=args.bootstrap,
            model=cliargs.model_settings(args),
            topics=cliargs.topic_settings(args),
            merge=replace(
                DemoSettings().merge, enabled=args.merge, checkpoint_dir=args.checkpoint_dir
            ),
        )
    )
    print(summary.format())
    return 0


def _csv(kind):
    return lambda text: tuple(kind(item) for item in text.split(",") if item)


def _bench(args: argparse.Namespace) -> int:
    if args.serve:
        return _bench_serve(args)
    if args.categorical:
        return _bench_categorical(args)
    from stream.tools.bench import BenchSettings, run_bench

    result = run_bench(
        BenchSettings(
            bootstrap=args.bootstrap,
            clients=args.clients,
            models=args.models,
            features=args.features,
            encoding=args.encoding,
            events=args.events,
            scale_workers=args.scale_workers,
            latency_fractions=args.latency_fractions,
            latency_duration_s=args.latency_duration_s,
            merge_cost=args.merge_cost,
        ),
        out=args.out,
    )
    print(result.format())
    if args.out:
        print(f"results written to {args.out}")
    return 0


def _bench_categorical(args: argparse.Namespace) -> int:
    from stream.tools import featurebench

    out = (
        args.out
        if args.out != Path("bench-results/bench.json")
        else Path("bench-results/categorical.json")
    )
    argv = ["--events", str(args.events // 2), "--growth-events", str(2 * args.events)]
    return featurebench.main([*argv, "--out", str(out)])


def _bench_serve(args: argparse.Namespace) -> int:
    from stream.tools.servebench import ServeBenchSettings, run_serve_bench

    out = (
        args.out
        if args.out != Path("bench-results/bench.json")
        else Path("bench-results/serve.json")
    )
    result = run_serve_bench(
        ServeBenchSettings(bootstrap=args.bootstrap, duration_s=args.serve_duration_s), out=out
    )
    print(result.format())
    print(f"results written to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="learnstream",
        description="Streaming online learning on Kafka: score every event, learn from labels.",
    )
    parser.add_argument("--version", action="version", version=f"learnstream {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("broker", help="run the embedded broker (memory only) in the foreground")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument("--port", type=int, default=9092, help="Kafka port (default: %(default)s)")
    p.add_argument(
        "--log-file", type=Path, default=None, help="the broker's own log (default: stderr)"
    )
    cliargs.add_logging(p)
    p.set_defaults(func=_broker)

    p = sub.add_parser("topics", help="manage topics")
    topics_sub = p.add_subparsers(dest="topics_command", required=True, metavar="ACTION")
    c = topics_sub.add_parser(
        "create", help="create the features, predictions and dead-letter topics"
    )
    c.add_argument(
        "--partitions",
        type=int,
        default=4,
        help="features/predictions partitions (default %(default)s)",
    )
    c.add_argument(
        "--replication-factor",
        type=int,
        default=1,
        help="copies of each partition; 3 on a production cluster (default: %(default)s)",
    )
    cliargs.add_kafka(c)
    cliargs.add_topics(c, group_id=False)
    cliargs.add_logging(c)
    c.set_defaults(func=_topics_create)

    produce.register(sub)
    work.register(sub)
    predictions.register(sub)
    merge.register(sub)
    model.register(sub)
    serve.register(sub)
    inspect.register(sub)

    p = sub.add_parser(
        "demo",
        help="everything in one command on the embedded broker, then a summary",
        description="Start the embedded broker, create topics, start workers, replay a dataset, "
        "wait for every prediction, print a summary and stop.",
    )
    p.add_argument("--workers", type=int, default=2, help="worker processes (default: %(default)s)")
    p.add_argument(
        "--partitions", type=int, default=4, help="features partitions (default: %(default)s)"
    )
    p.add_argument(
        "--dataset",
        default="phishing",
        choices=["phishing", "bananas"],
        help="river dataset to replay (default: %(default)s)",
    )
    p.add_argument(
        "--passes",
        type=int,
        default=1,
        help="replay the dataset this many times (default: %(default)s)",
    )
    p.add_argument(
        "--bootstrap",
        default=None,
        help="use this broker instead of the embedded one (default: embedded)",
    )
    p.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=None,
        help="keep global model checkpoints here (default: a new temporary directory)",
    )
    p.add_argument("--no-merge", dest="merge", action="store_false", help="workers do not merge")
    cliargs.add_topics(p)
    cliargs.add_model(p)
    cliargs.add_logging(p)
    p.set_defaults(func=_demo)
    p = sub.add_parser(
        "bench",
        help="measure throughput, latency and their ceilings",
        description="Preload topics, measure workers draining them against the transport-only "
        "and model-only ceilings, then latency at fixed rates. Prints a table, writes JSON.",
    )
    p.add_argument("--bootstrap", default=None, help="broker to use (default: embedded)")
    p.add_argument(
        "--clients",
        type=_csv(str),
        default=("confluent", "kafka-python"),
        help="comma-separated: confluent,kafka-python (default both)",
    )
    p.add_argument(
        "--models",
        type=_csv(str),
        default=("scaler+lr",),
        help="comma-separated: lr,scaler+lr,ftrl (default scaler+lr)",
    )
    p.add_argument(
        "--features",
        type=_csv(int),
        default=(10, 50),
        help="comma-separated features per event, e.g. 10,50,200 (default 10,50)",
    )
    p.add_argument(
        "--encoding",
        choices=["msgpack", "json"],
        default="msgpack",
        help="event encoding (default: %(default)s)",
    )
    p.add_argument(
        "--events", type=int, default=100_000, help="events per drain (default %(default)s)"
    )
    p.add_argument(
        "--scale-workers",
        type=int,
        default=2,
        help="workers (and partitions) of the scaling run; 1 skips it (default 2)",
    )
    p.add_argument(
        "--latency-fractions",
        type=_csv(float),
        default=(0.5,),
        help="latency runs at these fractions of the measured maximum rate (default: 0.5)",
    )
    p.add_argument(
        "--latency-duration-s",
        type=float,
        default=5.0,
        help="length of each latency run (default: %(default)s)",
    )
    p.add_argument(
        "--no-merge-cost",
        dest="merge_cost",
        action="store_false",
        help="skip measuring the cost of merging",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("bench-results/bench.json"),
        help="results as JSON (default: %(default)s)",
    )
    p.add_argument(
        "--categorical",
        action="store_true",
        help="no broker: the batch decoder and the kernel on numeric, categorical and hashed "
        "events (events/s), and per quarter of a stream whose distinct features grow to "
        "10 x 2 x --events; writes bench-results/categorical.json",
    )
    p.add_argument(
        "--serve",
        action="store_true",
        help="benchmark `learnstream serve` instead, with wrk and hey (installed with apt-get "
        "when missing and run as root): requests/s, latency, batches, 100 hot swaps under load; "
        "writes bench-results/serve.json",
    )
    p.add_argument(
        "--serve-duration-s",
        type=float,
        default=10.0,
        help="length of each serve load phase (default: %(default)s)",
    )
    cliargs.add_logging(p)
    p.set_defaults(func=_bench)

    p = sub.add_parser(
        "settings",
        help="every setting of the worker and merger: flag, env var, default, meaning",
        description="Print the configuration table (Markdown), generated from the settings "
        "declarations; docs/configuration.md's table is this output.",
    )
    p.set_defaults(func=_settings)
    return parser


def _settings(args: argparse.Namespace) -> int:
    print(cliargs.settings_table(), end="")
    return 0


def _sigterm_as_interrupt() -> None:
    """SIGTERM (what ``docker stop``, systemd and ``kill`` send) ends a command the
    way Ctrl-C does: KeyboardInterrupt unwinds it through its ``finally`` clauses
    (close the consumer, flush, stop the broker) and :func:`main` returns 0.

    Commands with a loop of their own (``work``, ``merge``) replace it with a
    handler that sets their stop flag; uvicorn (``serve``) replaces it while it
    runs, then restores it and raises the signal again after its graceful
    shutdown, which lands here.
    """
    if threading.current_thread() is threading.main_thread():  # else signal() refuses
        signal.signal(signal.SIGTERM, signal.default_int_handler)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure(getattr(args, "log_level", "INFO"), getattr(args, "log_format", "text"))
    _sigterm_as_interrupt()
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 0
    except StreamError as exc:
        logger.error("%s", exc)
        print(f"learnstream {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
