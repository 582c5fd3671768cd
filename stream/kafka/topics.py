"""learnstream owns its topics: what each one needs, creating the missing, refusing the wrong.

A broker that auto-creates topics (Apache Kafka's default, and the embedded
broker) gives a topic the broker's ``num.partitions`` the first time anyone
produces to it or asks for its metadata. For the two internal topics that is
silently fatal: the merger reads one total order of contributions from
partition 0 and the model topic is one sequence of versions. So every command
that uses them calls :func:`ensure_pipeline` (or :func:`ensure_internal`) at
start: a missing topic is created with what it needs; an existing one is
checked, and a wrong one stops the command with an error that names the
topic, what was found and how to fix it. Writers also name partition 0
explicitly where they rely on one partition.

What each topic needs:

- ``<features>.contributions``: exactly 1 partition (the offset fence needs one
  order of contributions); ``max.message.bytes`` large enough for a delta.
- ``<features>.model``: exactly 1 partition (one sequence of versions),
  ``cleanup.policy=compact`` (only the newest version matters),
  ``max.message.bytes`` large enough for a whole model.
- ``<features>.dlq``: any partition count.
- features and predictions: any count; the same count lets a prediction go to
  its event's partition number (co-partitioned). A mismatch is allowed (the
  prediction is then placed by its key) and reported.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from stream.config import KafkaSettings, TopicSettings
from stream.errors import BrokerError, TopicError
from stream.kafka import clients

logger = logging.getLogger(__name__)

# The internal topics accept the largest record learnstream writes.
INTERNAL_MAX_MESSAGE_BYTES = clients.MAX_RECORD_BYTES

# Partitions of the features topic (and the predictions topic) when learnstream
# creates them: how many workers can share the load.
DEFAULT_PARTITIONS = 4

FIX = (
    "delete it and run 'learnstream topics create' (or any learnstream command: "
    "they create missing topics with the right settings)"
)


@dataclass(frozen=True)
class TopicSpec:
    """What learnstream needs from one topic.

    ``partitions``: how many to create it with. ``exact``: an existing topic
    must have exactly that many (the protocol relies on one order).
    ``configs``: topic configs to create it with; ``required`` names those an
    existing topic must have (checked where the broker reports configs).
    """

    name: str
    partitions: int
    why: str
    exact: bool = False
    configs: dict[str, str] = field(default_factory=dict)
    required: tuple[str, ...] = ()


def delete_topics(kafka: KafkaSettings, names: list[str]) -> None:
    """Delete ``names`` (bench and test clean-up: the embedded broker keeps every
    record in memory); a failure is logged, never raised."""
    admin = clients.admin(kafka, client_id="learnstream-cleanup")
    try:
        admin.delete_topics(names)
    except KafkaError as exc:
        logger.warning("topics not deleted topics=%s error=%s", names, exc)
    finally:
        admin.close()


def internal_specs(topics: TopicSettings) -> list[TopicSpec]:
    """The contributions and model topics: one partition each, room for a whole model."""
    size = str(INTERNAL_MAX_MESSAGE_BYTES)
    return [
        TopicSpec(
            topics.contributions,
            1,
            "the merger's offset fence needs one total order of contributions",
            exact=True,
            configs={"max.message.bytes": size},
            required=("max.message.bytes",),
        ),
        TopicSpec(
            topics.model,
            1,
            "global model versions are one sequence",
            exact=True,
            configs={"cleanup.policy": "compact", "max.message.bytes": size},
            required=("cleanup.policy", "max.message.bytes"),
        ),
    ]


def pipeline_specs(topics: TopicSettings, partitions: int) -> list[TopicSpec]:
    """Every topic the pipeline uses, as learnstream would create it."""
    return [
        TopicSpec(topics.features, partitions, "the events"),
        TopicSpec(topics.predictions, partitions, "one prediction per event"),
        TopicSpec(topics.dead_letter, 1, "records that are not events"),
        *internal_specs(topics),
    ]


def ensure_pipeline(
    kafka: KafkaSettings,
    topics: TopicSettings,
    partitions: int | None = None,
    replication_factor: int = 1,
) -> dict[str, int]:
    """Create the pipeline's missing topics, check the existing ones; return
    each topic's partition count.

    ``partitions``: the features topic's count if it must be created (None: an
    existing features topic's count, else :data:`DEFAULT_PARTITIONS`). A
    missing predictions topic gets the features topic's count (co-partitioned).
    Raises :class:`~stream.errors.TopicError` when an existing topic cannot work.
    """
    admin = clients.admin(kafka, client_id="learnstream-topics")
    try:
        existing = _partition_counts(admin, [topics.features])
        count = existing.get(topics.features) or partitions or DEFAULT_PARTITIONS
        counts = _ensure(admin, pipeline_specs(topics, count), replication_factor)
    finally:
        admin.close()
    if partitions is not None and counts[topics.features] != partitions:
        logger.warning(
            "features topic exists with another partition count topic=%s partitions=%d asked=%d",
            topics.features,
            counts[topics.features],
            partitions,
        )
    if counts[topics.predictions] != counts[topics.features]:
        logger.warning(
            "features and predictions topics are not co-partitioned features=%s partitions=%d "
            "predictions=%s partitions=%d; each prediction is placed by its key instead of "
            "its event's partition (slower, still correct)",
            topics.features,
            counts[topics.features],
            topics.predictions,
            counts[topics.predictions],
        )
    return counts


def ensure_internal(
    kafka: KafkaSettings, topics: TopicSettings, replication_factor: int = 1
) -> dict[str, int]:
    """Only the contributions and model topics (what a merger needs)."""
    admin = clients.admin(kafka, client_id="learnstream-topics")
    try:
        return _ensure(admin, internal_specs(topics), replication_factor)
    finally:
        admin.close()


def _ensure(admin, specs: list[TopicSpec], replication_factor: int) -> dict[str, int]:
    names = [spec.name for spec in specs]
    counts = _partition_counts(admin, names)
    for spec in specs:
        if spec.name in counts:
            continue
        topic = NewTopic(spec.name, spec.partitions, replication_factor, topic_configs=spec.configs)
        try:
            admin.create_topics([topic])
            logger.info(
                "topic created topic=%s partitions=%d configs=%s",
                spec.name,
                spec.partitions,
                spec.configs,
            )
        except TopicAlreadyExistsError:
            logger.info("topic exists topic=%s", spec.name)  # someone else just created it
    counts = _wait_described(admin, names)
    for spec in specs:
        check_partitions(spec, counts[spec.name])
    configs = _configs(admin, [spec.name for spec in specs if spec.required])
    for spec in specs:
        if spec.required:
            check_configs(spec, configs.get(spec.name, {}))
    return counts


def check_partitions(spec: TopicSpec, found: int) -> None:
    """Raise TopicError when ``spec`` needs an exact partition count and ``found`` differs."""
    if spec.exact and found != spec.partitions:
        raise TopicError(
            f"topic {spec.name!r} has {found} partitions; learnstream needs exactly "
            f"{spec.partitions} ({spec.why}). It was probably auto-created by the broker "
            f"(num.partitions). Fix: {FIX}"
        )


def check_configs(spec: TopicSpec, found: dict[str, str]) -> None:
    """Raise TopicError when a required config has another value than learnstream needs.

    ``found`` empty means the broker does not report configs (the embedded
    one): nothing to check, said once at INFO.
    """
    if not found:
        logger.info("broker reports no topic configs; not checked topic=%s", spec.name)
        return
    for name in spec.required:
        want, have = spec.configs[name], found.get(name)
        if have is None:
            continue
        if name == "max.message.bytes":
            ok = int(have) >= int(want)
        elif name == "cleanup.policy":
            ok = want in have.split(",")
        else:
            ok = have == want
        if not ok:
            raise TopicError(
                f"topic {spec.name!r} has {name}={have}; learnstream needs {name}={want} "
                f"({spec.why}). Fix: kafka-configs --alter --entity-type topics "
                f"--entity-name {spec.name} --add-config {name}={want}, or {FIX}"
            )


def _partition_counts(admin, names: list[str]) -> dict[str, int]:
    """Partition count of each topic that exists (absent: it does not)."""
    try:
        described = admin.describe_topics(names)
    except KafkaError as exc:
        raise TopicError(f"cannot describe topics {names}: {exc!r}") from exc
    return {t["name"]: len(t["partitions"]) for t in described if t["error_code"] == 0}


def _wait_described(admin, names: list[str], timeout_s: float = 10.0) -> dict[str, int]:
    """Counts of topics just created: metadata can lag creation briefly."""
    deadline = time.monotonic() + timeout_s
    while True:
        counts = _partition_counts(admin, names)
        if len(counts) == len(names):
            return counts
        if time.monotonic() > deadline:
            missing = sorted(set(names) - set(counts))
            raise TopicError(f"topics {missing} still missing {timeout_s}s after creating them")
        time.sleep(0.2)


def _configs(admin, names: list[str]) -> dict[str, dict[str, str]]:
    """Each topic's configs as the broker reports them ({} where it reports none)."""
    if not names:
        return {}
    try:
        responses = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names],
            config_filter="all",
        )
    except (KafkaError, ValueError, TypeError) as exc:
        logger.warning("topic configs not readable; not checked topics=%s error=%r", names, exc)
        return {}
    return parse_configs(responses)


