#!/usr/bin/env python3
"""Chromium alone, with opt/supervisor.toml's flags, on a fresh Xvfb display of its own (:98,
opt/supervisor.toml's Xvfb arguments) and port 9232 (not the stack's): start -> CDP
answering, the CPU-seconds of its process group until then and in the 3 s after, which of its
processes spent them, their PSS and Xvfb's, and (once per leg) Chromium's GPU feature status
as chrome://gpu gives it (prints figures; asserts nothing). A leg is `FLAGS` or
`XVFB_ARGS|FLAGS`: flags added at the end of the production command (a second
--disable-features replaces the first) and arguments added at the end of Xvfb's (a later
`+extension X` undoes `-extension X`); the empty leg is both commands as they are.

Usage: python3 bench/chromium-start.py [LEG...]   Env: ROUNDS (3).
e.g.   python3 bench/chromium-start.py '' '--disable-features=Translate,MediaRouter'
       python3 bench/chromium-start.py '' '+extension GLX|'     (Xvfb with GLX, as before)"""

import collections, os, re, statistics, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import HZ, ROOT, ROUNDS, WORK, alternate, cdp_up, cpu_ticks, prod_chromium_script, pss_kib, spawn, start_xvfb, stop, wait_for

PORT = 9232
script = prod_chromium_script(PORT)


def group(pgid):
    """{pid: process type} of every process in group `pgid`."""
    out = {}
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            if int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            # Chromium's children rewrite their command line into one space-separated string.
            argv = re.split(r"[\0 ]", open(f"/proc/{d}/cmdline").read())
        except OSError:
            continue
        kind = next((a[7:] for a in argv if a.startswith("--type=")), "browser")
        kind += "".join(f" {a}" for a in argv if a in ("--top-chrome-webui",) or a.startswith("--utility-sub-type="))
        out[int(d)] = kind
    return out


def gpu_status():
    """Chromium's GPU feature status and GL device over CDP (SystemInfo.getInfo), via
    playwright-core from tests/js; what would be lost by a flag shows here."""
    probe = f"""
const {{ chromium }} = require("playwright-core");
(async () => {{
  const b = await chromium.connectOverCDP("http://127.0.0.1:{PORT}");
  const info = await (await b.newBrowserCDPSession()).send("SystemInfo.getInfo");
  const st = Object.entries(info.gpu.featureStatus).filter(([k]) => /compositing|rasterization|2d_canvas|webgl$/.test(k));
  console.log(st.map(([k, v]) => k + "=" + v).join(" ") + "; GL device: " + ((info.gpu.devices[0] || {{}}).deviceString || "none"));
  await b.close();
}})();"""
    out = subprocess.run(["node", "-e", probe], cwd=os.path.join(ROOT, "tests", "js"), capture_output=True, text=True, timeout=60)
    return out.stdout.strip() or f"(probe failed: {out.stderr.strip()[-200:]})"


legs = sys.argv[1:] or [""]
res = {i: [] for i in range(len(legs))}
for rnd, order in alternate(list(enumerate(legs)), ROUNDS):
    for i, leg in order:
        xargs, flags = leg.split("|", 1) if "|" in leg else ("", leg)
        xvfb = start_xvfb(":98", xargs.split())
        home = f"{WORK}/home-{rnd}-{i}"
        os.makedirs(home)
        t0 = time.time()
        p = spawn(["sh", "-c", script.replace(" about:blank", f" {flags} about:blank"), "chromium"], env={**os.environ, "DISPLAY": ":98", "HOME": home, "CHROMIUM_PROFILE_NAME": "bench"})
        wait_for(lambda: cdp_up(PORT), 30, "CDP")
        ready = (time.time() - t0) * 1000
        at_ready = cpu_ticks(list(group(p.pid))) / HZ
        time.sleep(3)  # the quantity measured: what it spends in the 3 s after CDP answers
        procs = group(p.pid)
        after = cpu_ticks(list(procs)) / HZ - at_ready
        by_kind, pss_kind = collections.Counter(), collections.Counter()
        for pid, kind in procs.items():
            by_kind[kind] += cpu_ticks([pid]) / HZ
            pss_kind[kind] += pss_kib([pid]) / 1024
        xvfb_pss = pss_kib([xvfb.pid]) / 1024
        res[i].append((ready, at_ready, after, sum(pss_kind.values()), xvfb_pss))
        print(f"round {rnd} [{leg or 'as configured'}]: CDP {ready:.0f} ms, {at_ready:.2f} CPU-s until then, {after:.2f} in the 3 s after; "
              f"{len(procs)} processes, PSS {sum(pss_kind.values()):.0f} MiB, Xvfb's {xvfb_pss:.0f} MiB; CPU-s since start and PSS MiB by process: "
              + ", ".join(f"{k} {v:.2f} s {pss_kind[k]:.0f} MiB" for k, v in by_kind.most_common()), flush=True)
        if rnd == 1:
            print(f"  GPU [{leg or 'as configured'}]: {gpu_status()}", flush=True)
        stop(p, 10)
        stop(xvfb, 5)
print(f"medians of {ROUNDS} rounds:")
for i, xs in res.items():
    flags = legs[i]
    med = lambda j: statistics.median(x[j] for x in xs)
    print(f"  [{flags or 'as configured'}] CDP {med(0):.0f} ms, {med(1):.2f} CPU-s until then, {med(2):.2f} in the 3 s after, PSS {med(3):.0f} MiB, Xvfb's {med(4):.0f} MiB")
