"""Playwright MCP alone against a Chromium of its own (:97, port 9233; MCP on 3013: not the
stack's), per leg a NODE_OPTIONS value: start -> listening, PSS idle, then 8 browser_navigate +
browser_snapshot of a 1,500-item page and 3 screenshots through the MCP SDK (bench/mcp-load.mjs),
their time and PSS after (prints figures; asserts nothing; not part of bench/run.sh).

Usage: python3 bench/mcp-memory.py [NODE_OPTIONS...]   Env: ROUNDS (3).
e.g.   python3 bench/mcp-memory.py "" "--max-semi-space-size=16" """

import os, statistics, subprocess, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import ROOT, ROUNDS, WORK, alternate, descendants, own_chromium, pss_kib, spawn, stop, tcp_open, wait_for
x, c = own_chromium(":97", 9233)
legs = sys.argv[1:] or [""]
res = {l: [] for l in legs}
for rnd, order in alternate(legs, ROUNDS):
    for leg in order:
        t0 = time.time()
        p = spawn([f"{ROOT}/opt/node_modules/.bin/playwright-mcp", "--host", "127.0.0.1", "--port", "3013", "--cdp-endpoint", "http://127.0.0.1:9233", "--allowed-hosts", "*", "--output-dir", f"{WORK}/out"], env={**os.environ, "NODE_OPTIONS": leg, "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"})
        wait_for(lambda: tcp_open(3013), 30, "mcp"); up = (time.time() - t0) * 1000
        time.sleep(1.5)
        idle = pss_kib(descendants(p.pid)) / 1024
        out = subprocess.run(["node", os.path.join(ROOT, "bench", "mcp-load.mjs"), "http://127.0.0.1:3013/mcp"], capture_output=True, text=True, timeout=120)
        work = float((out.stdout.strip().splitlines() or ["nan"])[-1])
        if out.returncode: print(out.stderr[-500:])
        time.sleep(1)
        busy = pss_kib(descendants(p.pid)) / 1024
        res[leg].append((up, idle, work, busy))
        print(f"r{rnd} [{leg or 'default'}] listen {up:.0f} ms, PSS idle {idle:.0f} MiB, 8 navigate+snapshot + 3 screenshots {work:.0f} ms, PSS after {busy:.0f} MiB", flush=True)
        stop(p, 10)
for l, xs in res.items():
    m = lambda j: statistics.median(v[j] for v in xs)
    print(f"median [{l or 'default'}]: listen {m(0):.0f} ms, PSS idle {m(1):.0f}, work {m(2):.0f} ms, PSS after {m(3):.0f} MiB")
stop(c, 10); stop(x, 5)
