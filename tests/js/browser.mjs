// Drives a real Chromium with Playwright to check that the app renders and that an
// edit of src/App.tsx arrives by HMR, without a page reload. Prints one JSON line:
//   {"before":"...","after":"...","reloaded":false,"hmr_ms":123}
// Usage:
//   node browser.mjs --cdp http://127.0.0.1:9222 [--token T] --page URL --file APP_TSX
//   node browser.mjs --launch [--map HOST] --page URL --file APP_TSX [--exec "podman exec -i -u user NAME"]
// --cdp attaches to a running Chromium (the stack's own, or through /_supervisor/cdp);
// --launch starts a headless /usr/bin/chromium that resolves HOST to 127.0.0.1.
// --exec PREFIX reads and writes APP_TSX through a command (words split on spaces; `cat FILE`
// and `sh -c 'cat > FILE'` are appended), e.g. a file inside a container (image/smoke.sh).
import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";

const arg = (name) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : undefined;
};
const has = (name) => process.argv.includes(`--${name}`);
const pageUrl = arg("page");
const file = arg("file");
const token = arg("token");
const exec = arg("exec")?.split(" ").filter(Boolean);
const run = (words, input) => execFileSync(words[0], words.slice(1), { input, encoding: "utf8", timeout: 20000 });
const readSource = () => (exec ? run([...exec, "cat", file]) : readFileSync(file, "utf8"));
const writeSource = (text) => (exec ? run([...exec, "sh", "-c", 'cat > "$1"', "sh", file], text) : writeFileSync(file, text));

let browser;
let ownsBrowser = false;
try {
  if (has("launch")) {
    const map = arg("map");
    browser = await chromium.launch({
      executablePath: "/usr/bin/chromium",
      headless: true,
      args: [
        "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        ...(map ? [`--host-resolver-rules=MAP ${map} 127.0.0.1`] : []),
      ],
    });
    ownsBrowser = true;
  } else {
    const headers = token ? { Authorization: `Bearer ${token}` } : undefined;
    browser = await chromium.connectOverCDP(arg("cdp"), { headers, timeout: 20000 });
  }
  const context = browser.contexts()[0] || (await browser.newContext());
  const page = await context.newPage();
  // Vite's client logs "[vite] connected." once its HMR WebSocket is open: an edit made
  // before that is never sent to this page (a loaded machine showed it), so wait for it.
  const hmrConnected = new Promise((resolve) => {
    page.on("console", (m) => { if (m.text().includes("[vite] connected")) resolve(true); });
  });
  await page.goto(pageUrl, { waitUntil: "load", timeout: 30000 });
  const h1 = page.locator("h1");
  await h1.waitFor({ timeout: 30000 });
  const before = (await h1.textContent()).trim();
  // Wait until the HMR client is connected, then mark the page: a reload loses the mark.
  await page.waitForFunction(() => {
    const entries = performance.getEntriesByType("resource").map((e) => e.name);
    return entries.some((n) => n.includes("/@vite/client"));
  }, null, { timeout: 15000 });
  await Promise.race([hmrConnected, new Promise((_, reject) => setTimeout(() => reject(new Error("the HMR client never logged '[vite] connected.'")), 20000))]);
  await page.evaluate(() => { window.__notReloaded = true; });
  const marker = `Edited ${Date.now()}`;
  const src = readSource();
  if (!src.includes(before)) throw new Error(`App.tsx does not contain ${JSON.stringify(before)}`);
  const t0 = Date.now();
  writeSource(src.replace(before, marker));
  await page.waitForFunction((m) => document.querySelector("h1")?.textContent?.includes(m), marker, { timeout: 20000 });
  const hmrMs = Date.now() - t0;
  const after = (await h1.textContent()).trim();
  const reloaded = !(await page.evaluate(() => window.__notReloaded === true));
  writeSource(src);
  await page.close();
  console.log(JSON.stringify({ before, after, reloaded, hmr_ms: hmrMs }));
} catch (e) {
  console.error(String(e && e.stack ? e.stack : e));
  process.exitCode = 1;
} finally {
  if (browser) {
    if (ownsBrowser) await browser.close();
    else await browser.close().catch(() => {}); // disconnects; the stack's Chromium keeps running
  }
}
