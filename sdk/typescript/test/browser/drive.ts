// Loads the browser test's page in headless Chromium (Debian's, driven by playwright-core), waits
// until the page has written its outcome, and prints it as JSON:
// {"kids": [...the page's list...], "outcome": {...the page's #result...}, "console": [...]}.
//
//     node --import tsx test/browser/drive.ts http://127.0.0.1:PORT/index.html?server=...
//
// CHROMIUM overrides the browser's path (default /usr/bin/chromium).

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { chromium } from "playwright-core";

// The flags that work on these machines: without the background-networking ones Chromium keeps
// trying hosts this closed network refuses.
const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

const [url] = process.argv.slice(2);
if (url === undefined) {
  console.error("usage: drive.ts PAGE_URL");
  process.exit(2);
}
const userDataDir = mkdtempSync(join(tmpdir(), "agentrouter-chromium-"));
try {
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env["CHROMIUM"] ?? "/usr/bin/chromium",
    headless: true,
    args: ARGS,
  });
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    const messages: string[] = [];
    page.on("console", (message) => messages.push(`${message.type()}: ${message.text()}`));
    page.on("pageerror", (error) => messages.push(`pageerror: ${String(error)}`));
    await page.goto(url);
    await page.waitForSelector("#result[data-done]", { timeout: 30_000 });
    const kids = await page.locator("#kids li").allTextContents();
    const outcome: unknown = JSON.parse((await page.locator("#result").textContent()) ?? "null");
    process.stdout.write(`${JSON.stringify({ kids, outcome, console: messages })}\n`);
  } finally {
    await context.close();
  }
} finally {
  rmSync(userDataDir, { recursive: true, force: true });
}
