"""Everything that talks to Kafka: the transport interface, its two clients,
topics, the embedded broker."""
