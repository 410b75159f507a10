#!/usr/bin/env bash
# Proxy figures (prints them; asserts nothing): wrk against a 1 KiB static file served by
# the real Vite dev server of app-template, once directly on Vite's port and once through
# the supervisor's proxy (--listen), with 2 threads and with 1 thread; requests/s, p50 and
# p99 latency of each, and the ratio proxy/direct.
# Usage: bench/proxy.sh [SUPERVISOR_BIN]   (default: the static release binary, built if stale)
# Env: DURATION (10s), CONNECTIONS (64), THREADS ("2 1"), ROUNDS (3, alternating; medians reported).
# wrk, the proxy and Vite share the machine's cores: read the ratio, not the absolutes.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
. bench/lib.sh
bench_init "${1:-}"
command -v wrk >/dev/null || { apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }; }
[ -x app-template/node_modules/.bin/vite ] || { echo "app-template/node_modules is missing: run scripts/setup.sh" >&2; exit 1; }
duration="${DURATION:-10s}"
conns="${CONNECTIONS:-64}"
threads="${THREADS:-2 1}"

# A private copy of app-template: sources copied, node_modules a directory of symlinks to
# the template's entries except .vite (so Vite's dep cache goes to the copy).
app="$work/app"
mkdir -p "$app/node_modules" "$app/public"
for f in "$root"/app-template/* "$root"/app-template/.[!.]*; do
  [ -e "$f" ] || continue
  case "$(basename "$f")" in node_modules|dist|.env|.env.*) continue ;; esac
  cp -r "$f" "$app/"
done
for e in "$root"/app-template/node_modules/* "$root"/app-template/node_modules/.[!.]*; do
  [ -e "$e" ] || continue
  [ "$(basename "$e")" = ".vite" ] && continue
  ln -s "$e" "$app/node_modules/$(basename "$e")"
done
head -c 1024 /dev/zero | tr '\0' 'x' >"$app/public/1k.txt"

vport=$(free_port)
pport=$(free_port)
cat >"$work/supervisor.toml" <<TOML
[services.vite]
command = ["$app/node_modules/.bin/vite", "--host", "127.0.0.1", "--port", "$vport", "--strictPort", "--logLevel", "warn"]
cwd = "\${APP_DIR}"
port = $vport
readiness = { http = "http://127.0.0.1:$vport/", headers = { Accept = "text/x-vite-ping" }, status = 204, period = "2s" }
TOML
start_supervisor "$work/supervisor.toml" "$app" "127.0.0.1:$pport" 60

direct="http://127.0.0.1:$vport/1k.txt"
proxied="http://127.0.0.1:$pport/1k.txt"
for u in "$direct" "$proxied"; do
  size=$(curl -sf -o /dev/null -w '%{size_download}' "$u") || { echo "GET $u failed" >&2; tail -30 "$work/log" >&2; exit 1; }
  [ "$size" = 1024 ] || { echo "GET $u: $size bytes, want 1024" >&2; exit 1; }
done

# wrk output -> "rps p50_ms p99_ms errors"
summarize() {
  awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /m$/) return v * 60000; if (v ~ /s$/) return v * 1000; return v }
    /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) } /^Requests\/sec:/ { rps = $2 }
    /Socket errors:/ { err += $4 + $6 + $8 + $10 } /Non-2xx or 3xx/ { err += $NF } / requests in / { n = $1 }
    END { printf "%s %.3f %.3f %d %d\n", rps, p50, p99, err, n }'
}
# CPU time (utime+stime, clock ticks) of the supervisor so far
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$sup_pid/stat"; }
hz=$(getconf CLK_TCK)

echo "wrk -c$conns -d$duration --latency, 1 KiB static file from Vite $(app-template/node_modules/.bin/vite --version | awk '{print $1}'), $(nproc) cores shared by wrk, proxy and Vite"
echo "supervisor: $bin"
rounds="${ROUNDS:-3}"
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
for t in $threads; do
  wrk -t"$t" -c"$conns" -d5s "$direct" >/dev/null # warm-up (Vite's JIT, both pools)
  wrk -t"$t" -c"$conns" -d5s "$proxied" >/dev/null
  : >"$work/d"; : >"$work/p"; ticks=0; n_total=0
  # Alternate direct and proxied runs, so drift of the machine hits both alike.
  for r in $(seq "$rounds"); do
    read -r d_rps d_p50 d_p99 d_err _ < <(wrk -t"$t" -c"$conns" -d"$duration" --latency "$direct" | summarize)
    c0=$(cpu_ticks)
    read -r p_rps p_p50 p_p99 p_err p_n < <(wrk -t"$t" -c"$conns" -d"$duration" --latency "$proxied" | summarize)
    c1=$(cpu_ticks)
    ticks=$((ticks + c1 - c0)); n_total=$((n_total + p_n))
    echo "$d_rps $d_p50 $d_p99" >>"$work/d"; echo "$p_rps $p_p50 $p_p99" >>"$work/p"
    echo "-t$t  round $r: direct ${d_rps} req/s (p50 ${d_p50} ms, p99 ${d_p99} ms, errors ${d_err}), proxy ${p_rps} req/s (p50 ${p_p50} ms, p99 ${p_p99} ms, errors ${p_err})"
  done
  d_rps=$(cut -d' ' -f1 "$work/d" | median); d_p50=$(cut -d' ' -f2 "$work/d" | median); d_p99=$(cut -d' ' -f3 "$work/d" | median)
  p_rps=$(cut -d' ' -f1 "$work/p" | median); p_p50=$(cut -d' ' -f2 "$work/p" | median); p_p99=$(cut -d' ' -f3 "$work/p" | median)
  echo "-t$t  median of $rounds: direct ${d_rps} req/s p50 ${d_p50} ms p99 ${d_p99} ms | proxy ${p_rps} req/s p50 ${p_p50} ms p99 ${p_p99} ms"
  awk -v t="$t" -v dr="$d_rps" -v pr="$p_rps" -v d5="$d_p50" -v p5="$p_p50" -v d9="$d_p99" -v p9="$p_p99" \
    'BEGIN { printf "-t%s  proxy/direct: throughput %.2f, p50 %.2fx (+%.3f ms), p99 %.2fx (+%.3f ms)\n", t, pr/dr, p5/d5, p5-d5, p9/d9, p9-d9 }'
  awk -v t="$t" -v ticks="$ticks" -v hz="$hz" -v n="$n_total" \
    'BEGIN { printf "-t%s  supervisor CPU while proxying: %.2f s for %d requests = %.1f us/request\n", t, ticks/hz, n, n ? ticks/hz*1e6/n : 0 }'
done
rss_kb=$(awk '/^VmRSS/ {print $2}' "/proc/$sup_pid/status")
echo "supervisor RSS after the runs: ${rss_kb} KiB"
