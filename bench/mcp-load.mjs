// MCP load for bench/mcp-memory.py: 8 navigate + snapshot of a 1,500-item page, 3 screenshots
// through the official SDK; prints the milliseconds. Usage: node mcp-load.mjs URL
import { createRequire } from "node:module";
const require = createRequire(new URL("../tests/js/package.json", import.meta.url));
const { Client } = require("@modelcontextprotocol/sdk/client/index.js");
const { StreamableHTTPClientTransport } = require("@modelcontextprotocol/sdk/client/streamableHttp.js");
const client = new Client({ name: "x", version: "1" });
await client.connect(new StreamableHTTPClientTransport(new URL(process.argv[2])));
const rows = Array.from({ length: 1500 }, (_, i) => `<li><a href="#${i}">item ${i}</a> <button>b${i}</button></li>`).join("");
const url = "data:text/html," + encodeURIComponent(`<h1>t</h1><ul>${rows}</ul>`);
const t0 = Date.now();
for (let i = 0; i < 8; i++) {
  const n = await client.callTool({ name: "browser_navigate", arguments: { url } });
  if (n.isError) throw new Error(JSON.stringify(n));
  const s = await client.callTool({ name: "browser_snapshot", arguments: {} });
  if (s.isError) throw new Error(JSON.stringify(s));
}
for (let i = 0; i < 3; i++) await client.callTool({ name: "browser_take_screenshot", arguments: {} });
console.log(Date.now() - t0);
await client.close();
