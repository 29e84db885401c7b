// Drives the browser client in real headless Chromium against a running local stack:
// two pages watch one stream, one taps (mouse and keyboard), both must show the same exact
// counts; a page that joins late must show the history at once; a reduced-motion page must
// not animate; a page whose connection the server forgot before its first sync must connect
// again and go on showing taps. With DELIVERY=AppSyncEvents the page speaks the AppSync Events
// protocol instead: a page whose connection the API drops must connect, subscribe and show taps
// again, and switching streams swaps the subscription on the same connection. Saves
// screenshots. With viewer identity on (the page's config names a sign-in), every page signs in
// by name and the script's own posts carry a token; a page whose token expired must sign in
// again by itself and go on sending taps. A moment published for a stream shows on its page as
// it happens. The replay page (WebSocketApi run) plays a stored recording: the counts shown
// match the stored window of the clock's time within one window while seeking, playing at 2×
// and paused; the heatmap and the moments are there, and a moment jumps the clock to it; with
// reduced motion it shows an intensity bar and no particles. A page served under a name that is not this machine's,
// opened with ?api= and ?ws= naming another origin, must send nothing there (least of all a
// token). Exits non-zero with a message on any failure.
//
//   WEB_URL=http://127.0.0.1:8080/ API_URL=http://127.0.0.1:3000 STREAM=id ARTIFACTS=dir node browser.mjs
//
// To make the server forget a connection, the script prints `forget-connections <stream>`, to
// make the Event API drop every connection `drop-subscribers`, and to have a moment published
// `publish-moment <stream>`; it waits for a line `forgotten`, `dropped` or `published` on its
// standard input (tests/tests/browser.rs answers it). The harness stores the recording of
// `<STREAM>-replay` before the script starts.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";

const WEB_URL = process.env.WEB_URL;
const API_URL = process.env.API_URL;
const ARTIFACTS = process.env.ARTIFACTS || ".";
const DELIVERY = process.env.DELIVERY || "WebSocketApi";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
// Registered and started by the caller (with -forgotten, -dropped and -switched beside it).
const STREAM = process.env.STREAM;
// Generous: every wait is for a condition, and a busy machine may be slow to reach it.
const TIMEOUT = 60000;

assert.ok(WEB_URL && API_URL && STREAM, "WEB_URL, API_URL and STREAM are required");
mkdirSync(ARTIFACTS, { recursive: true });

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    // Names that are not loopback, for the page and an attacker (both served on 127.0.0.1).
    "--host-resolver-rules=MAP emostream-page.test 127.0.0.1, MAP attacker.test 127.0.0.1",
  ],
});

const harness = createInterface({ input: process.stdin });
const harnessLines = harness[Symbol.asyncIterator]();

/** Asks the test harness to delete every connection record of `stream`, as a fan-out that
 * took a 410 for them would. */
async function forgetConnections(stream) {
  await askHarness(`forget-connections ${stream}`, "forgotten");
}

async function askHarness(request, answer) {
  console.log(request);
  const { value, done } = await harnessLines.next();
  assert.ok(!done && value.trim() === answer, `the harness answered ${JSON.stringify(value)}`);
}

async function newPage(options = {}) {
  const context = await browser.newContext({ viewport: { width: 420, height: 900 }, ...options });
  const page = await context.newPage();
  page.on("pageerror", (error) => {
    console.error(`page error: ${error.message}`);
    process.exitCode = 1;
  });
  return page;
}

const pageConfig = await (await fetch(new URL("config.json", WEB_URL))).json();
let viewers = 0;

async function openPage(options = {}, stream = STREAM, page = null, site = WEB_URL, extra = "") {
  page = page || (await newPage(options));
  await page.goto(`${site}?stream=${stream}${extra}`);
  await page.waitForSelector("body[data-ready=true], #sign-in:not([hidden])", { timeout: TIMEOUT });
  if (await page.locator("#sign-in").isVisible()) {
    viewers += 1;
    await page.fill("#viewer-name", `Viewer ${viewers}`);
    await page.getByRole("button", { name: "Sign in" }).click();
  }
  await page.waitForSelector("body[data-ready=true]", { timeout: TIMEOUT });
  await page.waitForSelector("#connection[data-state=live]", { timeout: TIMEOUT });
  await page.waitForSelector("#pad[data-status=live] button", { timeout: TIMEOUT });
  return page;
}

