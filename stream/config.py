"""Typed, frozen settings. Built once at the edge (the CLI), passed down unchanged.

Library code never reads the environment: the environment variable names are
defined here once, and only the CLI uses them as fallbacks for its flags.
"""

from __future__ import annotations

import math
import re
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

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
# What `model export --format` writes (stream.model.export).
ExportFormat = Literal["json", "msgpack", "onnx"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
OffsetReset = Literal["earliest", "latest"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LogFormat = Literal["text", "json"]
# Datasets `demo` and `produce --dataset` replay: two bundled with river, and
# a synthetic click-through stream of 20 categorical fields (stream.events.sources.CtrStream).
Dataset = Literal["phishing", "bananas", "ctr"]
# How `produce` keys records: by event id, or not at all.
KeyMode = Literal["id", "none"]
# The model settings `bench` measures (stream.tools.bench.MODELS).
BenchModel = Literal["lr", "scaler+lr", "ftrl"]

# Environment fallbacks (used by the CLI only). Every other setting's variable
# is derived from its flag (see setting()); these are the ones named otherwise.
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
    secret: bool = False,
    deprecated: tuple[str, ...] = (),
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """Declare one user-facing setting: its default, help text, CLI flag, env var and range.

    This is the only place a setting is described. :mod:`stream.cliargs` turns
    these declarations into command-line options (help showing the default and
    the env var) and back into settings objects, and ``learnstream settings``
    prints the configuration table of docs/configuration.md from them. ``flag`` defaults to
    ``--field-name``; a boolean's flag names the non-default choice
    (``--no-merge``). ``env`` defaults to the flag's name as
    ``LEARNSTREAM_FLAG_NAME`` (the settings class may set another prefix in
    ``ENV_PREFIX``); the Kafka connection keeps the ``KAFKA_*`` names that other
    Kafka tools use. ``cli_default``: the command line's default where it
    differs from the library's (checkpoints and metrics are on for a user, off
    for code that builds settings itself). ``hidden``: accepted but left out of
    ``--help`` and the docs (test-only switches). ``secret``: left out of the
    settings' repr, so no log line or traceback shows it. ``deprecated``: old
    flags still accepted, with a warning naming the new one (not in ``--help``).
    ``ge``/``gt``/``le``/``lt``: the range (``>=``, ``>``, ``<=``, ``<``; of each
    element of a tuple), checked by :func:`check_ranges` when the settings are
    built and by the command line when a flag or variable is read, so a bad value
    is named where it was given. A field declared with plain ``field()``
    is internal: not on the command line.
    """
    metadata = {
        "help": help,
        "flag": flag,
        "env": env,
        "hidden": hidden,
        "cli_default": cli_default,
        "secret": secret,
        "deprecated": deprecated,
        "range": (ge, gt, le, lt),
    }
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata, repr=not secret)
    return field(default=default, metadata=metadata, repr=not secret)


def _number(x: float) -> str:
    return f"{x:g}".replace("e+", "e")


Bounds = tuple[float | None, float | None, float | None, float | None]


def describe_range(bounds: Bounds) -> str:
    """``>= 1``, ``> 0``, ``in [0, 65535]``, ``in (0, 1e150]``: a declared range in words."""
    ge, gt, le, lt = bounds
    low = f"[{_number(ge)}" if ge is not None else f"({_number(gt)}" if gt is not None else None
    high = f"{_number(le)}]" if le is not None else f"{_number(lt)})" if lt is not None else None
    if low and high:
        return f"in {low}, {high}"
    if low:
        return (">= " if ge is not None else "> ") + low[1:]
    if high:
        return ("<= " if le is not None else "< ") + high[:-1]
    return ""


def out_of_range(value: Any, bounds: Bounds) -> bool:
    """True if ``value`` (or an element of it) is outside the declared range
    (NaN and infinities always are)."""
    if isinstance(value, tuple):
        return any(out_of_range(v, bounds) for v in value)
    ge, gt, le, lt = bounds
    if ge is None and gt is None and le is None and lt is None:
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return True
    return bool(
        (ge is not None and not value >= ge)
        or (gt is not None and not value > gt)
        or (le is not None and not value <= le)
        or (lt is not None and not value < lt)
    )


def check_ranges(settings: Any) -> None:
    """Refuse a value outside its declared range, naming the setting and the range."""
    for f in fields(settings):
        bounds = f.metadata.get("range")
        value = getattr(settings, f.name)
        if bounds and value is not None and out_of_range(value, bounds):
            raise ConfigError(f"{f.name} must be {describe_range(bounds)}, got {value!r}")


def internal(default_factory: Any) -> Any:
    """A nested settings object that is not on the command line (set in code only)."""
    return field(default_factory=default_factory, metadata={"internal": True})


def choices_of(alias: Any) -> tuple[str, ...]:
    """The values of a ``Literal`` alias (optionally ``| None``): the one list of choices."""
    args = typing.get_args(alias)
    if typing.get_origin(alias) is not Literal:
        args = next(typing.get_args(a) for a in args if typing.get_origin(a) is Literal)
    return args


def check_choice(name: str, value: Any, alias: Any) -> None:
    """Refuse a value that is not one of the ``Literal``'s choices, naming both."""
    allowed = choices_of(alias)
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


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
    security_protocol: SecurityProtocol | None = setting(
        None,
        env=ENV_SECURITY_PROTOCOL,
        help="how to talk to the brokers (client default: PLAINTEXT)",
    )
    sasl_mechanism: str | None = setting(
        None, env=ENV_SASL_MECHANISM, help="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, ..."
    )
    sasl_username: str | None = setting(None, env=ENV_SASL_USERNAME, help="SASL user name")
    sasl_password: str | None = setting(
        None, env=ENV_SASL_PASSWORD, secret=True, help="SASL password (never shown or logged)"
    )
    ssl_cafile: str | None = setting(None, env=ENV_SSL_CAFILE, help="CA bundle file for SSL")
    client_options: tuple[tuple[str, str | int | bool], ...] = setting(
        (),
        flag="--kafka-option",
        help="another client option, by kafka-python's name, as NAME=VALUE, e.g. "
        "ssl_certfile=/path (repeatable, comma-separated in the variable; translated for "
        "confluent)",
    )

    def __post_init__(self) -> None:
        if not self.bootstrap_servers.strip():
            raise ConfigError("bootstrap_servers is empty")
        if self.security_protocol is not None:
            check_choice("security_protocol", self.security_protocol, SecurityProtocol)
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

    def __repr__(self) -> str:
        """The fields, with the password left out and any ``*password`` option masked."""
        shown = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
            if f.repr and f.name != "client_options"
        ]
        masked = tuple(
            (name, "***" if "password" in name else value) for name, value in self.client_options
        )
        return f"KafkaSettings({', '.join(shown)}, client_options={masked!r})"

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
    learning_rate: float = setting(0.01, gt=0, help="SGD step size, or FTRL alpha")
    l2: float = setting(0.0, ge=0, help="L2 penalty")
    scale: bool = setting(
        True, flag="--no-scaler", help="feed raw features to the regression (no StandardScaler)"
    )
    ftrl_beta: float = setting(1.0, ge=0, help="FTRL-Proximal beta")
    ftrl_l1: float = setting(0.0, ge=0, help="FTRL-Proximal L1 penalty")
    hash_bits: int | None = setting(
        None,
        help="hash every feature (after name=value) into 2^B slots with MurmurHash3 x86 32-bit, "
        "seed 0: memory bounded by B, not by the vocabulary; unset: features by name",
    )

    def __post_init__(self) -> None:
        check_choice("optimizer", self.optimizer, Optimizer)
        check_ranges(self)
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

    max_event_bytes: int = setting(
        100_000, ge=1, help="larger records are dead-lettered as oversized"
    )
    max_depth: int = setting(
        16,
        ge=2,
        help="deeper-nested records are dead-lettered as too_deep; the event and its x map are 2, "
        "a list of strings in x 3",
    )
    max_features: int = setting(
        10_000,
        ge=1,
        help="events with more features (strings counted once one-hot) are dead-lettered as "
        "too_many_features",
    )
    max_feature_name_chars: int = setting(
        256, ge=1, help="longer feature names are dead-lettered as feature_name_too_long"
    )
    max_id_chars: int = setting(
        256, ge=1, help="longer string ids are dead-lettered as id_too_long"
    )
    max_value_chars: int = setting(
        256,
        ge=1,
        help="longer string (categorical) feature values are dead-lettered as value_too_long",
    )
    max_list_values: int = setting(
        1000, ge=1, help="longer lists of strings in x are dead-lettered as list_too_long"
    )
    max_abs_feature: float = setting(
        1e150,
        gt=0,
        le=1e150,
        help="features beyond +-this are dead-lettered as feature_out_of_range, not clipped "
        "(at most 1e150)",
    )

    def __post_init__(self) -> None:
        # max_depth: an event and its 'x' map; max_abs_feature: beyond, squares overflow.
        check_ranges(self)