def parse_configs(responses: dict) -> dict[str, dict[str, str]]:
    """kafka-python 3 answers ``{"topic": {name: {config: {"value": ...}}}}``."""
    out: dict[str, dict[str, str]] = {}
    for name, configs in (responses or {}).get("topic", {}).items():
        values = {}
        for key, data in (configs or {}).items():
            value = data.get("value") if isinstance(data, dict) else data
            if value is not None:
                values[key] = str(value)
        out[name] = values
    return out


# What a topic id looks like when the broker did not report one: Kafka sends the
# all-zero UUID with a metadata error (UNKNOWN_TOPIC_OR_PARTITION while a topic
# propagates, TOPIC_AUTHORIZATION_FAILED, ...). kafka-python decodes it as None;
# confluent-kafka keeps it, printed in Kafka's base64 form.
_NO_TOPIC_IDS = frozenset({"", str(uuid.UUID(int=0)), "AAAAAAAAAAAAAAAAAAAAAA"})


def known_topic_id(value: object) -> str | None:
    """``value`` as a topic id string, or None when it says "no id reported"
    (None, empty, the zero UUID in either client's form)."""
    if value is None:
        return None
    text = str(value)
    return None if text in _NO_TOPIC_IDS else text


@dataclass(frozen=True)
class TopicIds:
    """The broker's answer about some topics: each one's id where it reported a
    known one, and the metadata error code of each one it did not."""

    ids: dict[str, str]
    errors: dict[str, int]


