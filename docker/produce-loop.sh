#!/bin/sh
# The demo stack's generator: `streambatch produce --stream all` round after round.
#
# One round sends GENERATOR_COUNT order events, then the clicks and the logs
# around them (about 4 and 3 per order record), each at GENERATOR_RATE records/s.
# Rounds stay small because `--stream all` builds a round in memory before
# sending it. Each round has its own seed (the clock), so its event ids are new
# and the lake keeps growing; a restarted container never re-sends an old round
# (the flows would drop all of it as duplicates).
set -eu

count="${GENERATOR_COUNT:-2000}"
rate="${GENERATOR_RATE:-200}"
# "true": orders are only OrderPlaced events, the workers make the rest of the workflow.
checkouts=""
if [ "${GENERATOR_CHECKOUTS_ONLY:-false}" = "true" ]; then
    checkouts="--checkouts-only"
fi

while true; do
    seed="$(date +%s)"
    echo "round with seed $seed: $count order events, $rate records/s per topic"
    # shellcheck disable=SC2086 # $checkouts is one flag or nothing
    streambatch produce --stream all --count "$count" --rate "$rate" --seed "$seed" --no-progress $checkouts
    # Never two rounds with the same seed, even if one took under a second.
    while [ "$(date +%s)" = "$seed" ]; do sleep 1; done
done
