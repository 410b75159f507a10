#!/usr/bin/env node
// ACP client for the end-to-end suite, built on the official TypeScript SDK (@agentclientprotocol/sdk 2.4.0):
//   http(s)://…  -> createHttpStream    (@agentclientprotocol/sdk/experimental/http-client; POST + SSE)
//   ws(s)://…    -> createWebSocketStream (@agentclientprotocol/sdk/experimental/ws-client; with the `ws` package)
//
// Usage:
//   node acp-client.mjs --url http://127.0.0.1:3002/acp [--token T] [--mode normal|cancel|env|pid|init|session|echo|big|bigsend]
//                       [--cwd /tmp] [--prompt TEXT] [--timeout-ms 30000] [--origin O]
//                       [--tag T] [--count N] [--delay-ms D] [--abandon-after-ms N] [--bytes N]
//
// --origin O sends "Origin: O" on the WebSocket upgrade and every HTTP request, as a browser does.
//
// --token T sends "Authorization: Bearer T" on every request: each HTTP POST/GET/DELETE, and the WebSocket
// upgrade request (the `ws` constructor accepts headers). A "?token=" in --url is passed through untouched.
//
// Modes (after initialize and session/new with cwd --cwd, default "/tmp"):
//   normal  prompt "hello"; the permission request is answered with the allow_once option
//   cancel  prompt "slow"; after 2 agent_message_chunk updates, sends session/cancel
//   env     prompt "env"
//   pid     prompt "pid"
//   init    initialize only (no session)
//   session initialize and session/new only (no prompt): also prints the agent's capabilities and the
//           session's models and modes (what a real agent offers offline)
//   echo    N (--count, default 10) concurrent "_e2e/echo" requests {tag: "<--tag>-<i>", delayMs: --delay-ms};
//           every answer must carry the tag of the request it answers (an SDK client numbers its requests
//           from the same start, so two clients' ids collide). Prints {echo_ok, echo_mismatch, echo_tags}.
//           With --abandon-after-ms N the client drops its connection after N ms and prints {"abandoned":true}.
//   big     "_e2e/big" {bytes: --bytes}; counts the "_e2e/note" notifications: {big_notes, small_notes}
//   bigsend one "_e2e/echo" whose tag is --bytes long: prints {bigsend_error} (the JSON-RPC error, or null), then
//           one small echo on the same connection: {after_ok}; exits 1 if the server closed the connection instead
// On success prints ONE JSON line on stdout, e.g.
//   {"agent":"e2e-agent","stop":"end_turn","chunks":["chunk 1",…],"chunk_count":4,"permission_asked":true,
//    "permission_option":"allow_once","session":"…","transport":"http","non_json_messages":0}
//   non_json_messages counts payloads from the server that were not JSON objects (SSE events / WebSocket text
//   frames), e.g. the agent's stray stdout line relayed verbatim instead of dropped; the SDK skips them.
// Exit codes: 0 ok; 1 error (transport/protocol/HTTP status; message on stderr); 2 timeout;
//             3 the turn completed but not as the mode expects (JSON still printed, reason on stderr).
import * as acp from "@agentclientprotocol/sdk";
import { createHttpStream } from "@agentclientprotocol/sdk/experimental/http-client";
import { createWebSocketStream } from "@agentclientprotocol/sdk/experimental/ws-client";
import { WebSocket } from "ws";

const USAGE =
  "usage: acp-client.mjs --url http(s)|ws(s)://HOST:PORT/acp [--token T] [--mode normal|cancel|env|pid|init|session|echo|big|bigsend] " +
  "[--cwd DIR] [--prompt TEXT] [--timeout-ms N]";
const MODES = ["normal", "cancel", "env", "pid", "init", "session", "echo", "big", "bigsend"];

function die(code, msg) {
  process.stderr.write(`acp-client: ${msg}\n`);
  process.exit(code);
}

