"""Typed, frozen settings. Built once at the edge (the CLI), passed down unchanged.

Library code never reads the environment: the environment variable names are
defined here once, and only the CLI uses them as fallbacks for its flags.
"""

from __future__ import annotations

import math
import re
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from stream.errors import ConfigError
from stream.faults import CrashAt

Encoding = Literal["msgpack", "json"]
OutputEncoding = Literal["same", "msgpack", "json"]
Optimizer = Literal["sgd", "ftrl"]
ClientName = Literal["kafka-python", "confluent"]
DriftDetector = Literal["adwin", "page-hinkley"]
OnDrift = Literal["none", "reset"]
# Who computes the model: the compiled kernel (same results as river, much
# faster) when it covers the settings ("auto"), always it ("kernel"), or river.
ModelImpl = Literal["auto", "kernel", "river"]

Quantize = Literal["none", "float16", "int8"]

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
# Tests only: arm a crash point (stream.faults) in the processes a command starts.
ENV_CRASH_AT = "LEARNSTREAM_CRASH_AT"
ENV_SERVE_TOKEN = "LEARNSTREAM_SERVE_TOKEN"

DEFAULT_BOOTSTRAP = "localhost:9092"
DEFAULT_FEATURES_TOPIC = "features"
DEFAULT_PREDICTIONS_TOPIC = "predictions"
DEFAULT_GROUP_ID = "learnstream"
DEFAULT_CHECKPOINT_DIR = "checkpoints"


def setting(
    default: Any = MISSING,
    *,
    help: str,
    flag: str | None = None,
    env: str | None = None,
    hidden: bool = False,
    cli_default: Any = MISSING,
    default_factory: Any = MISSING,
) -> Any:
    """Declare one user-facing setting: its default, help text, CLI flag and env var.

    This is the only place a setting is described. :mod:`stream.cliargs` turns
    these declarations into command-line options (help showing the default and
    the env var) and back into settings objects, and ``learnstream settings``
    prints the configuration table of docs/configuration.md from them. ``flag`` defaults to
    ``--field-name``; a boolean's flag names the non-default choice
    (``--no-merge``). ``cli_default``: the command line's default where it
    differs from the library's (checkpoints and metrics are on for a user, off
    for code that builds settings itself). ``hidden``: accepted but left out of
    ``--help`` and the docs (test-only switches). A field declared with plain
    ``field()`` is internal: not on the command line.
    """
    metadata = {
        "help": help,
        "flag": flag,
        "env": env,
        "hidden": hidden,
        "cli_default": cli_default,
    }
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


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


# The ones librdkafka has no equivalent for: refused up front with --client
# confluent (else every process would fail on start, and be restarted).
KAFKA_PYTHON_ONLY_OPTIONS = frozenset(
    {"sasl_kerberos_domain_name", "client_dns_lookup", "api_version"}
)


def check_client_options(client: str, kafka: KafkaSettings) -> None:
    """Refuse options the chosen client cannot take, naming them."""
    if client == "confluent":
        unsupported = sorted(set(kafka.options) & KAFKA_PYTHON_ONLY_OPTIONS)
        if unsupported:
            raise ConfigError(
                f"Kafka options {unsupported} have no confluent-kafka equivalent; "
                "use --client kafka-python or drop them"
            )


# Options that choose the rebalance protocol: refused with the reason.
ASSIGNOR_OPTIONS = frozenset(
    {"partition_assignment_strategy", "group_protocol", "group_remote_assignor"}
)


