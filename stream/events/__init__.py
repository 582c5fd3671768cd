"""Events in and out: the wire contract, its codec and validation, dead letters,
sources. Knows nothing of Kafka."""
