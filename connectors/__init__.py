"""Kafka I/O: the fenced source, the dead-letter writer and the embedded broker."""