@dataclass(frozen=True)
class KafkaSettings:
    """Where the broker is and how to talk to it.

    The security settings and ``client_options`` (any other kafka-python option,
    as ``(name, value)`` pairs) are passed to every Kafka client we create;
    :attr:`options` has them all under kafka-python's names.
    """

    bootstrap_servers: str = setting(
        DEFAULT_BOOTSTRAP,
        flag="--bootstrap",
        env=ENV_BOOTSTRAP,
        help="broker list host:port[,host:port]",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] | None = setting(
        None,
        env=ENV_SECURITY_PROTOCOL,
        help="how to talk to the brokers (client default: PLAINTEXT)",
    )
    sasl_mechanism: str | None = setting(
        None, env=ENV_SASL_MECHANISM, help="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, ..."
    )
    sasl_username: str | None = setting(None, env=ENV_SASL_USERNAME, help="SASL user name")
    sasl_password: str | None = setting(None, env=ENV_SASL_PASSWORD, help="SASL password")
    ssl_cafile: str | None = setting(None, env=ENV_SSL_CAFILE, help="CA bundle file for SSL")
    client_options: tuple[tuple[str, str | int | bool], ...] = setting(
        (),
        flag="--kafka-option",
        help="another client option, by kafka-python's name, as NAME=VALUE, e.g. "
        "ssl_certfile=/path (repeatable; translated for confluent)",
    )

    def __post_init__(self) -> None:
        if not self.bootstrap_servers.strip():
            raise ConfigError("bootstrap_servers is empty")
        for name, value in self.client_options:
            if name in ASSIGNOR_OPTIONS:
                raise ConfigError(
                    f"Kafka client option {name}={value!r} is refused: learnstream relies on "
                    "the default eager rebalancing (every partition revoked, each worker "
                    "contributes, then rebases onto the global model); cooperative "
                    "(incremental) assignors are not supported"
                )
            if name not in PASSTHROUGH_OPTIONS:
                raise ConfigError(
                    f"unknown Kafka client option {name!r}; known: {sorted(PASSTHROUGH_OPTIONS)}"
                )

    @property
    def options(self) -> dict[str, str | int | bool]:
        named = {
            "security_protocol": self.security_protocol,
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.sasl_username,
            "sasl_plain_password": self.sasl_password,
            "ssl_cafile": self.ssl_cafile,
        }
        return {k: v for k, v in named.items() if v} | dict(self.client_options)


@dataclass(frozen=True)
class TopicSettings:
    """Topic names and the consumer group. The dead-letter topic is ``<features>.dlq``."""

    features: str = setting(
        DEFAULT_FEATURES_TOPIC,
        flag="--features-topic",
        env=ENV_FEATURES_TOPIC,
        help="events in; dead letters go to <it>.dlq, contributions to <it>.contributions, "
        "global model versions to <it>.model",
    )
    predictions: str = setting(
        DEFAULT_PREDICTIONS_TOPIC,
        flag="--predictions-topic",
        env=ENV_PREDICTIONS_TOPIC,
        help="predictions out",
    )
    group_id: str = setting(
        DEFAULT_GROUP_ID, env=ENV_GROUP_ID, help="consumer group of the workers"
    )

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

    optimizer: Optimizer = setting("sgd", help="sgd, or ftrl (FTRL-Proximal)")
    learning_rate: float = setting(0.01, help="SGD step size, or FTRL alpha")
    l2: float = setting(0.0, help="L2 penalty")
    scale: bool = setting(
        True, flag="--no-scaler", help="feed raw features to the regression (no StandardScaler)"
    )
    ftrl_beta: float = setting(1.0, help="FTRL-Proximal beta")
    ftrl_l1: float = setting(0.0, help="FTRL-Proximal L1 penalty")
    hash_bits: int | None = setting(
        None,
        help="hash every feature (after name=value) into 2^B slots with MurmurHash3 x86 32-bit, "
        "seed 0: memory bounded by B, not by the vocabulary; unset: features by name",
    )

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
        if self.hash_bits is not None and (
            type(self.hash_bits) is not int or not MIN_HASH_BITS <= self.hash_bits <= MAX_HASH_BITS
        ):
            raise ConfigError(
                f"hash_bits must be an integer in [{MIN_HASH_BITS}, {MAX_HASH_BITS}], "
                f"got {self.hash_bits!r}"
            )

    def as_dict(self) -> dict:
        """Plain data, stored with every global model so it is never loaded into
        a model configured differently. ``hash_bits`` only when set: a model by
        name is stored as it was before hashing existed, and so still matches
        the global versions and checkpoints written then."""
        data = asdict(self)
        if self.hash_bits is None:
            del data["hash_bits"]
        return data


# 2^24 slots take ~130 MB per worker in the kernel's seven float64 arrays;
# beyond, a hashed model costs more than most vocabularies it bounds.
MIN_HASH_BITS, MAX_HASH_BITS = 1, 24

MergeRule = Literal["sum"]


