#!/usr/bin/env bash
# Browser sensor figures (prints them; asserts nothing): the production stack
# (opt/supervisor.toml on a copy of app-template, 127.0.0.1:3000, as root without dropping
# users), then: screenshot latency 1280x800 (warm: after 3 unmeasured ones) p50/p99 over
# N requests, check latency p50/p99 over N/3, and the supervisor's RSS before the sensor's
# first use and after all of it (VmRSS and VmHWM from /proc).
# Uses the fixed ports 3000, 5173, 9222, 3001, 3002 (takes /tmp/sup-fixed-ports.lock).
# Usage: bench/sensor.sh [SUPERVISOR_BIN]   N=60 (screenshots; checks are N/3)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
bench_init "${1:-}"
n="${N:-60}"

exec 9>/tmp/sup-fixed-ports.lock
flock 9
prod_setup
app="$work/app"
HOME="$work/home" start_supervisor "$work/supervisor.toml" "$app" 127.0.0.1:3000 120
"$bin" ctl --runtime-dir "$work/run" token rotate >/dev/null

python3 - "$work/run/token" "$sup_pid" "$n" <<'PY'
import sys, time, urllib.error, urllib.request
token = open(sys.argv[1]).read().strip()
pid, n = int(sys.argv[2]), int(sys.argv[3])
def rss():
    f = dict(l.split(":", 1) for l in open(f"/proc/{pid}/status"))
    return f["VmRSS"].strip(), f["VmHWM"].strip()
def get(path):
    req = urllib.request.Request("http://127.0.0.1:3000" + path, headers={"Authorization": "Bearer " + token})
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            body = r.read()
    except urllib.error.HTTPError as e:
        sys.exit(f"{path}: {e.code} {e.read().decode(errors='replace')}")
    return (time.perf_counter() - t) * 1000, len(body)
def pct(xs, p):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]
before = rss()
for _ in range(3):
    get("/_supervisor/browser/screenshot?width=1280&height=800")
shots = [get("/_supervisor/browser/screenshot?width=1280&height=800") for _ in range(n)]
checks = [get("/_supervisor/browser/check?path=/") for _ in range(max(3, n // 3))]
after = rss()
ms = [s[0] for s in shots]
print(f"screenshot 1280x800 PNG, warm, n={len(ms)}: p50 {pct(ms, .5):.0f} ms, p99 {pct(ms, .99):.0f} ms, max {max(ms):.0f} ms, size ~{shots[-1][1]} bytes")
ms = [c[0] for c in checks]
print(f"check /, warm, n={len(ms)}: p50 {pct(ms, .5):.0f} ms, p99 {pct(ms, .99):.0f} ms, max {max(ms):.0f} ms")
print(f"supervisor RSS: before the sensor's first use {before[0]} (peak {before[1]}); after {len(shots) + len(checks) + 3} captures {after[0]} (peak {after[1]})")
PY
