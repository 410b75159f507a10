// A terminal client of the supervisor's /_supervisor/pty routes: a real terminal emulator
// (@xterm/headless) fed over a WebSocket (ws), driven through one scenario, printing what
// it observed as one JSON line (the Rust tests assert on it).
//
//   node pty-client.mjs SCENARIO BASE_URL TOKEN [ARG]
//
// Scenarios: terminal (size, resize, colors, exit), reattach ARG=flag-file (replay and two
// clients), slow (a stalled client next to a live one), bench ARG=file (keystroke echo
// latency and `cat` throughput), attach-detach ID (attach once, then leave).
import WebSocket from 'ws';
import xterm from '@xterm/headless';
import fs from 'node:fs';

const { Terminal } = xterm;
const [scenario, base, token, arg] = process.argv.slice(2);
const wsBase = base.replace(/^http/, 'ws');
const LIMIT = 60_000;

function fail(msg) {
  console.error(`pty-client: ${msg}`);
  process.exit(1);
}
const watchdog = setTimeout(() => fail(`scenario ${scenario} did not finish within 100 s`), 100_000);

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch {}
  return { status: r.status, json, text };
}

async function create(body = {}) {
  const r = await api('POST', '/_supervisor/pty', body);
  if (r.status !== 201) fail(`POST /_supervisor/pty: ${r.status} ${r.text}`);
  return r.json.id;
}