/** Taps per emoji over every window the page knows, read from what it renders. */
async function shown(page) {
  return page.evaluate(() => ({
    sum: Number(document.getElementById("chart-summary").dataset.sum || 0),
    counts: [...document.querySelectorAll("#counts li")].map((li) => [
      li.dataset.emoji,
      Number(li.querySelector(".count").textContent),
    ]),
    total: Number(document.getElementById("total").textContent),
  }));
}

/** The script's own token, when viewer identity is on (signed in as "browser test"). */
async function scriptToken() {
  const response = await fetch(pageConfig.signInUrl, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ viewer: "browser test" }),
  });
  assert.equal(response.status, 200, `sign-in answered ${response.status}`);
  return (await response.json()).token;
}

async function postTaps(stream, emoji, count) {
  const headers = { "content-type": "application/json" };
  const reaction = { stream_id: stream, emoji, count };
  if (pageConfig.signInUrl) headers.authorization = `Bearer ${await scriptToken()}`;
  else reaction.user_id = "browser-test";
  const response = await fetch(`${API_URL}/reactions`, {
    method: "POST",
    headers,
    body: JSON.stringify({ reactions: [reaction] }),
  });
  assert.equal(response.status, 202, `POST /reactions answered ${response.status}`);
}

async function waitForSum(page, sum) {
  await page.waitForFunction(
    (expected) => Number(document.getElementById("chart-summary").dataset.sum || 0) === expected,
    sum,
    { timeout: TIMEOUT },
  );
}

async function storedCounts() {
  const response = await fetch(`${API_URL}/streams/${STREAM}/windows?since=0&limit=500`);
  const body = await response.json();
  const counts = {};
  for (const window of body.windows) {
    for (const [emoji, n] of Object.entries(window.counts)) counts[emoji] = (counts[emoji] || 0) + n;
  }
  return counts;
}

/** Recovered: the page opened a second socket (`sockets()` counts them), is live again, and a
 * new tap on `stream` reaches it. */
async function showsTapsAgain(page, stream, sockets, after) {
  const since = Date.now();
  while (sockets() < 2) {
    assert.ok(Date.now() - since < TIMEOUT, `the page did not connect again ${after}`);
    await page.waitForTimeout(50);
  }
  await page.waitForFunction(
    () => document.getElementById("connection").dataset.state === "live",
    null,
    { timeout: TIMEOUT },
  );
  await postTaps(stream, "fire", 3);
  await waitForSum(page, 3);
}

/** A push lost on the way (the harness makes the next one to the page's stream vanish) is
 * noticed from the next push's number, one too far ahead, and repaired with a `sync` (or the
 * stored windows in AppSyncEvents delivery): the page shows every tap, within a push interval
 * of that next push and the repair's round trip. */
async function lostPushRepair() {
  const stream = `${STREAM}-lost`;
  const page = await openPage({}, stream);
  await postTaps(stream, "fire", 1);
  await waitForSum(page, 1); // a push arrived: the page knows the push numbers from here
  await askHarness(`lose-next-push ${stream}`, "losing");
  await postTaps(stream, "fire", 2);
  await askHarness("push-lost", "lost"); // the push carrying them is lost
  // The next taps must land in a later window, so the next push does not carry these.
  const firstEnd = await windowEnding(stream, 3);
  while (Date.now() <= firstEnd) await page.waitForTimeout(100);
  const sent = Date.now();
  await postTaps(stream, "clap", 4);
  await waitForSum(page, 7);
  const repairs = Number(await page.evaluate(() => document.body.dataset.repairs || 0));
  assert.ok(repairs >= 1, "the page repaired its counts");
  console.log(`a lost push was repaired on the page ${Date.now() - sent} ms after the next taps were sent`);
}