# Settings that several commands share: declared once each, so a flag and its
# variable mean one thing in every command that has it (only the default may
# differ; tests/unit/test_settings_env.py checks that shared help is the same).


def _checkpoint_dir(default: Path | None, cli_default: Any = MISSING) -> Any:
    return setting(
        default,
        env=ENV_CHECKPOINT_DIR,
        cli_default=cli_default,
        help="directory of the global model's checkpoint files: the merger writes them; "
        "serve, model, score and status take the newest of them and of the model topic "
        "(with --offline: of them alone)",
    )


def _quality_window(default: int = 1000, deprecated: tuple[str, ...] = ()) -> Any:
    return setting(
        default,
        env="LEARNSTREAM_QUALITY_WINDOW",
        deprecated=deprecated,
        ge=1,
        help="labeled predictions the rolling quality figures (accuracy, log loss, ...) "
        "are computed over: a worker's own; serve's, predictions' and report's from the "
        "predictions topic",
    )


def _offline() -> Any:
    return setting(
        False,
        env="LEARNSTREAM_OFFLINE",
        help="no broker: the checkpoint directory alone (serve re-reads it every "
        "--checkpoint-poll-s)",
    )


def _quantize() -> Any:
    return setting(
        "none",
        env="LEARNSTREAM_QUANTIZE",
        help="the weights as float16 or int8 (scaler statistics as float32): what model "
        "export stores, and what serve scores with",
    )


