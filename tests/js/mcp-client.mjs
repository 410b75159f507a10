// A real MCP client (the official SDK, streamable HTTP): initialize, list tools,
// browser_navigate to a URL, browser_snapshot. Prints one JSON line:
//   {"tools":[...],"snapshot":"..."}
// Usage: node mcp-client.mjs --url http://127.0.0.1:3001/mcp [--token T] --navigate URL
// On failure: exit 1, stderr "HTTP status N" (when the server answered N) and the error.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const arg = (name) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : undefined;
};
const url = arg("url");
const token = arg("token");
const navigate = arg("navigate");
const headers = token ? { Authorization: `Bearer ${token}` } : {};
const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
const client = new Client({ name: "supervisor-e2e", version: "1.0.0" });
const text = (r) => (r.content || []).filter((c) => c.type === "text").map((c) => c.text).join("\n");
try {
  await client.connect(transport);
  const { tools } = await client.listTools();
  let snapshot = "";
  if (navigate) {
    const nav = await client.callTool({ name: "browser_navigate", arguments: { url: navigate } });
    if (nav.isError) throw new Error(`browser_navigate failed: ${text(nav)}`);
    const snap = await client.callTool({ name: "browser_snapshot", arguments: {} });
    if (snap.isError) throw new Error(`browser_snapshot failed: ${text(snap)}`);
    snapshot = text(snap);
  }
  console.log(JSON.stringify({ tools: tools.map((t) => t.name), snapshot }));
  await client.close();
} catch (e) {
  // The SDK's StreamableHTTPError carries the HTTP status as `code`: print it, so a
  // test can tell a refusal (401) from any other failure.
  if (e && typeof e.code === "number") console.error(`HTTP status ${e.code}`);
  console.error(String(e && e.stack ? e.stack : e));
  process.exit(1);
}
