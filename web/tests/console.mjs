// Drives the broadcaster console (console.html) in headless Chromium against a running local
// stack: signs in through the stack's signing helper, creates a stream, edits its catalogue,
// starts it, watches its live count follow the taps the script sends, pauses reactions (the
// API refuses taps with 409 reactions_paused until the pause is lifted), sets a fair-use limit,
// ends the stream and reads its summary (total, top emoji, a moment linked into the replay).
// Also checks that the signing helper refuses requests a page of another site could send.
// Exits non-zero with a message on any failure.
//
//   WEB_URL=http://127.0.0.1:8080/ API_URL=http://127.0.0.1:3000 STREAM=id ARTIFACTS=dir node console.mjs
//
// To have a moment stored for the stream, the script prints `store-moment <stream>` and waits
// for `stored` on its standard input (tests/tests/console.rs answers it).
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";

const WEB_URL = process.env.WEB_URL;
const API_URL = process.env.API_URL;
const STREAM = process.env.STREAM;
const ARTIFACTS = process.env.ARTIFACTS || ".";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const TIMEOUT = 60000;

assert.ok(WEB_URL && API_URL && STREAM, "WEB_URL, API_URL and STREAM are required");
mkdirSync(ARTIFACTS, { recursive: true });
const harnessInput = createInterface({ input: process.stdin });
const harness = harnessInput[Symbol.asyncIterator]();

async function askHarness(request, answer) {
  console.log(request);
  const { value, done } = await harness.next();
  assert.ok(!done && value.trim() === answer, `the harness answered ${JSON.stringify(value)}`);
}

