"""streambatch: Kafka streams into clean, deduplicated, queryable batches."""

__all__ = ["__version__"]

__version__ = "0.1.0"
