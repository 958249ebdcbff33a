"""Where batches go: the Delta lake (with the dedupe index of its sink) and the DuckDB layer."""

from foundation.allocators import configure_deltalake_allocator

# Before anything below imports deltalake: its allocator reads its options once.
configure_deltalake_allocator()
