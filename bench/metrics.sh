#!/usr/bin/env bash
# The cost of a metrics scrape and the supervisor's idle CPU, on the full production stack
# (opt/supervisor.toml: Xvfb, Chromium, Playwright MCP, ACP, Vite on a copy of
# app-template) inside a network namespace of its own (no port of the machine is used).
# Prints the page size, scrape latency (p50/p95/max of N sequential scrapes), the
# supervisor's CPU per scrape, its idle CPU over IDLE seconds with no scrape at all, and
# over IDLE seconds with a scrape every 15 s (Prometheus' default interval).
# CPU is utime+stime of the supervisor process (all its threads) from /proc/PID/stat.
# usage: bench/metrics.sh [--bin PATH] [--scrapes N] [--idle SECS]   (root; N=0: idle only)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/x86_64-unknown-linux-musl/release/supervisor n=200 idle=60
while [ $# -gt 0 ]; do
  case $1 in
    --bin) bin=$2; shift 2 ;;
    --scrapes) n=$2; shift 2 ;;
    --idle) idle=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
bin=$(realpath "$bin")
if [ -z "${SUP_BENCH_IN_NS:-}" ]; then
  exec env SUP_BENCH_IN_NS=1 unshare --net "$0" --bin "$bin" --scrapes "$n" --idle "$idle"
fi
ip link set lo up
work=$(mktemp -d /tmp/sup-bench-metrics.XXXXXX)
sup=
cleanup() {
  if [ -n "$sup" ]; then kill -TERM "$sup" 2>/dev/null || true; wait "$sup" 2>/dev/null || true; fi
  rm -rf "$work" "/root/.cache/supervisor-chromium-bench-$d"
}
d=$((300 + $$ % 500))
trap cleanup EXIT
cp -a app-template "$work/app"
sed -e "s|\${CONFIG_DIR}|$PWD/opt|g" -e "s/:99/:$d/g; s/X99/X$d/g" -e "s|/tmp/playwright-mcp-output|$work/mcp|" \
  -e "s/\"supervisor-chromium\"/\"supervisor-chromium-bench-$d\"/" opt/supervisor.toml > "$work/supervisor.toml"
"$bin" run --config "$work/supervisor.toml" --app-dir "$work/app" --runtime-dir "$work/run" \
  --listen 127.0.0.1:3000 --port-guard off --service-user "" > "$work/log" 2>&1 &
sup=$!
if ! "$bin" ready --timeout 180 --runtime-dir "$work/run"; then tail -40 "$work/log"; exit 1; fi
"$bin" ctl --runtime-dir "$work/run" token rotate > /dev/null
auth="Authorization: Bearer $(cat "$work/run/token")"
url=http://127.0.0.1:3000/_supervisor/metrics
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$sup/stat"; }
echo "binary: $bin ($(stat -c %s "$bin") bytes)"
"$bin" ctl --runtime-dir "$work/run" status
if [ "$n" -gt 0 ]; then
  curl -sf -H "$auth" "$url" > "$work/page"
  echo "page: $(wc -l < "$work/page") lines, $(wc -c < "$work/page") bytes"
  t0=$(ticks)
  for _ in $(seq "$n"); do curl -sf -o /dev/null -w '%{time_total}\n' -H "$auth" "$url"; done > "$work/lat"
  t1=$(ticks)
  sort -n "$work/lat" | awk -v n="$n" '{a[NR]=$1} END {printf "scrape latency over %d: p50 %.1f ms, p95 %.1f ms, max %.1f ms\n", n, a[int(n*0.5)+1]*1000, a[int(n*0.95)]*1000, a[n]*1000}'
  awk -v t="$((t1 - t0))" -v hz="$hz" -v n="$n" 'BEGIN {printf "supervisor CPU per scrape: %.2f ms (%d ticks over %d scrapes)\n", t/hz/n*1000, t, n}'
fi
sleep 5
t0=$(ticks); sleep "$idle"; t1=$(ticks)
awk -v t="$((t1 - t0))" -v hz="$hz" -v s="$idle" 'BEGIN {printf "idle, no scrapes, %d s: %d ticks = %.3f%% of one core\n", s, t, t/hz/s*100}'
if [ "$n" -gt 0 ]; then
  t0=$(ticks)
  for _ in $(seq $((idle / 15))); do sleep 15; curl -sf -o /dev/null -H "$auth" "$url"; done
  t1=$(ticks)
  awk -v t="$((t1 - t0))" -v hz="$hz" -v s="$((idle / 15 * 15))" 'BEGIN {printf "idle, a scrape every 15 s, %d s: %d ticks = %.3f%% of one core\n", s, t, t/hz/s*100}'
fi
