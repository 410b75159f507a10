#!/usr/bin/env bash
# Runs the production stack from this checkout: Xvfb, Chromium, Playwright MCP, Vite on
# app-template, and port 3000. Installs what it needs first. Ctrl-C stops everything.
# Extra arguments go to `supervisor run` (e.g. --listen 127.0.0.1:3000).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -p supervisor --bin supervisor
export PATH="$PWD/target/release:$PATH"
runtime="${SUPERVISOR_RUNTIME_DIR:-/tmp/supervisor-local}"
mkdir -p "$runtime"
echo "control socket: $runtime/control.sock   (supervisor ctl --runtime-dir $runtime status)"
exec supervisor run --config opt/supervisor.toml --app-dir app-template \
  --runtime-dir "$runtime" --service-user "" --port-guard off "$@"
