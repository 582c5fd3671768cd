"""Run ``serve``'s app on uvicorn until SIGTERM or Ctrl-C: one place for
``learnstream serve`` and ``learnstream demo --serve``, so the demo's dashboard
is the very page and endpoints that ``serve`` answers with."""

from __future__ import annotations

import logging
from collections.abc import Callable

from stream.config import ServeSettings

logger = logging.getLogger(__name__)


def run_server(settings: ServeSettings, started: Callable[[], None] | None = None) -> None:
    """Follow the topics, answer HTTP until uvicorn's graceful shutdown, then
    stop the followers. ``started`` is called once the followers run and just
    before uvicorn binds the port (``demo --serve`` prints the address then).

    uvicorn takes over SIGTERM and SIGINT while it runs and raises the signal
    again once it has shut down: the caller's handler (the CLI's, which turns
    SIGTERM into KeyboardInterrupt) ends the command after this returns.
    """
    import uvicorn

    from stream.observe.series import Series
    from stream.serve.app import Backend, create_app
    from stream.serve.holder import ModelHolder
    from stream.serve.quality import RollingQuality
    from stream.serve.runtime import ServeRuntime

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
        if started is not None:
            started()
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
