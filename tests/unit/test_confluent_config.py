"""The confluent client is given every security setting: a secured broker must
not be spoken to in plaintext because the default client dropped a flag."""

from __future__ import annotations

from stream.config import KafkaSettings
from stream.kafka import confluent


def test_security_settings_reach_librdkafka_under_its_names():
    kafka = KafkaSettings(
        bootstrap_servers="broker:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="learner",
        sasl_password="secret",
        ssl_cafile="/etc/ca.pem",
        client_options=(("ssl_check_hostname", False), ("request_timeout_ms", 5000)),
    )
    assert confluent._base_config(kafka, "w0") == {
        "bootstrap.servers": "broker:9093",
        "client.id": "w0",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "learner",
        "sasl.password": "secret",
        "ssl.ca.location": "/etc/ca.pem",
        "ssl.endpoint.identification.algorithm": "none",
        "socket.timeout.ms": 5000,
    }


def test_no_security_setting_means_librdkafkas_defaults():
    assert confluent._base_config(KafkaSettings(bootstrap_servers="b:9092"), "w0") == {
        "bootstrap.servers": "b:9092",
        "client.id": "w0",
    }