/** Waits until `check` returns a truthy value (every 200 ms, up to TIMEOUT). */
async function until(what, check) {
  const deadline = Date.now() + TIMEOUT;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (error) {
      last = error.message;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${JSON.stringify(last)})`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

async function tap(emoji, count) {
  const response = await fetch(`${API_URL}/reactions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ stream_id: STREAM, user_id: `console-test-${emoji}`, emoji, count }),
  });
  return { status: response.status, body: await response.json().catch(() => ({})) };
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
});
try {
  // The signing helper signs only the console's own requests.
  const bare = await fetch(new URL("admin/streams", WEB_URL));
  assert.equal(bare.status, 403, "a request without the console header is refused");
  const forged = await fetch(new URL("admin/streams", WEB_URL), {
    headers: { "x-emostream-console": "1", origin: "http://attacker.test" },
  });
  assert.equal(forged.status, 403, "a request from another origin is refused");
  assert.equal((await forged.json()).error, "cross_origin");

  const context = await browser.newContext({ viewport: { width: 900, height: 1200 } });
  const page = await context.newPage();
  page.on("pageerror", (error) => {
    console.error(`page error: ${error.message}`);
    process.exitCode = 1;
  });
  page.on("dialog", (dialog) => dialog.accept());
  await page.goto(new URL("console.html", WEB_URL).href);
  await page.waitForSelector("body[data-ready='true']", { timeout: TIMEOUT });
  await page.waitForFunction(() => document.getElementById("console-state").dataset.state === "live", null, { timeout: TIMEOUT });
  assert.match(await page.textContent("#signed-as"), /operator/);

  // Create: the stream shows in the list, scheduled, and is selected.
  await page.fill("#new-id", STREAM);
  await page.fill("#new-title", "Console test");
  await page.click("#create button[type=submit]");
  await page.waitForSelector(`tr[data-stream='${STREAM}']`, { timeout: TIMEOUT });
  await page.waitForFunction(() => document.getElementById("selected").dataset.status === "scheduled", null, { timeout: TIMEOUT });
  assert.equal(await page.textContent("#selected-title"), "Console test");

  // The catalogue, edited as text; the public route shows it (within a cache period).
  await page.fill("#catalogue-text", "goal ⚽\nfire 🔥");
  await page.click("#catalogue button[type=submit]");
  await until("the new catalogue", async () => {
    const entry = await (await fetch(`${API_URL}/streams/${STREAM}`)).json();
    return entry.emojis.map((e) => e.name).join(",") === "goal,fire";
  });
  // A bad line is refused with the line named, and nothing changes.
  await page.fill("#catalogue-text", "goal ⚽\nfire");
  await page.click("#catalogue button[type=submit]");
  await page.waitForFunction(() => /line 2/.test(document.getElementById("console-error").textContent), null, { timeout: TIMEOUT });

  // Start, then taps; the live total follows them.
  await page.click("#start");
  await page.waitForFunction(() => document.getElementById("selected").dataset.status === "live", null, { timeout: TIMEOUT });
  let sent = 0;
  for (const [emoji, count] of [["goal", 7], ["fire", 3], ["goal", 5]]) {
    const answer = await until("taps accepted", async () => (await tap(emoji, count)).status === 202);
    assert.ok(answer);
    sent += count;
  }
  await page.waitForFunction((n) => document.getElementById("total").dataset.total === String(n), sent, { timeout: TIMEOUT });
  assert.equal(await page.getAttribute("#top li:first-child", "data-emoji"), "goal");

  // Pause: the API refuses taps with a clear code until the pause is lifted.
  await page.check("#paused");
  await page.click("#moderation button[type=submit]");
  const refused = await until("reactions refused", async () => {
    const answer = await tap("goal", 1);
    if (answer.status === 202) sent += 1; // taken before this container saw the pause
    return answer.status === 409 && answer;
  });
  assert.equal(refused.body.error, "reactions_paused");
  await page.waitForFunction(() => /reactions paused/.test(document.getElementById("selected-status").textContent), null, { timeout: TIMEOUT });
  await page.uncheck("#paused");
  await page.fill("#fair-use", "5");
  await page.click("#moderation button[type=submit]");
  await until("reactions taken again", async () => {
    const answer = await tap("fire", 2);
    return answer.status === 202;
  });
  sent += 2;
  // The limit is on the admin routes only (the public one does not tell a spammer).
  assert.equal("fair_use_limit" in (await (await fetch(`${API_URL}/streams/${STREAM}`)).json()), false);
  await until("the limit stored", async () => {
    const listing = await (await fetch(new URL("admin/streams", WEB_URL), { headers: { "x-emostream-console": "1" } })).json();
    return listing.streams.find((s) => s.id === STREAM)?.fair_use_limit === 5;
  });
  assert.equal(await page.inputValue("#fair-use"), "5");
  await page.waitForFunction((n) => document.getElementById("total").dataset.total === String(n), sent, { timeout: TIMEOUT });

  // A moment, then the end: the summary with its total, top emoji and a link into the replay.
  await askHarness(`store-moment ${STREAM}`, "stored");
  await page.waitForSelector("#moment-list li[data-status] a", { timeout: TIMEOUT }); // listed while live
  assert.equal(await page.textContent("#figures-heading"), "Live");
  await page.click("#end");
  await page.waitForFunction(() => document.getElementById("selected").dataset.status === "ended", null, { timeout: TIMEOUT });
  await page.waitForFunction(() => document.getElementById("figures-heading").textContent === "Summary", null, { timeout: TIMEOUT });
  await page.waitForSelector("#moment-list a", { timeout: TIMEOUT });
  const href = await page.getAttribute("#moment-list a", "href");
  assert.match(href, new RegExp(`^replay\\.html\\?stream=${STREAM}&at=\\d+$`));
  assert.equal(await page.textContent("#total"), String(sent));
  assert.equal(await page.getAttribute("#top li:first-child", "data-emoji"), "goal");
  assert.notEqual(await page.textContent("#peak"), "–");
  assert.equal(await page.isDisabled("#end"), true);
  await page.screenshot({ path: join(ARTIFACTS, "console.png"), fullPage: true });
  console.log(`console test passed: ${sent} taps summed, moment linked at ${href}`);
} catch (error) {
  console.error(`console test failed: ${error.stack || error}`);
  process.exitCode = 1;
} finally {
  harnessInput.close();
  await browser.close();
}
