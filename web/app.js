// The emostream live page: posts taps in batches to the HTTP API and shows the stream's
// running total and rate, the counts of the window still counting, a swarm that keeps flowing
// (or an intensity bar, with reduced motion), the recent history and the moments as they are
// found, each a link into the replay (replay.html). Live updates come over the connection
// live.js keeps, as the stack's `delivery` says (WebSocketApi or AppSyncEvents). The
// configuration is read by config.js; ?stream=... picks the stream. With viewer identity on
// (config `signInUrl` or `getToken`), the viewer signs in first and every request carries their
// token (identity.js).
import { ViewerIdentity } from "./identity.js";
import {
  WindowBook,
  TapBatcher,
  LocalEcho,
  reconnectDelay,
  validStreamId,
  sendingEvery,
} from "./model.js";
import { readConfig, withOverrides } from "./config.js";
import { liveUpdates, REPAIR_EVERY_MS, EVENTS_TIMEOUT_MS } from "./live.js";
import { MomentBook, rollingRate, chartSlots, earlierRanges } from "./timeline.js";
import { Swarm, pauseControl, renderCountList, renderMoments } from "./view.js";

// Taps go out in one request per second by default (config `flushMs` or ?flush=ms): each
// request counts against the account's API throttle, shared by every viewer.
const FLUSH_EVERY_MS = 1000;
const SEND_TIMEOUT_MS = 10000; // a request unanswered this long is sent again
const HISTORY_WINDOWS = 90;
const MAX_FLOATS_PER_UPDATE = 30;

const $ = (id) => document.getElementById(id);

/** The connection (live.js), made once the configuration is read. */
let live = null;

const client = {
  config: null,
  stream: null,
  userId: null,
  emojis: [], // [{name, glyph}]
  book: new WindowBook(HISTORY_WINDOWS),
  batcher: new TapBatcher(),
  flushing: false, // a send is waiting for its answer
  sendFailures: 0, // sends in a row that were not answered for good
  resendAt: 0, // no send before this time (ms) after failures
  echo: new LocalEcho(),
  localFloats: new Map(), // emoji -> floats already released for own taps
  socket: null,
  attempt: 0,
  reconnectTimer: null,
  keepalive: null,
  renewTimer: null,
  retiring: null, // the socket being renewed: closed once its successor is live
  renewals: 0,
  // AppSync Events: the subscription id, the connection timeout and when anything last came.
  subscription: null,
  acknowledged: false,
  eventsTimeoutMs: EVENTS_TIMEOUT_MS,
  lastHeard: 0,
  swarmSeen: new Map(), // start_ms -> {emoji: drawn}
  swarm: null, // the rising emojis (view.js)
  moments: new MomentBook(),
  // The stream as the registry has it (started_ms, status), and its taps before the oldest
  // window the page holds (read once from the replay route), for the stream's total.
  entry: null,
  totals: new Map(), // start_ms -> largest total, every window seen since watching
  firstSnapshot: null, // the first `snapshot` since watching: where the earlier total ends
  earlier: { before: null, total: 0 }, // the taps before `before`, read once
  sentTaps: 0,
  identity: null,
  connectGeneration: 0, // a newer connect() makes an older one, still awaiting a token, give up
  // Self-repair: the last push number seen, the repairs made, the last one's time, a repair
  // waiting for the rate limit, and since when a ping or a sync waits for its answer.
  pushSeq: null,
  repairs: 0,
  lastRepairAt: 0,
  repairTimer: null,
  pingSentAt: 0,
  syncSentAt: 0,
};

