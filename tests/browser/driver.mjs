// Drives Debian's Chromium (through playwright-core, no downloaded browser) to the
// test page served from a second origin, and checks what the page reports.
// usage: node driver.mjs SERVER_BASE ALLOWED_PAGE_ORIGIN REFUSED_PAGE_ORIGIN
// Prints the Chromium and client versions, one line per scenario, and a closing
// "browser: N passed, M failed" line; exits non-zero on any failure.
import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";

const [SERVER, ALLOWED, REFUSED] = process.argv.slice(2);
const EXECUTABLE = process.env.STARFISH_CHROMIUM ?? "/usr/bin/chromium";
const TIMEOUT_MS = 90_000;
const clientVersion = JSON.parse(
  readFileSync(new URL("./node_modules/@drakkar.software/starfish-client/package.json", import.meta.url)),
).version;

function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}

const browser = await chromium.launch({
  executablePath: EXECUTABLE,
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
console.log(`browser: Chromium ${browser.version()} (${EXECUTABLE})`);
console.log(`browser: @drakkar.software/starfish-client ${clientVersion}`);

/** Opens the page from `origin`; returns its verdict and the server's responses. */
async function visit(origin) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const responses = [];
  const consoleLines = [];
  page.on("console", (m) => consoleLines.push(`[${m.type()}] ${m.text()}`));
  page.on("pageerror", (e) => consoleLines.push(`[pageerror] ${e.message}`));
  page.on("response", async (r) => {
    if (!r.url().startsWith(SERVER)) return;
    responses.push({ method: r.request().method(), url: r.url(), status: r.status(), headers: await r.allHeaders() });
  });
  try {
    await page.goto(`${origin}/index.html?server=${encodeURIComponent(SERVER)}`);
    await page.waitForFunction(() => window.__starfishResult !== undefined, null, { timeout: TIMEOUT_MS });
    const result = await page.evaluate(() => window.__starfishResult);
    return { result, responses, consoleLines };
  } finally {
    await context.close();
  }
}

const scenarios = {
  // The allowed origin: identity, JSON push/pull/update, blob upload/download.
  async crossOriginRoundTrip() {
    const { result, responses, consoleLines } = await visit(ALLOWED);
    for (const s of result.steps) console.log(`  ${s}`);
    assert(result.ok, `page failed: ${result.error}\n${consoleLines.join("\n")}`);
    assert(result.origin === ALLOWED && !SERVER.startsWith(result.origin), `not cross-origin: ${result.origin} vs ${SERVER}`);
    const pulls = responses.filter((r) => r.method === "GET" && r.url.includes("/pull/users/"));
    assert(pulls.length >= 2, `JSON pulls seen: ${JSON.stringify(pulls)}`);
    for (const r of responses) assert(r.headers["access-control-allow-origin"] === ALLOWED, `no CORS on ${r.url}`);
    const encodings = pulls.map((r) => r.headers["content-encoding"]);
    assert(encodings.every((e) => e === "br" || e === "gzip"), `JSON pulls not compressed: ${encodings}`);
    const blob = responses.find((r) => r.url.includes("/pull/avatars/"));
    assert(blob && !blob.headers["content-encoding"], `blob pull: ${JSON.stringify(blob?.headers)}`);
    console.log(`  JSON pulls came back ${[...new Set(encodings)].join("/")}-encoded; the blob as stored`);
  },
  // Any other origin: the browser refuses the responses (no Access-Control-Allow-Origin).
  async otherOriginRefused() {
    const { result, consoleLines } = await visit(REFUSED);
    assert(!result.ok, "the page succeeded from an origin that is not allowed");
    assert(result.errorName === "TypeError" && /fetch/i.test(result.error), `expected a CORS network error, got ${result.error}`);
    assert(consoleLines.some((l) => /CORS/.test(l)), `no CORS message on the console:\n${consoleLines.join("\n")}`);
    console.log(`  refused as expected: ${result.error.split("\n")[0]}`);
  },
};

let passed = 0, failed = 0;
for (const [name, run] of Object.entries(scenarios)) {
  try {
    await run();
    passed += 1;
    console.log(`browser: ok   ${name}`);
  } catch (e) {
    failed += 1;
    console.log(`browser: FAIL ${name}\n${e?.stack ?? e}`);
  }
}
await browser.close();
console.log(`browser: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
