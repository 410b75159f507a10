"""Shared by the Python benches (bench/*.py, run by bench/run.sh): the binary under test,
a work dir removed on exit, child processes in their own process groups killed on exit
(normal, error, SIGINT or SIGTERM), free ports, wrk, /proc readings, and the results file
(one JSON object a line) that bench/report.py turns into BENCHMARKS.md."""

import atexit, json, os, re, shutil, signal, socket, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = os.environ.get("QUICK") == "1"
ROUNDS = int(os.environ.get("ROUNDS", "3"))
HZ = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

_procs = []
WORK = tempfile.mkdtemp(prefix="bench-")
os.chmod(WORK, 0o755)  # nginx workers (nobody) read the files under it


def _cleanup(*_):
    for p in reversed(_procs):
        stop(p)
    shutil.rmtree(WORK, ignore_errors=True)


def _on_signal(sig, _frame):
    _cleanup()
    sys.exit(128 + sig)


atexit.register(_cleanup)
signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def binary():
    """The supervisor under test: $SUPERVISOR_BIN (bench/run.sh builds and sets it)."""
    b = os.environ.get("SUPERVISOR_BIN") or os.path.join(ROOT, "target/x86_64-unknown-linux-musl/release/supervisor")
    if not os.access(b, os.X_OK):
        sys.exit(f"no executable supervisor at {b}")
    return os.path.realpath(b)


def record(bench, case, leg, metric, value, unit, rnd=0, **extra):
    """Appends one raw figure to $BENCH_RESULTS (and prints it)."""
    row = {"bench": bench, "case": case, "leg": leg, "metric": metric, "value": value, "unit": unit, "round": rnd, **extra}
    path = os.environ.get("BENCH_RESULTS")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
    log(f"  {bench}/{case}/{leg} r{rnd}: {metric} = {value} {unit}")


def spawn(argv, log_name=None, **kw):
    """Starts a child in its own process group (killed with its group on exit)."""
    out = open(os.path.join(WORK, log_name), "wb") if log_name else subprocess.DEVNULL
    p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, **kw)
    _procs.append(p)
    return p


def stop(p, timeout=10):
    """SIGTERM to the child's group, SIGKILL after `timeout`."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(p.pid, signal.SIGKILL)  # whatever of the group is left
    except (ProcessLookupError, PermissionError):
        pass
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        pass
    if p in _procs:
        _procs.remove(p)


def nginx(conf, name, **vars):
    """Starts nginx with bench/`conf`, its @PREFIX@ (a dir of its own under WORK) and each
    @KEY@ of `vars` filled in; returns its master process."""
    prefix = f"{WORK}/{name}"
    os.makedirs(prefix)
    text = open(os.path.join(ROOT, "bench", conf)).read().replace("@PREFIX@", prefix)
    for k, v in vars.items():
        text = text.replace(f"@{k}@", str(v))
    open(f"{prefix}/nginx.conf", "w").write(text)
    return spawn(["nginx", "-p", prefix, "-c", f"{prefix}/nginx.conf", "-e", f"{prefix}/error.log"], name + ".log")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(pred, limit, what):
    end = time.time() + limit
    while time.time() < end:
        try:
            v = pred()
            if v:
                return v
        except Exception:
            pass
        time.sleep(0.02)
    sys.exit(f"timed out after {limit} s waiting for {what}")


def tcp_open(port):
    """True once 127.0.0.1:`port` accepts a connection; raises OSError before (wait_for retries)."""
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


def http_ok(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status < 400


def prod_chromium_script(port):
    """opt/supervisor.toml's Chromium `sh -c` script, its CDP port changed to `port`."""
    text = open(os.path.join(ROOT, "opt", "supervisor.toml")).read()
    section = text[text.index("[services.chromium]"):]
    return re.search(r'command = \["sh", "-c", """(.*?)""", "chromium"\]', section, re.S).group(1).replace("9222", str(port))


def start_xvfb(display, extra=()):
    """An Xvfb on `display` (e.g. ":98") with opt/supervisor.toml's arguments plus `extra`,
    once its socket exists (a stale lock or socket of that display is removed first)."""
    text = open(os.path.join(ROOT, "opt", "supervisor.toml")).read()
    args = re.search(r'exec Xvfb :99 ([^"]*)"', text).group(1).split()
    n = display.lstrip(":")
    for f in (f"/tmp/.X{n}-lock", f"/tmp/.X11-unix/X{n}"):
        if os.path.exists(f):
            os.unlink(f)
    x = spawn(["Xvfb", display, *args, *extra])
    wait_for(lambda: os.path.exists(f"/tmp/.X11-unix/X{n}"), 10, f"Xvfb {display}")
    return x


def cdp_up(port):
    """Whether Chromium answers CDP's /json/version on `port`."""
    try:
        return http_ok(f"http://127.0.0.1:{port}/json/version")
    except OSError:
        return False


def own_chromium(display, port):
    """An Xvfb on `display` and opt/supervisor.toml's Chromium on CDP `port` (a HOME of its own
    under WORK), once CDP answers: (xvfb, chromium), for the benches that run a service alone."""
    x = start_xvfb(display)
    home = f"{WORK}/chromium-home-{port}"
    os.makedirs(home)
    c = spawn(["sh", "-c", prod_chromium_script(port), "chromium"], env={**os.environ, "DISPLAY": display, "HOME": home, "CHROMIUM_PROFILE_NAME": "b"})
    wait_for(lambda: cdp_up(port), 30, "CDP")
    return x, c