async function loadConfig() {
  const params = new URLSearchParams(location.search);
  const config = await readConfig();
  const flush = Number(params.get("flush") || config.flushMs || FLUSH_EVERY_MS);
  config.flushMs = Number.isFinite(flush) && flush >= 100 ? flush : FLUSH_EVERY_MS;
  config.delivery = config.delivery || "WebSocketApi";
  // When to renew the WebSocketApi connection; `renewMs` (tests) fixes it, else a random moment
  // before API Gateway's 2-hour cap (model.js).
  const renew = Number(params.get("renewMs") || config.renewMs);
  config.renewMs = Number.isFinite(renew) && renew >= 1000 ? renew : null;
  if (config.delivery === "AppSyncEvents") {
    const keyNeeded = config.eventAuth !== "OPENID_CONNECT";
    if (!config.apiUrl || !config.eventRealtimeUrl || !config.eventHttpHost || (keyNeeded && !config.eventApiKey)) {
      throw new Error("AppSyncEvents delivery needs apiUrl, eventRealtimeUrl, eventHttpHost and eventApiKey (or eventAuth OPENID_CONNECT)");
    }
    config.eventNamespace = config.eventNamespace || "streams";
  } else if (!config.apiUrl || !config.websocketUrl) {
    throw new Error("No API configured: serve config.json or open this page with ?api=…&ws=…");
  }
  config.stream = params.get("stream");
  return config;
}

function userId() {
  let id = localStorage.getItem("emostream-user");
  if (!id) {
    id = "viewer-" + Math.random().toString(36).slice(2, 10);
    localStorage.setItem("emostream-user", id);
  }
  return id;
}

function setState(state, text) {
  const element = $("connection");
  element.dataset.state = state;
  element.textContent = text;
}

// ---- reacting -------------------------------------------------------------------------

function buildPad() {
  const pad = $("pad");
  pad.replaceChildren();
  client.emojis.forEach((emoji, index) => {
    const key = index < 9 ? String(index + 1) : index === 9 ? "0" : null;
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.emoji = emoji.name;
    button.setAttribute("aria-label", `React with ${emoji.name.replace(/_/g, " ")}` + (key ? ` (key ${key})` : ""));
    button.textContent = emoji.glyph;
    if (key) {
      const hint = document.createElement("span");
      hint.className = "key";
      hint.setAttribute("aria-hidden", "true");
      hint.textContent = key;
      button.append(hint);
      button.dataset.key = key;
    }
    button.addEventListener("click", () => tap(emoji.name));
    pad.append(button);
  });
}

function tap(name) {
  client.batcher.tap(client.stream, name);
  // Shown at once; the server's counts take over when they include the tap.
  client.echo.tap(name);
  renderCounts(client.book.latest());
  releaseFloats(name, 1);
  client.localFloats.set(name, (client.localFloats.get(name) || 0) + 1);
}

function onKey(event) {
  // A held key's auto-repeat is not a tap (it would run past the fair-use limit).
  if (event.target instanceof HTMLInputElement || event.repeat || event.ctrlKey || event.metaKey || event.altKey) return;
  // Matched by value, not by a selector built from the key: `"` or `\\` would break one.
  const button = [...document.querySelectorAll("#pad button")].find((b) => b.dataset.key === event.key);
  if (button && !button.disabled) {
    event.preventDefault();
    tap(button.dataset.emoji);
    button.focus({ preventScroll: true });
  }
}

async function flush() {
  // One request at a time: a slow answer is not overtaken by a second send of the same key.
  // After failures, sends wait longer (up to 30 s), so a server in trouble is not pressed.
  if (client.flushing || Date.now() < client.resendAt) return;
  client.flushing = true;
  try {
    const failed = await sendTaps();
    client.sendFailures = failed ? client.sendFailures + 1 : 0;
    client.resendAt = failed ? Date.now() + reconnectDelay(client.sendFailures) : 0;
  } finally {
    client.flushing = false;
  }
}

/** The headers of a request with `key`, with the viewer's token if one is at hand. */
function tapHeaders(key, token) {
  const headers = { "content-type": "application/json", "idempotency-key": key };
  if (token) headers.authorization = `Bearer ${token}`;
  return headers;
}

/** Sends the outstanding request (or a new one) with its idempotency key; anything short of an
 *  answer for good leaves it outstanding, to be sent again, unchanged, at a later flush.
 *  Returns whether it failed that way. */
