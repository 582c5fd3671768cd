"""Every error learnstream raises, under one root."""

from __future__ import annotations

import importlib
from types import ModuleType


class StreamError(Exception):
    """Root of all learnstream errors."""

    retriable = False


class ConfigError(StreamError):
    """A setting, or a combination of settings, is invalid."""


class BadEvent(StreamError):
    """An input record cannot be turned into an event; it goes to the dead-letter topic.

    ``reason`` is one of :data:`stream.events.codec.REASONS`: a short stable token that
    operators can count and filter on; the message says what exactly was wrong.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class NumericError(StreamError):
    """A computation gave a non-finite or absurd number (a NaN probability, a
    non-finite model state); refused rather than let it spread."""


class DeliveryError(StreamError):
    """The broker did not acknowledge a record we produced; offsets stay uncommitted."""

    retriable = True


class BrokerError(StreamError):
    """The broker could not be reached or started."""

    retriable = True


class RecordError(StreamError):
    """An internal record (a contribution, a model version, a checkpoint file) is
    malformed or impossible. Its reader skips it, counts it and logs it: trusted
    no more than an event, and never a reason to stop."""


class ContributionError(RecordError):
    """A contribution record is malformed or impossible (the message names the field)."""


class CheckpointError(RecordError):
    """A model version (model topic record or checkpoint file) is torn, corrupt, of an
    unknown schema, malformed or impossible (the message names the field)."""


class TopicError(StreamError):
    """A topic learnstream needs is missing or has settings the protocol cannot work with."""


class MissingExtra(StreamError):
    """An optional part of learnstream is used without its dependencies installed."""


def optional(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module``, which only the optional part ``purpose`` needs; if it is
    missing, say which extra installs it (``pip install 'learnstream[extra]'``)
    rather than fail with an ImportError deep in a command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(
            f"{purpose} needs the {module} package: pip install 'learnstream[{extra}]' ({exc})"
        ) from exc
