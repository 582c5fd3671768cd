"""The online model: its learning state, river wrapper and the pure merge algebra. No Kafka here."""
