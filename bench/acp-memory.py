"""The ACP agent alone (`supervisor acp` on 3012, not the stack's; a throwaway HOME), per leg
Node flags for the adapter's own `node` (on its command line, so the native Claude CLI and the
tools it runs inherit nothing): start -> /health, PSS idle, then initialize + session/new
through the ACP SDK (tests/js/acp-client.mjs --mode session), its time and PSS after, of the
adapter's node process and of the whole tree (prints figures; asserts nothing; not part of
bench/run.sh).

Usage: python3 bench/acp-memory.py [NODE_FLAGS...]   Env: ROUNDS (3), SUPERVISOR_BIN.
e.g.   python3 bench/acp-memory.py "" "--max-semi-space-size=2" """

import os, statistics, subprocess, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import ROOT, ROUNDS, WORK, alternate, binary, descendants, http_ok, pss_kib, spawn, stop, wait_for
ADAPTER = f"{ROOT}/opt/node_modules/@agentclientprotocol/claude-agent-acp/dist/index.js"


def adapter(pid):
    return [d for d in descendants(pid) if ADAPTER.encode() in open(f"/proc/{d}/cmdline", "rb").read()]


legs = sys.argv[1:] or [""]
res = {i: [] for i in range(len(legs))}
for rnd, order in alternate(list(enumerate(legs)), ROUNDS):
    for i, leg in order:
        home = f"{WORK}/home-{rnd}-{i}"
        os.makedirs(home)
        t0 = time.time()
        p = spawn([binary(), "acp", "--listen", "127.0.0.1:3012", "--cwd", WORK, "--", "node", *leg.split(), ADAPTER],
                  env={**os.environ, "HOME": home}, cwd=WORK)
        wait_for(lambda: http_ok("http://127.0.0.1:3012/health"), 30, "acp"); up = (time.time() - t0) * 1000
        time.sleep(1.5)  # settle: idle is the quantity measured
        idle, idle_node = pss_kib(descendants(p.pid)) / 1024, pss_kib(adapter(p.pid)) / 1024
        t1 = time.time()
        out = subprocess.run(["node", f"{ROOT}/tests/js/acp-client.mjs", "--url", "http://127.0.0.1:3012/acp", "--mode", "session", "--cwd", WORK],
                             capture_output=True, text=True, timeout=120)
        if out.returncode:
            sys.exit(f"acp-client.mjs failed: {out.stderr[-800:]}")
        work = (time.time() - t1) * 1000
        time.sleep(1)
        busy, busy_node = pss_kib(descendants(p.pid)) / 1024, pss_kib(adapter(p.pid)) / 1024
        res[i].append((up, idle, idle_node, work, busy, busy_node))
        print(f"r{rnd} [{leg or 'default'}] health {up:.0f} ms, PSS idle {idle:.0f} MiB (node {idle_node:.0f}), "
              f"initialize + session/new {work:.0f} ms, PSS after {busy:.0f} MiB (node {busy_node:.0f})", flush=True)
        stop(p, 10)
for i, xs in res.items():
    m = lambda j: statistics.median(v[j] for v in xs)
    print(f"median [{legs[i] or 'default'}]: health {m(0):.0f} ms, PSS idle {m(1):.0f} (node {m(2):.0f}), session {m(3):.0f} ms, PSS after {m(4):.0f} (node {m(5):.0f}) MiB")
