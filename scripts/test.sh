#!/usr/bin/env bash
# Sets up (if needed) and runs the whole test suite: lint, unit, property and integration tests
# (the integration tests start the embedded broker themselves).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