def _label_column() -> Any:
    return setting(
        "y",
        env="LEARNSTREAM_LABEL_COLUMN",
        help="label column of a CSV/JSONL file of events (produce --file, score, model "
        "export --holdout); an empty cell: unlabeled",
    )


def _id_column() -> Any:
    return setting(
        None,
        env="LEARNSTREAM_ID_COLUMN",
        help="id column of a CSV/JSONL file of events (produce --file, score); unset: the "
        "row number",
    )


def _metrics_port(cli_default: int) -> Any:
    return setting(
        0,
        cli_default=cli_default,
        ge=0,
        le=65535,
        help="first Prometheus port: work serves worker i on PORT+i and its merger on "
        "PORT+processes, merge its merger on PORT; 0: off",
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
        1000, flag="--merge-every", ge=1, help="labeled events per worker between contributions"
    )
    interval_s: float = setting(
        1.0, flag="--merge-interval-s", gt=0, help="at most this long between contributions"
    )
    rule: MergeRule = setting(
        "sum",
        flag="--merge-rule",
        help="how weight deltas combine: sum, each SGD step counted once",
    )
    checkpoint_dir: Path | None = _checkpoint_dir(None, Path(DEFAULT_CHECKPOINT_DIR))
    checkpoint_keep: int = setting(5, ge=1, help="checkpoint files kept")
    # The model topic has every version; files are for when the broker has lost it.
    checkpoint_interval_s: float = setting(
        5.0,
        ge=0,
        help="at most one checkpoint file this often, and always at stop or handover; "
        "0: every version",
    )
    # Fewer full-model records on the model topic.
    version_linger_s: float = setting(
        0.1,
        ge=0,
        help="the merger gathers contributions arriving this close together into one version",
    )
    catch_up_timeout_s: float = setting(
        5.0,
        ge=0,
        help="on assignment, wait this long for the merger to catch up; must be below "
        "--max-poll-interval-ms",
    )
    # A version is published as the keys it changed; a full model also this often
    # (and whenever the deltas since the last one outweigh it), so a reader
    # starting cold reads one full model and at most this many deltas.
    snapshot_every_versions: int = setting(
        100,
        ge=1,
        help="the merger publishes a full model at least every this many versions "
        "(the others as the keys they changed)",
    )

    def __post_init__(self) -> None:
        if self.rule == "average":
            raise ConfigError(
                "merge rule 'average' was removed: its result depended on which contributions "
                "the merger happened to gather into one version (timing); use 'sum'"
            )
        check_choice("merge rule", self.rule, MergeRule)
        check_ranges(self)


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


