import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";
import tailwindcss from "@tailwindcss/vite";

// Dev-server settings for the sandbox. The supervisor starts Vite as
//   vite --host 127.0.0.1 --port 5173 --strictPort
// and serves it through its reverse proxy on port 3000 (HTTP + WebSocket),
// which is the only port reachable from outside the VM. Do not change these.
//
// HMR behind the proxy: `server.ws` / `server.hmr` host, port, clientPort and
// protocol are deliberately left UNSET. With them unset, Vite 8's HMR client
// (vite/dist/client/client.mjs) builds its WebSocket URL from the URL of the
// /@vite/client module itself, i.e. from the page's own origin:
//   protocol: __HMR_PROTOCOL__ (null) || (page is https: ? "wss" : "ws")
//   host:     __HMR_HOSTNAME__ (null) || importMetaUrl.hostname
//   port:     __HMR_PORT__     (null) || importMetaUrl.port
// So a browser on https://<vmId>.<domain> (port 443 behind the TLS edge)
// connects to wss://<vmId>.<domain>/ and the in-VM Chromium on
// http://localhost:3000 connects to ws://localhost:3000/ — both through the
// proxy, which forwards the upgrade (subprotocol "vite-hmr", ?token= query)
// to 127.0.0.1:5173. Setting clientPort to 443 would break localhost:3000, and
// 3000 would break the public URL; setting ws.port would move the socket to a
// separate server (port 24678) the proxy does not reach.
//
// allowedHosts: true — requests arrive with any public Host header
// (<vmId>.<domain>, 3000-<sandboxId>.e2b.app, localhost:3000); without it Vite
// answers 403 for them and refuses their HMR WebSocket. Vite stays reachable
// only on loopback; the supervisor's proxy is the way in.
export default defineConfig({
  plugins: [react(), tailwindcss()],
  server: {
    host: "127.0.0.1",
    port: 5173,
    strictPort: true,
    allowedHosts: true,
  },
  preview: {
    allowedHosts: true,
  },
});
