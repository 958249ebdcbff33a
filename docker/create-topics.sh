#!/bin/bash
# One-shot topic creation for the demo stack (the `topics` service, apache/kafka image).
# The flows read topics, they never create them, and the broker's auto-creation is
# off: every source topic, its dead-letter topic and its batch announcements topic is
# made here, idempotently.
set -euo pipefail

bootstrap="${KAFKA_BOOTSTRAP_SERVERS:-kafka:9092}"
partitions="${TOPIC_PARTITIONS:-3}"
streams="${TOPIC_STREAMS:-orders clicks logs}"
topics_cmd=/opt/kafka/bin/kafka-topics.sh

for stream in $streams; do
    for topic in "$stream" "$stream.dlq" "$stream.batches"; do
        "$topics_cmd" --bootstrap-server "$bootstrap" --create --if-not-exists \
            --topic "$topic" --partitions "$partitions" --replication-factor 1
    done
done

# Fail (and so hold back everything that waits for this service) unless every
# topic is really there.
existing="$("$topics_cmd" --bootstrap-server "$bootstrap" --list)"
for stream in $streams; do
    for topic in "$stream" "$stream.dlq" "$stream.batches"; do
        if ! grep -qx -- "$topic" <<<"$existing"; then
            echo "topic $topic is missing after creation" >&2
            exit 1
        fi
    done
done
echo "topics ready on $bootstrap: $(tr '\n' ' ' <<<"$existing")"