@dataclass(frozen=True)
class GroupTimeouts:
    """The consumer group's timing: the same for the workers, their merger and
    every group client (the clients take it whole, with no defaults of their own).

    ``max_poll_interval_ms`` is also the group's rebalance timeout: how long a
    join waits for members. The embedded broker holds every join about this
    long, so the default is 15 s rather than Kafka's 5 minutes; a batch takes
    milliseconds, so a worker never comes near it by being slow.
    """

    session_timeout_ms: int = setting(
        10_000, ge=1, help="group session timeout: a member silent this long is evicted"
    )
    heartbeat_interval_ms: int = setting(
        3_000, ge=1, help="group heartbeat interval; below the session timeout"
    )
    max_poll_interval_ms: int = setting(
        15_000,
        ge=1,
        help="group rebalance timeout; the embedded broker holds each join this long",
    )

    def __post_init__(self) -> None:
        check_ranges(self)
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


@dataclass(frozen=True)
class WorkerSettings:
    """One worker process: where to read, how to score, how to batch
    (``group``: the consumer group's timing, see :class:`GroupTimeouts`)."""

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
        gt=0,
        le=1e100,
        help="a learning step that would put a weight beyond +-this (or make the model "
        "non-finite) is refused; the event is still predicted",
    )
    max_poll_records: int = setting(1000, ge=1, help="batch size")
    poll_timeout_ms: int = field(default=100)
    group: GroupTimeouts = field(default_factory=GroupTimeouts)
    auto_offset_reset: OffsetReset = setting(
        "earliest", flag="--from", help="where a new group starts reading"
    )
    delivery_timeout_s: float = field(default=30.0)
    stats_interval_s: float = setting(30.0, gt=0, help="a 'worker stats' log line this often")
    metrics_port: int = _metrics_port(9400)
    quality_window: int = _quality_window()
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
        check_choice("client", self.client, ClientName)
        check_client_options(self.client, self.kafka)
        check_choice("model_impl", self.model_impl, ModelImpl)
        check_choice("output_encoding", self.output_encoding, OutputEncoding)
        check_choice("drift_detector", self.drift_detector, DriftDetector)
        check_choice("on_drift", self.on_drift, OnDrift)
        check_choice("auto_offset_reset", self.auto_offset_reset, OffsetReset)
        check_ranges(self)
        poll_ms = self.group.max_poll_interval_ms
        if self.merge.enabled and self.merge.catch_up_timeout_s * 1000 >= poll_ms:
            raise ConfigError(
                f"merge.catch_up_timeout_s ({self.merge.catch_up_timeout_s}) must be below "
                f"max_poll_interval_ms ({poll_ms} ms): the wait happens "
                "inside a rebalance, and a longer one would get the worker evicted"
            )
        if self.on_drift == "reset" and self.merge.enabled:
            raise ConfigError(
                "on_drift='reset' needs merging off: a worker cannot reset the global model "
                "on its own (its next contribution would undo the others' learning)"
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
        ge=0,
        help="wait before restarting a crashed process, doubled per crash in a row",
    )
    max_delay_s: float = setting(
        30.0, flag="--restart-max-delay-s", ge=0, help="the longest wait between restarts"
    )
    max_restarts: int = setting(
        5,
        ge=0,
        help="crashes in a row (each within --restart-stable-after-s of its start) before "
        "giving up with an error",
    )
    stable_after_s: float = setting(
        60.0,
        flag="--restart-stable-after-s",
        gt=0,
        help="a process that ran this long has recovered: its crash count restarts",
    )

    def __post_init__(self) -> None:
        check_ranges(self)
        if not 0 <= self.delay_s <= self.max_delay_s:
            raise ConfigError(
                f"restart delay_s ({self.delay_s}) must be >= 0 and at most "
                f"max_delay_s ({self.max_delay_s})"
            )

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
    group: GroupTimeouts = field(default_factory=GroupTimeouts)
    metrics_port: int = _metrics_port(9399)
    crash_at: str | None = _crash_at()

    def __post_init__(self) -> None:
        if self.crash_at:
            CrashAt.parse(self.crash_at)
        check_choice("client", self.client, ClientName)
        check_client_options(self.client, self.kafka)
        check_ranges(self)

    @classmethod
    def for_workers(cls, workers: WorkerSettings) -> MergerSettings:
        """The merger that goes with these workers: same broker, topics, model, timing."""
        return cls(
            kafka=workers.kafka,
            topics=workers.topics,
            model=workers.model,
            merge=workers.merge,
            client=workers.client,
            group=workers.group,
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
    checkpoint_dir: Path | None = _checkpoint_dir(Path(DEFAULT_CHECKPOINT_DIR))
    client: ClientName = _client()
    host: str = setting("127.0.0.1", help="address to bind; anything but loopback exposes the API")
    port: int = setting(8000, ge=0, le=65535, help="HTTP port")
    offline: bool = _offline()
    token: str | None = setting(
        None,
        env=ENV_SERVE_TOKEN,
        secret=True,
        help="bearer token required on every endpoint but /healthz and /metrics (never shown "
        "or logged)",
    )
    events_enabled: bool = setting(
        True, flag="--no-events", help="switch POST /v1/events off (404)"
    )
    max_body_bytes: int = setting(4 * 1024 * 1024, ge=1, help="larger request bodies get 413")
    max_batch_events: int = setting(10_000, ge=1, help="longer arrays of events get 413")
    # The worker's bounds, so an event the API accepts is one a worker accepts.
    limits: EventLimits = field(default_factory=EventLimits)
    quantize: Quantize = _quantize()
    quality_window: int = _quality_window()
    # How long POST /v1/events waits for the broker's acknowledgement.
    delivery_timeout_s: float = field(default=10.0)
    checkpoint_poll_s: float = setting(
        5.0, gt=0, help="with --offline: how often the checkpoint directory is re-read"
    )

    def __post_init__(self) -> None:
        check_choice("client", self.client, ClientName)
        check_client_options(self.client, self.kafka)
        check_choice("quantize", self.quantize, Quantize)
        check_ranges(self)
        if self.token is not None and not self.token.strip():
            raise ConfigError("token must not be empty (leave it unset for no authentication)")
        if self.limits.max_event_bytes > self.max_body_bytes:
            raise ConfigError(
                f"max_event_bytes ({self.limits.max_event_bytes}) must not exceed "
                f"max_body_bytes ({self.max_body_bytes})"
            )
        if self.offline and self.checkpoint_dir is None:
            raise ConfigError("offline serving needs a checkpoint directory")
        if self.delivery_timeout_s <= 0:
            raise ConfigError(f"delivery_timeout_s must be > 0, got {self.delivery_timeout_s}")


@dataclass(frozen=True)
class LogSettings:
    """How an entry point configures logging (the library only adds a NullHandler)."""

    level: LogLevel = setting("INFO", flag="--log-level", help="the lowest level logged")
    format: LogFormat = setting(
        "text", flag="--log-format", help="json: one object per line, for log shippers"
    )

    def __post_init__(self) -> None:
        check_choice("log level", self.level, LogLevel)
        check_choice("log format", self.format, LogFormat)


@dataclass(frozen=True)
class WorkSettings:
    """``learnstream work`` and :func:`stream.run_workers`: ``processes`` workers on
    this machine, a merger beside them unless ``merger`` is off (one runs
    elsewhere), each restarted by ``restart`` when it crashes."""

    # Flattened: the worker's options are the command's own (--bootstrap, not --worker-...).
    worker: WorkerSettings = field(default_factory=WorkerSettings, metadata={"flatten": True})
    processes: int = setting(1, ge=1, help="worker processes on this machine")
    merger: bool = setting(
        True,
        flag="--no-merger",
        help="do not start a merger here (one runs elsewhere: `learnstream merge`)",
    )
    restart: RestartSettings = field(default_factory=RestartSettings)
    log: LogSettings = field(default_factory=LogSettings)

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass(frozen=True)
class DemoSettings:
    """``learnstream demo``: the whole pipeline on the embedded broker, then a summary.

    ``bootstrap`` unset starts the embedded broker on a free port (its variable
    is not ``KAFKA_BOOTSTRAP_SERVERS``, so a shell set up for a real cluster
    does not run the demo there). ``passes``: replay the dataset this many times
    (ids stay unique per pass). ``merge`` holds the demo's merging cadence.
    ``serve``: a live demo instead of a summary: the dataset is replayed at
    ``rate`` events per second, pass after pass, until Ctrl-C or SIGTERM, and
    ``serve`` runs beside the pipeline on 127.0.0.1:``port``, so its dashboard
    shows the stream moving (``passes`` and ``timeout_s`` do not apply).
    """

    ENV_PREFIX: ClassVar[str] = "LEARNSTREAM_DEMO_"

    workers: int = setting(2, ge=1, help="worker processes")
    partitions: int = setting(4, ge=1, help="features partitions")
    dataset: Dataset = setting(
        "phishing", help="dataset to replay: bundled with river, or ctr (synthetic clicks)"
    )
    passes: int = setting(1, ge=1, help="replay the dataset this many times")
    bootstrap: str | None = setting(
        None, help="use this broker; unset: the embedded one, started for the demo"
    )
    checkpoint_dir: Path | None = setting(
        None, help="keep global model checkpoints here; unset: a new temporary directory"
    )
    merging: bool = setting(True, flag="--no-merge", help="workers do not merge")
    serve: bool = setting(
        False,
        help="keep replaying the dataset at --rate until Ctrl-C or SIGTERM, with serve's "
        "live dashboard on --port (its address is printed); no summary",
    )
    port: int = setting(8000, ge=1, le=65535, help="with --serve: the dashboard's HTTP port")
    rate: float = setting(50.0, gt=0, help="with --serve: events replayed per second")
    topics: TopicSettings = field(default_factory=TopicSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    # Phishing is short (1,250 events, sent in a burst): merge often, and make a
    # version of every contribution, so the workers share what they learn early.
    merge: MergeSettings = internal(
        lambda: MergeSettings(
            every_events=25, interval_s=0.5, catch_up_timeout_s=3.0, version_linger_s=0.0
        )
    )
    timeout_s: float = 180.0
    log_dir: Path | None = None

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, Dataset)
        check_ranges(self)
        if self.workers > self.partitions:
            raise ConfigError(
                f"{self.workers} workers for {self.partitions} partitions: "
                f"{self.workers - self.partitions} would sit idle"
            )

    @property
    def merge_settings(self) -> MergeSettings:
        """The workers' merging: the demo's cadence, switched and stored as asked."""
        return replace(self.merge, enabled=self.merging, checkpoint_dir=self.checkpoint_dir)


@dataclass(frozen=True)
class BenchSettings:
    """``learnstream bench``: what to measure (see :mod:`stream.tools.bench`).

    Its variables are ``LEARNSTREAM_BENCH_*``: ``--features`` or ``--encoding``
    mean something else to ``produce``.
    """

    ENV_PREFIX: ClassVar[str] = "LEARNSTREAM_BENCH_"

    bootstrap: str | None = setting(None, help="broker to use; unset: the embedded one")
    clients: tuple[ClientName, ...] = setting(
        ("confluent", "kafka-python"), help="comma-separated clients to measure"
    )
    models: tuple[BenchModel, ...] = setting(("scaler+lr",), help="comma-separated models")
    features: tuple[int, ...] = setting(
        (10, 50), ge=1, help="comma-separated features per event, e.g. 10,50,200"
    )
    encoding: Encoding = setting("msgpack", help="event encoding")
    events: int = setting(100_000, ge=1000, help="events per drain (a stable figure needs 1000)")
    scale_workers: int = setting(
        2, ge=1, help="workers (and partitions) of the scaling run; 1 skips it"
    )
    latency_fractions: tuple[float, ...] = setting(
        (0.5,),
        gt=0,
        lt=1,
        help="comma-separated: latency runs at these fractions of the measured maximum rate",
    )
    latency_duration_s: float = setting(5.0, gt=0, help="length of each latency run")
    merge_cost: bool = setting(
        True, flag="--no-merge-cost", help="skip measuring the cost of merging"
    )
    out: Path | None = setting(
        None,
        help="results as JSON; unset: bench-results/bench.json (bench-results/serve.json "
        "with --serve, bench-results/categorical.json with --categorical)",
    )
    categorical: bool = setting(
        False,
        help="no broker: the batch decoder and the kernel on numeric, categorical and hashed "
        "events (events/s), and per quarter of a stream whose distinct features grow to "
        "10 x 2 x --events",
    )
    serve: bool = setting(
        False,
        help="benchmark `learnstream serve` instead, with wrk and hey (install them first: "
        "apt-get install wrk hey): requests/s, latency, batches, 100 hot swaps under load",
    )
    serve_duration_s: float = setting(10.0, gt=0, help="length of each serve load phase")
    freshness: bool = setting(
        False,
        help="how far 4 workers trail one model after a concept switch (river's SEA stream at "
        "800 events/s), per merge interval (0.25, 1 and 4 s); results in "
        "bench-results/freshness.json unless --out",
    )

    def __post_init__(self) -> None:
        for client in self.clients:
            check_choice("client", client, ClientName)
        for model in self.models:
            check_choice("model", model, BenchModel)
        check_choice("encoding", self.encoding, Encoding)
        check_ranges(self)


@dataclass(frozen=True)
class ProduceSettings:
    """Sending events to the features topic (``learnstream produce``, the demo,
    the bench). ``rate``: events per second (None: as fast as the broker takes
    them). ``key``: "id" keys each record by its event id (so an id always lands
    on the same partition), "none" lets the client spread records.
    ``timestamp``: add ``ts`` (send time, epoch seconds) to each event.
    """

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    topic: str = DEFAULT_FEATURES_TOPIC
    encoding: Encoding = setting("msgpack", help="event encoding")
    rate: float | None = setting(None, gt=0, help="events per second; unset: as fast as possible")
    limit: int | None = setting(None, ge=0, help="stop after this many events; unset: no limit")
    key: KeyMode = setting("id", help="record key")
    timestamp: bool = True
    client: ClientName = _client()

    def __post_init__(self) -> None:
        check_choice("key", self.key, KeyMode)
        check_choice("encoding", self.encoding, Encoding)
        check_choice("client", self.client, ClientName)
        check_ranges(self)


@dataclass(frozen=True)
class SourceSettings:
    """Where ``learnstream produce`` takes its events: the synthetic stream (the
    default), a river dataset or a file; one of them."""

    synthetic: bool = setting(
        False, help="logistic data from a known model (the default source; needs --limit)"
    )
    dataset: Dataset | None = setting(
        None, help="a dataset bundled with river, or ctr: synthetic clicks on 20 categorical fields"
    )
    file: Path | None = setting(None, help="a .csv (with header) or .jsonl file")
    features: int = setting(10, ge=1, help="synthetic: features per event")
    seed: int = setting(42, help="synthetic: random seed")
    drift_at: int | None = setting(
        None, ge=0, help="synthetic: event index where the true model changes; unset: no drift"
    )
    label_column: str = _label_column()
    id_column: str | None = _id_column()
    passes: int = setting(1, ge=1, help="dataset/file: replay this many times")

    def __post_init__(self) -> None:
        if self.dataset is not None:
            check_choice("dataset", self.dataset, Dataset)
        check_ranges(self)
        chosen = [
            flag
            for flag, given in (
                ("--synthetic", self.synthetic),
                ("--dataset", self.dataset is not None),
                ("--file", self.file is not None),
            )
            if given
        ]
        if len(chosen) > 1:
            raise ConfigError(f"one source at a time: {' and '.join(chosen)} were both given")


@dataclass(frozen=True)
class ProduceCommand:
    """``learnstream produce``: events from ``source`` to the features topic of
    ``topics``, sent as ``output`` says, with a progress bar unless ``progress`` is off."""

    source: SourceSettings = field(default_factory=SourceSettings, metadata={"flatten": True})
    output: ProduceSettings = field(default_factory=ProduceSettings, metadata={"flatten": True})
    topics: TopicSettings = field(default_factory=TopicSettings)
    progress: bool = setting(True, flag="--no-progress", help="no progress bar on stderr")

    @property
    def produce(self) -> ProduceSettings:
        """The output settings, sending to the features topic."""
        return replace(self.output, topic=self.topics.features)


@dataclass(frozen=True)
class BrokerSettings:
    """``learnstream broker``: the embedded broker (memory only), in the foreground.

    Its variables are ``LEARNSTREAM_BROKER_*``: ``--host`` and ``--port`` mean
    the HTTP server's to ``serve``.
    """

    ENV_PREFIX: ClassVar[str] = "LEARNSTREAM_BROKER_"

    host: str = setting("127.0.0.1", help="address to bind")
    port: int = setting(9092, ge=0, le=65535, help="Kafka port")
    log_file: Path | None = setting(None, help="the broker's own log; unset: stderr")


@dataclass(frozen=True)
class TopicsCreateSettings:
    """``learnstream topics create``: the pipeline's topics, sized for the cluster."""

    partitions: int = setting(4, ge=1, help="features/predictions partitions")
    replication_factor: int = setting(
        1, ge=1, help="copies of each partition; 3 on a production cluster"
    )


@dataclass(frozen=True)
class ModelShowSettings:
    """``learnstream model show``: the global model's version, counts and top weights."""

    top: int = setting(10, ge=0, help="weights to list")
    offline: bool = _offline()


@dataclass(frozen=True)
class ModelExportSettings:
    """``learnstream model export``: the global model as a file.

    Its own variables are ``LEARNSTREAM_EXPORT_*``: ``--out`` means the page to
    ``report``; the settings it shares (``--quantize``, ``--label-column``,
    ``--offline``) keep their one variable.
    """

    ENV_PREFIX: ClassVar[str] = "LEARNSTREAM_EXPORT_"

    format: ExportFormat = setting(
        "json", help="json: the whole state; msgpack, onnx: the compact scoring form"
    )
    quantize: Quantize = _quantize()
    holdout: Path | None = setting(
        None,
        help="labeled CSV/JSONL: report accuracy and log loss of the full and the exported model",
    )
    label_column: str = _label_column()
    out: Path | None = setting(None, help="file to write; unset: stdout")
    offline: bool = _offline()

    def __post_init__(self) -> None:
        check_choice("format", self.format, ExportFormat)
        check_choice("quantize", self.quantize, Quantize)


@dataclass(frozen=True)
class ScoreSettings:
    """``learnstream score FILE``: every row of a file scored with the global model."""

    label_column: str = _label_column()
    id_column: str | None = _id_column()
    offline: bool = _offline()


@dataclass(frozen=True)
class PredictionsSettings:
    """``learnstream predictions``: tail the predictions topic.

    Its own variables are ``LEARNSTREAM_PREDICTIONS_*``: ``--limit`` means
    events sent to ``produce``, ``--json`` the output of ``status``.
    ``--window`` is the old name of ``--quality-window``.
    """

    ENV_PREFIX: ClassVar[str] = "LEARNSTREAM_PREDICTIONS_"

    json: bool = setting(False, help="one JSON object per line")
    from_beginning: bool = setting(False, help="start at the oldest prediction")
    limit: int | None = setting(
        None, ge=1, help="stop after this many predictions; unset: no limit"
    )
    idle_timeout_s: float | None = setting(
        None, ge=0, help="stop after this long without a prediction; unset: never"
    )
    quality_window: int = _quality_window(deprecated=("--window",))

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass(frozen=True)
class StatusSettings:
    """``learnstream status``. Its variables are ``LEARNSTREAM_STATUS_*``."""

    ENV_PREFIX: ClassVar[str] = "LEARNSTREAM_STATUS_"

    recent: int = setting(1000, ge=1, help="predictions to judge quality on")
    json: bool = setting(False, help="machine-readable output")

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass(frozen=True)
class ReportSettings:
    """``learnstream report``. Its own variables are ``LEARNSTREAM_REPORT_*``
    (``--out``, ``--limit`` mean other things to other commands); ``--window``
    is the old name of ``--quality-window``."""

    ENV_PREFIX: ClassVar[str] = "LEARNSTREAM_REPORT_"

    out: Path = setting(Path("report.html"), help="HTML page; the PNGs go beside it")
    quality_window: int = _quality_window(500, deprecated=("--window",))
    limit: int | None = setting(None, ge=1, help="read at most this many predictions; unset: all")

    def __post_init__(self) -> None:
        check_ranges(self)
