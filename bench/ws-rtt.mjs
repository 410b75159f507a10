// WebSocket round trips over Vite's HMR socket (bench/proxy.py): fetches Vite's HMR token
// from /@vite/client at BASE, opens ws://BASE/?token=… with subprotocol vite-hmr, then sends
// COUNT HMR-sized custom events one at a time, each answered by the bench's Vite plugin
// (vite.bench.config.ts), and prints {"p50_ms","p99_ms","n"} of the round trips.
// Usage: node bench/ws-rtt.mjs http://127.0.0.1:PORT COUNT
import { createRequire } from "node:module";
const require = createRequire(new URL("../tests/js/package.json", import.meta.url));
const WebSocket = require("ws");
const [base, count = "2000"] = process.argv.slice(2);
const n = Number(count);
const client = await (await fetch(`${base}/@vite/client`)).text();
const token = (client.match(/const wsToken = "([^"]*)"/) || [])[1];
if (token === undefined) { console.error("no wsToken in /@vite/client"); process.exit(1); }
const ws = new WebSocket(`${base.replace(/^http/, "ws")}/?token=${encodeURIComponent(token)}`, "vite-hmr");
const pad = "x".repeat(300); // an HMR update message is a few hundred bytes
const samples = [];
let t0 = 0, seq = 0;
const timer = setTimeout(() => { console.error("timed out"); process.exit(1); }, 60000);
const send = () => { t0 = process.hrtime.bigint(); ws.send(JSON.stringify({ type: "custom", event: "bench:ping", data: { seq, pad } })); };
ws.on("error", (e) => { console.error(String(e)); process.exit(1); });
ws.on("message", (raw) => {
  const m = JSON.parse(raw.toString());
  if (m.type !== "custom" || m.event !== "bench:pong" || m.data.seq !== seq) return; // "connected" etc.
  samples.push(Number(process.hrtime.bigint() - t0) / 1e6);
  seq++;
  if (seq < n) return send();
  clearTimeout(timer);
  const s = samples.slice(50).sort((a, b) => a - b); // the first 50 warm the JITs
  const q = (p) => s[Math.min(s.length - 1, Math.round(p * (s.length - 1)))];
  console.log(JSON.stringify({ p50_ms: q(0.5), p99_ms: q(0.99), n: s.length }));
  ws.close();
});
ws.on("open", send);
