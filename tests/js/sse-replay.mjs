// A real EventSource client (the `eventsource` package) on /_supervisor/events whose
// connection is cut, through a TCP relay, while the service's state changes; it then
// reconnects by itself with its Last-Event-ID. A second client, connected directly the
// whole time, is the reference of what happened.
//
// usage: node sse-replay.mjs BASE_URL TOKEN SERVICE CYCLES
//   CYCLES = how many stop+start cycles happen while the first client is cut off; the
//   service is stopped first (while connected), so one cycle-less run ("0") is only the
//   start: pending -> running -> ready.
// Prints one JSON line: {"last_before","replayed":[{type,id,data}],"reference":[{type,id,data}]}.
import { EventSource } from "eventsource";
import net from "node:net";

const [base, token, service, cyclesArg] = process.argv.slice(2);
const cycles = Number(cyclesArg ?? "0");
const target = new URL(base);
const auth = { Authorization: `Bearer ${token}` };
const fetchWithToken = (input, init) => fetch(input, { ...init, headers: { ...init.headers, ...auth } });
const deadline = Date.now() + 90_000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(what, cond) {
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

// The relay: passes bytes both ways; `cut()` destroys every connection and holds new ones
// until `restore()`.
let up = true;
const live = new Set();
const held = [];
function pipe(client) {
  const server = net.connect(Number(target.port), target.hostname);
  live.add(client);
  live.add(server);
  client.pipe(server);
  server.pipe(client);
  const end = () => { client.destroy(); server.destroy(); live.delete(client); live.delete(server); };
  client.on("error", end); server.on("error", end); client.on("close", end); server.on("close", end);
}
const relay = net.createServer((c) => (up ? pipe(c) : held.push(c)));
await new Promise((r) => relay.listen(0, "127.0.0.1", r));
const relayUrl = `http://127.0.0.1:${relay.address().port}/_supervisor/events`;
const cut = () => { up = false; for (const s of live) s.destroy(); live.clear(); };
const restore = () => { up = true; while (held.length) pipe(held.shift()); };

function collect(url) {
  const got = [];
  const es = new EventSource(url, { fetch: fetchWithToken });
  const push = (type) => (e) => got.push({ type, id: e.lastEventId, data: JSON.parse(e.data) });
  for (const t of ["snapshot", "service", "lost"]) es.addEventListener(t, push(t));
  return { es, got };
}

async function status() {
  const r = await fetch(new URL("/_supervisor/status", base), { headers: auth });
  if (r.status !== 200) throw new Error(`status ${r.status}`);
  return (await r.json()).services.find((s) => s.name === service);
}
async function control(action) {
  const r = await fetch(new URL(`/_supervisor/services/${service}/${action}`, base), { method: "POST", headers: auth });
  if (r.status !== 202) throw new Error(`${action}: ${r.status}`);
}
const reachedState = (ref, state, after) => ref.got.some((e) => e.type === "service" && Number(e.id) > after && e.data.name === service && e.data.state === state);

const ref = collect(new URL("/_supervisor/events", base).href);
const cutoff = collect(relayUrl);
await until("both snapshots", () => ref.got.length > 0 && cutoff.got.length > 0);
// Stopped first, while connected.
await control("stop");
await until("stopped", async () => (await status())?.state === "stopped");
await until("the cut-off client saw it stop", () => cutoff.got.some((e) => e.type === "service" && e.data.state === "stopped"));
const lastBefore = Number(cutoff.got.at(-1).id);
cut();
for (let i = 0; i < cycles; i++) {
  const mark = Number(ref.got.at(-1).id);
  await control("start");
  await until(`ready (cycle ${i})`, () => reachedState(ref, "ready", mark));
  const mark2 = Number(ref.got.at(-1).id);
  await control("stop");
  await until(`stopped (cycle ${i})`, () => reachedState(ref, "stopped", mark2));
}
const mark = Number(ref.got.at(-1).id);
await control("start");
await until("ready again", () => reachedState(ref, "ready", mark));
const refLast = Number(ref.got.at(-1).id);
const seenBeforeRestore = cutoff.got.length;
restore();
// The client reconnects after its retry interval, with Last-Event-ID.
await until("the replay", () => cutoff.got.some((e) => Number(e.id) >= refLast));
await sleep(300); // anything more (a duplicate) would show up here
ref.es.close();
cutoff.es.close();
relay.close();
console.log(JSON.stringify({
  last_before: lastBefore,
  replayed: cutoff.got.slice(seenBeforeRestore),
  reference: ref.got.filter((e) => e.type === "service" && Number(e.id) > lastBefore),
}));
process.exit(0);
