#!/usr/bin/env python3
"""Each Node service's own start → ready, alone on the machine, with and without a warm
Node compile cache (NODE_COMPILE_CACHE), and Vite also with `--configLoader native`: the
ways into the services' start (boot, recovery) that bench/NOTES.md reports as tried. Prints figures,
asserts nothing, records nothing (not part of bench/run.sh).

Legs, alternating per round: `plain` (NODE_COMPILE_CACHE empty: off); `cache` (a cache
warmed by one run stopped with SIGTERM: Node writes it only on a clean exit);
`cold-cache` (NODE_COMPILE_CACHE set but never written, as after crashes only); Vite's
`native-config`. Every measured run ends in SIGKILL to each process group under it (the
ACP agent has its own), so nothing is written during them.
Ports 5174, 3011, 3012 (not the stack's). Usage: bench/node-start.py [vite mcp acp]
Env: ROUNDS (5), SUPERVISOR_BIN (for `supervisor acp`)."""

import http.client, statistics, sys, time
from benchlib import *

APP = app_copy()
OPT = os.path.join(ROOT, "opt")


def vite_pinged():
    c = http.client.HTTPConnection("127.0.0.1", 5174, timeout=0.5)
    c.request("GET", "/", headers={"Accept": "text/x-vite-ping"})
    return c.getresponse().status == 204


SERVICES = {
    "vite": ([f"{APP}/node_modules/.bin/vite", "--host", "127.0.0.1", "--port", "5174", "--strictPort"], vite_pinged),
    "mcp": ([f"{OPT}/node_modules/.bin/playwright-mcp", "--host", "127.0.0.1", "--port", "3011", "--cdp-endpoint",
             "http://127.0.0.1:9",  "--allowed-hosts", "*", "--output-dir", f"{WORK}/mcp-out"], lambda: tcp_open(3011)),
    "acp": ([binary(), "acp", "--listen", "127.0.0.1:3012", "--cwd", APP, "--", f"{OPT}/node_modules/.bin/claude-agent-acp"],
            lambda: http_ok("http://127.0.0.1:3012/health")),
}


def start(name, env, extra=(), graceful=False):
    """Milliseconds from spawn to ready; then the process group is stopped."""
    argv, ready = SERVICES[name]
    t0 = time.time()
    p = spawn([*argv, *extra], cwd=APP, env={**os.environ, "BROWSER": "none", "FORCE_COLOR": "0", "HOME": f"{WORK}/home", **env})
    wait_for(ready, 30, f"{name} ready")
    ms = (time.time() - t0) * 1000
    time.sleep(1.0)  # let start-up work after ready (Vite's dep scan) finish before the next leg
    if graceful:
        stop(p)
    else:
        # Every group under it: the agent runs in a group of its own under `supervisor acp`
        # and, left alone, would exit cleanly on its closed stdin (writing the cache).
        groups = set()
        for d in descendants(p.pid):
            try:
                groups.add(os.getpgid(d))
            except ProcessLookupError:
                pass
        for g in groups:
            try:
                os.killpg(g, signal.SIGKILL)
            except ProcessLookupError:
                pass
        stop(p)
    return ms


def files(d):
    return sum(len(f) for _, _, f in os.walk(d))


os.makedirs(f"{WORK}/home", exist_ok=True)
os.environ.pop("NODE_COMPILE_CACHE", None)  # each leg sets its own
for name in sys.argv[1:] or ["vite", "mcp", "acp"]:
    warm, cold = f"{WORK}/cache-{name}", f"{WORK}/cold-{name}"
    start(name, {"NODE_COMPILE_CACHE": warm}, graceful=True)
    log(f"{name}: the warm cache holds {files(warm)} files")
    legs = {"plain": ({"NODE_COMPILE_CACHE": ""}, ()), "cache": ({"NODE_COMPILE_CACHE": warm}, ()), "cold-cache": ({"NODE_COMPILE_CACHE": cold}, ())}
    if name == "vite":
        legs["native-config"] = ({"NODE_COMPILE_CACHE": ""}, ("--configLoader", "native"))
    ms = {leg: [] for leg in legs}
    for rnd, order in alternate(list(legs), ROUNDS if "ROUNDS" in os.environ else 5):
        for leg in order:
            ms[leg].append(start(name, *legs[leg]))
    for leg, xs in ms.items():
        print(f"{name:5} {leg:14} start -> ready median {statistics.median(xs):5.0f} ms  (rounds: {', '.join(str(round(x)) for x in xs)})", flush=True)
