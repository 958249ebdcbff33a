"""Kafka I/O: clients and settings, the fenced source and its backpressure, dead letters, the
embedded broker, and the records that flows carry."""
