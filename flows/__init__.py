"""Bytewax dataflows, one module per stream (``python -m bytewax.run flows.orders``)."""

from foundation.allocators import configure_deltalake_allocator

# Before anything below imports deltalake: its allocator reads its options once.
configure_deltalake_allocator()
