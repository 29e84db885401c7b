// The emostream browser client: posts taps in batches to the HTTP API and shows the live
// counts, swarm and recent history. Live updates come one of two ways, as the stack's
// `delivery` says: pushed over the API Gateway WebSocket API (`WebSocketApi`), or published to
// the stream's AWS AppSync Events channel (`AppSyncEvents`), with the history then read from
// `GET /streams/{id}/windows`. Its configuration comes from window.EMOSTREAM_CONFIG, else
// config.json next to this page (the local stack serves one). ?api=...&ws=... override the API
// URLs only on a page served from this machine or for origins config `overrideOrigins` lists
// (a link must not send the viewer's token elsewhere); ?stream=... picks the stream. With viewer identity on (config `signInUrl` or
// `getToken`), the viewer signs in first and every request carries their token (identity.js).
import { ViewerIdentity } from "./identity.js";
import {
  WindowBook,
  TapBatcher,
  LocalEcho,
  reconnectDelay,
  renewalDelay,
  validStreamId,
  streamChannel,
  eventSubprotocols,
  eventFrames,
  overrideAllowed,
  sendingEvery,
} from "./model.js";

// Taps go out in one request per second by default (config `flushMs` or ?flush=ms): each
// request counts against the account's API throttle, shared by every viewer.
const FLUSH_EVERY_MS = 1000;
const SEND_TIMEOUT_MS = 10000; // a request unanswered this long is sent again
const KEEPALIVE_MS = 5 * 60 * 1000; // API Gateway closes connections idle for 10 minutes
const EVENTS_TIMEOUT_MS = 5 * 60 * 1000; // AppSync's connectionTimeoutMs until the ack says
const WATCHDOG_EVERY_MS = 5000;
// Self-repair: a push number skipped (a push lost on the way), a keep-alive or `sync` left
// unanswered (a half-open socket) is noticed and repaired with a `sync` (or the HTTP history
// in AppSyncEvents delivery), at most once per REPAIR_EVERY_MS: the server answers one `sync`
// per connection per SYNC_EVERY_MS (5 s).
const REPAIR_EVERY_MS = 5000;
const ANSWER_WITHIN_MS = 10000;
const REPAIR_JITTER_MS = 2000;
const HISTORY_WINDOWS = 90;
const MAX_FLOATS_PER_UPDATE = 30;

const $ = (id) => document.getElementById(id);
const reducedMotion = window.matchMedia("(prefers-reduced-motion: reduce)");

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

/** Brings the page's counts up to date after a missed push: one `sync` (WebSocketApi) or one
 *  read of the stored windows (AppSyncEvents), at most once per REPAIR_EVERY_MS and up to
 *  REPAIR_JITTER_MS later; a repair asked for sooner is made when the limit allows, once. */
function repair(reason) {
  if (client.repairTimer) return;
  // Jittered, so viewers who missed the same push do not all ask in the same second.
  const wait = Math.max(client.lastRepairAt + REPAIR_EVERY_MS - Date.now(), 0) + Math.random() * REPAIR_JITTER_MS;
  client.repairTimer = setTimeout(() => {
    client.repairTimer = null;
    repairNow(reason);
  }, wait);
}

function repairNow(reason) {
  client.lastRepairAt = Date.now();
  client.repairs += 1;
  document.body.dataset.repairs = String(client.repairs);
  console.info("emostream: repairing the counts:", reason);
  if (client.config.delivery === "AppSyncEvents") loadHistory(client.stream);
  else requestSync();
}

function requestSync() {
  client.syncSentAt = Date.now();
  send({ action: "sync", windows: HISTORY_WINDOWS });
}

/** A push's number: one more than the previous push's, so a skipped one was lost. */
function checkPushNumber(seq) {
  if (!Number.isInteger(seq) || seq <= 0) return; // a server without a push schedule
  if (client.pushSeq !== null && seq > client.pushSeq + 1) repair(`push ${client.pushSeq + 1} missed`);
  if (client.pushSeq === null || seq > client.pushSeq) client.pushSeq = seq;
}

/** WebSocketApi: a ping unanswered for ANSWER_WITHIN_MS while nothing else arrived means the
 *  socket is half-open (it shows Live but nothing arrives): close it, and the reconnect syncs.
 *  A sync left unanswered on a socket that delivers (the stage throttled it, a route failed)
 *  is asked for again instead. */
