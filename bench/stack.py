#!/usr/bin/env python3
"""Boot and footprint of the production stack (opt/supervisor.toml: Xvfb, Chromium, Playwright
MCP, the ACP agent, Vite, and the port-3000 proxy) on the fixed ports; run it under
/tmp/sup-fixed-ports.lock (bench/run.sh does). As root, services not dropped to a user.
  boot: start -> every service ready, polled from outside the same way for every leg:
    supervisor, script-polls (startup-polls.sh), script-sleeps (startup-sleeps.sh), and
    supervisor variants (Node compile cache warmed; Chromium with extra flags); legs
    alternated; CPU-seconds of the whole process tree until ready; each service alone.
  footprint: binary size; supervisor RSS idle with the full stack; whole-stack PSS after
    boot and after 10 HMR edits with the app open in Chromium (default and lean flags).
Env: QUICK=1, ROUNDS (3), STACK_PARTS ("boot alone footprint"), BENCH_RESULTS."""

import http.client, json, os, re, socket, subprocess, time, urllib.request
from benchlib import *

OPT = os.path.join(ROOT, "opt")
CORES = os.cpu_count()
LEAN = "--disable-gpu --disable-extensions --disable-site-isolation-trials --renderer-process-limit=2"
app = app_copy()
home_n = [0]
PARTS = os.environ.get("STACK_PARTS", "boot alone footprint").split()


def fresh_home():
    home_n[0] += 1
    h = f"{WORK}/home{home_n[0]}"
    os.makedirs(h)
    return h


def config(chromium_extra="", mcp_after="started"):
    text = open(os.path.join(OPT, "supervisor.toml")).read().replace("${CONFIG_DIR}", OPT)
    text = text.replace('depends_on = { chromium = "started" }', f'depends_on = {{ chromium = "{mcp_after}" }}')
    if chromium_extra:
        text = text.replace("--window-size=1280,800 about:blank", f"--window-size=1280,800 {chromium_extra} about:blank")
    return text


# --- readiness, polled from outside, identically for every leg
def http_status(port, path, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        c.request("GET", path, headers=headers or {})
        return c.getresponse().status
    finally:
        c.close()


def tcp_open(port):
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


def x11_up():
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect("/tmp/.X11-unix/X99")
        return True
    finally:
        s.close()


PING = {"Accept": "text/x-vite-ping"}
CHECKS = {
    "xvfb": x11_up,
    "chromium": lambda: http_status(9222, "/json/version") == 200,
    "playwright-mcp": lambda: tcp_open(3001),
    "acp": lambda: http_status(3002, "/health") == 200,
    "vite": lambda: http_status(5173, "/", PING) == 204,
    "proxy": lambda: http_status(3000, "/", PING) == 204,
}
FIXED = [3000, 5173, 9222, 3001, 3002]


def wait_ready(t0, names, limit=90):
    """Polls every check until all pass; returns {name: ms after t0}."""
    seen = {}
    end = time.time() + limit
    while len(seen) < len(names) and time.time() < end:
        for n in names:
            if n not in seen:
                try:
                    if CHECKS[n]():
                        seen[n] = (time.time() - t0) * 1000
                except Exception:
                    pass
        time.sleep(0.005)
    if len(seen) < len(names):
        sys.exit(f"not ready within {limit} s: {sorted(set(names) - set(seen))}")
    return seen


def ports_free():
    for p in FIXED:
        try:
            tcp_open(p)
            return False
        except OSError:
            pass
    return not os.path.exists("/tmp/.X11-unix/X99") or not _x_alive()


def _x_alive():
    try:
        return x11_up()
    except OSError:
        return False


def wait_free():
    wait_for(ports_free, 60, "the fixed ports to be free")


def tree_cpu_s(pid):
    return cpu_ticks(descendants(pid)) / HZ


# --- legs
def boot_supervisor(extra_env=None, chromium_extra="", mcp_after="started"):
    home = fresh_home()
    cfg = f"{WORK}/sup.toml"
    open(cfg, "w").write(config(chromium_extra, mcp_after))
    t0 = time.time()
    p = spawn([binary(), "run", "--config", cfg, "--runtime-dir", f"{WORK}/run", "--app-dir", app, "--service-user", "",
               "--port-guard", "off", "--listen", "127.0.0.1:3000"], "boot-sup.log", env={**os.environ, "HOME": home, **(extra_env or {})})
    seen = wait_ready(t0, list(CHECKS))
    return p, seen, tree_cpu_s(p.pid)


def boot_script(name, chromium_extra=""):
    home = fresh_home()
    t0 = time.time()
    p = spawn(["bash", os.path.join(ROOT, "bench", name)], name + ".log",
              env={**os.environ, "HOME": home, "APP": app, "OPT": OPT, "SUP": binary(), "CHROMIUM_EXTRA": chromium_extra})
    seen = wait_ready(t0, list(CHECKS))
    return p, seen, tree_cpu_s(p.pid)


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
        p, seen, cpu = legs[leg]()
        case = "stack" if leg in ("supervisor", "script-polls", "script-sleeps") else "variant"
        record_boot(case, leg, rnd, seen, cpu)
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


def cdp_open_app():
    req = urllib.request.Request("http://127.0.0.1:9222/json/new?http://127.0.0.1:3000/", method="PUT")
    return json.loads(urllib.request.urlopen(req, timeout=10).read())


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
        cdp_open_app()
        time.sleep(3)  # the page loads and its HMR socket connects
        hmr_edits(10)
        time.sleep(2)
        for k, v in pss_by_service(p.pid).items():
            record("footprint", "hmr10" if flags == "default" else "hmr10-lean", k, "pss", v, "KiB", rnd)
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
