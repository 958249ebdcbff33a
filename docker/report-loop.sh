#!/bin/sh
# The demo stack's report: orders and revenue per window from the lake, every
# REPORT_INTERVAL_SECONDS. The lake is STREAMBATCH_LAKE_URI (the MinIO bucket); DuckDB sees committed
# batches only, so an empty table just means no batch has closed yet.
set -u

interval="${REPORT_INTERVAL_SECONDS:-60}"

while true; do
    echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ) orders_per_window"
    streambatch query --report orders_per_window \
        || echo "report failed; trying again in ${interval} s" >&2
    sleep "$interval"
done
