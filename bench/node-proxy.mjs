// The Node alternative (bench/proxy.py): what the old proxy.js was, http-proxy in front of
// the app with WebSocket upgrades, here with a keep-alive agent (its best case).
// Usage: node bench/node-proxy.mjs LISTEN_PORT TARGET_PORT [LISTEN_PORT TARGET_PORT ...]
import http from "node:http";
import { createRequire } from "node:module";
const require = createRequire(new URL("../tests/js/package.json", import.meta.url));
const httpProxy = require("http-proxy");
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i += 2) {
  const [listen, target] = [Number(args[i]), Number(args[i + 1])];
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1024, keepAliveMsecs: 4000 });
  const proxy = httpProxy.createProxyServer({ target: `http://127.0.0.1:${target}`, agent, ws: true, xfwd: true });
  proxy.on("error", (err, _req, res) => {
    if (res && res.writeHead && !res.headersSent) { res.writeHead(502); res.end(); }
    else if (res && res.destroy) res.destroy();
  });
  const server = http.createServer((req, res) => proxy.web(req, res));
  server.on("upgrade", (req, socket, head) => proxy.ws(req, socket, head));
  server.keepAliveTimeout = 75000;
  server.listen(listen, "127.0.0.1");
}