function parseArgs(argv) {
  const o = { mode: "normal", cwd: "/tmp", timeoutMs: 30_000, tag: "c", count: 10, delayMs: 0, bytes: 0 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const eq = a.indexOf("=");
    const [key, inline] = a.startsWith("--") && eq > 0 ? [a.slice(0, eq), a.slice(eq + 1)] : [a, undefined];
    const val = () => {
      if (inline !== undefined) return inline;
      if (i + 1 >= argv.length) die(1, `missing value for ${key}\n${USAGE}`);
      return argv[++i];
    };
    switch (key) {
      case "--url": o.url = val(); break;
      case "--token": o.token = val(); break;
      case "--mode": o.mode = val(); break;
      case "--cwd": o.cwd = val(); break;
      case "--prompt": o.prompt = val(); break;
      case "--timeout-ms": o.timeoutMs = Number(val()); break;
      case "--origin": o.origin = val(); break;
      case "--tag": o.tag = val(); break;
      case "--count": o.count = Number(val()); break;
      case "--delay-ms": o.delayMs = Number(val()); break;
      case "--abandon-after-ms": o.abandonAfterMs = Number(val()); break;
      case "--bytes": o.bytes = Number(val()); break;
      case "-h": case "--help": process.stdout.write(USAGE + "\n"); process.exit(0);
      default: die(1, `unknown argument ${JSON.stringify(a)}\n${USAGE}`);
    }
  }
  if (!MODES.includes(o.mode)) die(1, `unknown --mode ${JSON.stringify(o.mode)} (expected ${MODES.join("|")})`);
  if (!Number.isFinite(o.timeoutMs) || o.timeoutMs <= 0) die(1, "--timeout-ms must be a positive number");
  if (!o.url) die(1, `--url is required\n${USAGE}`);
  return o;
}

const opts = parseArgs(process.argv.slice(2));
let phase = "connect";
const closers = []; // promises that settle once the transport has been torn down (DELETE sent / socket closed)

// Best-effort teardown used on timeout, so the server does not keep an agent alive for a client that is gone:
// HTTP: DELETE the ACP connection (its id is learnt from the initialize response); ws: close the socket.
let connectionId = null;
const sockets = [];
async function abortTransport() {
  for (const ws of sockets) try { ws.terminate(); } catch {}
  if (connectionId) {
    const headers = { "Acp-Connection-Id": connectionId };
    if (opts.token) headers.Authorization = `Bearer ${opts.token}`;
    await fetch(opts.url, { method: "DELETE", headers, signal: AbortSignal.timeout(2000) }).catch(() => undefined);
  }
}

const timer = setTimeout(async () => {
  const msg = `timeout after ${opts.timeoutMs} ms during ${phase} (${opts.url})`;
  await abortTransport();
  die(2, msg);
}, opts.timeoutMs);

// Non-JSON payloads the server relayed to us (e.g. an agent's stray stdout line passed through verbatim).
// The SDK skips them: over SSE with a console.warn, over WebSocket by answering a parse error. Count both.
let nonJsonMessages = 0;
const sdkWarn = console.warn.bind(console);
console.warn = (...args) => {
  if (typeof args[0] === "string" && /^(Failed to parse SSE JSON payload|Skipping SSE payload)/.test(args[0])) {
    nonJsonMessages++;
    process.stderr.write(`acp-client: server sent a non-JSON SSE payload: ${args[0]}\n`);
    return;
  }
  sdkWarn(...args);
};

// ---- transport -------------------------------------------------------------------------------------------
function makeStream() {
  let headers = opts.token ? { Authorization: `Bearer ${opts.token}` } : undefined;
  if (opts.origin) headers = { ...headers, Origin: opts.origin };
  let url;
  try { url = new URL(opts.url); } catch { die(1, `invalid --url ${JSON.stringify(opts.url)}`); }
  if (url.protocol === "http:" || url.protocol === "https:") {
    // Wrap fetch only to learn the Acp-Connection-Id and when the SDK's DELETE (sent on close) has completed.
    const trackingFetch = (input, init) => {
      const p = globalThis.fetch(input, init);
      if (init?.method === "DELETE") closers.push(p.then((r) => r.body?.cancel(), () => undefined));
      else if (!connectionId) p.then((r) => { connectionId ??= r.headers.get("acp-connection-id"); }, () => undefined);
      return p;
    };
    return { transport: "http", stream: createHttpStream(opts.url, { headers, fetch: trackingFetch }) };
  }
  if (url.protocol === "ws:" || url.protocol === "wss:") {
    // Subclass only to keep the socket and learn when it has closed; the SDK passes { headers } as the 3rd ctor argument.
    class TrackedWebSocket extends WebSocket {
      constructor(...args) {
        super(...args);
        sockets.push(this);
        this.on("message", (data, isBinary) => {
          if (isBinary) return;
          const text = data.toString("utf8");
          let ok = false;
          try { const v = JSON.parse(text); ok = v !== null && typeof v === "object" && !Array.isArray(v); } catch {}
          if (!ok) {
            nonJsonMessages++;
            process.stderr.write(`acp-client: server sent a non-JSON WebSocket message: ${JSON.stringify(text.slice(0, 200))}\n`);
          }
        });
        closers.push(new Promise((resolve) => this.once("close", resolve)));
        // Without this, a refused upgrade (e.g. 401) only says "Unexpected server response: 401".
        this.once("unexpected-response", (_req, res) => {
          let body = "";
          res.setEncoding("utf8");
          res.on("data", (d) => { if (body.length < 2048) body += d; });
          res.on("end", () => die(1, `WebSocket upgrade refused during ${phase}: HTTP ${res.statusCode} ${body.trim()}`));
        });
      }
    }
    return { transport: "ws", stream: createWebSocketStream(opts.url, { WebSocket: TrackedWebSocket, headers }) };
  }
  die(1, `unsupported URL scheme ${url.protocol} (use http, https, ws or wss)`);
}

