"""Where batches go: the Delta lake and the DuckDB query layer."""
