"""Command-line options shared by every entry point, and the settings built from them.

Environment variables are fallbacks for flags (shown in ``--help``); they are
read here, at the edge, and nowhere in the library.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from stream.config import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_CHECKPOINT_DIR,
    DEFAULT_FEATURES_TOPIC,
    DEFAULT_GROUP_ID,
    DEFAULT_PREDICTIONS_TOPIC,
    ENV_BOOTSTRAP,
    ENV_CHECKPOINT_DIR,
    ENV_FEATURES_TOPIC,
    ENV_GROUP_ID,
    ENV_PREDICTIONS_TOPIC,
    ENV_SASL_MECHANISM,
    ENV_SASL_PASSWORD,
    ENV_SASL_USERNAME,
    ENV_SECURITY_PROTOCOL,
    ENV_SSL_CAFILE,
    KafkaSettings,
    MergeSettings,
    ModelSettings,
    TopicSettings,
)
from stream.errors import ConfigError


def _env(name: str, default: str | None) -> str | None:
    return os.environ.get(name, default)


def add_kafka(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Kafka connection")
    group.add_argument(
        "--bootstrap",
        default=_env(ENV_BOOTSTRAP, DEFAULT_BOOTSTRAP),
        help=f"broker list host:port[,host:port] (env {ENV_BOOTSTRAP}; default %(default)s)",
    )
    group.add_argument(
        "--security-protocol",
        default=_env(ENV_SECURITY_PROTOCOL, None),
        choices=["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"],
        help=f"(env {ENV_SECURITY_PROTOCOL})",
    )
    group.add_argument(
        "--sasl-mechanism",
        default=_env(ENV_SASL_MECHANISM, None),
        help=f"PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, ... (env {ENV_SASL_MECHANISM})",
    )
    group.add_argument(
        "--sasl-username", default=_env(ENV_SASL_USERNAME, None), help=f"(env {ENV_SASL_USERNAME})"
    )
    group.add_argument(
        "--sasl-password", default=_env(ENV_SASL_PASSWORD, None), help=f"(env {ENV_SASL_PASSWORD})"
    )
    group.add_argument(
        "--ssl-cafile", default=_env(ENV_SSL_CAFILE, None), help=f"CA bundle (env {ENV_SSL_CAFILE})"
    )
    group.add_argument(
        "--client",
        choices=["kafka-python", "confluent"],
        default="confluent",
        help="Kafka client for the hot path: confluent (librdkafka, installed by default) or "
        "kafka-python (pure Python, 4-6x slower) (default %(default)s)",
    )
    group.add_argument(
        "--kafka-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other kafka-python client option, e.g. ssl_certfile=/path (repeatable)",
    )


def kafka_settings(args: argparse.Namespace) -> KafkaSettings:
    options: list[tuple[str, str | int | bool]] = []
    for flag, name in (
        ("security_protocol", "security_protocol"),
        ("sasl_mechanism", "sasl_mechanism"),
        ("sasl_username", "sasl_plain_username"),
        ("sasl_password", "sasl_plain_password"),
        ("ssl_cafile", "ssl_cafile"),
    ):
        value = getattr(args, flag)
        if value:
            options.append((name, value))
    for item in args.kafka_option:
        name, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--kafka-option expects NAME=VALUE, got {item!r}")
        options.append((name.strip(), _scalar(value.strip())))
    return KafkaSettings(bootstrap_servers=args.bootstrap, client_options=tuple(options))


def _scalar(value: str) -> str | int | bool:
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    try:
        return int(value)
    except ValueError:
        return value


def add_topics(parser: argparse.ArgumentParser, group_id: bool = True) -> None:
    group = parser.add_argument_group("topics")
    group.add_argument(
        "--features-topic",
        default=_env(ENV_FEATURES_TOPIC, DEFAULT_FEATURES_TOPIC),
        help=f"(env {ENV_FEATURES_TOPIC}; default %(default)s); dead letters go to <it>.dlq",
    )
    group.add_argument(
        "--predictions-topic",
        default=_env(ENV_PREDICTIONS_TOPIC, DEFAULT_PREDICTIONS_TOPIC),
        help=f"(env {ENV_PREDICTIONS_TOPIC}; default %(default)s)",
    )
    if group_id:
        group.add_argument(
            "--group-id",
            default=_env(ENV_GROUP_ID, DEFAULT_GROUP_ID),
            help=f"consumer group of the workers (env {ENV_GROUP_ID}; default %(default)s)",
        )


def topic_settings(args: argparse.Namespace) -> TopicSettings:
    return TopicSettings(
        features=args.features_topic,
        predictions=args.predictions_topic,
        group_id=getattr(args, "group_id", DEFAULT_GROUP_ID),
    )


def add_model(parser: argparse.ArgumentParser) -> None:
    defaults = ModelSettings()
    group = parser.add_argument_group("model")
    group.add_argument("--optimizer", choices=["sgd", "ftrl"], default=defaults.optimizer)
    group.add_argument(
        "--learning-rate",
        type=float,
        default=defaults.learning_rate,
        help="SGD step size, or FTRL alpha (default %(default)s)",
    )
    group.add_argument(
        "--l2", type=float, default=defaults.l2, help="L2 penalty (default %(default)s)"
    )
    group.add_argument(
        "--no-scaler",
        dest="scale",
        action="store_false",
        help="feed raw features to the regression (no StandardScaler)",
    )
    group.add_argument("--ftrl-beta", type=float, default=defaults.ftrl_beta)
    group.add_argument("--ftrl-l1", type=float, default=defaults.ftrl_l1)


def model_settings(args: argparse.Namespace) -> ModelSettings:
    return ModelSettings(
        optimizer=args.optimizer,
        learning_rate=args.learning_rate,
        l2=args.l2,
        scale=args.scale,
        ftrl_beta=args.ftrl_beta,
        ftrl_l1=args.ftrl_l1,
    )


def add_logging(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("logging")
    group.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    group.add_argument("--log-format", default="text", choices=["text", "json"])


def add_merge(parser: argparse.ArgumentParser, worker: bool = True) -> None:
    defaults = MergeSettings()
    group = parser.add_argument_group("merging and checkpoints")
    if worker:
        group.add_argument(
            "--no-merge",
            dest="merge",
            action="store_false",
            help="each worker keeps its own model (no contributions, no global model)",
        )
        group.add_argument(
            "--merge-every",
            type=int,
            default=defaults.every_events,
            help="labeled events per worker between contributions (default %(default)s)",
        )
        group.add_argument(
            "--merge-interval-s",
            type=float,
            default=defaults.interval_s,
            help="at most this long between contributions (default %(default)s)",
        )
        group.add_argument(
            "--catch-up-timeout-s",
            type=float,
            default=defaults.catch_up_timeout_s,
            help="on assignment, wait this long for the merger to catch up; must be below "
            "--max-poll-interval-ms (default %(default)s)",
        )
    group.add_argument(
        "--merge-rule",
        choices=["sum", "average"],
        default=defaults.rule,
        help="combine weight deltas by sum, or by count-weighted average (default %(default)s)",
    )
    add_checkpoint_dir(group)
    group.add_argument("--checkpoint-keep", type=int, default=defaults.checkpoint_keep)
    group.add_argument(
        "--checkpoint-interval-s",
        type=float,
        default=defaults.checkpoint_interval_s,
        help="at most one checkpoint file this often, and at stop; 0: every version "
        "(default %(default)s)",
    )


def add_checkpoint_dir(group) -> None:
    group.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=Path(_env(ENV_CHECKPOINT_DIR, DEFAULT_CHECKPOINT_DIR)),
        help=f"global model checkpoints (env {ENV_CHECKPOINT_DIR}; default %(default)s)",
    )


def merge_settings(args: argparse.Namespace) -> MergeSettings:
    defaults = MergeSettings()
    return MergeSettings(
        enabled=getattr(args, "merge", True),
        every_events=getattr(args, "merge_every", defaults.every_events),
        interval_s=getattr(args, "merge_interval_s", defaults.interval_s),
        catch_up_timeout_s=getattr(args, "catch_up_timeout_s", defaults.catch_up_timeout_s),
        rule=args.merge_rule,
        checkpoint_dir=args.checkpoint_dir,
        checkpoint_keep=args.checkpoint_keep,
        checkpoint_interval_s=args.checkpoint_interval_s,
    )