def topic_ids(kafka: KafkaSettings, names: Iterable[str]) -> TopicIds:
    """One metadata request: the ids of ``names`` (kafka-python's admin, whichever
    client the pipeline uses: it gives ids as UUID strings, None on an error)."""
    names = list(names)
    admin = clients.admin(kafka, client_id="learnstream-topic-ids")
    try:
        described = admin.describe_topics(names)
    except KafkaError as exc:
        raise TopicError(f"cannot describe topics {names}: {exc!r}") from exc
    finally:
        admin.close()
    ids: dict[str, str] = {}
    errors: dict[str, int] = {name: -1 for name in names}  # -1: not in the answer at all
    for topic in described:
        name = topic.get("name")
        if name not in errors:
            continue
        known = known_topic_id(topic.get("topic_id"))
        if known is not None and topic.get("error_code", 0) == 0:
            ids[name] = known
            del errors[name]
        else:
            errors[name] = int(topic.get("error_code", -1))
    return TopicIds(ids, errors)


def cluster_id(kafka: KafkaSettings) -> str | None:
    """The cluster's id as the broker reports it (None: a broker too old to say).

    It tells two clusters apart where topic names collide; a restarted embedded
    broker keeps its id, but its topics get new ids.
    """
    admin = clients.admin(kafka, client_id="learnstream-cluster-id")
    try:
        found = admin.describe_cluster().get("cluster_id")
    except KafkaError as exc:
        raise BrokerError(f"cannot describe the cluster: {exc!r}") from exc
    finally:
        admin.close()
    return str(found) if found else None
