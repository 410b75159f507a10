#!/usr/bin/env bash
# Terminal figures (prints them; asserts nothing): keystroke-to-echo latency through the
# public listener — p50/p99 over 200 single keystrokes typed into a login shell over the
# WebSocket of /_supervisor/pty/ID — and the throughput of `cat` of a 50 MiB text file to
# one client (tests/js/pty-client.mjs, scenario `bench`). One JSON line per round.
# Usage: bench/pty.sh [SUPERVISOR_BIN]   (default: the static release binary, built if stale)
# Env: LISTEN (default a free 127.0.0.1 port; `LISTEN=127.0.0.1:3000` only under
#      `flock /tmp/sup-fixed-ports.lock bench/pty.sh`), ROUNDS (3), MIB (50).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
bench_init "${1:-}"
[ -d tests/js/node_modules/@xterm/headless ] || { echo "tests/js/node_modules is missing: run scripts/setup.sh" >&2; exit 1; }
listen="${LISTEN:-127.0.0.1:$(free_port)}"
mkdir -p "$work/app"
cat >"$work/supervisor.toml" <<TOML
[services.idle]
command = ["sleep", "infinity"]
TOML
(set +o pipefail; yes 'the quick brown fox jumps over the lazy dog 0123456789 ABCDEFGHIJKLMNOPQRSTUVWXYZ' | head -c $((${MIB:-50} << 20))) >"$work/file.txt"
start_supervisor "$work/supervisor.toml" "$work/app" "$listen" 30
token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '%s\n' "$token" >"$work/run/token"
echo "supervisor $("$bin" --version | cut -d' ' -f2) on $listen; ${MIB:-50} MiB file" >&2
for _ in $(seq "${ROUNDS:-3}"); do
  node tests/js/pty-client.mjs bench "http://$listen" "$token" "$work/file.txt"
done
