"""Prometheus metrics: one HTTP endpoint per process, read at scrape time.

Nothing is counted through prometheus_client on the hot path: the worker and
the merger keep plain counters, and a collector turns them into metric
families when Prometheus scrapes (so a scrape costs the scraper's thread a
few milliseconds, and an event costs nothing extra).

Worker metrics (label ``worker``):

- ``learnstream_events_scored_total``, ``learnstream_events_learned_total``,
  ``learnstream_events_replayed_total`` (learned again after a handover, not re-predicted)
- ``learnstream_dead_letters_total{reason}``
- ``learnstream_event_latency_seconds`` (histogram): record timestamp to scoring
- ``learnstream_batch_seconds`` (histogram): one poll batch, through its commit
- ``learnstream_consumer_lag{topic,partition}``: fetch high watermark minus position
- ``learnstream_model_version``, ``learnstream_model_age_seconds``
- ``learnstream_model_age_at_scoring_seconds`` (histogram): how old the global
  version was when each event was scored with it: freshness (merging on)
- ``learnstream_rolling_accuracy``, ``learnstream_rolling_log_loss``,
  ``learnstream_rolling_roc_auc``, ``learnstream_rolling_calibration`` (predicted
  over actual positives), ``learnstream_rolling_normalized_entropy`` (log loss
  over the entropy of the label rate) over the last ``--quality-window`` labeled
  events (NaN where not defined: no positive, or all labels alike)
- ``learnstream_drifts_total``, ``learnstream_drift_last_timestamp_seconds``
- ``learnstream_learning_refused_total``: learning steps refused by the numeric guard
- ``learnstream_restarts_total``: times the supervisor restarted this worker
- ``learnstream_model_records_invalid_total``: model topic records skipped as
  malformed or impossible
- with ``--hash-bits``: ``learnstream_hash_slots_used`` (slots with a weight),
  ``learnstream_hash_collisions_estimated`` (distinct features sharing a slot
  with another, estimated from the slots in use by linear counting), and
  ``learnstream_hash_collisions_in_events_total`` (features that shared a slot
  with another feature of the same event: summed into it)

Merger metrics (label ``merger``): ``learnstream_merger_active``,
``learnstream_merger_model_version``, ``learnstream_merger_learned_events``,
``learnstream_merger_contributions_total{outcome}`` (``applied``, ``rejected`` by
the fence, ``invalid``: malformed or impossible records skipped),
``learnstream_merger_last_merge_timestamp_seconds``,
``learnstream_checkpoint_age_seconds``, ``learnstream_merger_restarts_total``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from stream.events.hashing import estimated_collisions
from stream.observe.monitor import Histogram

logger = logging.getLogger(__name__)

# What the rolling quality gauges measure, for their help text.
_QUALITY_HELP = {
    "calibration": "calibration (sum of p over positives: 1 is calibrated)",
    "normalized_entropy": "normalized entropy (log loss over the label rate's entropy)",
    "roc_auc": "ROC AUC",
    "log_loss": "log loss",
}


def serve(port: int, collector: Collector, what: str) -> bool:
    """Serve ``collector`` on ``port``; False (and an error logged) if the port is taken.

    Metrics are not worth stopping the pipeline for.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    try:
        start_http_server(port, registry=registry)
    except OSError as exc:
        logger.error("metrics endpoint not started %s port=%d error=%s", what, port, exc)
        return False
    logger.info("metrics endpoint serving %s port=%d", what, port)
    return True


def _histogram(name: str, doc: str, labels: dict[str, str], histogram: Histogram):
    family = HistogramMetricFamily(name, doc, labels=list(labels))
    family.add_metric(list(labels.values()), histogram.cumulative(), histogram.total)
    return family