async function until(what, pred, limit = LIMIT) {
  const t = Date.now();
  while (!(await pred())) {
    if (Date.now() - t > limit) fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

// A client: the emulator (optional), the raw bytes, control messages, the close.
function attach(id, { query = false, emulate = true, cols = 80, rows = 24 } = {}) {
  const url = `${wsBase}/_supervisor/pty/${id}` + (query ? `?token=${encodeURIComponent(token)}` : '');
  const ws = new WebSocket(url, query ? {} : { headers: { Authorization: `Bearer ${token}` } });
  const c = { ws, raw: '', bytes: 0, controls: [], closed: null, term: null, parsed: Promise.resolve(), opened: null, onData: null };
  if (emulate) c.term = new Terminal({ cols, rows, allowProposedApi: true, scrollback: 1000 });
  c.opened = new Promise((resolve, reject) => {
    ws.on('open', resolve);
    ws.on('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
    ws.on('error', reject);
  });
  ws.on('message', (data, isBinary) => {
    if (isBinary) {
      c.bytes += data.length;
      if (c.onData) c.onData(data);
      else c.raw += data.toString('latin1');
      if (c.term) c.parsed = new Promise((r) => c.term.write(new Uint8Array(data), r));
    } else {
      c.controls.push(JSON.parse(data.toString()));
    }
  });
  ws.on('close', (code, reason) => { c.closed = { code, reason: reason.toString() }; });
  c.send = (text) => ws.send(Buffer.from(text), { binary: true });
  c.resize = (cols, rows) => {
    ws.send(JSON.stringify({ type: 'resize', cols, rows }));
    if (c.term) c.term.resize(cols, rows);
  };
  // Every line of the emulator's buffer (scrollback included), trimmed at the right.
  c.lines = async () => {
    await c.parsed;
    const b = c.term.buffer.active;
    const out = [];
    for (let i = 0; i < b.length; i++) out.push(b.getLine(i).translateToString(true));
    return out;
  };
  c.findLine = async (pred) => (await c.lines()).findIndex(pred);
  return c;
}

async function terminal() {
  const id = await create({ cols: 100, rows: 30 });
  const c = attach(id, { query: true, cols: 100, rows: 30 });
  await c.opened;
  const out = { id };
  c.send('stty size\r');
  await until('stty size 30 100', async () => (await c.findLine((l) => l.trim() === '30 100')) >= 0);
  out.size1 = '30 100';
  c.resize(120, 40);
  c.send('stty size\r');
  await until('stty size 40 120', async () => (await c.findLine((l) => l.trim() === '40 120')) >= 0);
  out.size2 = '40 120';
  c.send("printf '\\033[1;31mRED\\033[0m \\033[38;2;10;20;30mTRU\\033[0m plain\\n'\r");
  let row = -1;
  await until('the colored line', async () => (row = await c.findLine((l) => l.startsWith('RED TRU plain'))) >= 0);
  const line = c.term.buffer.active.getLine(row);
  const cell = (x) => {
    const k = line.getCell(x);
    return { char: k.getChars(), bold: !!k.isBold(), fgPalette: !!k.isFgPalette(), fgRGB: !!k.isFgRGB(), fgDefault: !!k.isFgDefault(), fg: k.getFgColor() };
  };
  out.red = cell(0);
  out.tru = cell(4);
  out.plain = cell(8);
  c.send('exit 3\r');
  await until('the exit message', async () => c.controls.some((m) => m.type === 'exit'));
  out.exit = c.controls.find((m) => m.type === 'exit');
  await until('the close', async () => c.closed !== null);
  out.close = c.closed;
  out.listed = (await api('GET', '/_supervisor/pty')).json.sessions.find((s) => s.id === id) ?? null;
  return out;
}

async function reattach() {
  const flag = arg;
  const id = await create();
  const a = attach(id);
  await a.opened;
  a.send('echo A-$((40+2))\r');
  await until('A-42', async () => (await a.findLine((l) => l.trim() === 'A-42')) >= 0);
  a.send(`sleep 1; echo DETACHED-$((6*7)); touch '${flag}'\r`);
  // Leave before the output comes.
  await new Promise((r) => setTimeout(r, 100));
  a.ws.close();
  await until('A closed', async () => a.closed !== null);
  const out = { id };
  out.sawBeforeDetach = (await a.findLine((l) => l.trim() === 'DETACHED-42')) >= 0;
  await until('no client attached', async () => (await api('GET', `/_supervisor/pty/${id}`)).json?.attached === 0);
  await until('the output while detached', async () => fs.existsSync(flag));
  const b = attach(id);
  await b.opened;
  await until('the replay on reattach', async () => (await b.findLine((l) => l.trim() === 'DETACHED-42')) >= 0);
  out.replayed = true;
  const c = attach(id);
  await c.opened;
  await until('two clients attached', async () => (await api('GET', `/_supervisor/pty/${id}`)).json?.attached === 2);
  b.send('echo BOTH-$((2*21))\r');
  await until('BOTH-42 on the first client', async () => (await b.findLine((l) => l.trim() === 'BOTH-42')) >= 0);
  await until('BOTH-42 on the second client', async () => (await c.findLine((l) => l.trim() === 'BOTH-42')) >= 0);
  out.both = true;
  const d = await api('DELETE', `/_supervisor/pty/${id}`);
  out.deleteStatus = d.status;
  await until('both clients closed', async () => b.closed !== null && c.closed !== null);
  out.closes = [b.closed, c.closed];
  out.controls = b.controls;
  return out;
}

async function slow() {
  const id = await create();
  const s = attach(id, { emulate: false });
  const f = attach(id, { emulate: false });
  await Promise.all([s.opened, f.opened]);
  await until('two clients attached', async () => (await api('GET', `/_supervisor/pty/${id}`)).json?.attached === 2);
  // The slow client stops reading: its socket fills and the server's queue for it grows.
  s.ws._socket.pause();
  let tail = '';
  let done = false;
  const marks = [];
  f.onData = (d) => {
    const now = Date.now();
    tail = (tail + d.toString('latin1')).slice(-4096);
    if (!done && tail.includes('FLOOD-2-DONE')) done = true;
    for (const m of tail.matchAll(/MARK(\d{13})\r?\n/g)) {
      if (!marks.some((x) => x.ts === m[1])) marks.push({ ts: m[1], delay: now - Number(m[1]) });
    }
  };
  const flood = 24_000_000;
  const t0 = Date.now();
  f.send(`head -c ${flood} /dev/zero | tr '\\0' x | fold -w 200; echo FLOOD-$((1+1))-DONE\r`);
  await until('the flood on the live client', async () => done, 90_000);
  const floodMs = Date.now() - t0;
  f.send('for i in 1 2 3 4 5; do date +MARK%s%3N; sleep 0.2; done\r');
  await until('five marks', async () => marks.length >= 5);
  const out = { id, floodBytes: flood, fastBytes: f.bytes, floodMs, marks, maxDelay: Math.max(...marks.map((m) => m.delay)) };
  out.slowClosedWhilePaused = s.closed;
  s.ws._socket.resume();
  await until('the slow client closed', async () => s.closed !== null, 30_000);
  out.slowClose = s.closed;
  out.slowBytes = s.bytes;
  out.fastOpen = f.closed === null;
  await api('DELETE', `/_supervisor/pty/${id}`);
  return out;
}

async function bench() {
  const file = arg;
  const id = await create({ cols: 200, rows: 50 });
  const c = attach(id, { emulate: false });
  await c.opened;
  let wait = null;
  let buf = '';
  c.onData = (d) => {
    buf += d.toString('latin1');
    if (wait && wait.pred(buf)) { const w = wait; wait = null; w.resolve(); }
  };
  const expect = (pred) => new Promise((resolve) => { if (pred(buf)) resolve(); else wait = { pred, resolve }; });
  c.send('stty -echoctl; echo READY-$((1+1))\r');
  await expect((b) => b.includes('READY-2'));
  const lat = [];
  for (let i = 0; i < 200; i++) {
    if (i % 50 === 0) { buf = ''; c.send('\x15'); await new Promise((r) => setTimeout(r, 50)); }
    buf = '';
    const t = process.hrtime.bigint();
    c.send('x');
    await expect((b) => b.includes('x'));
    lat.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  c.send('\x15');
  await new Promise((r) => setTimeout(r, 100));
  lat.sort((a, b) => a - b);
  const pct = (p) => lat[Math.min(lat.length - 1, Math.floor(lat.length * p))];
  const size = fs.statSync(file).size;
  let bytes = 0;
  let tail = '';
  let resolveEnd;
  const ended = new Promise((r) => { resolveEnd = r; });
  c.onData = (d) => {
    bytes += d.length;
    tail = (tail + d.toString('latin1')).slice(-64);
    if (tail.includes('END-2')) resolveEnd();
  };
  const t = process.hrtime.bigint();
  c.send(`cat '${file}'; echo END-$((1+1))\r`);
  await ended;
  const secs = Number(process.hrtime.bigint() - t) / 1e9;
  await api('DELETE', `/_supervisor/pty/${id}`);
  return { keystrokes: lat.length, p50_ms: pct(0.5), p99_ms: pct(0.99), max_ms: lat[lat.length - 1], file_bytes: size, received_bytes: bytes, seconds: secs, mib_per_s: size / 1048576 / secs };
}

// Attaches to an existing session, waits for the first output, leaves.
async function attachDetach() {
  const c = attach(arg, { emulate: false });
  await c.opened;
  c.ws.close();
  await until('closed', async () => c.closed !== null);
  return { attached: true };
}

const scenarios = { terminal, reattach, slow, bench, 'attach-detach': attachDetach };
if (!scenarios[scenario]) fail(`unknown scenario ${scenario}`);
scenarios[scenario]().then((out) => {
  clearTimeout(watchdog);
  console.log(JSON.stringify(out));
  process.exit(0);
}, (e) => fail(e.stack || String(e)));
