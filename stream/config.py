"""Typed, frozen settings. Built once at the edge (the CLI), passed down unchanged.

Library code never reads the environment: the environment variable names are
defined here once, and only the CLI uses them as fallbacks for its flags.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from stream.errors import ConfigError

Encoding = Literal["msgpack", "json"]
OutputEncoding = Literal["same", "msgpack", "json"]
Optimizer = Literal["sgd", "ftrl"]
ClientName = Literal["kafka-python", "confluent"]
DriftDetector = Literal["adwin", "page-hinkley"]
OnDrift = Literal["none", "reset"]
# Who computes the model: the compiled kernel (same results as river, much
# faster) when it covers the settings ("auto"), always it ("kernel"), or river.
ModelImpl = Literal["auto", "kernel", "river"]

# Environment fallbacks (used by the CLI only).
ENV_BOOTSTRAP = "KAFKA_BOOTSTRAP_SERVERS"
ENV_FEATURES_TOPIC = "LEARNSTREAM_FEATURES_TOPIC"
ENV_PREDICTIONS_TOPIC = "LEARNSTREAM_PREDICTIONS_TOPIC"
ENV_GROUP_ID = "LEARNSTREAM_GROUP_ID"
ENV_SECURITY_PROTOCOL = "KAFKA_SECURITY_PROTOCOL"
ENV_SASL_MECHANISM = "KAFKA_SASL_MECHANISM"
ENV_SASL_USERNAME = "KAFKA_SASL_USERNAME"
ENV_SASL_PASSWORD = "KAFKA_SASL_PASSWORD"
ENV_SSL_CAFILE = "KAFKA_SSL_CAFILE"
ENV_CHECKPOINT_DIR = "LEARNSTREAM_CHECKPOINT_DIR"

DEFAULT_BOOTSTRAP = "localhost:9092"
DEFAULT_FEATURES_TOPIC = "features"
DEFAULT_PREDICTIONS_TOPIC = "predictions"
DEFAULT_GROUP_ID = "learnstream"
DEFAULT_CHECKPOINT_DIR = "checkpoints"

_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]+")

# Client options a user may pass through (security and a few transport knobs).
# kafka-python rejects unknown keys itself; this list keeps typos from reaching it
# as a confusing client-side error.
PASSTHROUGH_OPTIONS = frozenset(
    {
        "security_protocol",
        "sasl_mechanism",
        "sasl_plain_username",
        "sasl_plain_password",
        "sasl_kerberos_service_name",
        "sasl_kerberos_domain_name",
        "ssl_cafile",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_password",
        "ssl_check_hostname",
        "ssl_crlfile",
        "ssl_ciphers",
        "client_dns_lookup",
        "request_timeout_ms",
        "api_version",
    }
)


@dataclass(frozen=True)
class KafkaSettings:
    """Where the broker is and how to talk to it.

    ``client_options`` are passed verbatim to every Kafka client we create
    (SASL/SSL settings, mostly), as ``(name, value)`` pairs.
    """

    bootstrap_servers: str = DEFAULT_BOOTSTRAP
    client_options: tuple[tuple[str, str | int | bool], ...] = ()

    def __post_init__(self) -> None:
        if not self.bootstrap_servers.strip():
            raise ConfigError("bootstrap_servers is empty")
        for name, _ in self.client_options:
            if name not in PASSTHROUGH_OPTIONS:
                raise ConfigError(
                    f"unknown Kafka client option {name!r}; known: {sorted(PASSTHROUGH_OPTIONS)}"
                )

    @property
    def options(self) -> dict[str, str | int | bool]:
        return dict(self.client_options)


@dataclass(frozen=True)
class TopicSettings:
    """Topic names and the consumer group. The dead-letter topic is ``<features>.dlq``."""

    features: str = DEFAULT_FEATURES_TOPIC
    predictions: str = DEFAULT_PREDICTIONS_TOPIC
    group_id: str = DEFAULT_GROUP_ID

    def __post_init__(self) -> None:
        for name in ("features", "predictions", "group_id"):
            if not getattr(self, name):
                raise ConfigError(f"{name} is empty")
        for name in ("features", "predictions"):
            topic = getattr(self, name)
            # Kafka's rule; ".dlq", ".model" and ".contributions" are appended to features.
            if not _TOPIC_NAME.fullmatch(topic) or len(topic) > 200:
                raise ConfigError(
                    f"{name} topic {topic!r} is not a valid Kafka topic name "
                    "(ASCII letters, digits, '.', '_', '-'; at most 200 characters)"
                )
        if self.features == self.predictions:
            raise ConfigError(f"features and predictions are the same topic {self.features!r}")

    @property
    def dead_letter(self) -> str:
        return f"{self.features}.dlq"

    @property
    def contributions(self) -> str:
        """Workers' learning deltas, one partition (so the merger sees one order)."""
        return f"{self.features}.contributions"

    @property
    def model(self) -> str:
        """Global model versions, one partition, compacted on Apache Kafka."""
        return f"{self.features}.model"

    @property
    def merger_group(self) -> str:
        """The merger's own group: one member merges, the others stand by."""
        return f"{self.group_id}.merger"


