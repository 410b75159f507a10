#!/usr/bin/env python3
"""Boot and footprint of the production stack (opt/supervisor.toml: Xvfb, Chromium, Playwright
MCP, the ACP agent, Vite, and the port-3000 proxy) on the fixed ports; run it under
/tmp/sup-fixed-ports.lock (bench/run.sh does). As root, services not dropped to a user.
  boot: start -> every service ready, polled from outside the same way for every leg:
    supervisor, script-polls (startup-polls.sh), script-sleeps (startup-sleeps.sh), and
    supervisor variants (Node compile cache warmed; Chromium with extra flags); legs
    alternated; CPU-seconds of the whole process tree until ready; each service alone.
  footprint: binary size; supervisor RSS idle with the full stack; whole-stack PSS after
    boot and after 10 HMR edits with the app open in Chromium through Playwright MCP, as the
    agent opens it (default and lean flags).
Env: QUICK=1, ROUNDS (3), STACK_PARTS ("boot alone footprint"), BENCH_RESULTS."""

import json, os, subprocess, sys, time
from benchlib import *
from stacklib import *

PARTS = os.environ.get("STACK_PARTS", "boot alone footprint").split()


def record_boot(case, leg, rnd, seen, cpu):
    record("boot", case, leg, "ready", round(max(seen.values()), 1), "ms", rnd)
    record("boot", case, leg, "cpu_s", round(cpu, 3), "s", rnd)
    for n, ms in seen.items():
        record("boot", case, f"{leg}:{n}", "ready", round(ms, 1), "ms", rnd)


record("footprint", "binary", "supervisor", "size", os.path.getsize(binary()), "B")

# Warm what a snapshot has warm (the OS page cache, Vite's dep optimisation) and the Node
# compile cache of the variant that uses it.
cache = f"{WORK}/node-compile-cache"
wait_free()
log("stack: warm-up boot")
p, _, _ = boot_supervisor({"NODE_COMPILE_CACHE": cache})
stop(p, 30)
wait_free()

legs = {
    "supervisor": lambda: boot_supervisor(),
    "script-polls": lambda: boot_script("startup-polls.sh"),
    "script-sleeps": lambda: boot_script("startup-sleeps.sh"),
    "sup+compile-cache": lambda: boot_supervisor({"NODE_COMPILE_CACHE": cache}),
    "sup+chromium-lean": lambda: boot_supervisor(chromium_extra=LEAN),
    # MCP after Chromium is ready, as before (opt/supervisor.toml: after it has started).
    "sup+mcp-after-ready": lambda: boot_supervisor(mcp_after="ready"),
}
for rnd, order in alternate(list(legs), ROUNDS if "boot" in PARTS else 0):
    for leg in order:
        log(f"stack: boot {leg} round {rnd}")
        busy0 = machine_busy_s()
        p, seen, cpu = legs[leg]()
        busy = machine_busy_s() - busy0
        case = "stack" if leg in ("supervisor", "script-polls", "script-sleeps") else "variant"
        record_boot(case, leg, rnd, seen, cpu)
        # Every process's, this poller's included: how busy the cores were until ready.
        record("boot", case, leg, "machine_cpu_s", round(busy, 3), "s", rnd)
        if leg == "supervisor":
            record("boot", "floor", "stack", "contention_round", round(cpu / CORES * 1000, 1), "ms", rnd)
        stop(p, 30)
        wait_free()

