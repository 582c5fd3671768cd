"""Which model implementation a process uses: the compiled kernel when it covers
the configuration, river otherwise (same results; the kernel is faster)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from stream.config import ModelImpl, ModelSettings
from stream.model.online import OnlineModel

if TYPE_CHECKING:  # numba is imported only by processes that learn
    from stream.model.kernel import KernelModel

logger = logging.getLogger(__name__)


def build_model(
    settings: ModelSettings, prefer: ModelImpl = "auto", max_abs_weight: float = 1e12
) -> OnlineModel | KernelModel:
    """A :class:`~stream.model.kernel.KernelModel` when ``prefer`` allows it and
    the kernel covers ``settings``, else an :class:`OnlineModel` (river), with an
    INFO line saying why. Both have the same surface and the same results."""
    if prefer == "river":
        return OnlineModel(settings, max_abs_weight)
    from stream.model import kernel  # numba is imported only by processes that learn

    reason = kernel.covers(settings)
    if reason is None:
        return kernel.KernelModel(settings, max_abs_weight)
    if prefer == "kernel":
        from stream.errors import ConfigError

        raise ConfigError(f"the compiled kernel cannot run {settings}: {reason}")
    logger.info("model implementation=river reason=%s", reason)
    return OnlineModel(settings, max_abs_weight)
