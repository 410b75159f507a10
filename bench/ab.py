"""A/B of supervisor binaries (prints figures; asserts nothing): each binary runs its own
`supervisor run` behind the same fast upstream (nginx serving a 1 KiB file, one worker),
with nginx as a proxy (bench/nginx-proxy.conf, a worker per core) as the reference; wrk
against each leg in alternating rounds, then the medians of req/s, p99 and CPU µs per
request. For a change to the proxy: its before and after, measured in the same run.

Usage: python3 bench/ab.py BIN [BIN...]   Env: R (rounds, 5), D (wrk duration, 4s), C (connections, 64)."""

import os, statistics, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import WORK, Supervisor, alternate, free_port, nginx, wrk


if len(sys.argv) < 2:
    sys.exit(__doc__)
static = f"{WORK}/static"
os.makedirs(static)
open(f"{static}/1k.txt", "wb").write(b"x" * 1023 + b"\n")
fast, proxy = free_port(), free_port()
nginx("nginx-static.conf", "fast", PORT=fast, ROOT=static)
ngx = nginx("nginx-proxy.conf", "proxy", VITE_PORT=free_port(), FAST_PORT=fast, WORKERS="auto", PROXY_VITE_PORT=free_port(), PROXY_FAST_PORT=proxy)
url = f"http://127.0.0.1:{proxy}/1k.txt"
for _ in range(100):  # until nginx answers
    if subprocess.run(["curl", "-sf", "-o", "/dev/null", url]).returncode == 0:
        break
    time.sleep(0.05)
ngx_pids = [int(p) for p in subprocess.run(["pgrep", "-g", str(ngx.pid)], capture_output=True, text=True).stdout.split()]
legs = {"nginx": (ngx_pids, url)}
for i, b in enumerate(sys.argv[1:]):
    os.environ["SUPERVISOR_BIN"] = os.path.realpath(b)
    port = free_port()
    config = f'[supervisor]\nproxy_service = "idle"\nproxy_upstream = "127.0.0.1:{fast}"\n[services.idle]\ncommand = ["sleep", "infinity"]\n'
    s = Supervisor(config, static, f"127.0.0.1:{port}", name=f"sup{i}")
    legs[f"{i}: {b}"] = ([s.pid], f"http://127.0.0.1:{port}/1k.txt")
results = {k: [] for k in legs}
conns = int(os.environ.get("C", "64"))
for rnd, order in alternate(list(legs), int(os.environ.get("R", "5"))):
    for leg in order:
        pids, u = legs[leg]
        r = wrk(u, conns, 2, os.environ.get("D", "4s"), pids=pids)
        results[leg].append(r)
        print(f"round {rnd} {leg}: {r['rps']:.0f} req/s, p99 {r['p99']} ms, {r['cpu_us']:.1f} µs CPU/req", flush=True)
print(f"medians (wrk -t2 -c{conns}, 1 KiB, fast upstream):")
for leg, rs in results.items():
    med = lambda k: statistics.median(x[k] for x in rs)
    print(f"  {leg:50s} {med('rps'):8.0f} req/s  p99 {med('p99'):6.2f} ms  {med('cpu_us'):6.1f} µs CPU/req")
