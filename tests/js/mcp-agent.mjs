// A long-lived MCP client standing in for the coding agent: one Playwright MCP session
// (the official SDK, streamable HTTP) driven line by line. Each stdin line is JSON
// {"tool":NAME,"args":{...}}; each answer is one stdout line {"ok":bool,"text":"..."}.
// Prints {"ready":true} once connected. Usage: node mcp-agent.mjs --url http://127.0.0.1:3001/mcp
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import readline from "node:readline";

const i = process.argv.indexOf("--url");
const url = process.argv[i + 1];
const client = new Client({ name: "supervisor-e2e-agent", version: "1.0.0" });
const text = (r) => (r.content || []).filter((c) => c.type === "text").map((c) => c.text).join("\n");
try {
  await client.connect(new StreamableHTTPClientTransport(new URL(url)));
} catch (e) {
  console.error(String(e && e.stack ? e.stack : e));
  process.exit(1);
}
console.log(JSON.stringify({ ready: true }));
const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
  if (!line.trim()) continue;
  try {
    const { tool, args } = JSON.parse(line);
    const r = await client.callTool({ name: tool, arguments: args || {} });
    console.log(JSON.stringify({ ok: !r.isError, text: text(r) }));
  } catch (e) {
    console.log(JSON.stringify({ ok: false, text: String(e) }));
  }
}
await client.close();