function describeError(e) {
  if (e instanceof acp.RequestError || (e && typeof e.code === "number")) {
    const data = e.data === undefined ? "" : ` data=${JSON.stringify(e.data)}`;
    return `JSON-RPC error ${e.code}: ${e.message}${data}`;
  }
  let msg = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  for (let c = e?.cause, n = 0; c && n < 5; c = c.cause, n++) msg += ` (cause: ${c.code ? c.code + " " : ""}${c.message ?? c})`;
  if (process.env.ACP_CLIENT_DEBUG && e?.stack) msg += `\n${e.stack}`;
  return msg;
}

// ---- session ----------------------------------------------------------------------------------------------
const { transport, stream } = makeStream();
const chunks = [];
const updates = [];
let permissionAsked = false;
let permissionOption = null;
let onChunk = () => {};
const notes = { big: 0, small: 0 };

const app = acp
  .client({ name: "e2e-acp-client" })
  .onRequest(acp.methods.client.session.requestPermission, ({ params }) => {
    permissionAsked = true;
    const opt = params.options.find((o) => o.kind === "allow_once") ?? params.options[0];
    if (!opt) return { outcome: { outcome: "cancelled" } };
    permissionOption = opt.optionId;
    return { outcome: { outcome: "selected", optionId: opt.optionId } };
  })
  .onNotification("_e2e/note", (p) => p, ({ params }) => {
    if (params?.small) notes.small++;
    else notes.big++;
  })
  .onNotification(acp.methods.client.session.update, ({ params }) => {
    const u = params.update;
    updates.push(u.sessionUpdate);
    if (u.sessionUpdate === "agent_message_chunk" && u.content?.type === "text") {
      chunks.push(u.content.text);
      onChunk();
    }
  });

