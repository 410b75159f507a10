#!/usr/bin/env python3
"""Proxy figures, every leg in the same run, legs alternated round by round:
  - HTTP: wrk req/s, p50, p99 for a 1 KiB static file and a ~200 KiB JS module, direct to the
    upstream, through the supervisor, through nginx (keep-alive upstream) and through a Node
    http-proxy; upstreams Vite (app-template's dev server) and a fast one (nginx serving the
    same files); the CPU µs per request of the supervisor, nginx and the Node proxy.
  - scale: the supervisor and nginx at 1, 10, 100, 1,000 connections (fast upstream): req/s,
    p99 and peak RSS.
  - WebSocket: HMR-sized round trips over Vite's HMR socket, direct and through each proxy.
Env: QUICK=1 (shorter runs), ROUNDS (3), DURATION (5s), CONNECTIONS (64), BENCH_RESULTS."""

import json, os, resource, subprocess, sys
from benchlib import *

B = "proxy"
duration = os.environ.get("DURATION", "2s" if QUICK else "5s")
conns = int(os.environ.get("CONNECTIONS", "64"))
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # wrk -c1000 and the children inherit it

# The app (Vite) and the files of the fast upstream, at the same paths.
app = app_copy()
os.makedirs(f"{app}/public", exist_ok=True)
one_k = b"x" * 1023 + b"\n"
open(f"{app}/public/1k.txt", "wb").write(one_k)
lines, size = [], 0
while size < 51 * 1024:  # Vite serves it reformatted with an inline source map: ~200 KiB
    l = f"export const value{len(lines)} = {{ id: {len(lines)}, name: \"item {len(lines)}\", tags: [\"a\", \"b\", \"c\"] }};\n"
    lines.append(l)
    size += len(l)
open(f"{app}/src/big.js", "w").write("".join(lines))
open(f"{app}/vite.bench.config.ts", "w").write("""import base from "./vite.config";
import { mergeConfig } from "vite";
// The bench's echo on Vite's HMR socket (bench/ws-rtt.mjs): bench:ping -> bench:pong.
export default mergeConfig(base, { plugins: [{ name: "bench-echo", configureServer(server) {
  server.ws.on("bench:ping", (data, client) => client.send("bench:pong", data));
} }] });
""")
static = f"{WORK}/static"
os.makedirs(f"{static}/src")
open(f"{static}/1k.txt", "wb").write(one_k)
paths = {"1k": "/1k.txt", "200k": "/src/big.js"}

P = {k: free_port() for k in ["vite", "fast", "sup_vite", "sup_fast", "ngx_vite", "ngx_fast", "ngx1_vite", "ngx1_fast", "node_vite", "node_fast"]}


log("proxy: starting the upstreams and the proxies")
fast = nginx("nginx-static.conf", "nginx-static", PORT=P["fast"], ROOT=static)
vite_cmd = json.dumps([f"{app}/node_modules/.bin/vite", "--config", "vite.bench.config.ts", "--host", "127.0.0.1",
                       "--port", str(P["vite"]), "--strictPort", "--logLevel", "warn"])
sup_vite = Supervisor(f"""[services.vite]
command = {vite_cmd}
cwd = "${{APP_DIR}}"
port = {P['vite']}
readiness = {{ http = "http://127.0.0.1:{P['vite']}/", headers = {{ Accept = "text/x-vite-ping" }}, status = 204, period = "2s" }}
""", app, f"127.0.0.1:{P['sup_vite']}", name="sup-vite")
sup_fast = Supervisor(f"""[supervisor]
proxy_service = "idle"
proxy_upstream = "127.0.0.1:{P['fast']}"
[services.idle]
command = ["sleep", "infinity"]
""", static, f"127.0.0.1:{P['sup_fast']}", name="sup-fast")
ngx = nginx("nginx-proxy.conf", "nginx-proxy", VITE_PORT=P["vite"], FAST_PORT=P["fast"], WORKERS="auto",
            PROXY_VITE_PORT=P["ngx_vite"], PROXY_FAST_PORT=P["ngx_fast"])
ngx1 = nginx("nginx-proxy.conf", "nginx-proxy-1w", VITE_PORT=P["vite"], FAST_PORT=P["fast"], WORKERS="1",
             PROXY_VITE_PORT=P["ngx1_vite"], PROXY_FAST_PORT=P["ngx1_fast"])
