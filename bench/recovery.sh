#!/usr/bin/env bash
# Recovery figures (prints them; asserts nothing): the production stack (opt/supervisor.toml
# on a copy of app-template, 127.0.0.1:3000, as root without dropping users), then ROUNDS
# times per service: SIGKILL its main process and time, from the kill, (a) the exit seen by
# the supervisor (`last_exit.at`) and (b) the service ready again (`ready_at`), both as the
# supervisor stamps them, and (c) the whole stack ready again (what restarts with it included).
# Prints the median, p90 and max per service.
# Uses the fixed ports 3000, 5173, 9222, 3001, 3002 (takes /tmp/sup-fixed-ports.lock).
# Usage: bench/recovery.sh [SUPERVISOR_BIN]   (default: the static release binary, built if stale)
#        SERVICES="vite chromium" ROUNDS=10 CONFIG=opt/supervisor.toml (an older binary may need
#        the config of its own commit: git show REV:opt/supervisor.toml > old.toml; CONFIG=old.toml)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
bench_init "${1:-}"
rounds="${ROUNDS:-10}"
services="${SERVICES:-vite chromium playwright-mcp acp}"

exec 9>/tmp/sup-fixed-ports.lock
flock 9
# Ten kills a minute are a crash loop by the production limits, and a run must last
# backoff.reset_after (30 s) to count as stable: lift both, so every round measures the
# first restart after a stable run (the case SPEC §4 bounds at 100 ms of waiting).
prod_setup -e '/^\[services\./a crash_loop = { max_restarts = 1000, window = "60s" }\nbackoff = { reset_after = "1s" }'
app="$work/app"
HOME="$work/home" start_supervisor "$work/supervisor.toml" "$app" 127.0.0.1:3000 120

python3 - "$bin" "$work/run" "$rounds" $services <<'PY'
import json, os, select, signal, statistics, subprocess, sys, time
bin, run, rounds, services = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
def status():
    return json.loads(subprocess.run([bin, "ctl", "--runtime-dir", run, "--json", "status"], capture_output=True, check=True).stdout)
def svc(name):
    return next(s for s in status()["services"] if s["name"] == name)
def wait(pred, limit=60):
    end = time.time() + limit
    while time.time() < end:
        v = pred()
        if v: return v
        time.sleep(0.01)
    raise SystemExit("timed out")
def stack_ready():
    return status()["ready"]
def pct(xs, p):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]
for name in services:
    exits, readies, spawns, own, floors, stacks = [], [], [], [], [], []
    for _ in range(rounds):
        wait(stack_ready, 120)
        time.sleep(1.5)  # settle past reset_after: what is measured is recovery after a stable run
        s = svc(name)
        pid = s["pid"]
        pfd = os.pidfd_open(pid)  # readable once the kernel has finished the process off: the floor
        t0 = time.time() * 1000
        os.kill(pid, signal.SIGKILL)
        select.select([pfd], [], [], 10)
        floors.append(time.time() * 1000 - t0)
        os.close(pfd)
        back = wait(lambda: (lambda v: v if v["ready"] and v["pid"] != pid and v["ready_at"] and v["ready_at"] > t0 else None)(svc(name)))
        exits.append(back["last_exit"]["at"] - t0 if back["last_exit"] else float("nan"))
        readies.append(back["ready_at"] - t0)
        spawns.append(back["started_at"] - back["last_exit"]["at"] if back["last_exit"] else float("nan"))
        own.append(back["ready_at"] - back["started_at"])
        # The whole stack back: what restarted with it (restart_with) counts too.
        st = wait(lambda: (lambda v: v if v["ready"] else None)(status()), 120)
        stacks.append(max(s["ready_at"] or 0 for s in st["services"]) - t0)
    if os.environ.get("BENCH_RESULTS"):  # bench/run.sh: raw figures for BENCHMARKS.md
        with open(os.environ["BENCH_RESULTS"], "a") as f:
            for metric, xs in [("exit_seen", exits), ("exit_floor", floors), ("ready", readies), ("respawn", spawns), ("own_start", own), ("stack_ready", stacks)]:
                for i, v in enumerate(xs):
                    f.write(json.dumps({"bench": "recovery", "case": name, "leg": "supervisor", "metric": metric, "value": round(v, 1), "unit": "ms", "round": i + 1}) + "\n")
            f.write(json.dumps({"bench": "recovery", "case": name, "leg": "supervisor", "metric": "rounds", "value": rounds, "unit": "", "round": 0}) + "\n")
    print(f"{name:<15} SIGKILL -> exit seen: median {statistics.median(exits):7.1f} ms (the kernel's own, pidfd: {statistics.median(floors):.1f})   "
          f"-> ready again: median {statistics.median(readies):7.1f} ms, p90 {pct(readies, .9):7.1f}, max {max(readies):7.1f}  ({rounds} rounds)\n"
          f"{'':<15} of which exit seen -> respawned: median {statistics.median(spawns):6.1f} ms; respawned -> ready (the service's own start): median {statistics.median(own):6.1f} ms\n"
          f"{'':<15} SIGKILL -> the whole stack ready again (what restarts with it included): median {statistics.median(stacks):7.1f} ms")
PY
stop_supervisor
