#!/usr/bin/env bash
# Sets up (if needed) and runs trackwatch on one machine: embedded Kafka-protocol broker, worker,
# collector on http://127.0.0.1:8080 and simulated traffic (a day of history the models learn
# from first, then live traffic with a labelled incident). Extra arguments go to `trackwatch run`
# (e.g. --duration 120 to stop by itself, --no-simulate to wait for your own trackers, --durable
# to keep the data under ./data).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/trackwatch run --plan examples/ecommerce.yaml --simulate "$@"