/** The end of the window of `stream` whose stored taps reach `taps` in all, once stored. */
async function windowEnding(stream, taps) {
  const since = Date.now();
  for (;;) {
    const response = await fetch(`${API_URL}/streams/${stream}/windows?since=0&limit=500`);
    const windows = (await response.json()).windows || [];
    const total = windows.reduce((sum, w) => sum + Object.values(w.counts).reduce((a, b) => a + b, 0), 0);
    if (total >= taps) return Math.max(...windows.map((w) => w.end_ms));
    assert.ok(Date.now() - since < TIMEOUT, `${taps} taps were never stored`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** WebSocketApi: a page whose connection record is gone when its first `sync` arrives (an
 * expired record, or one deleted after a 410) is told `unknown_connection`: it must connect
 * again rather than show Live with nothing arriving. The page's WebSocket is proxied so the
 * test can hold that sync until the server has forgotten the connection. */
async function forgottenConnectionRecovery() {
  const forgottenStream = `${STREAM}-forgotten`;
  const forgotten = await newPage();
  let sockets = 0;
  let held = false;
  await forgotten.routeWebSocket(/[?&]stream=/, (ws) => {
    sockets += 1;
    const server = ws.connectToServer();
    ws.onMessage(async (message) => {
      if (!held && JSON.parse(message).action === "sync") {
        held = true;
        await forgetConnections(forgottenStream);
      }
      server.send(message);
    });
  });
  await openPage({}, forgottenStream, forgotten);
  await showsTapsAgain(forgotten, forgottenStream, () => sockets, "after unknown_connection");
  assert.ok(held, "the first sync was held while the server forgot the connection");
  assert.ok(sockets >= 2, `the page connected again (${sockets} sockets)`);
  await forgotten.screenshot({ path: join(ARTIFACTS, "reconnected.png"), fullPage: true });
}

/** WebSocketApi: a page renews its connection before API Gateway's 2-hour cap (here after
 * 1.5 s instead of 100 to 115 minutes): the new socket is open before the old one is closed, and
 * taps go on arriving. */
async function renewedConnection() {
  const stream = `${STREAM}-renewed`;
  const page = await newPage();
  const sockets = [];
  page.on("websocket", (socket) => sockets.push(socket));
  await openPage({}, `${stream}&renewMs=1500`, page);
  await page.waitForSelector("body[data-renewals]", { timeout: TIMEOUT });
  assert.ok(sockets.length >= 2, `the page opened ${sockets.length} sockets`);
  await page.waitForFunction(() => document.getElementById("connection").dataset.state === "live", null, {
    timeout: TIMEOUT,
  });
  const since = Date.now();
  while (!sockets[0].isClosed()) {
    assert.ok(Date.now() - since < TIMEOUT, "the renewed socket was never closed");
    await page.waitForTimeout(50);
  }
  await postTaps(stream, "clap", 2);
  await waitForSum(page, 2);
  console.log(`a page renewed its connection ${await page.evaluate(() => document.body.dataset.renewals)} times and kept showing taps`);
}

/** AppSyncEvents: a page whose connection the API drops connects and subscribes again and goes
 * on showing taps; switching streams swaps the subscription without a new connection. */
async function appSyncRecovery() {
  const stream = `${STREAM}-dropped`;
  const page = await newPage();
  let sockets = 0;
  page.on("websocket", () => {
    sockets += 1;
  });
  await openPage({}, stream, page);
  assert.equal(sockets, 1);
  await askHarness("drop-subscribers", "dropped");
  await showsTapsAgain(page, stream, () => sockets, "after being dropped");
  await page.screenshot({ path: join(ARTIFACTS, "reconnected.png"), fullPage: true });

  const other = `${STREAM}-switched`;
  await page.fill("#stream-input", other);
  await page.press("#stream-input", "Enter");
  await page.waitForFunction(
    (name) => document.getElementById("connection").textContent.includes(name),
    other,
    { timeout: TIMEOUT },
  );
  await postTaps(other, "clap", 2);
  await waitForSum(page, 2);
  assert.equal(sockets, 2, "switching streams kept the connection");
}

/** A moment of the watched stream, published as aggregate does when a window stands out,
 * shows in the page's moment list as it happens. */
async function liveMoment() {
  const stream = `${STREAM}-moment`;
  const page = await openPage({}, stream);
  await askHarness(`publish-moment ${stream}`, "published");
  await page.waitForSelector("#moments li[data-status=provisional] button", { timeout: TIMEOUT });
  const label = await page.locator("#moments li button").first().getAttribute("aria-label");
  assert.match(label, /fire/);
  console.log("a moment published for the stream showed on its page");
}

/** What the replay page shows: the clock's position, the stream time it maps to, the bucket
 * shown and its counts. */
async function replayShown(page) {
  return page.evaluate(() => ({
    position: Number(document.body.dataset.position),
    origin: Number(document.body.dataset.origin),
    resolution: Number(document.body.dataset.resolution),
    bucketStart: Number(document.getElementById("replay-counts").dataset.bucketStart),
    counts: Object.fromEntries(
      [...document.querySelectorAll("#replay-counts li")].map((li) => [li.dataset.emoji, Number(li.querySelector(".count").textContent)]),
    ),
  }));
}

/** The shown counts are the stored window of the shown bucket, and that bucket holds the
 * clock's time or is the one before it (the page renders once a frame): within one window. */
function assertInSync(shown, stored, what) {
  const t = shown.origin + shown.position;
  assert.ok(
    shown.bucketStart <= t && t < shown.bucketStart + 2 * shown.resolution,
    `${what}: the page shows the window from ${shown.bucketStart} at stream time ${t}`,
  );
  const window = stored.find((w) => w.start_ms === shown.bucketStart);
  assert.deepEqual(shown.counts, window ? window.counts : {}, `${what}: counts of the window from ${shown.bucketStart}`);
}

/** Moves the replay's scrubber to `ms` as a viewer dragging it would (input, then change). */
async function seekTo(page, ms) {
  await page.locator("#scrubber").evaluate((input, value) => {
    input.value = String(value);
    input.dispatchEvent(new Event("input", { bubbles: true }));
    input.dispatchEvent(new Event("change", { bubbles: true }));
  }, ms);
}

/** The replay page against the stored recording of `<STREAM>-replay`. */
async function replayPage() {
  const stream = `${STREAM}-replay`;
  const stored = (await (await fetch(`${API_URL}/streams/${stream}/windows?since=0&limit=500`)).json()).windows;
  assert.equal(stored.length, 60, "the harness stored the recording");
  const page = await newPage();
  await page.goto(new URL(`replay.html?stream=${stream}`, WEB_URL).toString());
  await page.waitForSelector("body[data-ready=true]", { timeout: TIMEOUT });
  assert.ok(Number(await page.locator("#heatmap").getAttribute("data-cells")) > 0, "the heatmap is drawn");
  assert.equal(await page.locator("#moments li").count(), 1, "the recording's moment is listed");

  // Seeking: the counts of the window at the new position, at once.
  for (const at of [37000, 5000, 118500]) {
    await seekTo(page, at);
    await page.waitForFunction((ms) => Number(document.body.dataset.position) === ms, at, { timeout: TIMEOUT });
    await page.waitForTimeout(100);
    assertInSync(await replayShown(page), stored, `seeked to ${at} ms`);
  }
  // Playing at 2×: sampled as the clock runs, the page keeps to the window of its time.
  await seekTo(page, 20000);
  await page.getByRole("button", { name: /^Speed/ }).click();
  await page.getByRole("button", { name: "Play", exact: true }).click();
  const first = await replayShown(page);
  for (let i = 0; i < 8; i++) {
    await page.waitForTimeout(250);
    assertInSync(await replayShown(page), stored, `playing at 2× (sample ${i})`);
  }
  const moved = (await replayShown(page)).position - first.position;
  assert.ok(moved > 2500, `at 2× the clock ran ${moved} ms in about 2 s`);
  // Paused: the clock and the counts stay (sampled after two frames, once the page has drawn
  // the paused position).
  await page.getByRole("button", { name: "Pause", exact: true }).click();
  const twoFrames = () => page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
  await twoFrames();
  const paused = await replayShown(page);
  await page.waitForTimeout(400);
  await twoFrames();
  assert.equal((await replayShown(page)).position, paused.position, "paused");
  assertInSync(paused, stored, "paused");
  // A moment moves the clock to its start (ten seconds before its first spike), still paused.
  await page.locator("#moments li button").first().click();
  await page.waitForFunction(() => Number(document.body.dataset.position) === 50000, null, { timeout: TIMEOUT });
  assertInSync(await replayShown(page), stored, "jumped to the moment");
  await page.screenshot({ path: join(ARTIFACTS, "replay.png"), fullPage: true });

  // Reduced motion: no particles, an intensity bar instead.
  const calm = await newPage({ reducedMotion: "reduce" });
  await calm.goto(new URL(`replay.html?stream=${stream}&at=60000`, WEB_URL).toString());
  await calm.waitForSelector("body[data-ready=true]", { timeout: TIMEOUT });
  await calm.getByRole("button", { name: "Play", exact: true }).click();
  await calm.waitForTimeout(2500);
  assert.equal(await calm.locator("#swarm span").count(), 0, "no particles with reduced motion");
  assert.ok(await calm.locator("#intensity").isVisible(), "the intensity bar shows instead");
  assert.ok(Number(await calm.locator("#intensity").getAttribute("data-intensity")) > 0);
  console.log("the replay page kept to the recording while seeking, at 2× and paused; reduced motion showed the intensity bar");
}

/** A link to the real page (served under a name that is not this machine's) whose ?api= and
 * ?ws= name another origin: the page keeps its served configuration, and nothing, least of all
 * the viewer's token, goes to the other origin. */
async function foreignOverridesIgnored() {
  const page = await newPage();
  const foreign = [];
  await page.route((url) => url.hostname === "attacker.test", (route) => {
    const request = route.request();
    foreign.push({ url: request.url(), authorization: request.headers().authorization });
    return route.abort();
  });
  page.on("websocket", (socket) => {
    if (new URL(socket.url()).hostname === "attacker.test") foreign.push({ url: socket.url() });
  });
  const site = new URL(WEB_URL);
  site.hostname = "emostream-page.test";
  const api = `http://attacker.test:${new URL(API_URL).port}`;
  const ws = "ws://attacker.test:9/live";
  const extra = `&api=${encodeURIComponent(api)}&ws=${encodeURIComponent(ws)}`;
  try {
    await openPage({}, STREAM, page, site.toString(), extra);
    await page.getByRole("button", { name: /React with fire/ }).click();
    await page.waitForFunction(() => /^1 taps sent/.test(document.getElementById("sent").textContent), null, {
      timeout: TIMEOUT,
    });
  } catch (error) {
    throw new Error(`the page did not work from its served configuration (sent to the link's origin: ${JSON.stringify(foreign)}): ${error.message}`);
  }
  assert.deepEqual(foreign, [], "the page sent requests to the origin a link named");
  console.log("a foreign ?api= and ?ws= were ignored; the tap went to the served API");
}

/** The page's token, as it keeps it for this tab. */
async function pageToken(page) {
  return page.evaluate(() => (JSON.parse(sessionStorage.getItem("emostream-viewer")) || {}).token);
}

/** Retry-safe taps: the first two answers to the page's next request are lost after the server
 * took it (the page sees 503), so the page sends it again with the same idempotency key; the
 * taps count once. A later tap from the same viewer (same partition) is counted only after the
 * retries were, so the stored counts are final when it shows. */
async function lostAnswerRetry(page, sumBefore) {
  const keys = [];
  let lost = 0;
  const url = `${API_URL}/reactions`;
  await page.route(url, async (route) => {
    if (route.request().method() !== "POST") return route.continue();
    keys.push(route.request().headers()["idempotency-key"]);
    const response = await route.fetch();
    if (lost < 2) {
      lost += 1;
      return route.fulfill({
        status: 503,
        headers: { "access-control-allow-origin": "*" },
        contentType: "application/json",
        body: '{"error":"unavailable"}',
      });
    }
    return route.fulfill({ response });
  });
  const party = page.getByRole("button", { name: /React with party/ });
  for (let i = 0; i < 3; i++) await party.click();
  // The tapper sent 10 taps before these 3.
  await page.waitForFunction(() => /^13 taps sent/.test(document.getElementById("sent").textContent), null, {
    timeout: TIMEOUT,
  });
  await page.unroute(url);
  assert.ok(keys.length >= 3, `the request was sent ${keys.length} times`);
  assert.ok(keys[0] && keys.slice(0, 3).every((key) => key === keys[0]), `one key for every attempt: ${keys}`);
  await party.click();
  await waitForSum(page, sumBefore + 4);
  const stored = Object.values(await storedCounts()).reduce((a, b) => a + b, 0);
  assert.equal(stored, sumBefore + 4, "the retried taps were counted once");
  console.log(`a request whose answer was lost twice was sent ${keys.length} times with one key and counted once`);
}

/** Identity: once the page's token has expired, a tap makes it sign in again (a new token) and
 * the tap is counted, as the stack's demo issuer gives short-lived tokens in this test. */
async function expiredTokenRecovery(page, sumBefore) {
  const token = await pageToken(page);
  const { exp } = JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString());
  await page.waitForFunction((expiry) => Date.now() / 1000 > expiry + 1, exp, { timeout: TIMEOUT });
  await page.getByRole("button", { name: /React with clap/ }).click();
  await waitForSum(page, sumBefore + 1);
  assert.notEqual(await pageToken(page), token, "the page signed in again");
  console.log("a page whose token expired signed in again and its tap was counted");
}

try {
  const tapper = await openPage();
  const watcher = await openPage();

  // The pad is labelled for screen readers and reachable by keyboard.
  const fire = tapper.getByRole("button", { name: /React with fire/ });
  await fire.waitFor({ timeout: TIMEOUT });
  // The help says how often taps really go out.
  assert.equal(await tapper.locator("#sending-every").textContent(), "every second");
  const firstKey = await tapper.locator("#pad button").first().getAttribute("data-emoji");

  // The viewer's own tap shows at once (local echo), long before the next flush could send it.
  await fire.click();
  assert.ok(Number(await tapper.locator("#total").textContent()) >= 1, "own tap echoed at once");
  for (let i = 0; i < 4; i++) await fire.click();
  for (let i = 0; i < 3; i++) await tapper.keyboard.press("1");
  // A key whose character would break a CSS selector (`"`) is ignored, not a page error.
  await tapper.keyboard.press("Shift+Quote");
  await tapper.keyboard.press("Backslash");
  await tapper.getByRole("button", { name: /React with clap/ }).click();
  await tapper.getByRole("button", { name: /React with clap/ }).click();
  const expected = { fire: 5, clap: 2 };
  expected[firstKey] = (expected[firstKey] || 0) + 3;

  await waitForSum(tapper, 10);
  await waitForSum(watcher, 10);
  // Let any late duplicate arrive, then compare the two pages and the stored counts.
  await tapper.waitForTimeout(800);
  const [a, b] = [await shown(tapper), await shown(watcher)];
  assert.equal(a.sum, 10, `tapper shows ${JSON.stringify(a)}`);
  assert.deepEqual(b, a, "both pages show the same counts");
  assert.deepEqual(await storedCounts(), expected, "the stored counts are the taps");
  assert.match(await tapper.locator("#sent").textContent(), /10 taps sent/);
  await tapper.screenshot({ path: join(ARTIFACTS, "tapper.png"), fullPage: true });

  // A late joiner sees the history at once (sync), without any new tap.
  const started = Date.now();
  const late = await openPage();
  await waitForSum(late, 10);
  const lateShown = await shown(late);
  assert.deepEqual(lateShown.sum, 10);
  console.log(`late joiner showed the history ${Date.now() - started} ms after opening`);
  assert.ok(
    Number(await late.locator("#chart-summary").getAttribute("data-windows")) >= 1,
    "the chart has windows",
  );
  await late.screenshot({ path: join(ARTIFACTS, "late-joiner.png"), fullPage: true });

  // A young stream's history fills the chart from its left edge (a minute of slots).
  assert.equal(await late.locator("#chart").getAttribute("data-slots"), "30");
  assert.ok(Number(await late.locator("#chart rect").first().getAttribute("x")) < 10, "the first bar is at the left");

  // With reduced motion, no particle rises: the counts and an intensity bar show instead, and
  // the pause control is there.
  const calm = await openPage({ reducedMotion: "reduce" });
  await calm.getByRole("button", { name: /React with heart/ }).click();
  await waitForSum(calm, 11);
  await waitForSum(watcher, 11);
  assert.equal(await calm.locator("#swarm span").count(), 0, "no particles with reduced motion");
  assert.ok(await calm.locator("#intensity").isVisible(), "the intensity bar shows instead");
  await calm.waitForFunction(() => Number(document.getElementById("intensity").dataset.intensity) > 0, null, {
    timeout: TIMEOUT,
  });
  assert.ok(await calm.getByRole("button", { name: "Pause animation" }).isVisible());
  await calm.screenshot({ path: join(ARTIFACTS, "reduced-motion.png"), fullPage: true });
  // The pause control stops the swarm on a page with motion.
  await watcher.getByRole("button", { name: "Pause animation" }).click();
  assert.equal(await watcher.locator("body").getAttribute("data-motion-paused"), "true");
  await watcher.getByRole("button", { name: /React with heart/ }).click();
  await waitForSum(watcher, 12);
  assert.equal(await watcher.locator("#swarm span").count(), 0, "paused: nothing rises");
  await watcher.getByRole("button", { name: "Resume animation" }).click();


  await lostAnswerRetry(tapper, 12);
  if (pageConfig.signInUrl) await expiredTokenRecovery(tapper, 16);
  await liveMoment();
  await foreignOverridesIgnored();
  await lostPushRepair();

  if (DELIVERY === "AppSyncEvents") {
    await appSyncRecovery();
  } else {
    await forgottenConnectionRecovery();
    await renewedConnection();
    await replayPage();
  }

  console.log(`browser test (${DELIVERY}) passed on stream ${STREAM}; screenshots in ${ARTIFACTS}`);
} catch (error) {
  console.error(`browser test failed: ${error.stack || error}`);
  process.exitCode = 1;
} finally {
  harness.close();
  await browser.close();
}
