// The live page's connection: pushes over the API Gateway WebSocket API (`WebSocketApi`), or
// the stream's AWS AppSync Events channel (`AppSyncEvents`) with the history read over HTTP;
// reconnecting with backoff, renewing a connection before API Gateway's 2-hour cap, and
// repairing the counts when a push was lost or a socket went half-open. The page's state is
// the `client` it is given; what arrives goes to `receive`.
import { reconnectDelay, renewalDelay, streamChannel, eventSubprotocols, eventFrames } from "./model.js";

const KEEPALIVE_MS = 5 * 60 * 1000; // API Gateway closes connections idle for 10 minutes
export const EVENTS_TIMEOUT_MS = 5 * 60 * 1000; // AppSync's connectionTimeoutMs until the ack says
const WATCHDOG_EVERY_MS = 5000;
// Self-repair: a push number skipped (a push lost on the way), a keep-alive or `sync` left
// unanswered (a half-open socket) is noticed and repaired with a `sync` (or the HTTP history
// in AppSyncEvents delivery), at most once per REPAIR_EVERY_MS: the server answers one `sync`
// per connection per SYNC_EVERY_MS (5 s).
export const REPAIR_EVERY_MS = 5000;
const ANSWER_WITHIN_MS = 10000;
const REPAIR_JITTER_MS = 2000;

/** The connection functions over `client`, calling `setState(state, text)` to show where the
 *  connection stands and `receive(message)` with every frame; `historyWindows` is how many
 *  windows a sync asks for. */
export function liveUpdates(client, { setState, receive, historyWindows }) {
  const HISTORY_WINDOWS = historyWindows;
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
      receive({ type: "snapshot", stream, window_width_ms: body.window_width_ms, windows: body.windows || [] });
    } catch {
      // Offline: live updates still fill the page, and the next connect tries again.
    }
  }

  function send(message) {
    if (client.socket && client.socket.readyState === WebSocket.OPEN) {
      client.socket.send(JSON.stringify(message));
    }
  }

  return { connect, send, repair, requestSync, checkPushNumber, subscribeEvents };
}
