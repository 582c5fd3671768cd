"""Test fixtures: a real broker for integration tests, chosen in this order:

1. the address in ``KAFKA_BOOTSTRAP_SERVERS``;
2. Apache Kafka through testcontainers, when a Docker engine answers;
3. the embedded tansu broker.

Every test gets its own uuid-named topics and group, so tests never see each
other's records on a shared broker.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator

import pytest

from stream.config import ENV_BOOTSTRAP, KafkaSettings, TopicSettings
from stream.kafka.connect import CLIENTS
from stream.kafka.embedded import EmbeddedBroker

logger = logging.getLogger(__name__)


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        return bool(client.ping())
    except Exception:  # no engine, no socket, no permission: all mean "no"
        return False


@pytest.fixture(scope="session")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    given = os.environ.get(ENV_BOOTSTRAP)
    if given:
        logger.info("tests use the broker at %s (%s)", given, ENV_BOOTSTRAP)
        yield given
        return
    if _docker_answers():
        from testcontainers.community.kafka import KafkaContainer

        with KafkaContainer("confluentinc/cp-kafka:7.6.1").with_kraft() as container:
            address = container.get_bootstrap_server()
            logger.info("tests use Apache Kafka in a container at %s", address)
            yield address
        return
    log_path = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(port=0, log_path=log_path) as broker:
        logger.info("tests use the embedded broker at %s", broker.bootstrap_servers)
        yield broker.bootstrap_servers


@pytest.fixture(params=CLIENTS)
def client(request: pytest.FixtureRequest) -> str:
    """Tests that take this run once per Kafka client."""
    return request.param


@pytest.fixture
def kafka(bootstrap: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=bootstrap)


@pytest.fixture
def topics() -> TopicSettings:
    tag = uuid.uuid4().hex[:10]
    return TopicSettings(
        features=f"features-{tag}", predictions=f"predictions-{tag}", group_id=f"group-{tag}"
    )