async function sendTaps() {
  const request = client.batcher.next(client.userId);
  if (!request) return false;
  const taps = request.body.reactions.reduce((sum, r) => sum + r.count, 0);
  let token = null;
  if (client.identity.enabled) {
    try {
      token = await client.identity.token();
    } catch (error) {
      $("sent").textContent = `Cannot sign in (${error.message}); your taps will be resent.`;
      return true;
    }
  }
  try {
    const response = await fetch(`${client.config.apiUrl}/reactions`, {
      method: "POST",
      headers: tapHeaders(request.key, token),
      body: JSON.stringify(request.body),
      // An answer that never comes is a failure like any other: the retry has the same key.
      signal: AbortSignal.timeout(SEND_TIMEOUT_MS),
    });
    if (response.status === 401 && client.identity.enabled) {
      // The token lapsed or was revoked: sign in again and resend.
      client.identity.forgetToken();
      $("sent").textContent = "Signing in again; your taps will be resent.";
      return true;
    } else if (response.status === 202) {
      client.batcher.settle(request);
      client.sentTaps += taps;
      $("sent").textContent = `${client.sentTaps} taps sent.`;
    } else if (response.status >= 500 || response.status === 429) {
      // Part of it may be counted already: the retry, with the same key, counts the rest once.
      $("sent").textContent = `The server is busy (${response.status}); your taps will be resent.`;
      return true;
    } else {
      client.batcher.settle(request);
      const error = await response.json().catch(() => ({}));
      $("sent").textContent = `Taps refused: ${error.message || response.status}`;
    }
  } catch (error) {
    // API Gateway's own 401 (the JWT authorizer's) carries no CORS headers, so the browser
    // reports it as a network error: with identity on, sign in again before the next send. An
    // answer that was only slow says nothing about the token.
    const slow = error && error.name === "TimeoutError";
    if (client.identity.enabled && !slow) client.identity.forgetToken();
    $("sent").textContent = slow ? "No answer yet; your taps will be resent." : "Offline; your taps will be resent.";
    return true;
  }
  return false;
}

/** The page is going away: the outstanding request and the taps since go now, as `keepalive`
 *  requests the browser finishes after the page is gone (with the token at hand, if any). A
 *  page kept in the back/forward cache (`persisted`) may come back, so it keeps its taps and
 *  sends them as usual then. */
function sendBeforeLeaving(event) {
  if (event && event.persisted) return;
  const token = client.identity.enabled ? client.identity.session?.token : null;
  const requests = [client.batcher.outstanding];
  if (requests[0]) client.batcher.settle(requests[0]);
  requests.push(client.batcher.next(client.userId));
  for (const request of requests.filter(Boolean)) {
    fetch(`${client.config.apiUrl}/reactions`, {
      method: "POST",
      headers: tapHeaders(request.key, token),
      body: JSON.stringify(request.body),
      keepalive: true,
    }).catch(() => {});
  }
}

function receive(message) {
  switch (message.type) {
    case "windows":
      if (message.stream !== client.stream || !Array.isArray(message.windows)) break;
      for (const state of message.windows) offer(state);
      live.checkPushNumber(message.seq);
      break;
    case "pong":
      client.pingSentAt = 0;
      break;
    case "moment":
      if (message.stream === client.stream && client.moments.offer(message)) showMoments();
      break;
    case "window": // a single state, as older servers push
      if (message.stream === client.stream) offer(message);
      break;
    case "snapshot":
      client.syncSentAt = 0;
      if (message.stream !== client.stream) break;
      for (const state of message.windows) keepTotal(state);
      for (const state of message.windows) client.book.offer(state);
      if (!client.firstSnapshot) client.firstSnapshot = message;
      loadEarlierTotal();
      render(null);
      break;
    case "error":
      console.warn("emostream:", message.code, message.message);
      // A sync refused for its rate is asked for again when the limit allows.
      if (message.code === "sync_too_soon") {
        client.syncSentAt = 0;
        const retryAfter = Number((/in (\d+) ms/.exec(message.message) || [])[1] || REPAIR_EVERY_MS);
        client.lastRepairAt = Date.now() - REPAIR_EVERY_MS + Math.min(retryAfter + 50, REPAIR_EVERY_MS);
        live.repair("sync refused as too soon");
      }
      // The server no longer knows this connection (it was forgotten): a new one is needed,
      // else the page would show Live with nothing arriving.
      if (message.code === "unknown_connection" && client.socket) client.socket.close();
      break;
    default:
      break;
  }
}

