#!/usr/bin/env bash
# Runs the production stack from this checkout: Xvfb, Chromium, Playwright MCP, Vite on
# app-template, and port 3000. Installs what it needs first. Ctrl-C stops everything.
# Extra arguments go to `supervisor run` (e.g. --listen 127.0.0.1:3000).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
image/build-binary.sh >/dev/null   # the same static binary the tests and the image use
export PATH="$PWD/target/x86_64-unknown-linux-musl/release:$PATH"
# Exported, so `supervisor ctl` inside the services (the agent's) finds this socket too.
export SUPERVISOR_RUNTIME_DIR="${SUPERVISOR_RUNTIME_DIR:-/tmp/supervisor-local}"
mkdir -p "$SUPERVISOR_RUNTIME_DIR"
echo "control socket: $SUPERVISOR_RUNTIME_DIR/control.sock   (SUPERVISOR_RUNTIME_DIR=$SUPERVISOR_RUNTIME_DIR supervisor ctl status)"
exec supervisor run --config opt/supervisor.toml --app-dir app-template \
  --service-user "" --port-guard off "$@"
