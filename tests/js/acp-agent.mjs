#!/usr/bin/env node
// Offline ACP agent for the end-to-end suite, built on the official TypeScript SDK
// (@agentclientprotocol/sdk 2.4.0, stable v1 API: agent().onRequest().onNotification().connect(ndJsonStream)).
// It speaks ACP (newline-delimited JSON-RPC) on stdin/stdout and needs no network.
//
// Behaviour, keyed on the prompt text of session/prompt:
//   "env"            -> one chunk "ENV:<$E2E_ACP_VAR or (unset)>\nCWD:<process.cwd()>", stopReason end_turn
//   "pid"            -> one chunk "PID:<process.pid>", stopReason end_turn
//   contains "slow"  -> chunks "slow 1".."slow 50" every 200 ms; session/cancel (or $/cancel_request)
//                       stops the stream and the turn ends with stopReason cancelled
//   anything else    -> chunks "chunk 1", "chunk 2", "chunk 3", then ONE session/request_permission
//                       (options allow_once / reject_once), then a chunk "permission:<optionId>"
//                       (or "permission:cancelled"), stopReason end_turn
//
// Extension methods (for the bridge's routing and bounds):
//   _e2e/echo {tag, delayMs}  -> after delayMs, {tag, pid}; logs "echo <tag>" when it arrives
//   _e2e/big {bytes}          -> writes ONE raw stdout line: a "_e2e/note" notification {big: <bytes x "x">}, then
//                                sends "_e2e/note" {small: true} through the SDK, then answers {ok: true}
// With E2E_ACP_GRANDCHILD=1 it starts `sleep 300` holding its stdout (logs "grandchild pid=N").
//
// At startup it writes ONE non-JSON line to stdout ("this is not json") before anything else: the
// bridge under test must log and drop it. Diagnostics go to stderr, prefixed "e2e-agent".
import * as acp from "@agentclientprotocol/sdk";
import { Readable, Writable } from "node:stream";
import { randomUUID } from "node:crypto";
import { spawn } from "node:child_process";

const AGENT_NAME = "e2e-agent";
const log = (msg) => process.stderr.write(`e2e-agent ${msg}\n`);

// Stays out of the ACP framing on purpose (spec requirement under test).
process.stdout.write("this is not json\n");
log(`ready pid=${process.pid} cwd=${process.cwd()}`);
if (process.env.E2E_ACP_GRANDCHILD === "1") {
  // Inherits our stdout: the pipe stays open after we die, as with a stray background job.
  const g = spawn("sleep", ["300"], { stdio: ["ignore", "inherit", "ignore"] });
  g.unref();
  log(`grandchild pid=${g.pid}`);
}

/** sessionId -> { cwd, turn: AbortController | null } */
const sessions = new Map();

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });

const promptText = (blocks) =>
  blocks.map((b) => (b.type === "text" ? b.text : "")).join("").trim();

const app = acp
  .agent({ name: AGENT_NAME })
  .onRequest(acp.methods.agent.initialize, ({ params }) => {
    log(`initialize protocolVersion=${params.protocolVersion}`);
    return {
      protocolVersion: acp.PROTOCOL_VERSION,
      agentCapabilities: { loadSession: false },
      agentInfo: { name: AGENT_NAME, title: "E2E test agent", version: "1.0.0" },
      authMethods: [],
    };
  })
  .onRequest(acp.methods.agent.session.new, ({ params }) => {
    const sessionId = `e2e-${randomUUID()}`;
    sessions.set(sessionId, { cwd: params.cwd, turn: null });
    log(`session/new ${sessionId} cwd=${params.cwd}`);
    return { sessionId };
  })
  .onRequest(acp.methods.agent.session.prompt, async ({ params, client, signal }) => {
    const { sessionId } = params;
    const session = sessions.get(sessionId);
    if (!session) throw acp.RequestError.sessionNotFound(sessionId);

    // One turn per session at a time: a new prompt cancels the previous one.
    session.turn?.abort();
    const turn = new AbortController();
    session.turn = turn;
    // $/cancel_request for this request, or the connection closing, also cancels the turn.
    const onAbort = () => turn.abort();
    signal.addEventListener("abort", onAbort, { once: true });

    const text = promptText(params.prompt);
    log(`session/prompt ${sessionId} text=${JSON.stringify(text)}`);
    const chunk = (t) =>
      client.notify(acp.methods.client.session.update, {
        sessionId,
        update: { sessionUpdate: "agent_message_chunk", content: { type: "text", text: t } },
      });

    try {
      if (text === "env") {
        await chunk(`ENV:${process.env.E2E_ACP_VAR ?? "(unset)"}\nCWD:${process.cwd()}`);
        return { stopReason: "end_turn" };
      }
      if (text === "pid") {
        await chunk(`PID:${process.pid}`);
        return { stopReason: "end_turn" };
      }
      if (text.includes("slow")) {
        for (let i = 1; i <= 50 && !turn.signal.aborted; i++) {
          await chunk(`slow ${i}`);
          await sleep(200, turn.signal);
        }
        const stopReason = turn.signal.aborted ? "cancelled" : "end_turn";
        log(`session/prompt ${sessionId} ends ${stopReason}`);
        return { stopReason };
      }

      for (let i = 1; i <= 3; i++) await chunk(`chunk ${i}`);
      let chosen = "cancelled";
      try {
        const perm = await client.request(
          acp.methods.client.session.requestPermission,
          {
            sessionId,
            toolCall: { toolCallId: "e2e-call-1", title: "e2e permission check", kind: "other", status: "pending" },
            options: [
              { optionId: "allow_once", name: "Allow once", kind: "allow_once" },
              { optionId: "reject_once", name: "Reject once", kind: "reject_once" },
            ],
          },
          { signal: turn.signal },
        );
        if (perm.outcome.outcome === "selected") chosen = perm.outcome.optionId;
      } catch (e) {
        if (!turn.signal.aborted) throw e;
      }
      if (turn.signal.aborted) return { stopReason: "cancelled" };
      await chunk(`permission:${chosen}`);
      return { stopReason: "end_turn" };
    } finally {
      signal.removeEventListener("abort", onAbort);
      if (session.turn === turn) session.turn = null;
    }
  })
  .onRequest("_e2e/echo", (p) => p, async ({ params }) => {
    log(`echo ${params.tag}`);
    await new Promise((r) => setTimeout(r, Number(params.delayMs) || 0));
    return { tag: params.tag, pid: process.pid };
  })
  .onRequest("_e2e/big", (p) => p, async ({ params, client }) => {
    const big = JSON.stringify({ jsonrpc: "2.0", method: "_e2e/note", params: { big: "x".repeat(Number(params.bytes)) } });
    await new Promise((r) => process.stdout.write(big + "\n", r));
    log(`wrote a ${big.length}-byte line`);
    await client.notify("_e2e/note", { small: true });
    return { ok: true };
  })
  .onNotification(acp.methods.agent.session.cancel, ({ params }) => {
    log(`session/cancel ${params.sessionId}`);
    sessions.get(params.sessionId)?.turn?.abort();
  });

const conn = app.connect(acp.ndJsonStream(Writable.toWeb(process.stdout), Readable.toWeb(process.stdin)));
await conn.closed;
log("stdin closed, exiting");
process.exit(0);