node = spawn(["node", os.path.join(ROOT, "bench/node-proxy.mjs"), str(P["node_vite"]), str(P["vite"]),
              str(P["node_fast"]), str(P["fast"])], "node-proxy.log")
# The big module's bytes as Vite serves them (transformed), for the fast upstream.
wait_for(lambda: http_ok(f"http://127.0.0.1:{P['vite']}/src/big.js"), 60, "Vite")
import urllib.request
open(f"{static}/src/big.js", "wb").write(urllib.request.urlopen(f"http://127.0.0.1:{P['vite']}/src/big.js").read())

legs = {"direct": None, "supervisor": None, "nginx": None, "nginx-1w": None, "node": None}
ngx_pids = lambda: descendants(ngx.pid)
url = lambda leg, up, path: f"http://127.0.0.1:{P[{'direct': up, 'supervisor': 'sup_' + up, 'nginx': 'ngx_' + up, 'nginx-1w': 'ngx1_' + up, 'node': 'node_' + up}[leg]]}{path}"
for up in ["vite", "fast"]:
    for name, path in paths.items():
        want = len(urllib.request.urlopen(url("direct", up, path)).read())
        for leg in legs:
            wait_for(lambda: len(urllib.request.urlopen(url(leg, up, path)).read()) == want, 30, f"{leg} {up}{path}")
        if up == "vite" and name == "200k":
            record(B, "setup", "vite", "js_module_bytes", want, "B")


def pids_of(leg, up):
    return {"direct": None, "supervisor": [(sup_vite if up == "vite" else sup_fast).pid], "nginx": ngx_pids(),
            "nginx-1w": descendants(ngx1.pid), "node": [node.pid]}[leg]


def run_leg(case, leg, up, path, rnd, c=conns, rss=None):
    r = wrk(url(leg, up, path), c, 2, duration, pids=pids_of(leg, up), rss_pid=rss)
    record(B, case, leg, "rps", round(r["rps"], 1), "req/s", rnd, connections=c)
    record(B, case, leg, "p50", round(r["p50"], 3), "ms", rnd, connections=c)
    record(B, case, leg, "p99", round(r["p99"], 3), "ms", rnd, connections=c)
    record(B, case, leg, "errors", r["errors"], "", rnd, connections=c)
    if "cpu_us" in r:
        record(B, case, leg, "cpu_per_req", round(r["cpu_us"], 2), "us", rnd, connections=c)
    if "rss_peak_kib" in r:
        record(B, case, leg, "rss_peak", r["rss_peak_kib"], "KiB", rnd, connections=c)


# HTTP, four legs, alternating.
for up in ["vite", "fast"]:
    for name, path in paths.items():
        case = f"{up}-{name}"
        log(f"proxy: {case}: warm-up")
        for leg in legs:
            wrk(url(leg, up, path), conns, 2, "2s")
        for rnd, order in alternate(list(legs), ROUNDS):
            for leg in order:
                run_leg(case, leg, up, path, rnd)

# Scale: the supervisor and nginx at 1..1000 connections, fast upstream, 1 KiB.
for c in [1, 10, 100, 1000]:
    log(f"proxy: scale {c} connections")
    for rnd, order in alternate(["supervisor", "nginx"], ROUNDS):
        for leg in order:
            rss = sup_fast.pid if leg == "supervisor" else None
            run_leg(f"scale-{c}", leg, "fast", paths["1k"], rnd, c=c, rss=rss)
record(B, "scale", "supervisor", "rss_after", rss_kib(sup_fast.pid), "KiB")

# WebSocket round trips over Vite's HMR socket.
n = "500" if QUICK else "2000"
for rnd, order in alternate(list(legs), ROUNDS):
    for leg in order:
        out = subprocess.run(["node", os.path.join(ROOT, "bench/ws-rtt.mjs"), url(leg, "vite", ""), n],
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            sys.exit(f"ws-rtt {leg}: {out.stderr}")
        w = json.loads(out.stdout)
        record(B, "ws", leg, "p50", round(w["p50_ms"], 4), "ms", rnd)
        record(B, "ws", leg, "p99", round(w["p99_ms"], 4), "ms", rnd)
