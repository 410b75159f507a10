// Edits for bench/vite-memory.py: opens Vite's page at URL in the Chromium at CDP (playwright-core
// from tests/js), then EDITS times rewrites src/App.tsx of APP's heading, one a second, each
// timed from the write until Chromium shows the new heading (Vite's HMR, not a reload: a reload
// fails the run). Prints {"p50_ms","max_ms","n"}. Usage: node vite-edits.mjs CDP URL APP EDITS
import { createRequire } from "node:module";
import { readFileSync, writeFileSync } from "node:fs";
const require = createRequire(new URL("../tests/js/package.json", import.meta.url));
const { chromium } = require("playwright-core");
const [cdp, url, app, edits = "20"] = process.argv.slice(2);
const file = `${app}/src/App.tsx`;
const orig = readFileSync(file, "utf8");
const browser = await chromium.connectOverCDP(cdp);
const page = await browser.contexts()[0].newPage();
let reloads = -1;
page.on("load", () => reloads++);
await page.goto(url);
await page.waitForFunction(() => document.querySelector("h1")?.textContent === "Hello from the sandbox", null, { timeout: 30000 });
const samples = [];
try {
  for (let i = 0; i < Number(edits); i++) {
    const text = `Hello from the sandbox, edit ${i}`;
    const t0 = performance.now();
    writeFileSync(file, orig.replace("Hello from the sandbox", text));
    await page.waitForFunction((t) => document.querySelector("h1")?.textContent === t, text, { timeout: 10000, polling: "raf" });
    samples.push(performance.now() - t0);
    await new Promise((r) => setTimeout(r, 1000)); // a person's pace, not a readiness wait
  }
} finally {
  writeFileSync(file, orig);
}
if (reloads !== 0) { console.error(`the page reloaded ${reloads} times`); process.exit(1); }
await page.close();
await browser.close();
const s = samples.sort((a, b) => a - b);
console.log(JSON.stringify({ p50_ms: s[Math.floor(s.length / 2)], max_ms: s[s.length - 1], n: s.length }));
