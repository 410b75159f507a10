#!/usr/bin/env bash
# Engine figures (prints them; asserts nothing):
#  1. idle RSS of `supervisor run` with five sleeping services;
#  2. latency from a service's port opening to its `ready` state (tcp and http probes),
#     over ROUNDS restarts each.
# Usage: bench/engine.sh [SUPERVISOR_BIN]   (default: the static release binary, built if stale)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
bench_init "${1:-}"
rounds="${ROUNDS:-20}"

start() { start_supervisor "$1" "$work" 127.0.0.1:0 30; } # config-file
ctl() { "$bin" ctl --runtime-dir "$work/run" "$@"; }

# 1. Idle RSS.
{ for i in 1 2 3 4 5; do printf '[services.s%d]\ncommand = ["sleep", "infinity"]\n' "$i"; done; } >"$work/idle.toml"
start "$work/idle.toml"
sleep 3 # let it go idle: this is the quantity measured, not a readiness wait
rss_kb=$(awk '/^VmRSS/ {print $2}' "/proc/$sup_pid/status")
hwm_kb=$(awk '/^VmHWM/ {print $2}' "/proc/$sup_pid/status")
threads=$(awk '/^Threads/ {print $2}' "/proc/$sup_pid/status")
echo "idle RSS, 5 sleeping services: ${rss_kb} KiB ($(( rss_kb / 1024 )) MiB), peak ${hwm_kb} KiB, ${threads} threads"
stop_supervisor

# 2. Port open -> ready.
port=$(free_port)
cat >"$work/server.py" <<PY
import http.server, socketserver, sys, time
time.sleep(0.3)  # be "starting" for a while, so the probe is polling when the port opens
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers()
    def log_message(self, *a): pass
srv = socketserver.TCPServer(("127.0.0.1", $port), H, bind_and_activate=False)
srv.allow_reuse_address = True
srv.server_bind(); srv.server_activate()
open("$work/opened", "w").write(str(time.time_ns() // 1000))  # microseconds, after listen()
srv.serve_forever()
PY
measure() { # kind probe
  cat >"$work/lat.toml" <<TOML
[services.srv]
command = ["python3", "$work/server.py"]
readiness = $2
TOML
  start "$work/lat.toml"
  local samples=()
  for _ in $(seq "$rounds"); do
    rm -f "$work/opened"
    ctl restart srv >/dev/null
    until [ -s "$work/opened" ] && ctl --json status | python3 -c 'import json,sys; s=json.load(sys.stdin)["services"][0]; sys.exit(0 if s["state"]=="ready" and s["ready_at"] else 1)'; do sleep 0.05; done
    opened_us=$(cat "$work/opened")
    ready_ms=$(ctl --json status | python3 -c 'import json,sys; print(json.load(sys.stdin)["services"][0]["ready_at"])')
    samples+=("$(( ready_ms * 1000 - opened_us ))")
  done
  stop_supervisor
  printf '%s\n' "${samples[@]}" | sort -n | awk -v k="$1" '{a[NR]=$1} END {printf "port open -> ready (%s probe, %d restarts): min %.1f ms, median %.1f ms, p90 %.1f ms, max %.1f ms\n", k, NR, a[1]/1000, a[int((NR+1)/2)]/1000, a[int(NR*0.9)]/1000, a[NR]/1000}'
}
measure tcp "{ tcp = \"127.0.0.1:$port\", period = \"5s\" }"
measure http "{ http = \"http://127.0.0.1:$port/\", status = 200, period = \"5s\" }"
