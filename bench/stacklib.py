"""The production stack on the fixed ports, booted and polled from outside (shared by
bench/stack.py and bench/boot-ab.py): its config, the readiness checks every leg is
polled with, a boot of `supervisor run` or of a startup script, the CPU of a process tree."""

import http.client, os, socket, subprocess, sys, time
from benchlib import *

OPT = os.path.join(ROOT, "opt")
CORES = os.cpu_count()
LEAN = "--disable-gpu --disable-extensions --disable-site-isolation-trials --renderer-process-limit=2"
app = app_copy()
home_n = [0]


def fresh_home():
    home_n[0] += 1
    h = f"{WORK}/home{home_n[0]}"
    os.makedirs(h)
    return h


def config(chromium_extra="", mcp_after="started", source=None):
    text = open(source or os.path.join(OPT, "supervisor.toml")).read().replace("${CONFIG_DIR}", OPT)
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


def machine_busy_s():
    """CPU-seconds every core of the machine has been busy since boot (/proc/stat: all but idle and iowait)."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
    return (sum(f) - f[3] - f[4]) / HZ


def tree_cpu_s(pid):
    return cpu_ticks(descendants(pid)) / HZ


# --- legs
def boot_supervisor(extra_env=None, chromium_extra="", mcp_after="started", bin=None, source=None):
    home = fresh_home()
    cfg = f"{WORK}/sup.toml"
    open(cfg, "w").write(config(chromium_extra, mcp_after, source))
    t0 = time.time()
    p = spawn([bin or binary(), "run", "--config", cfg, "--runtime-dir", f"{WORK}/run", "--app-dir", app, "--service-user", "",
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