// ---- rendering ------------------------------------------------------------------------------

function glyphOf(name) {
  const emoji = client.emojis.find((e) => e.name === name);
  return emoji ? emoji.glyph : name;
}

/** Keeps a live state if it is newer than what the page has, and shows it. */
function offer(state) {
  const previous = client.book.get(state.start_ms);
  keepTotal(state);
  if (!client.book.offer(state)) return;
  client.echo.absorb(previous, state);
  // Once the server's counts include every own tap, its swarm is no longer double-drawn.
  if (client.echo.size === 0) client.localFloats.clear();
  render(state);
}

function render(updated) {
  const latest = client.book.latest();
  renderCounts(latest);
  renderChart();
  if (updated && latest && updated.start_ms === latest.start_ms) releaseSwarm(updated);
}

/** Keeps the largest total of every window the page has seen since it started watching (not
 *  only the chart's last 90), for the stream's total. */
function keepTotal(state) {
  if (!state || typeof state.start_ms !== "number" || typeof state.total !== "number") return;
  if ((client.totals.get(state.start_ms) || 0) < state.total) client.totals.set(state.start_ms, state.total);
}

/** The window width, from the windows held (the default 2 s before any). */
function widthMs() {
  const latest = client.book.latest();
  return latest && latest.end_ms > latest.start_ms ? latest.end_ms - latest.start_ms : 2000;
}

/** The page's running display: the stream's total so far (its taps before the windows of the
 *  first snapshot, read once from the replay route, every window since, and the viewer's own
 *  taps not yet counted), the rate over the last 10 s, and the counts of the window still
 *  counting. */
function renderCounts(state) {
  let seen = 0;
  for (const [start, total] of client.totals) {
    if (client.earlier.before === null || start >= client.earlier.before) seen += total;
  }
  $("total").textContent = String(client.earlier.total + seen + client.echo.size);
  const rate = rollingRate(client.totals, Date.now(), widthMs());
  $("rate").textContent = String(Math.round(rate));
  const busiest = Math.max(1, ...client.book.ordered().map((w) => w.total));
  client.swarm.showIntensity(((state ? state.total : 0) + client.echo.size) / busiest, `${Math.round(rate)} taps a second`);
  renderCountList($("counts"), client.echo.apply(state ? state.counts : {}), glyphOf);
}

/** After the first snapshot: the stream's taps before its oldest window (or before now, when
 *  it holds none), read once per stream in ranges the route sums exactly; every later window
 *  reaches the page itself. A stream live for more than a day of windows is read as far as the
 *  route allows (its older taps are then missing from the total). */
async function loadEarlierTotal() {
  const started = client.entry && client.entry.started_ms;
  const snapshot = client.firstSnapshot;
  if (client.earlier.before !== null || !started || !snapshot) return;
  const windows = snapshot.windows || [];
  const widthOf = snapshot.window_width_ms || widthMs();
  const oldest = windows.length ? Math.min(...windows.map((w) => w.start_ms)) : Math.floor(Date.now() / widthOf) * widthOf;
  const stream = client.stream;
  client.earlier = { before: oldest, total: 0 };
  let total = 0;
  try {
    for (const range of earlierRanges(started, oldest, widthOf)) {
      const url = `${client.config.apiUrl}/streams/${encodeURIComponent(stream)}/replay?from=${range.from}&to=${range.to}&resolution=${range.resolution}`;
      const response = await fetch(url);
      if (!response.ok) break;
      const body = await response.json();
      total += (body.buckets || []).reduce((sum, row) => sum + row.slice(1).reduce((a, b) => a + b, 0), 0);
    }
  } catch {
    // Offline: the total counts from the windows the page saw.
  }
  if (stream !== client.stream) return;
  client.earlier.total = total;
  renderCounts(client.book.latest());
}