@dataclass(frozen=True)
class EventLimits:
    """Bounds on the work one input record may cause; what exceeds one is
    dead-lettered with that bound's own reason (see :mod:`stream.events.codec`).

    The contract needs a nesting depth of 2 (the event map, then ``x``), 3 for
    a list of strings in ``x``; the default leaves room for metadata fields,
    which are ignored. Deeper input is
    refused before it is parsed, so no record can exhaust the parser's stack.
    ``max_abs_feature`` keeps features in a range where the scaler's squares and
    the model's dot products stay finite (1e150 squared is 1e300, below float's
    1.8e308); a feature beyond it is dead-lettered, not clipped, so the record
    reaches the dead-letter topic as sent instead of being learned as something else.
    """

    max_event_bytes: int = setting(100_000, help="larger records are dead-lettered as oversized")
    max_depth: int = setting(
        16,
        help="deeper-nested records are dead-lettered as too_deep; the event and its x map are 2, "
        "a list of strings in x 3",
    )
    max_features: int = setting(
        10_000,
        help="events with more features (strings counted once one-hot) are dead-lettered as "
        "too_many_features",
    )
    max_feature_name_chars: int = setting(
        256, help="longer feature names are dead-lettered as feature_name_too_long"
    )
    max_id_chars: int = setting(256, help="longer string ids are dead-lettered as id_too_long")
    max_value_chars: int = setting(
        256, help="longer string (categorical) feature values are dead-lettered as value_too_long"
    )
    max_list_values: int = setting(
        1000, help="longer lists of strings in x are dead-lettered as list_too_long"
    )
    max_abs_feature: float = setting(
        1e150,
        help="features beyond +-this are dead-lettered as feature_out_of_range, not clipped "
        "(at most 1e150)",
    )

    def __post_init__(self) -> None:
        for name in (
            "max_event_bytes",
            "max_features",
            "max_feature_name_chars",
            "max_id_chars",
            "max_value_chars",
            "max_list_values",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_depth < 2:
            raise ConfigError(
                f"max_depth must be >= 2 (an event and its 'x' map), got {self.max_depth}"
            )
        if not (0 < self.max_abs_feature <= 1e150):
            raise ConfigError(
                f"max_abs_feature must be in (0, 1e150] (beyond, squares overflow), "
                f"got {self.max_abs_feature!r}"
            )


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

    enabled: bool = setting(
        True,
        flag="--no-merge",
        help="each worker keeps its own model (no contributions, no global model)",
    )
    # A contribution costs one acknowledged produce (about a millisecond) plus a
    # copy of the model state; every 1000 events keeps that well under 1%.
    every_events: int = setting(
        1000, flag="--merge-every", help="labeled events per worker between contributions"
    )
    interval_s: float = setting(
        1.0, flag="--merge-interval-s", help="at most this long between contributions"
    )
    rule: MergeRule = setting(
        "sum",
        flag="--merge-rule",
        help="how weight deltas combine: sum, each SGD step counted once",
    )
    checkpoint_dir: Path | None = setting(
        None,
        env=ENV_CHECKPOINT_DIR,
        cli_default=Path(DEFAULT_CHECKPOINT_DIR),
        help="global model checkpoint files",
    )
    checkpoint_keep: int = setting(5, help="checkpoint files kept")
    # The model topic has every version; files are for when the broker has lost it.
    checkpoint_interval_s: float = setting(
        5.0,
        help="at most one checkpoint file this often, and always at stop or handover; "
        "0: every version",
    )
    # Fewer full-model records on the model topic.
    version_linger_s: float = setting(
        0.1, help="the merger gathers contributions arriving this close together into one version"
    )
    catch_up_timeout_s: float = setting(
        5.0,
        help="on assignment, wait this long for the merger to catch up; must be below "
        "--max-poll-interval-ms",
    )

    def __post_init__(self) -> None:
        if self.every_events < 1:
            raise ConfigError(f"every_events must be >= 1, got {self.every_events}")
        if not self.interval_s > 0:
            raise ConfigError(f"interval_s must be > 0, got {self.interval_s}")
        if self.rule == "average":
            raise ConfigError(
                "merge rule 'average' was removed: its result depended on which contributions "
                "the merger happened to gather into one version (timing); use 'sum'"
            )
        if self.rule != "sum":
            raise ConfigError(f"merge rule must be 'sum', got {self.rule!r}")
        if self.checkpoint_interval_s < 0 or self.version_linger_s < 0:
            raise ConfigError(
                f"checkpoint_interval_s ({self.checkpoint_interval_s}) and version_linger_s "
                f"({self.version_linger_s}) must be >= 0"
            )
        if self.checkpoint_keep < 1:
            raise ConfigError(f"checkpoint_keep must be >= 1, got {self.checkpoint_keep}")


def _crash_at() -> Any:
    return setting(
        None,
        env=ENV_CRASH_AT,
        hidden=True,
        help="tests only: name[:count] of a crash point (stream.faults) to die at",
    )


def _client() -> Any:
    # confluent-kafka (librdkafka) moves records 4-6x faster than kafka-python;
    # kafka-python stays supported and tested.
    return setting(
        "confluent",
        help="Kafka client of every process: confluent (librdkafka) or kafka-python "
        "(pure Python, 4-6x slower)",
    )


def _session_timeout_ms() -> Any:
    return setting(10_000, help="group session timeout: a member silent this long is evicted")


def _heartbeat_interval_ms() -> Any:
    return setting(3_000, help="group heartbeat interval; below the session timeout")


def _max_poll_interval_ms() -> Any:
    return setting(
        15_000,
        help="group rebalance timeout; the embedded broker holds each join this long",
    )


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
    client: ClientName = _client()
    model_impl: ModelImpl = setting(
        "auto",
        help="auto: the compiled kernel (bit-identical to river, much faster) where it covers "
        "the model settings, else river; kernel: fail if it does not",
    )
    output_encoding: OutputEncoding = setting(
        "same", help="predictions encoding; 'same' mirrors each event's"
    )
    limits: EventLimits = field(default_factory=EventLimits)
    # Merged sums of weights within this stay far from overflow (dot products
    # with features up to EventLimits.max_abs_feature stay below 1e170).
    max_abs_weight: float = setting(
        1e12,
        help="a learning step that would put a weight beyond +-this (or make the model "
        "non-finite) is refused; the event is still predicted",
    )
    max_poll_records: int = setting(1000, help="batch size")
    poll_timeout_ms: int = field(default=100)
    session_timeout_ms: int = _session_timeout_ms()
    heartbeat_interval_ms: int = _heartbeat_interval_ms()
    max_poll_interval_ms: int = _max_poll_interval_ms()
    auto_offset_reset: Literal["earliest", "latest"] = setting(
        "earliest", flag="--from", help="where a new group starts reading"
    )
    delivery_timeout_s: float = field(default=30.0)
    stats_interval_s: float = setting(30.0, help="a 'worker stats' log line this often")
    metrics_port: int = setting(
        0,
        cli_default=9400,
        help="Prometheus endpoint of worker i on PORT+i, of its merger on PORT+processes; 0: off",
    )
    quality_window: int = setting(
        1000, help="labeled events in the rolling accuracy/log loss/ROC AUC"
    )
    drift_detector: DriftDetector = setting(
        "adwin", help="drift detector on the per-event log loss"
    )
    on_drift: OnDrift = setting(
        "none",
        help="reset: start the worker's model afresh when drift is detected (needs --no-merge)",
    )
    crash_at: str | None = _crash_at()

    def __post_init__(self) -> None:
        if self.crash_at:
            CrashAt.parse(self.crash_at)
        if self.client not in ("kafka-python", "confluent"):
            raise ConfigError(f"client must be kafka-python or confluent, got {self.client!r}")
        check_client_options(self.client, self.kafka)
        if self.model_impl not in ("auto", "kernel", "river"):
            raise ConfigError(f"model_impl must be auto, kernel or river, got {self.model_impl!r}")
        if self.output_encoding not in ("same", "msgpack", "json"):
            raise ConfigError(
                f"output_encoding must be same, msgpack or json, got {self.output_encoding!r}"
            )
        if not (0 < self.max_abs_weight <= 1e100):
            raise ConfigError(f"max_abs_weight must be in (0, 1e100], got {self.max_abs_weight!r}")
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
class RestartSettings:
    """How the supervisor restarts a process that died.

    The first restart waits ``delay_s``; each further crash in a row doubles
    the wait, up to ``max_delay_s``. A process that crashes ``max_restarts``
    times in a row (without ever running ``stable_after_s`` in between) is in a
    crash loop: the supervisor stops everything and exits with an error instead
    of spinning forever.
    """

    delay_s: float = setting(
        1.0,
        flag="--restart-delay-s",
        help="wait before restarting a crashed process, doubled per crash in a row",
    )
    max_delay_s: float = setting(
        30.0, flag="--restart-max-delay-s", help="the longest wait between restarts"
    )
    max_restarts: int = setting(
        5,
        help="crashes in a row (each within --restart-stable-after-s of its start) before "
        "giving up with an error",
    )
    stable_after_s: float = setting(
        60.0,
        flag="--restart-stable-after-s",
        help="a process that ran this long has recovered: its crash count restarts",
    )

    def __post_init__(self) -> None:
        if not 0 <= self.delay_s <= self.max_delay_s:
            raise ConfigError(
                f"restart delay_s ({self.delay_s}) must be >= 0 and at most "
                f"max_delay_s ({self.max_delay_s})"
            )
        if self.max_restarts < 0:
            raise ConfigError(f"max_restarts must be >= 0, got {self.max_restarts}")
        if self.stable_after_s <= 0:
            raise ConfigError(f"stable_after_s must be > 0, got {self.stable_after_s}")

    def delay_before(self, restart: int) -> float:
        """Seconds to wait before the ``restart``-th restart in a row (1-based)."""
        return min(self.max_delay_s, self.delay_s * 2 ** (restart - 1))


@dataclass(frozen=True)
class MergerSettings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    topics: TopicSettings = field(default_factory=TopicSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    merge: MergeSettings = field(default_factory=MergeSettings)
    client: ClientName = _client()
    session_timeout_ms: int = _session_timeout_ms()
    heartbeat_interval_ms: int = _heartbeat_interval_ms()
    max_poll_interval_ms: int = _max_poll_interval_ms()
    metrics_port: int = setting(0, cli_default=9399, help="Prometheus endpoint; 0: off")
    crash_at: str | None = _crash_at()

    def __post_init__(self) -> None:
        if self.crash_at:
            CrashAt.parse(self.crash_at)
        check_client_options(self.client, self.kafka)

    @classmethod
    def for_workers(cls, workers: WorkerSettings) -> MergerSettings:
        """The merger that goes with these workers: same broker, topics, model, timing."""
        return cls(
            kafka=workers.kafka,
            topics=workers.topics,
            model=workers.model,
            merge=workers.merge,
            client=workers.client,
            session_timeout_ms=workers.session_timeout_ms,
            heartbeat_interval_ms=workers.heartbeat_interval_ms,
            max_poll_interval_ms=workers.max_poll_interval_ms,
            crash_at=workers.crash_at,
        )


@dataclass(frozen=True)
class ServeSettings:
    """``learnstream serve``: the live global model over HTTP.

    ``token``: when set, every endpoint but ``/healthz`` and ``/metrics`` needs
    ``Authorization: Bearer <token>``. ``offline``: no broker at all; the newest
    checkpoint is served (and the directory re-read every ``checkpoint_poll_s``).
    Bodies are bounded twice: ``max_body_bytes`` for the request, and
    ``max_batch_events`` for the length of an array of events; each event is
    held to the same :class:`EventLimits` as a worker's input.
    """

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    topics: TopicSettings = field(default_factory=TopicSettings)
    checkpoint_dir: Path | None = setting(
        Path(DEFAULT_CHECKPOINT_DIR),
        env=ENV_CHECKPOINT_DIR,
        help="where the global model's checkpoints are (the model served before the broker "
        "answers, or always with --offline)",
    )
    client: ClientName = _client()
    host: str = setting("127.0.0.1", help="address to bind; anything but loopback exposes the API")
    port: int = setting(8000, help="HTTP port")
    offline: bool = setting(
        False,
        help="no broker: serve the newest checkpoint, re-reading the directory every "
        "--checkpoint-poll-s",
    )
    token: str | None = setting(
        None,
        env=ENV_SERVE_TOKEN,
        help="bearer token required on every endpoint but /healthz and /metrics",
    )
    events_enabled: bool = setting(
        True, flag="--no-events", help="switch POST /v1/events off (404)"
    )
    max_body_bytes: int = setting(4 * 1024 * 1024, help="larger request bodies get 413")
    max_batch_events: int = setting(10_000, help="longer arrays of events get 413")
    # The worker's bounds, so an event the API accepts is one a worker accepts.
    limits: EventLimits = field(default_factory=EventLimits)
    quantize: Quantize = setting(
        "none", help="serve the weights rounded as the quantized export stores them"
    )
    quality_window: int = setting(
        1000, help="labeled predictions in the live page's rolling accuracy and log loss"
    )
    # How long POST /v1/events waits for the broker's acknowledgement.
    delivery_timeout_s: float = field(default=10.0)
    checkpoint_poll_s: float = setting(
        5.0, help="with --offline: how often the checkpoint directory is re-read"
    )

    def __post_init__(self) -> None:
        check_client_options(self.client, self.kafka)
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0-65535, got {self.port}")
        if self.token is not None and not self.token.strip():
            raise ConfigError("token must not be empty (leave it unset for no authentication)")
        for name in ("max_body_bytes", "max_batch_events", "quality_window"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.limits.max_event_bytes > self.max_body_bytes:
            raise ConfigError(
                f"max_event_bytes ({self.limits.max_event_bytes}) must not exceed "
                f"max_body_bytes ({self.max_body_bytes})"
            )
        if self.quantize not in ("none", "float16", "int8"):
            raise ConfigError(f"quantize must be none, float16 or int8, got {self.quantize!r}")
        if self.offline and self.checkpoint_dir is None:
            raise ConfigError("offline serving needs a checkpoint directory")
        if self.delivery_timeout_s <= 0 or self.checkpoint_poll_s <= 0:
            raise ConfigError(
                f"delivery_timeout_s and checkpoint_poll_s must be > 0, got "
                f"{self.delivery_timeout_s} and {self.checkpoint_poll_s}"
            )
