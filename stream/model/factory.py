"""Which model implementation a process uses: the compiled kernel when it covers
the configuration, river otherwise (same results; the kernel is faster)."""

from __future__ import annotations

import logging

from stream.config import ModelImpl, ModelSettings
from stream.model.online import OnlineModel

logger = logging.getLogger(__name__)


def build_model(settings: ModelSettings, prefer: ModelImpl = "auto"):
    """A :class:`~stream.model.kernel.KernelModel` when ``prefer`` allows it and
    the kernel covers ``settings``, else an :class:`OnlineModel` (river), with an
    INFO line saying why. Both have the same surface and the same results."""
    if prefer == "river":
        return OnlineModel(settings)
    from stream.model import kernel  # numba is imported only by processes that learn

    reason = kernel.covers(settings)
    if reason is None:
        return kernel.KernelModel(settings)
    if prefer == "kernel":
        from stream.errors import ConfigError

        raise ConfigError(f"the compiled kernel cannot run {settings}: {reason}")
    logger.info("model implementation=river reason=%s", reason)
    return OnlineModel(settings)