let result;
let abandoning = false;
try {
  result = await app.connectWith(stream, async (ctx) => {
    phase = "initialize";
    const init = await ctx.request(acp.methods.agent.initialize, {
      protocolVersion: acp.PROTOCOL_VERSION,
      clientCapabilities: { fs: { readTextFile: false, writeTextFile: false }, terminal: false },
      clientInfo: { name: "e2e-acp-client", version: "1.0.0" },
    });
    const out = { agent: init.agentInfo?.name ?? null, protocol_version: init.protocolVersion, transport };
    if (opts.mode === "session") {
      out.agent_version = init.agentInfo?.version ?? null;
      out.agent_capabilities = init.agentCapabilities ?? null;
      out.auth_methods = (init.authMethods ?? []).map((m) => m.id);
    }
    if (opts.mode === "init") return out;
    if (opts.mode === "echo") {
      phase = `echo x${opts.count}`;
      if (opts.abandonAfterMs !== undefined) {
        setTimeout(async () => {
          abandoning = true;
          await abortTransport();
          process.stdout.write(JSON.stringify({ abandoned: true }) + "\n");
          process.exit(0);
        }, opts.abandonAfterMs);
      }
      const tags = Array.from({ length: opts.count }, (_, i) => `${opts.tag}-${i}`);
      const answers = await Promise.all(tags.map((tag) => ctx.request("_e2e/echo", { tag, delayMs: opts.delayMs })));
      const got = answers.map((a) => a?.tag);
      const mismatched = got.filter((t, i) => t !== tags[i]).length;
      return { ...out, echo_ok: opts.count - mismatched, echo_mismatch: mismatched, echo_tags: got };
    }
    if (opts.mode === "big") {
      phase = "_e2e/big";
      const r = await ctx.request("_e2e/big", { bytes: opts.bytes });
      // The small note was sent before the answer; give a reordering transport a moment.
      for (let i = 0; i < 50 && notes.small === 0; i++) await new Promise((res) => setTimeout(res, 20));
      return { ...out, big_ok: r?.ok === true, big_notes: notes.big, small_notes: notes.small };
    }
    if (opts.mode === "bigsend") {
      phase = "bigsend";
      // Refused either by the bridge (a JSON-RPC error, the connection lives on) or by the transport
      // (the connection is closed): both are reported, neither may reach the agent.
      let bigsendError = null;
      let afterOk = false;
      try {
        await ctx.request("_e2e/echo", { tag: "x".repeat(opts.bytes), delayMs: 0 });
      } catch (e) {
        bigsendError = describeError(e);
      }
      try {
        afterOk = (await ctx.request("_e2e/echo", { tag: "after", delayMs: 0 }))?.tag === "after";
      } catch {}
      return { ...out, bigsend_error: bigsendError, after_ok: afterOk };
    }

    phase = "session/new";
    const created = await ctx.request(acp.methods.agent.session.new, { cwd: opts.cwd, mcpServers: [] });
    const { sessionId } = created;
    out.session = sessionId;
    if (opts.mode === "session") {
      out.models = (created.models?.availableModels ?? []).map((m) => m.modelId);
      out.current_model = created.models?.currentModelId ?? null;
      out.modes = (created.modes?.availableModes ?? []).map((m) => m.id);
      out.current_mode = created.modes?.currentModeId ?? null;
      // Session config options (e.g. model, mode): id -> current value and the values offered.
      const values = (opts) => (opts ?? []).flatMap((v) => (Array.isArray(v.options) ? values(v.options) : [v.value]));
      out.config_options = Object.fromEntries(
        (created.configOptions ?? []).map((o) => [o.id, { current: o.currentValue ?? null, values: values(o.options) }]),
      );
      phase = "close";
      return out;
    }

    const text = opts.prompt ?? { normal: "hello", cancel: "slow", env: "env", pid: "pid" }[opts.mode];
    phase = `session/prompt ${JSON.stringify(text)}`;
    let cancelSent = false;
    let cancelError = null;
    if (opts.mode === "cancel") {
      onChunk = () => {
        if (chunks.length !== 2 || cancelSent) return;
        cancelSent = true;
        phase = `session/prompt ${JSON.stringify(text)} (after session/cancel)`;
        ctx.notify(acp.methods.agent.session.cancel, { sessionId }).catch((e) => { cancelError = e; });
      };
    }
    const response = await ctx.request(acp.methods.agent.session.prompt, {
      sessionId,
      prompt: [{ type: "text", text }],
    });
    if (cancelError) { phase = "session/cancel"; throw cancelError; }
    // The client SDK can resolve the prompt before it has run the handler of the update the
    // agent sent just before its answer (seen under load, as in "big" mode): wait, bounded,
    // for the update the agent sends after a permission answer.
    for (let i = 0; i < 100 && permissionAsked && !chunks.some((c) => c.startsWith("permission:")); i++) {
      await new Promise((res) => setTimeout(res, 20));
    }
    Object.assign(out, {
      stop: response.stopReason,
      chunks: [...chunks],
      chunk_count: chunks.length,
      permission_asked: permissionAsked,
      permission_option: permissionOption,
      cancel_sent: opts.mode === "cancel" ? cancelSent : undefined,
    });
    phase = "close";
    return out;
  });
} catch (e) {
  if (abandoning) {
    // The pending requests fail because we dropped the connection on purpose.
    process.stdout.write(JSON.stringify({ abandoned: true }) + "\n");
    process.exit(0);
  }
  die(1, `error during ${phase} via ${transport} ${opts.url}: ${describeError(e)}`);
}

// Let the transport finish its teardown (HTTP DELETE / WebSocket close), bounded.
await Promise.race([Promise.allSettled(closers), new Promise((r) => setTimeout(r, 3000))]);
clearTimeout(timer);

result.non_json_messages = nonJsonMessages;
process.stdout.write(JSON.stringify(result) + "\n");

const expected = { normal: "end_turn", cancel: "cancelled", env: "end_turn", pid: "end_turn" }[opts.mode];
const problems = [];
if (opts.mode === "echo" && result.echo_mismatch) problems.push(`${result.echo_mismatch} answers carried another request's tag`);
if (expected && result.stop !== expected) problems.push(`expected stopReason ${expected}, got ${result.stop}`);
if (opts.mode === "normal" && !opts.prompt && !permissionAsked) problems.push("the agent never asked for permission");
if (problems.length) {
  process.stderr.write(`acp-client: mode ${opts.mode}: ${problems.join("; ")}\n`);
  process.exit(3);
}
process.exit(0);
