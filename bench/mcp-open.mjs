// Opens a URL the way the coding agent does, for bench/stack.py: Playwright MCP's
// browser_navigate through the official MCP SDK (MCP adopts Chromium's first tab as its
// current one, so no second renderer is made for it). Prints "open" once the page is loaded,
// then stays connected until its stdin closes. Usage: node mcp-open.mjs MCP_URL PAGE_URL
import { createRequire } from "node:module";
const require = createRequire(new URL("../tests/js/package.json", import.meta.url));
const { Client } = require("@modelcontextprotocol/sdk/client/index.js");
const { StreamableHTTPClientTransport } = require("@modelcontextprotocol/sdk/client/streamableHttp.js");
const [mcp, url] = process.argv.slice(2);
const client = new Client({ name: "bench", version: "1" });
await client.connect(new StreamableHTTPClientTransport(new URL(mcp)));
const r = await client.callTool({ name: "browser_navigate", arguments: { url } });
if (r.isError) { console.error(JSON.stringify(r)); process.exit(1); }
console.log("open");
process.stdin.resume();
process.stdin.on("end", async () => { await client.close(); process.exit(0); });