@dataclass(frozen=True)
class ModelSettings:
    """The online model: ``[StandardScaler |] LogisticRegression``.

    ``learning_rate`` is SGD's step size, or FTRL-Proximal's ``alpha``.
    ``l2`` is the LogisticRegression penalty for SGD, FTRL's own ``l2`` for FTRL
    (FTRL applies regularisation inside its update, so river's LR gets l2=0).
    """

    optimizer: Optimizer = "sgd"
    learning_rate: float = 0.01
    l2: float = 0.0
    scale: bool = True
    ftrl_beta: float = 1.0
    ftrl_l1: float = 0.0

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "ftrl"):
            raise ConfigError(f"optimizer must be 'sgd' or 'ftrl', got {self.optimizer!r}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ConfigError(
                f"learning_rate must be a positive number, got {self.learning_rate!r}"
            )
        for name in ("l2", "ftrl_beta", "ftrl_l1"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be >= 0, got {value!r}")

    def as_dict(self) -> dict:
        """Plain data, stored with every global model so it is never loaded into
        a model configured differently."""
        return asdict(self)


MergeRule = Literal["sum", "average"]


@dataclass(frozen=True)
class MergeSettings:
    """Periodic merging of the workers' models into one global model.

    A worker sends a contribution every ``every_events`` labeled events or every
    ``interval_s`` seconds, whichever comes first (and always when it loses
    partitions or stops). ``rule``: how weight deltas combine (see
    :mod:`stream.model.merge`). ``catch_up_timeout_s`` bounds how long a worker that
    was just assigned partitions waits for the merger to apply what is already
    in the contributions topic before it seeks to the global model's offsets.
    """

    enabled: bool = True
    # A contribution costs one acknowledged produce (about a millisecond) plus a
    # copy of the model state; every 1000 events keeps that well under 1%.
    every_events: int = 1000
    interval_s: float = 1.0
    rule: MergeRule = "sum"
    checkpoint_dir: Path | None = None
    checkpoint_keep: int = 5
    # At most one checkpoint file every this many seconds (0: every version),
    # and always when the merger stops or hands over. The model topic has every
    # version; files are for when the broker has lost it.
    checkpoint_interval_s: float = 5.0
    # The merger gathers contributions arriving this close together into one
    # version: fewer full-model records on the model topic.
    version_linger_s: float = 0.1
    catch_up_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if self.every_events < 1:
            raise ConfigError(f"every_events must be >= 1, got {self.every_events}")
        if not self.interval_s > 0:
            raise ConfigError(f"interval_s must be > 0, got {self.interval_s}")
        if self.rule not in ("sum", "average"):
            raise ConfigError(f"merge rule must be 'sum' or 'average', got {self.rule!r}")
        if self.checkpoint_interval_s < 0 or self.version_linger_s < 0:
            raise ConfigError(
                f"checkpoint_interval_s ({self.checkpoint_interval_s}) and version_linger_s "
                f"({self.version_linger_s}) must be >= 0"
            )
        if self.checkpoint_keep < 1:
            raise ConfigError(f"checkpoint_keep must be >= 1, got {self.checkpoint_keep}")


@dataclass(frozen=True)
class WorkerSettings:
    """One worker process: where to read, how to score, how to batch.

    ``max_poll_interval_ms`` is also the group's rebalance timeout: how long a
    join waits for members. The embedded broker holds every join about this
    long, so the default is 15 s rather than Kafka's 5 minutes; a batch takes
    milliseconds, so a worker never comes near it by being slow.
    """

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    topics: TopicSettings = field(default_factory=TopicSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    merge: MergeSettings = field(default_factory=MergeSettings)
    # confluent-kafka (librdkafka) moves records 4-6x faster than kafka-python;
    # kafka-python stays supported and tested (``--client kafka-python``).
    client: ClientName = "confluent"
    model_impl: ModelImpl = "auto"
    output_encoding: OutputEncoding = "same"
    max_event_bytes: int = 100_000
    max_poll_records: int = 1000
    poll_timeout_ms: int = 100
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 15_000
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    delivery_timeout_s: float = 30.0
    stats_interval_s: float = 30.0
    metrics_port: int = 0
    quality_window: int = 1000
    drift_detector: DriftDetector = "adwin"
    on_drift: OnDrift = "none"

    def __post_init__(self) -> None:
        if self.client not in ("kafka-python", "confluent"):
            raise ConfigError(f"client must be kafka-python or confluent, got {self.client!r}")
        if self.model_impl not in ("auto", "kernel", "river"):
            raise ConfigError(f"model_impl must be auto, kernel or river, got {self.model_impl!r}")
        if self.output_encoding not in ("same", "msgpack", "json"):
            raise ConfigError(
                f"output_encoding must be same, msgpack or json, got {self.output_encoding!r}"
            )
        if self.max_event_bytes <= 0:
            raise ConfigError(f"max_event_bytes must be > 0, got {self.max_event_bytes}")
        if self.max_poll_records <= 0:
            raise ConfigError(f"max_poll_records must be > 0, got {self.max_poll_records}")
        if self.max_poll_interval_ms < self.session_timeout_ms:
            # librdkafka refuses this combination; kafka-python would accept it.
            raise ConfigError(
                f"max_poll_interval_ms ({self.max_poll_interval_ms}) must be at least "
                f"session_timeout_ms ({self.session_timeout_ms})"
            )
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ConfigError(
                f"heartbeat_interval_ms ({self.heartbeat_interval_ms}) must be below "
                f"session_timeout_ms ({self.session_timeout_ms})"
            )
        if self.merge.enabled and self.merge.catch_up_timeout_s * 1000 >= self.max_poll_interval_ms:
            raise ConfigError(
                f"merge.catch_up_timeout_s ({self.merge.catch_up_timeout_s}) must be below "
                f"max_poll_interval_ms ({self.max_poll_interval_ms} ms): the wait happens "
                "inside a rebalance, and a longer one would get the worker evicted"
            )
        if not 0 <= self.metrics_port < 65536:
            raise ConfigError(f"metrics_port must be 0 (off) or a port, got {self.metrics_port}")
        if self.quality_window < 1:
            raise ConfigError(f"quality_window must be >= 1, got {self.quality_window}")
        if self.drift_detector not in ("adwin", "page-hinkley"):
            raise ConfigError(
                f"drift_detector must be adwin or page-hinkley, got {self.drift_detector!r}"
            )
        if self.on_drift not in ("none", "reset"):
            raise ConfigError(f"on_drift must be none or reset, got {self.on_drift!r}")
        if self.on_drift == "reset" and self.merge.enabled:
            raise ConfigError(
                "on_drift='reset' needs merging off: a worker cannot reset the global model "
                "on its own (its next contribution would undo the others' learning)"
            )
        if self.auto_offset_reset not in ("earliest", "latest"):
            raise ConfigError(
                f"auto_offset_reset must be earliest or latest, got {self.auto_offset_reset!r}"
            )


@dataclass(frozen=True)
class MergerSettings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    topics: TopicSettings = field(default_factory=TopicSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    merge: MergeSettings = field(default_factory=MergeSettings)
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 15_000
    metrics_port: int = 0

    @classmethod
    def for_workers(cls, workers: WorkerSettings) -> MergerSettings:
        """The merger that goes with these workers: same broker, topics, model, timing."""
        return cls(
            kafka=workers.kafka,
            topics=workers.topics,
            model=workers.model,
            merge=workers.merge,
            session_timeout_ms=workers.session_timeout_ms,
            heartbeat_interval_ms=workers.heartbeat_interval_ms,
            max_poll_interval_ms=workers.max_poll_interval_ms,
        )
