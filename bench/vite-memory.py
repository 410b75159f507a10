"""Vite alone on a private copy of app-template (port 5183, not the stack's) with its page open
in a Chromium of its own (:96, CDP 9234), per leg a NODE_OPTIONS value: start -> listening, PSS
idle, then EDITS edits of the page's heading, each timed from the write until Chromium shows it
(bench/vite-edits.mjs), and PSS after (prints figures; asserts nothing; not part of bench/run.sh).
One unmeasured run first fills the copy's dependency cache (node_modules/.vite).

Usage: python3 bench/vite-memory.py [NODE_OPTIONS...]   Env: ROUNDS (3), EDITS (20).
e.g.   python3 bench/vite-memory.py "" "--max-semi-space-size=2" """

import json, os, statistics, subprocess, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import ROOT, ROUNDS, alternate, app_copy, descendants, own_chromium, pss_kib, spawn, stop, tcp_open, wait_for
EDITS = os.environ.get("EDITS", "20")
x, c = own_chromium(":96", 9234)
app = app_copy()


def run(leg):
    t0 = time.time()
    p = spawn([f"{app}/node_modules/.bin/vite", "--host", "127.0.0.1", "--port", "5183", "--strictPort"], cwd=app,
              env={**os.environ, "NODE_OPTIONS": leg, "BROWSER": "none", "FORCE_COLOR": "0"})
    wait_for(lambda: tcp_open(5183), 30, "vite"); up = (time.time() - t0) * 1000
    time.sleep(1.5)  # settle: idle is the quantity measured
    idle = pss_kib(descendants(p.pid)) / 1024
    out = subprocess.run(["node", os.path.join(ROOT, "bench", "vite-edits.mjs"), "http://127.0.0.1:9234", "http://127.0.0.1:5183/", app, EDITS],
                         capture_output=True, text=True, timeout=300)
    if out.returncode:
        sys.exit(f"vite-edits.mjs failed: {out.stderr[-800:]}")
    e = json.loads(out.stdout.strip().splitlines()[-1])
    time.sleep(1)
    busy = pss_kib(descendants(p.pid)) / 1024
    stop(p, 10)
    return up, idle, e["p50_ms"], e["max_ms"], busy


run("")  # fills node_modules/.vite, as the template build does
legs = sys.argv[1:] or [""]
res = {i: [] for i in range(len(legs))}
for rnd, order in alternate(list(enumerate(legs)), ROUNDS):
    for i, leg in order:
        r = run(leg)
        res[i].append(r)
        print(f"r{rnd} [{leg or 'default'}] listen {r[0]:.0f} ms, PSS idle {r[1]:.0f} MiB, {EDITS} edits shown in p50 {r[2]:.0f} ms (max {r[3]:.0f}), PSS after {r[4]:.0f} MiB", flush=True)
for i, xs in res.items():
    m = lambda j: statistics.median(v[j] for v in xs)
    print(f"median [{legs[i] or 'default'}]: listen {m(0):.0f} ms, PSS idle {m(1):.0f} MiB, edit shown p50 {m(2):.0f} ms, max {m(3):.0f} ms, PSS after {m(4):.0f} MiB")
stop(c, 10); stop(x, 5)