function releaseFloats(name, count) {
  client.swarm.add(glyphOf(name), count);
}

function releaseSwarm(state) {
  const seen = client.swarmSeen.get(state.start_ms) || {};
  let released = 0;
  for (const [name, drawn] of Object.entries(state.swarm || {})) {
    let fresh = Math.max(0, drawn - (seen[name] || 0));
    seen[name] = Math.max(drawn, seen[name] || 0);
    // Floats already released for the viewer's own taps are not released again.
    const credit = Math.min(fresh, client.localFloats.get(name) || 0);
    if (credit) client.localFloats.set(name, (client.localFloats.get(name) || 0) - credit);
    fresh -= credit;
    const count = Math.min(fresh, MAX_FLOATS_PER_UPDATE - released);
    releaseFloats(name, count);
    released += count;
  }
  client.swarmSeen.set(state.start_ms, seen);
  for (const start of client.swarmSeen.keys()) {
    if (start < state.start_ms - 60000) client.swarmSeen.delete(start);
  }
}

/** The history: one bar per window, at least a minute's slots so a young stream's bars fill
 *  the chart from the left. */
function renderChart() {
  const windows = client.book.ordered();
  const svg = $("chart");
  svg.replaceChildren();
  if (!windows.length) {
    $("chart-summary").textContent = "No windows yet.";
    return;
  }
  const max = Math.max(1, ...windows.map((w) => w.total));
  const widthMs = windows[windows.length - 1].end_ms - windows[windows.length - 1].start_ms;
  const slots = chartSlots(windows.length, widthMs, HISTORY_WINDOWS);
  const width = 600 / slots;
  const latest = windows[windows.length - 1].start_ms;
  windows.slice(-slots).forEach((w, slot) => {
    const height = (w.total / max) * 150;
    const bar = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    bar.setAttribute("x", String(slot * width + 0.5));
    bar.setAttribute("y", String(160 - height));
    bar.setAttribute("width", String(Math.max(1, width - 1)));
    bar.setAttribute("height", String(height));
    if (w.start_ms === latest) bar.setAttribute("class", "live");
    const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
    title.textContent = `${new Date(w.start_ms).toLocaleTimeString()}: ${w.total}`;
    bar.append(title);
    svg.append(bar);
  });
  const sum = windows.reduce((s, w) => s + w.total, 0);
  $("chart-summary").textContent =
    `${windows.length} windows, ${sum} reactions in all, busiest window ${max}.`;
  $("chart-summary").dataset.windows = String(windows.length);
  $("chart-summary").dataset.sum = String(sum);
  $("chart").dataset.slots = String(slots);
}

/** The stream's moments as they are proposed, confirmed and withdrawn; each opens the replay
 *  at its start. */
function showMoments() {
  const started = client.entry && client.entry.started_ms;
  renderMoments($("moments"), client.moments.list(), glyphOf, started, (moment) => {
    const at = started ? Math.max(0, moment.start_ms - started) : 0;
    location.href = withOverrides(`replay.html?stream=${encodeURIComponent(client.stream)}&at=${at}`);
  });
  $("moments-help").hidden = client.moments.list().length > 0;
}

async function loadMoments(stream) {
  try {
    const response = await fetch(`${client.config.apiUrl}/streams/${encodeURIComponent(stream)}/moments`);
    if (!response.ok || stream !== client.stream) return;
    for (const moment of (await response.json()).moments || []) client.moments.offer(moment);
    showMoments();
  } catch {
    // Offline: moments still arrive as they happen.
  }
}

// ---- wiring -------------------------------------------------------------------------------------

