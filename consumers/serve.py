"""``learnstream serve``: the live global model over HTTP (Starlette on uvicorn)."""

from __future__ import annotations

import argparse
import logging
import os

from stream import cliargs
from stream.config import ENV_SERVE_TOKEN, ServeSettings

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    defaults = ServeSettings()
    parser = subparsers.add_parser(
        "serve",
        help="serve the live global model over HTTP (predict, model, events, metrics, page)",
        description="Answer POST /v1/predict with the newest global model: it starts from the "
        "newest checkpoint and swaps in each version published on the model topic. "
        "README, 'Serving', documents the API.",
    )
    http = parser.add_argument_group("HTTP")
    http.add_argument(
        "--host",
        default=defaults.host,
        help="address to bind; anything but loopback exposes the API (default %(default)s)",
    )
    http.add_argument("--port", type=int, default=defaults.port, help="(default %(default)s)")
    http.add_argument(
        "--token",
        default=os.environ.get(ENV_SERVE_TOKEN),
        help=f"bearer token required on every endpoint but /healthz and /metrics "
        f"(env {ENV_SERVE_TOKEN}; default: none)",
    )
    http.add_argument(
        "--no-events",
        dest="events_enabled",
        action="store_false",
        help="switch POST /v1/events off (404)",
    )
    http.add_argument(
        "--max-body-bytes",
        type=int,
        default=defaults.max_body_bytes,
        help="larger request bodies get 413 (default %(default)s)",
    )
    http.add_argument(
        "--max-batch-events",
        type=int,
        default=defaults.max_batch_events,
        help="longer arrays of events get 413 (default %(default)s)",
    )
    http.add_argument(
        "--max-event-bytes",
        type=int,
        default=defaults.max_event_bytes,
        help="one event larger than this is invalid (422 oversized), as for the worker "
        "(default %(default)s)",
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--quantize",
        choices=["none", "float16", "int8"],
        default=defaults.quantize,
        help="serve the weights rounded as the quantized export stores them (default %(default)s)",
    )
    model.add_argument(
        "--offline",
        action="store_true",
        help="no broker: serve the newest checkpoint, re-reading the directory every "
        "--checkpoint-poll-s",
    )
    model.add_argument(
        "--checkpoint-poll-s", type=float, default=defaults.checkpoint_poll_s, help="(offline)"
    )
    model.add_argument(
        "--quality-window",
        type=int,
        default=defaults.quality_window,
        help="labeled predictions in the live page's rolling quality (default %(default)s)",
    )
    cliargs.add_checkpoint_dir(model)
    cliargs.add_kafka(parser)
    cliargs.add_topics(parser, group_id=False)
    cliargs.add_logging(parser)
    parser.set_defaults(func=run)


def settings_from(args: argparse.Namespace) -> ServeSettings:
    return ServeSettings(
        kafka=cliargs.kafka_settings(args),
        topics=cliargs.topic_settings(args),
        checkpoint_dir=args.checkpoint_dir,
        client=args.client,
        host=args.host,
        port=args.port,
        offline=args.offline,
        token=args.token or None,
        events_enabled=args.events_enabled,
        max_body_bytes=args.max_body_bytes,
        max_batch_events=args.max_batch_events,
        max_event_bytes=args.max_event_bytes,
        quantize=args.quantize,
        quality_window=args.quality_window,
        checkpoint_poll_s=args.checkpoint_poll_s,
    )


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from stream.serve.app import Backend, create_app
    from stream.serve.holder import ModelHolder
    from stream.serve.quality import RollingQuality
    from stream.serve.runtime import ServeRuntime

    settings = settings_from(args)
    holder = ModelHolder(settings.quantize)
    quality = RollingQuality(settings.quality_window)
    runtime = ServeRuntime(settings, holder, quality)
    events = None if settings.offline else runtime.producer
    app = create_app(settings, Backend(holder, quality, events))
    if settings.host not in ("127.0.0.1", "localhost", "::1") and settings.token is None:
        logger.warning(
            "serving on host=%s without a token: anyone who can reach it may use it", settings.host
        )
    runtime.start()
    logger.info(
        "serving host=%s port=%d offline=%s model_version=%s quantize=%s events=%s auth=%s",
        settings.host,
        settings.port,
        settings.offline,
        holder.current.version if holder.current else None,
        settings.quantize,
        settings.events_enabled,
        settings.token is not None,
    )
    try:
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,  # our logging, configured by the CLI
            access_log=False,  # a line per request would cost more than the request
            loop="auto",
            http="auto",
            timeout_graceful_shutdown=5,
        )
    finally:
        runtime.stop()
    return 0