function checkAnswers(socket) {
  if (client.socket !== socket) return;
  const now = Date.now();
  const late = (sentAt) => sentAt && now - sentAt > ANSWER_WITHIN_MS;
  if (late(client.pingSentAt)) {
    console.info("emostream: keep-alive unanswered; reconnecting");
    client.pingSentAt = 0;
    client.syncSentAt = 0;
    socket.close();
  } else if (late(client.syncSentAt)) {
    client.syncSentAt = 0;
    repair("sync unanswered");
  }
}

/** Anything the current socket delivers shows it is alive. */
function heardFrom(socket) {
  if (client.socket === socket) client.pingSentAt = 0;
}

async function loadConfig() {
  const params = new URLSearchParams(location.search);
  let config = window.EMOSTREAM_CONFIG;
  if (!config) {
    try {
      const response = await fetch("config.json", { cache: "no-store" });
      if (response.ok) config = await response.json();
    } catch {
      // No config.json: the URL parameters must say where the APIs are.
    }
  }
  config = { ...(config || {}) };
  for (const [param, key] of [["api", "apiUrl"], ["ws", "websocketUrl"]]) {
    const value = params.get(param);
    if (!value) continue;
    if (overrideAllowed(value, location.hostname, config.overrideOrigins)) config[key] = value;
    else console.warn(`?${param}= ignored: ${value} is not on this machine and config.json's overrideOrigins does not list it`);
  }
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
  config.apiUrl = config.apiUrl.replace(/\/$/, "");
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

// ---- live updates -----------------------------------------------------------------------

function connect() {
  clearTimeout(client.reconnectTimer);
  clearTimeout(client.renewTimer);
  // A renewal keeps showing Live: the old connection delivers until the new one is open.
  if (!client.retiring) {
    setState(client.attempt ? "reconnecting" : "connecting", client.attempt ? "Reconnecting…" : "Connecting…");
  }
  if (client.config.delivery === "AppSyncEvents") connectEvents();
  else connectWebSocketApi();
}

/** After a socket closed: connect again after a jittered, growing delay. */
function closed(socket) {
  // A replaced socket's close must not touch the keep-alive of the one that replaced it.
  if (client.socket !== socket) return; // replaced by a newer connection on purpose
  clearInterval(client.keepalive);
  const delay = reconnectDelay(client.attempt++);
  setState("reconnecting", `Disconnected · retrying in ${Math.ceil(delay / 1000)} s`);
  client.reconnectTimer = setTimeout(connect, delay);
}

function parsed(event) {
  try {
    return JSON.parse(event.data);
  } catch {
    return null;
  }
}

// ---- WebSocketApi: API Gateway pushes, `sync` for the history ------------------------------------

/** Make before break: a new connection opens while `socket` goes on delivering, and `socket`
 *  is closed once the new one is live (duplicate states in between are harmless: the book keeps
 *  the largest total of each window). */
function renew(socket) {
  if (client.socket !== socket || socket.readyState !== WebSocket.OPEN) return;
  client.retiring = socket;
  client.attempt = 0;
  connect();
}

function retire() {
  const socket = client.retiring;
  client.retiring = null;
  if (socket && socket !== client.socket) {
    socket.close(1000, "renewed");
    client.renewals += 1;
    document.body.dataset.renewals = String(client.renewals);
  }
}

/** Awaits `obtain()` (a token, an authorization) for the connect attempt `generation`: its
 *  value, or null when it failed (the next attempt is then scheduled) or when a newer connect()
 *  (watch() moving on) superseded this one meanwhile. */
async function forConnect(generation, obtain) {
  let value;
  try {
    value = await obtain();
  } catch (error) {
    if (generation !== client.connectGeneration) return null;
    const delay = reconnectDelay(client.attempt++);
    setState("reconnecting", `Cannot sign in (${error.message}) · retrying in ${Math.ceil(delay / 1000)} s`);
    client.reconnectTimer = setTimeout(connect, delay);
    return null;
  }
  return generation === client.connectGeneration ? value : null;
}

async function connectWebSocketApi() {
  const generation = ++client.connectGeneration;
  let url = `${client.config.websocketUrl}?stream=${encodeURIComponent(client.stream)}`;
  if (client.identity.enabled) {
    const token = await forConnect(generation, () => client.identity.token());
    if (token === null) return;
    url += `&token=${encodeURIComponent(token)}`;
  }
  const socket = new WebSocket(url);
  client.socket = socket;
  socket.addEventListener("open", () => {
    client.attempt = 0;
    setState("live", `Live · ${client.stream}`);
    client.pushSeq = null;
    client.pingSentAt = 0;
    // The opening sync counts against the server's rate like a repair.
    clearTimeout(client.repairTimer);
    client.repairTimer = null;
    client.lastRepairAt = Date.now();
    requestSync();
    retire();
    clearInterval(client.keepalive);
    let pingDue = Date.now() + KEEPALIVE_MS;
    client.keepalive = setInterval(() => {
      checkAnswers(socket);
      if (Date.now() >= pingDue) {
        pingDue = Date.now() + KEEPALIVE_MS;
        client.pingSentAt = Date.now();
        send({ action: "ping" });
      }
    }, WATCHDOG_EVERY_MS);
    clearTimeout(client.renewTimer);
    client.renewTimer = setTimeout(() => renew(socket), client.config.renewMs || renewalDelay());
  });
  socket.addEventListener("message", (event) => {
    heardFrom(socket);
    const message = parsed(event);
    // A socket being renewed still delivers states; its errors are no longer the page's.
    if (message && (client.socket === socket || message.type !== "error")) receive(message);
  });
  socket.addEventListener("close", () => closed(socket));
}

// ---- AppSyncEvents: the real-time protocol, the history over HTTP --------------------------------

/** What the page's AppSync Events connection and subscriptions authorize with: the viewer's
 *  token when the API takes OPENID_CONNECT (viewer identity on; no key is published), else the
 *  API key. */
async function eventsAuthorization() {
  if (client.config.eventAuth === "OPENID_CONNECT") {
    return { host: client.config.eventHttpHost, Authorization: await client.identity.token() };
  }
  return { host: client.config.eventHttpHost, "x-api-key": client.config.eventApiKey };
}

function newId() {
  return crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(36).slice(2)}`;
}

async function connectEvents() {
  const generation = ++client.connectGeneration;
  const authorization = await forConnect(generation, eventsAuthorization);
  if (authorization === null) return;
  const socket = new WebSocket(client.config.eventRealtimeUrl, eventSubprotocols(authorization));
  client.socket = socket;
  client.acknowledged = false;
  client.subscription = null;
  socket.addEventListener("open", () => {
    client.lastHeard = Date.now();
    socket.send(JSON.stringify({ type: "connection_init" }));
  });
  socket.addEventListener("message", (event) => {
    const message = parsed(event);
    if (message && client.socket === socket) onEventsMessage(socket, message);
  });
  socket.addEventListener("close", () => closed(socket));
  // AppSync sends `ka` regularly: silence longer than the connection timeout is a dead link.
  clearInterval(client.keepalive);
  client.keepalive = setInterval(() => {
    if (Date.now() - client.lastHeard > client.eventsTimeoutMs) socket.close();
  }, WATCHDOG_EVERY_MS);
}

/** Subscribes the open, acknowledged socket to the watched stream's channel (with a fresh
 *  token when the API takes tokens; a socket that cannot get one is closed and reconnects). */
async function subscribeEvents(socket) {
  const id = newId();
  client.subscription = id;
  let authorization;
  try {
    authorization = await eventsAuthorization();
  } catch {
    socket.close();
    return;
  }
  if (client.socket !== socket || client.subscription !== id || socket.readyState !== WebSocket.OPEN) return;
  socket.send(
    JSON.stringify({
      type: "subscribe",
      id,
      channel: streamChannel(client.config.eventNamespace, client.stream),
      authorization,
    }),
  );
}

function onEventsMessage(socket, message) {
  client.lastHeard = Date.now();
  switch (message.type) {
    case "connection_ack":
      client.acknowledged = true;
      client.eventsTimeoutMs = Number(message.connectionTimeoutMs) || EVENTS_TIMEOUT_MS;
      subscribeEvents(socket);
      break;
    case "subscribe_success":
      if (message.id !== client.subscription) break;
      client.attempt = 0;
      setState("live", `Live · ${client.stream}`);
      client.pushSeq = null;
      // After subscribing, so nothing published meanwhile is missed; the book keeps the
      // largest total of each window whichever arrives first.
      loadHistory(client.stream);
      break;
    case "data":
      if (message.id !== client.subscription) break;
      for (const frame of eventFrames(message)) receive(frame);
      break;
    case "ka":
    case "unsubscribe_success":
      break;
    case "subscribe_error":
    case "connection_error":
    case "error": {
      const error = (message.errors && message.errors[0]) || {};
      console.warn("emostream:", message.type, error.errorType, error.message);
      if (message.type !== "error") socket.close(); // connect again after a backoff
      break;
    }
    default:
      break;
  }
}

/** The stored windows of `stream`: the late joiner's history in AppSyncEvents delivery. */
async function loadHistory(stream) {
  try {
    const url = `${client.config.apiUrl}/streams/${encodeURIComponent(stream)}/windows?limit=${HISTORY_WINDOWS}`;
    const response = await fetch(url);
    if (!response.ok || stream !== client.stream) return;
    const body = await response.json();
    receive({ type: "snapshot", stream, windows: body.windows || [] });
  } catch {
    // Offline: live updates still fill the page, and the next connect tries again.
  }
}

function send(message) {
  if (client.socket && client.socket.readyState === WebSocket.OPEN) {
    client.socket.send(JSON.stringify(message));
  }
}

function receive(message) {
  switch (message.type) {
    case "windows":
      if (message.stream !== client.stream || !Array.isArray(message.windows)) break;
      for (const state of message.windows) offer(state);
      checkPushNumber(message.seq);
      break;
    case "pong":
      client.pingSentAt = 0;
      break;
    case "window": // a single state, as older servers push
      if (message.stream === client.stream) offer(message);
      break;
    case "snapshot":
      client.syncSentAt = 0;
      if (message.stream !== client.stream) break;
      for (const state of message.windows) client.book.offer(state);
      render(null);
      break;
    case "error":
      console.warn("emostream:", message.code, message.message);
      // A sync refused for its rate is asked for again when the limit allows.
      if (message.code === "sync_too_soon") {
        client.syncSentAt = 0;
        const retryAfter = Number((/in (\d+) ms/.exec(message.message) || [])[1] || REPAIR_EVERY_MS);
        client.lastRepairAt = Date.now() - REPAIR_EVERY_MS + Math.min(retryAfter + 50, REPAIR_EVERY_MS);
        repair("sync refused as too soon");
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

function renderCounts(state) {
  const counts = client.echo.apply(state ? state.counts : {});
  const total = (state ? state.total : 0) + client.echo.size;
  $("total").textContent = String(total);
  $("window-time").textContent = state ? `(window from ${new Date(state.start_ms).toLocaleTimeString()})` : "";
  const list = $("counts");
  list.replaceChildren();
  const entries = Object.entries(counts).sort((a, b) => b[1] - a[1]);
  for (const [name, count] of entries) {
    const item = document.createElement("li");
    item.dataset.emoji = name;
    const label = document.createElement("span");
    label.textContent = glyphOf(name);
    label.setAttribute("aria-label", name.replace(/_/g, " "));
    const value = document.createElement("span");
    value.className = "count";
    value.textContent = String(count);
    item.append(label, value);
    list.append(item);
  }
}

function releaseFloats(name, count) {
  const swarm = $("swarm");
  for (let i = 0; i < count; i++) {
    const float = document.createElement("span");
    float.textContent = glyphOf(name);
    if (!reducedMotion.matches) {
      float.style.left = `${5 + Math.random() * 90}%`;
      float.style.animationDelay = `${Math.random() * 0.4}s`;
      float.addEventListener("animationend", () => float.remove());
    }
    swarm.append(float);
  }
  // Without animation the swarm is a static strip: keep only the newest floats.
  while (reducedMotion.matches && swarm.childElementCount > 60) swarm.firstElementChild.remove();
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

function renderChart() {
  const windows = client.book.ordered();
  const svg = $("chart");
  svg.replaceChildren();
  if (!windows.length) {
    $("chart-summary").textContent = "No windows yet.";
    return;
  }
  const max = Math.max(1, ...windows.map((w) => w.total));
  const width = 600 / HISTORY_WINDOWS;
  const latest = windows[windows.length - 1].start_ms;
  windows.forEach((w, i) => {
    const slot = HISTORY_WINDOWS - windows.length + i;
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
  $("swarm").replaceChildren();
  render(null);
  const params = new URLSearchParams(location.search);
  params.set("stream", stream);
  history.replaceState(null, "", `${location.pathname}?${params}`);
  loadStream(stream);
  const socket = client.socket;
  if (client.config.delivery === "AppSyncEvents" && client.acknowledged && socket && socket.readyState === WebSocket.OPEN) {
    // One connection serves any stream: swap the subscription.
    if (client.subscription) socket.send(JSON.stringify({ type: "unsubscribe", id: client.subscription }));
    setState("connecting", "Connecting…");
    subscribeEvents(socket);
    return;
  }
  client.socket = null;
  if (socket) socket.close();
  client.attempt = 0;
  connect();
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
  client.emojis = body.emojis || [];
  buildPad();
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
  if (client.identity.enabled) {
    await signIn();
    client.userId = client.identity.viewer;
    $("viewer").textContent = `Signed in as ${client.identity.viewer}`;
  } else {
    client.userId = userId();
  }
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
