#!/usr/bin/env bash
# Runs every benchmark and writes the raw figures to bench/results.jsonl (one JSON object a
# line) and BENCHMARKS.md generated from them (bench/report.py; bench/NOTES.md is appended).
# Usage: bench/run.sh [SUPERVISOR_BIN]   (default: the static release binary, built if stale)
# Env: QUICK=1 (short runs, ~5 min), ROUNDS (3), ONLY="proxy env stack recovery" (a subset;
#      the figures of the others are kept from the previous results file).
# The benches that bind the fixed ports (stack: boot and footprint; recovery) hold
# /tmp/sup-fixed-ports.lock while they run; every bench kills what it started on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
for pair in wrk:wrk nginx:nginx-light; do
  command -v "${pair%%:*}" >/dev/null || { apt-get install -y -qq "${pair#*:}" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "${pair#*:}" >/dev/null; }; }
done
[ -d tests/js/node_modules/http-proxy ] || npm ci --prefix tests/js --silent
if [ -n "${1:-${SUPERVISOR_BIN:-}}" ]; then bin="${1:-$SUPERVISOR_BIN}"; else image/build-binary.sh >&2; bin=target/x86_64-unknown-linux-musl/release/supervisor; fi
export SUPERVISOR_BIN=$(realpath "$bin")
export ROUNDS="${ROUNDS:-3}"
only="${ONLY:-proxy env stack recovery}"
results=bench/results.jsonl
new=$(mktemp)
trap 'rm -f "$new"' EXIT
export BENCH_RESULTS="$new"

meta() { python3 -c 'import json,sys; print(json.dumps({"bench":"meta","case":"","leg":"","metric":sys.argv[1],"value":sys.argv[2],"unit":"","round":0}))' "$1" "$2" >>"$new"; }
meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
meta commit "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- supervisor || echo ' (with uncommitted changes)')"
meta cpu "$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
meta cores "$(nproc)"
meta kernel "$(uname -r)"
meta load_before "$(cut -d' ' -f1-3 /proc/loadavg)"
meta wrk "$(wrk -v 2>&1 | head -1 | awk '{print $1, $2}')"
meta nginx "$(nginx -v 2>&1 | sed 's/.*: //')"
meta node "$(node --version)"
meta vite "$(app-template/node_modules/.bin/vite --version | awk '{print $1}')"
meta chromium "$(chromium --version 2>/dev/null | head -1)"
meta quick "${QUICK:-0}"
meta connections "${CONNECTIONS:-64}"

for b in $only; do
  echo "== $b" >&2
  case "$b" in
    proxy) python3 bench/proxy.py ;;
    env) python3 bench/env.py ;;
    stack) flock /tmp/sup-fixed-ports.lock python3 bench/stack.py ;;
    recovery) ROUNDS="${RECOVERY_ROUNDS:-$([ "${QUICK:-}" = 1 ] && echo 3 || echo 5)}" bench/recovery.sh "$SUPERVISOR_BIN" ;;
    *) echo "unknown bench $b" >&2; exit 2 ;;
  esac
done

# Keep the previous figures of the benches not run this time.
if [ -f "$results" ] && [ -n "${ONLY:-}" ]; then
  python3 - "$results" "$only" >>"$new" <<'PY'
import json, os, sys
ran = set(sys.argv[2].split()) | {"meta"}
parts = os.environ.get("STACK_PARTS", "boot alone footprint").split()
name = {"stack": (["boot"] if "boot" in parts else []) + (["footprint"] if "footprint" in parts else [])}
ran = {x for r in ran for x in name.get(r, [r])}
for l in open(sys.argv[1]):
    if l.strip() and json.loads(l)["bench"] not in ran:
        print(l, end="")
PY
fi
cp "$new" "$results"
{ python3 bench/report.py "$results"; [ -f bench/NOTES.md ] && cat bench/NOTES.md; } >BENCHMARKS.md
echo "wrote $results and BENCHMARKS.md" >&2