function watch(stream) {
  if (stream === client.stream) return;
  client.stream = stream;
  client.pushSeq = null;
  clearTimeout(client.repairTimer);
  client.repairTimer = null;
  client.book.clear();
  client.swarmSeen.clear();
  client.echo.clear();
  client.localFloats.clear();
  client.moments.clear();
  client.entry = null;
  client.totals.clear();
  client.firstSnapshot = null;
  client.earlier = { before: null, total: 0 };
  client.swarm.clear();
  render(null);
  showMoments();
  loadMoments(stream);
  const params = new URLSearchParams(location.search);
  params.set("stream", stream);
  history.replaceState(null, "", `${location.pathname}?${params}`);
  loadStream(stream);
  const socket = client.socket;
  if (client.config.delivery === "AppSyncEvents" && client.acknowledged && socket && socket.readyState === WebSocket.OPEN) {
    // One connection serves any stream: swap the subscription.
    if (client.subscription) socket.send(JSON.stringify({ type: "unsubscribe", id: client.subscription }));
    setState("connecting", "Connecting…");
    live.subscribeEvents(socket);
    return;
  }
  client.socket = null;
  if (socket) socket.close();
  client.attempt = 0;
  live.connect();
}

/**
 * Reads the stream from the registry: its emojis make the pad, and only a live stream takes
 * taps (the API answers 404 for an unknown stream and 409 for one not live).
 */
async function loadStream(stream) {
  let body = null;
  try {
    const response = await fetch(`${client.config.apiUrl}/streams/${encodeURIComponent(stream)}`);
    body = response.ok ? await response.json() : { status: response.status === 404 ? "unknown" : "unavailable", emojis: [] };
  } catch {
    body = { status: "unavailable", emojis: [] };
  }
  if (stream !== client.stream) return;
  client.entry = body;
  client.emojis = body.emojis || [];
  buildPad();
  const replayLink = $("replay-link");
  replayLink.href = withOverrides(`replay.html?stream=${encodeURIComponent(stream)}`);
  replayLink.hidden = !body.started_ms;
  loadEarlierTotal();
  renderCounts(client.book.latest());
  const pad = $("pad");
  pad.dataset.status = body.status;
  const live = body.status === "live";
  pad.querySelectorAll("button").forEach((button) => { button.disabled = !live; });
  pad.title = live ? "" : body.status === "unknown" ? `No stream "${stream}"` : `This stream is ${body.status}`;
}

/** Shows the sign-in form until the issuer gives this viewer a token (at once when the page
 * already has a name this session, or the site provides tokens). */
async function signIn() {
  if (!client.identity.needsName) {
    try {
      await client.identity.token();
      return;
    } catch {
      // The stored name no longer signs in: ask again.
    }
  }
  const form = $("sign-in");
  form.hidden = false;
  setState("signed-out", "Sign in to react");
  await new Promise((resolve) => {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        await client.identity.signIn($("viewer-name").value.trim());
        form.hidden = true;
        resolve();
      } catch (error) {
        $("sign-in-error").textContent = error.message;
      }
    });
  });
}

async function start() {
  try {
    client.config = await loadConfig();
  } catch (error) {
    setState("refused", error.message);
    return;
  }
  client.identity = new ViewerIdentity(client.config);
  live = liveUpdates(client, { setState, receive, historyWindows: HISTORY_WINDOWS });
  if (client.identity.enabled) {
    await signIn();
    client.userId = client.identity.viewer;
    $("viewer").textContent = `Signed in as ${client.identity.viewer}`;
  } else {
    client.userId = userId();
  }
  client.swarm = new Swarm($("swarm"), $("intensity"));
  // The rate is by the clock: it moves (and falls to zero once taps stop) between pushes.
  setInterval(() => renderCounts(client.book.latest()), 1000);
  pauseControl($("motion"), client.swarm);
  document.addEventListener("keydown", onKey);
  const input = $("stream-input");
  $("stream-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = input.value.trim();
    if (!validStreamId(value)) {
      input.setCustomValidity("Use letters, digits and -_.: (up to 64 characters)");
      input.reportValidity();
      return;
    }
    input.setCustomValidity("");
    watch(value);
  });
  const initial = client.config.stream && validStreamId(client.config.stream) ? client.config.stream : input.value;
  input.value = initial;
  setInterval(flush, client.config.flushMs);
  const sending = document.getElementById("sending-every");
  if (sending) sending.textContent = sendingEvery(client.config.flushMs);
  window.addEventListener("pagehide", sendBeforeLeaving);
  watch(initial);
  document.body.dataset.ready = "true";
}

start();
