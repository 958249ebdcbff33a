"""Bytewax dataflows, one module per stream (``python -m bytewax.run flows.orders``)."""
