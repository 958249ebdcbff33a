"""streambatch: Kafka streams into clean, deduplicated, queryable batches.

This package is the application on top of the others: the CLI and its commands.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
