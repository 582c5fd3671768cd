"""The Python API: score with the global model in your own code, or start workers.

Two functions, re-exported by :mod:`stream` (``stream.load_model``,
``stream.run_workers``) without making ``import stream`` pay for them:

- :func:`load_model` reads the newest global model (the model topic's last
  version and/or the checkpoint directory, as ``learnstream serve`` and
  ``learnstream score`` do) and returns a :class:`Model` whose
  :meth:`Model.predict_proba` is the p a worker gives the same event with that
  model: the same validation (:func:`stream.events.codec.decode_event`, the
  dead-letter topic's) and the same scoring function as ``serve``
  (:func:`stream.serve.holder.serving`), which tests hold bit-identical to the
  worker's compiled kernel. No third scoring path.
- :func:`run_workers` starts worker processes (and a merger) as
  ``learnstream work`` does, which calls it.

docs/python.md shows both with an example that a test runs.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stream.config import (
    EventLimits,
    KafkaSettings,
    MergerSettings,
    Quantize,
    TopicSettings,
    WorkerSettings,
    WorkSettings,
)
from stream.errors import BadEvent, ConfigError
from stream.events.codec import UNDECODABLE, Event, decode_event, encode

if TYPE_CHECKING:
    from stream.serve.holder import Served
    from stream.sync.checkpoint import Snapshot

__all__ = ["Model", "load_model", "run_workers"]


class Model:
    """One version of the global model, ready to score (it never learns).

    Build it with :func:`load_model`. Scoring is thread-safe: nothing is
    written while scoring.
    """

    def __init__(self, served: Served, limits: EventLimits) -> None:
        self._served = served
        self.limits = limits

    @property
    def version(self) -> int:
        """The global model version (as on the model topic and in checkpoints)."""
        return self._served.version

    @property
    def n_learned(self) -> int:
        """Labeled events the global model has learned from, all workers together."""
        return self._served.snapshot.n_learned

    @property
    def snapshot(self) -> Snapshot:
        """The whole version as read: state, offsets, model settings."""
        return self._served.snapshot

    def predict_proba(self, event: Mapping[str, Any] | Event) -> float:
        """p(y = 1) for one event of the contract (``{"id": ..., "x": {...}}``; a
        ``"y"`` is ignored), exactly the p a worker publishes for it with this version.

        Raises :class:`stream.errors.BadEvent` for an event a worker would
        dead-letter, with the same reason.
        """
        return self._served.predict_proba(self._features(event))

    def predict_proba_many(self, events: Iterable[Mapping[str, Any] | Event]) -> list[float]:
        """``[self.predict_proba(e) for e in events]``, bit for bit, scored a column
        at a time (faster for many events)."""
        return self._served.predict_proba_many([self._features(e) for e in events])

    def _features(self, event: Mapping[str, Any] | Event) -> dict[str, float]:
        """The event's features as a worker reads them: the event is encoded as
        msgpack (one of the contract's encodings) and validated by the contract's
        validator, so integers become floats and bad input is refused alike."""
        if isinstance(event, Event):
            return event.x
        if not isinstance(event, Mapping):
            raise BadEvent(UNDECODABLE, f"an event is a mapping, got {type(event).__name__}")
        try:
            raw = encode(dict(event), "msgpack")
        except (TypeError, ValueError, OverflowError) as exc:
            raise BadEvent(UNDECODABLE, f"event cannot be encoded: {exc}") from exc
        return decode_event(raw, self.limits).x

    def __repr__(self) -> str:
        return f"Model(version={self.version}, n_learned={self.n_learned})"


def load_model(
    checkpoint_dir: str | os.PathLike[str] | None = None,
    *,
    kafka: KafkaSettings | None = None,
    topics: TopicSettings | None = None,
    quantize: Quantize = "none",
    limits: EventLimits | None = None,
) -> Model:
    """The newest global model of the pipeline ``topics`` (default topic names).

    ``checkpoint_dir``: a directory of checkpoints (``learnstream work
    --checkpoint-dir``); ``kafka``: the broker, whose model topic holds every
    version. Give either or both (then the newer wins), as ``learnstream score``
    does with and without ``--offline``. ``quantize``: score with the weights
    rounded as the quantized export stores them. ``limits``: the event limits
    the workers run with (what exceeds them is refused, as they dead-letter it).

    Raises :class:`stream.errors.ConfigError` when neither source is given, and
    :class:`stream.errors.StreamError` when no model is found.
    """
    from stream.serve.holder import serving
    from stream.sync.globalmodel import load_latest

    if checkpoint_dir is None and kafka is None:
        raise ConfigError("load_model needs a checkpoint directory, a broker (kafka=...), or both")
    directory = None if checkpoint_dir is None else Path(checkpoint_dir)
    if directory is not None and not str(checkpoint_dir).strip():
        raise ConfigError("checkpoint_dir is empty (it would mean the current directory)")
    snapshot = load_latest(kafka, topics or TopicSettings(), directory)
    return Model(serving(snapshot, quantize), limits or EventLimits())


def run_workers(
    settings: WorkSettings | WorkerSettings, stop: threading.Event | None = None
) -> int:
    """Run ``settings.processes`` worker processes (and a merger, unless
    ``settings.merger`` is off or merging is) until stopped; 0 on a clean stop, 1
    after a crash loop (``settings.restart``).

    Creates the pipeline's topics first (one clear error for a wrong topic,
    not every worker failing in turn), and refuses model settings other than
    the global model's (:class:`~stream.errors.ConfigError`). ``stop``: set it to stop the workers
    (each finishes its batch, flushes, commits and exits); without it,
    SIGTERM and Ctrl-C stop them, which needs the main thread. A
    :class:`WorkerSettings` runs one worker with a merger.
    """
    from stream.kafka.topics import ensure_pipeline
    from stream.runtime.supervisor import Supervisor
    from stream.sync.globalmodel import refuse_other_model_settings

    if isinstance(settings, WorkerSettings):
        settings = WorkSettings(worker=settings)
    worker = settings.worker
    ensure_pipeline(worker.kafka, worker.topics)
    if worker.merge.enabled:
        # Before any process starts: other model settings than the global
        # model's are one clear error, not every process refusing in turn.
        refuse_other_model_settings(
            worker.kafka, worker.topics, worker.merge.checkpoint_dir, worker.model
        )
    merger = (
        MergerSettings.for_workers(worker) if worker.merge.enabled and settings.merger else None
    )
    supervisor = Supervisor(
        worker,
        settings.processes,
        merger,
        settings.log.level,
        settings.log.format,
        restart=settings.restart,
    )
    if stop is None:
        return supervisor.run_until_signal()
    return supervisor.run_until(stop)
