"""``learnstream serve``: the live global model over HTTP (Starlette on uvicorn)."""

from __future__ import annotations

import argparse
import logging

from stream import cliargs
from stream.config import ServeSettings

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve the live global model over HTTP (predict, model, events, metrics, page)",
        description="Answer POST /v1/predict with the newest global model: it starts from the "
        "newest checkpoint and swaps in each version published on the model topic. "
        "docs/serving.md documents the API.",
    )
    cliargs.add_settings(parser, ServeSettings, skip=("topics.group_id",))
    cliargs.add_logging(parser)
    parser.set_defaults(func=run)


def settings_from(args: argparse.Namespace) -> ServeSettings:
    return cliargs.build(ServeSettings, args)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from stream.observe.series import Series
    from stream.serve.app import Backend, create_app
    from stream.serve.holder import ModelHolder
    from stream.serve.quality import RollingQuality
    from stream.serve.runtime import ServeRuntime

    settings = settings_from(args)
    holder = ModelHolder(settings.quantize)
    quality = RollingQuality(settings.quality_window)
    series = Series(quality_window=settings.quality_window)
    runtime = ServeRuntime(settings, holder, quality, series)
    events = None if settings.offline else runtime.producer
    app = create_app(settings, Backend(holder, quality, events, series))
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