def _gauge(name: str, doc: str, labels: dict[str, str], value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


def _counter(name: str, doc: str, labels: dict[str, str], value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


class WorkerCollector(Collector):
    def __init__(self, worker) -> None:  # stream.runtime.worker.Worker (not imported: no cycle)
        self.worker = worker

    def collect(self) -> Iterator:
        w = self.worker
        who = {"worker": w.name}
        yield _counter("learnstream_events_scored", "Events scored and published.", who, w.n_scored)
        yield _counter("learnstream_events_learned", "Labeled events learned.", who, w.n_learned)
        yield _counter(
            "learnstream_events_replayed",
            "Events learned again after a handover, without a second prediction.",
            who,
            w.n_replayed,
        )
        yield _counter(
            "learnstream_learning_refused",
            "Learning steps refused: they would have made the model non-finite or absurd.",
            who,
            w.n_refused,
        )
        yield _counter(
            "learnstream_read_gaps",
            "Reads that resumed past where learning of their partition stood: offsets "
            "without records (transaction markers, compaction, retention) or a missed seek.",
            who,
            w.ledger.gaps,
        )
        yield _counter(
            "learnstream_restarts", "Times the supervisor restarted this worker.", who, w.restarts
        )
        yield _counter(
            "learnstream_model_records_invalid",
            "Model topic records skipped as malformed or impossible.",
            who,
            w.model_records_invalid,
        )
        dead = CounterMetricFamily(
            "learnstream_dead_letters",
            "Records sent to the dead-letter topic.",
            labels=["worker", "reason"],
        )
        for reason, count in sorted(w.dead_letters.by_reason.items()):
            dead.add_metric([w.name, reason], count)
        yield dead
        monitor = w.monitor
        yield _histogram(
            "learnstream_event_latency_seconds",
            "From the event record's timestamp to its scoring.",
            who,
            monitor.latency,
        )
        yield _histogram(
            "learnstream_batch_seconds", "One poll batch, through its commit.", who, monitor.batch
        )
        yield _histogram(
            "learnstream_model_age_at_scoring_seconds",
            "Age of the global model version each event was scored with (merging on).",
            who,
            monitor.model_age,
        )
        lag = GaugeMetricFamily(
            "learnstream_consumer_lag",
            "Fetch high watermark minus the next offset to read.",
            labels=["worker", "topic", "partition"],
        )
        for partition, value in sorted(dict(w.lag).items()):
            lag.add_metric([w.name, w.settings.topics.features, str(partition)], value)
        yield lag
        yield _gauge(
            "learnstream_model_version", "Global model version held.", who, w.model_version
        )
        created = w.model_created_at
        yield _gauge(
            "learnstream_model_age_seconds",
            "Age of the global model version held.",
            who,
            time.time() - created if created else float("nan"),
        )
        quality = monitor.quality()
        for name, value in quality.items():
            yield _gauge(
                f"learnstream_rolling_{name}",
                f"Rolling {_QUALITY_HELP.get(name, name)} over the last "
                f"{monitor.window.maxlen} labeled events.",
                who,
                value,
            )
        yield _counter("learnstream_drifts", "Drifts detected.", who, len(monitor.drifts))
        last = monitor.drifts[-1].at if monitor.drifts else 0.0
        yield _gauge(
            "learnstream_drift_last_timestamp_seconds",
            "When the last drift was detected.",
            who,
            last,
        )
        bits = w.settings.model.hash_bits
        if bits is not None:
            used = w.model.slots_used()
            yield _gauge("learnstream_hash_slots_used", "Hashed slots with a weight.", who, used)
            yield _gauge(
                "learnstream_hash_collisions_estimated",
                "Distinct features sharing a hashed slot with another (linear-counting "
                "estimate from the slots in use).",
                who,
                estimated_collisions(used, 1 << bits),
            )
            yield _counter(
                "learnstream_hash_collisions_in_events",
                "Features that shared a hashed slot with another feature of their event.",
                who,
                w.hash_collisions_in_events,
            )


class MergerCollector(Collector):
    def __init__(self, merger, checkpoint_written_at: Callable[[], float]) -> None:
        self.merger = merger
        self.checkpoint_written_at = checkpoint_written_at

    def collect(self) -> Iterator:
        m = self.merger
        who = {"merger": m.name}
        snapshot = m.snapshot
        yield _gauge(
            "learnstream_merger_active",
            "1 if this merger merges, 0 if standing by.",
            who,
            1.0 if m.active else 0.0,
        )
        yield _gauge(
            "learnstream_merger_model_version",
            "Latest global version.",
            who,
            snapshot.version if snapshot else 0,
        )
        yield _gauge(
            "learnstream_merger_learned_events",
            "Labeled events in the global model.",
            who,
            snapshot.n_learned if snapshot else 0,
        )
        yield _counter(
            "learnstream_merger_restarts",
            "Times the supervisor restarted this merger.",
            who,
            m.restarts,
        )
        outcomes = CounterMetricFamily(
            "learnstream_merger_contributions",
            "Contributions processed.",
            labels=["merger", "outcome"],
        )
        outcomes.add_metric([m.name, "applied"], m.n_applied)
        outcomes.add_metric([m.name, "rejected"], m.n_rejected)
        outcomes.add_metric([m.name, "invalid"], m.n_invalid)
        yield outcomes
        yield _gauge(
            "learnstream_merger_last_merge_timestamp_seconds",
            "When the last version was made.",
            who,
            snapshot.created_at if snapshot else 0.0,
        )
        yield _counter(
            "learnstream_merger_checkpoint_failures",
            "Checkpoint writes that failed (the directory not writable); versions "
            "are still published on the model topic.",
            who,
            m.checkpoint_failures,
        )
        written = self.checkpoint_written_at()
        yield _gauge(
            "learnstream_checkpoint_age_seconds",
            "Age of the newest checkpoint written.",
            who,
            time.time() - written if written else float("nan"),
        )