def app_copy(name="app"):
    """A private copy of app-template: sources copied, node_modules a directory of links to
    the template's entries except .vite (so Vite's dep cache goes to the copy)."""
    app = os.path.join(WORK, name)
    tpl = os.path.join(ROOT, "app-template")
    os.makedirs(os.path.join(app, "node_modules"))
    for e in os.listdir(tpl):
        if e in ("node_modules", "dist") or e.startswith(".env"):
            continue
        src = os.path.join(tpl, e)
        (shutil.copytree if os.path.isdir(src) else shutil.copy2)(src, os.path.join(app, e))
    for e in os.listdir(os.path.join(tpl, "node_modules")):
        if e != ".vite":
            os.symlink(os.path.join(tpl, "node_modules", e), os.path.join(app, "node_modules", e))
    return app


class Supervisor:
    """One `supervisor run` (port guard off, root, private runtime dir)."""

    def __init__(self, config_text, app_dir, listen, timeout=90, name="sup", env=None):
        self.bin = binary()
        self.run = os.path.join(WORK, name + "-run")
        cfg = os.path.join(WORK, name + ".toml")
        with open(cfg, "w") as f:
            f.write(config_text)
        self.t0 = time.time()
        self.proc = spawn([self.bin, "run", "--config", cfg, "--runtime-dir", self.run, "--app-dir", app_dir,
                           "--service-user", "", "--port-guard", "off", "--listen", listen], name + ".log",
                          env={**os.environ, **(env or {})})
        self.pid = self.proc.pid
        r = subprocess.run([self.bin, "ready", "--runtime-dir", self.run, "--timeout", str(timeout)], capture_output=True)
        if r.returncode != 0:
            sys.stderr.write(open(os.path.join(WORK, name + ".log")).read()[-3000:])
            sys.exit(f"{name}: stack not ready")
        self.ready_s = time.time() - self.t0

    def ctl(self, *args):
        return subprocess.run([self.bin, "ctl", "--runtime-dir", self.run, *args], capture_output=True, check=True, text=True).stdout

    def status(self):
        return json.loads(self.ctl("--json", "status"))

    def token(self):
        self.ctl("token", "rotate")
        return open(os.path.join(self.run, "token")).read().strip()

    def stop(self):
        stop(self.proc, 30)


def cpu_ticks(pids):
    """utime+stime (clock ticks) summed over `pids` (each a whole process, all threads)."""
    t = 0
    for pid in pids:
        try:
            f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            t += int(f[11]) + int(f[12])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
    return t


def rss_kib(pid, field="VmRSS"):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def descendants(pid):
    """`pid` and every process below it."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                kids = open(f"/proc/{p}/task/{t}/children").read().split()
                todo.extend(int(k) for k in kids)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return out


def pss_kib(pids):
    total = 0
    for p in pids:
        try:
            for line in open(f"/proc/{p}/smaps_rollup"):
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return total


def _ms(v):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", v)
    n, u = float(m.group(1)), m.group(2)
    return {"us": n / 1000, "ms": n, "s": n * 1000, "m": n * 60000}[u]


def wrk(url, conns, threads=2, duration="5s", pids=None, rss_pid=None):
    """Runs wrk --latency; returns rps, p50/p99 (ms), errors, requests, and, when `pids` is
    given, their CPU µs per request; when `rss_pid` is given, its peak RSS (KiB) sampled."""
    c0 = cpu_ticks(pids) if pids else 0
    p = subprocess.Popen(["wrk", f"-t{min(threads, conns)}", f"-c{conns}", f"-d{duration}", "--latency", url],
                         stdout=subprocess.PIPE, text=True, start_new_session=True)
    _procs.append(p)
    peak = 0
    while p.poll() is None:
        if rss_pid:
            peak = max(peak, rss_kib(rss_pid))
        time.sleep(0.2)
    out = p.stdout.read()
    _procs.remove(p)
    c1 = cpu_ticks(pids) if pids else 0
    r = {"errors": 0}
    for line in out.splitlines():
        s = line.split()
        if line.strip().startswith("50%"):
            r["p50"] = _ms(s[1])
        elif line.strip().startswith("99%"):
            r["p99"] = _ms(s[1])
        elif line.startswith("Requests/sec:"):
            r["rps"] = float(s[1])
        elif " requests in " in line:
            r["requests"] = int(s[0])
        elif "Socket errors:" in line:
            r["errors"] += sum(int(x.strip(",")) for x in s[3::2])
        elif "Non-2xx or 3xx" in line:
            r["errors"] += int(s[-1])
    if "rps" not in r:
        sys.exit(f"wrk {url}: no result:\n{out}")
    if pids:
        r["cpu_us"] = (c1 - c0) / HZ * 1e6 / max(1, r["requests"])
    if rss_pid:
        r["rss_peak_kib"] = peak
    return r


def alternate(legs, rounds):
    """Round r runs the legs rotated by r, so drift of the machine hits every leg alike."""
    for r in range(rounds):
        k = r % len(legs)
        yield r + 1, legs[k:] + legs[:k]


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]
