"""``learnstream``: the command line. ``main(argv) -> exit code``."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

from stream import __version__, cliargs
from stream.commands import inspect, merge, model, predictions, produce, serve, work
from stream.config import BenchSettings, BrokerSettings, DemoSettings, TopicsCreateSettings
from stream.errors import ConfigError, StreamError
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
    settings = cliargs.build(BrokerSettings, args)
    broker = EmbeddedBroker(host=settings.host, port=settings.port, log_path=settings.log_file)
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
    sizes = cliargs.build(TopicsCreateSettings, args)
    counts = ensure_pipeline(
        cliargs.kafka_settings(args), topics, sizes.partitions, sizes.replication_factor
    )
    for name, count in sorted(counts.items()):
        print(f"{name}\tpartitions={count}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from stream.tools.demo import run_demo, run_live_demo

    settings = cliargs.build(DemoSettings, args)
    if settings.serve:
        run_live_demo(settings, announce=lambda line: print(line, flush=True))
        return 0
    summary = run_demo(settings)
    print(summary.format())
    return 0


def _bench(args: argparse.Namespace) -> int:
    settings = cliargs.build(BenchSettings, args)
    if settings.serve:
        return _bench_serve(settings)
    if settings.categorical:
        return _bench_categorical(settings)
    if settings.freshness:
        return _bench_freshness(settings)
    from stream.tools.bench import run_bench

    out = settings.out or Path("bench-results/bench.json")
    result = run_bench(settings, out=out)
    print(result.format())
    print(f"results written to {out}")
    return 0


def _bench_categorical(settings: BenchSettings) -> int:
    from stream.tools import featurebench

    out = settings.out or Path("bench-results/categorical.json")
    argv = ["--events", str(settings.events // 2), "--growth-events", str(2 * settings.events)]
    argv += ["--quality-events", str(2 * settings.events)]
    # 1M distinct features at the default --events (issue 17.4's yardstick).
    argv += ["--sync-features", str(min(1_000_000, 10 * settings.events))]
    return featurebench.main([*argv, "--out", str(out)])


def _bench_freshness(settings: BenchSettings) -> int:
    from stream.tools import freshbench

    out = settings.out or Path("bench-results/freshness.json")
    broker = ["--bootstrap", settings.bootstrap] if settings.bootstrap else []
    return freshbench.main([*broker, "--out", str(out)])


def _bench_serve(settings: BenchSettings) -> int:
    from stream.tools.servebench import ServeBenchSettings, run_serve_bench

    out = settings.out or Path("bench-results/serve.json")
    result = run_serve_bench(
        ServeBenchSettings(bootstrap=settings.bootstrap, duration_s=settings.serve_duration_s),
        out=out,
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
    cliargs.add_settings(p, BrokerSettings)
    cliargs.add_logging(p)
    p.set_defaults(func=_broker)

    p = sub.add_parser("topics", help="manage topics")
    topics_sub = p.add_subparsers(dest="topics_command", required=True, metavar="ACTION")
    c = topics_sub.add_parser(
        "create", help="create the features, predictions and dead-letter topics"
    )
    cliargs.add_settings(c, TopicsCreateSettings)
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
        "wait for every prediction, print a summary and stop. With --serve: keep replaying it "
        "at --rate and run serve beside the pipeline, its dashboard's address printed, until "
        "Ctrl-C or SIGTERM.",
    )
    cliargs.add_settings(p, DemoSettings)
    cliargs.add_logging(p)
    p.set_defaults(func=_demo)
    p = sub.add_parser(
        "bench",
        help="measure throughput, latency and their ceilings",
        description="Preload topics, measure workers draining them against the transport-only "
        "and model-only ceilings, then latency at fixed rates. Prints a table, writes JSON.",
    )
    cliargs.add_settings(p, BenchSettings)
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


def parse_args(
    argv: list[str] | None = None, environ: Mapping[str, str] | None = None
) -> argparse.Namespace:
    """The command line, then the environment for every setting it did not give.

    The environment is read here, after the parser is built and the command
    line parsed (``--help`` and ``--version`` never read it), and checked as the
    flags are: a bad value exits 2 with one line naming the variable and what
    it accepts.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cliargs.apply_environment(parser, args, os.environ if environ is None else environ)
    except ConfigError as exc:
        command = " ".join(
            str(getattr(args, name))
            for name in ("command", "topics_command", "model_command")
            if getattr(args, name, None)
        )
        print(f"learnstream {command}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return args


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = parse_args(argv, environ)
    log = cliargs.log_settings(args)
    configure(log.level, log.format)
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