# Each service alone: its dependencies started and ready first, then the service timed.
alone = {
    "xvfb": ([], "xvfb"),
    "chromium": (["xvfb"], "chromium_"),
    "playwright-mcp": (["xvfb", "chromium_"], "mcp"),
    "acp": ([], "acp"),
    "vite": ([], "vite"),
}
dep_check = {"xvfb": "xvfb", "chromium_": "chromium"}
for rnd in range(1, ROUNDS + 1 if "alone" in PARTS else 1):
    for name, (deps, fn) in alone.items():
        home = fresh_home()
        pre = "; ".join(d if d == "xvfb" else f"until [ -S /tmp/.X11-unix/X99 ]; do sleep 0.01; done; {d}" for d in deps)
        script = f'. {ROOT}/bench/startup-services.sh; {pre}{";" if pre else ""} echo deps-started; read go; {fn}; wait'
        p = subprocess.Popen(["bash", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True, start_new_session=True, env={**os.environ, "HOME": home, "APP": app, "OPT": OPT, "SUP": binary(), "CHROMIUM_EXTRA": ""})
        import benchlib
        benchlib._procs.append(p)
        p.stdout.readline()
        for d in deps:
            wait_ready(time.time(), [dep_check[d]])
        t0 = time.time()
        p.stdin.write("go\n")
        p.stdin.flush()
        seen = wait_ready(t0, [name])
        record("boot", "alone", name, "ready", round(seen[name], 1), "ms", rnd)
        stop(p, 30)
        wait_free()

# Footprint: the supervisor's stack, default flags and lean flags, alternating.
def pss_by_service(sup_pid):
    out = {"stack": pss_kib(descendants(sup_pid))}
    st = json.loads(subprocess.run([binary(), "ctl", "--runtime-dir", f"{WORK}/run", "--json", "status"], capture_output=True, text=True).stdout)
    for s in st["services"]:
        if s["pid"]:
            out[s["name"]] = pss_kib(descendants(s["pid"]))
    out["supervisor"] = pss_kib([sup_pid])
    return out


def open_app():
    """The app opened as the agent opens it: Playwright MCP's browser_navigate in the tab MCP
    adopts (bench/mcp-open.mjs); returns the client, connected until its stdin closes."""
    c = subprocess.Popen(["node", os.path.join(ROOT, "bench", "mcp-open.mjs"), "http://127.0.0.1:3001/mcp", "http://127.0.0.1:3000/"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
    if c.stdout.readline().strip() != "open":
        c.kill()
        sys.exit("bench/mcp-open.mjs did not open the app")
    return c


def hmr_edits(n):
    path = f"{app}/src/App.tsx"
    orig = open(path).read()
    for i in range(n):
        open(path, "w").write(orig + f"\n// bench edit {i}\n")
        time.sleep(1)  # one edit a second: a person editing, each one an HMR update
    open(path, "w").write(orig)


for rnd, order in alternate(["default", "lean"], (ROUNDS if not QUICK else 1) if "footprint" in PARTS else 0):
    for flags in order:
        log(f"stack: footprint {flags} round {rnd}")
        p, _, _ = boot_supervisor(chromium_extra=LEAN if flags == "lean" else "")
        time.sleep(3)  # settle: idle is the quantity measured
        leg = "stack" if flags == "default" else "stack-lean"
        if flags == "default":
            record("footprint", "idle", "supervisor", "rss", rss_kib(p.pid), "KiB", rnd)
        for k, v in pss_by_service(p.pid).items():
            record("footprint", "boot" if flags == "default" else "boot-lean", k if k != "stack" else "stack", "pss", v, "KiB", rnd)
        agent = open_app()
        time.sleep(3)  # the page's HMR socket connects and the load's garbage is collected
        hmr_edits(10)
        time.sleep(2)
        for k, v in pss_by_service(p.pid).items():
            record("footprint", "hmr10" if flags == "default" else "hmr10-lean", k, "pss", v, "KiB", rnd)
        agent.stdin.close()
        agent.wait(10)
        record("footprint", "idle-after-hmr", "supervisor", "rss", rss_kib(p.pid), "KiB", rnd)
        stop(p, 30)
        wait_free()

# The contention floor and the critical path, from the medians.
import statistics
rows = [json.loads(l) for l in open(os.environ["BENCH_RESULTS"])] if os.environ.get("BENCH_RESULTS") else []
med = lambda leg: statistics.median([r["value"] for r in rows if r["bench"] == "boot" and r["case"] == "alone" and r["leg"] == leg] or [0])
cont = statistics.median([r["value"] for r in rows if r["bench"] == "boot" and r["metric"] == "contention_round"] or [0])
# opt/supervisor.toml's chains: Xvfb ready -> Chromium; Xvfb ready -> MCP (which depends on
# Chromium started, not ready); the agent and Vite depend on nothing.
cp = max(med("xvfb") + med("chromium"), med("xvfb") + med("playwright-mcp"), med("acp"), med("vite"))
if "boot" in PARTS and "alone" in PARTS:
    record("boot", "floor", "stack", "critical_path", round(cp, 1), "ms")
    record("boot", "floor", "stack", "contention", round(cont, 1), "ms")
