#!/usr/bin/env python3
"""Env injection figures: POST /_supervisor/env with 20 keys (scope app) through the public
listener with the token, sequentially on one keep-alive connection; every write changes
every value, so each one merges, writes atomically and fsyncs `.env`. p50, p99 and max per
round of POSTS posts. Env: QUICK=1, ROUNDS (3), POSTS (200), BENCH_RESULTS."""

import http.client, json, os, time
from benchlib import *

B = "env"
posts = int(os.environ.get("POSTS", "50" if QUICK else "200"))
app = f"{WORK}/app"
os.makedirs(app)
open(f"{app}/.env", "w").write("# the app's own lines stay byte for byte\nEXISTING=1\n")
port = free_port()
sup = Supervisor("""[services.idle]
command = ["sleep", "infinity"]
""", app, f"127.0.0.1:{port}", name="sup-env")
token = sup.token()
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
hdr = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def floor_round():
    """The disk's own cost of what each POST does to the file: write a temporary file, fsync
    it, rename it over the target, fsync the directory (the same steps as envfile::write_atomic)."""
    samples = []
    d = f"{WORK}/floor"
    os.makedirs(d, exist_ok=True)
    text = open(f"{app}/.env").read()
    for _ in range(posts):
        t0 = time.perf_counter()
        fd = os.open(f"{d}/.env.tmp", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, text.encode())
        os.fsync(fd)
        os.close(fd)
        os.rename(f"{d}/.env.tmp", f"{d}/.env")
        dfd = os.open(d, os.O_RDONLY)
        os.fsync(dfd)
        os.close(dfd)
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


i = 0
for rnd in range(1, ROUNDS + 1):
    fl = floor_round()
    record(B, "post20", "fsync-floor", "p50", round(percentile(fl, 0.5), 3), "ms", rnd)
    record(B, "post20", "fsync-floor", "p99", round(percentile(fl, 0.99), 3), "ms", rnd)
    samples = []
    for _ in range(posts):
        i += 1
        body = json.dumps({"set": {f"KEY_{k:02d}": f"value-{i}-{k}-" + "v" * 40 for k in range(20)}, "scope": "app"})
        t0 = time.perf_counter()
        conn.request("POST", "/_supervisor/env", body, hdr)
        r = conn.getresponse()
        data = r.read()
        samples.append((time.perf_counter() - t0) * 1000)
        if r.status != 200:
            sys.exit(f"POST /_supervisor/env: {r.status} {data[:300]!r}")
    got = open(f"{app}/.env").read()
    assert f"value-{i}-19-" in got and "EXISTING=1" in got, "the last write is in .env"
    record(B, "post20", "supervisor", "p50", round(percentile(samples, 0.5), 3), "ms", rnd)
    record(B, "post20", "supervisor", "p99", round(percentile(samples, 0.99), 3), "ms", rnd)
    record(B, "post20", "supervisor", "max", round(max(samples), 3), "ms", rnd)
    record(B, "post20", "supervisor", "n", posts, "", rnd)
sup.stop()
