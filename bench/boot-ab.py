#!/usr/bin/env python3
"""A/B of supervisor binaries on the boot (prints figures; asserts nothing): each binary
boots the production stack (opt/supervisor.toml, fixed ports) and the readiness-gated
script (bench/startup-polls.sh) boots the same services as the reference, in alternating
rounds, every leg polled from outside the same way (bench/stacklib.py); then the medians
of start -> every service ready, each service's ready time, and the CPU-seconds of the
process tree until ready. For a change to how the supervisor starts the stack: its before
and after, measured in the same run. Run it under /tmp/sup-fixed-ports.lock.

Usage: python3 bench/boot-ab.py LEG [LEG...]   Env: ROUNDS (3).
LEG: BIN, or BIN::CONFIG to boot BIN with another config than opt/supervisor.toml (a
variant of it: ${CONFIG_DIR} is still opt/)."""

import os, statistics, sys

if len(sys.argv) < 2:
    sys.exit(__doc__)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import ROUNDS, alternate, log, stop
from stacklib import CHECKS, boot_script, boot_supervisor, wait_free
legs = {"script-polls": lambda: boot_script("startup-polls.sh")}
for i, leg in enumerate(sys.argv[1:]):
    b, _, cfg = leg.partition("::")
    legs[f"{i}: {leg}"] = lambda b=os.path.realpath(b), cfg=cfg or None: boot_supervisor(bin=b, source=cfg)
wait_free()
log("boot-ab: warm-up boot")
p, _, _ = boot_supervisor(bin=os.path.realpath(sys.argv[1].partition("::")[0]))
stop(p, 30)
wait_free()
results = {k: [] for k in legs}
for rnd, order in alternate(list(legs), ROUNDS):
    for leg in order:
        p, seen, cpu = legs[leg]()
        stop(p, 30)
        wait_free()
        results[leg].append((seen, cpu))
        print(f"round {rnd} {leg}: ready {max(seen.values()):.0f} ms, {cpu:.2f} CPU-s; " + ", ".join(f"{n} {ms:.0f}" for n, ms in seen.items()), flush=True)
print(f"medians of {ROUNDS} rounds (ms after start; CPU-s of the tree until ready):")
for leg, rs in results.items():
    med = lambda f: statistics.median(f(x) for x in rs)
    each = ", ".join(f"{n} {med(lambda x: x[0][n]):.0f}" for n in CHECKS)
    print(f"  {leg:40s} ready {med(lambda x: max(x[0].values())):6.0f}  {med(lambda x: x[1]):5.2f} CPU-s  ({each})")
