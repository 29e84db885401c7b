// The browser client's logic without the DOM, so it can be tested on its own (node --test):
// which window states to keep, how taps are batched into requests, how the viewer's own taps
// are echoed until the server's counts include them, and how long to wait before reconnecting.

/** Keeps the newest state of every window: the one with the largest total. Duplicates and
 *  updates that arrive out of order (smaller totals) are dropped. */
export class WindowBook {
  constructor(limit = 90) {
    this.limit = limit;
    this.windows = new Map(); // start_ms -> state
  }

  /** Offers a state; true when it was newer than what was kept. */
  offer(state) {
    if (!state || typeof state.start_ms !== "number" || typeof state.total !== "number") {
      return false;
    }
    const kept = this.windows.get(state.start_ms);
    if (kept && kept.total >= state.total && !(state.final && !kept.final && kept.total === state.total)) {
      return false;
    }
    this.windows.set(state.start_ms, state);
    while (this.windows.size > this.limit) {
      this.windows.delete(Math.min(...this.windows.keys()));
    }
    return true;
  }

  /** The states, oldest first. */
  ordered() {
    return [...this.windows.values()].sort((a, b) => a.start_ms - b.start_ms);
  }

  /** The kept state of the window starting at `start_ms`, if any. */
  get(start_ms) {
    return this.windows.get(start_ms);
  }

  /** The newest window (the current one while the stream is live). */
  latest() {
    const ordered = this.ordered();
    return ordered.length ? ordered[ordered.length - 1] : null;
  }

  clear() {
    this.windows.clear();
  }
}

/** A random session id for idempotency keys: 16 base64url characters (96 bits). Uses
 *  getRandomValues, which pages outside secure contexts have too (randomUUID is not). */
export function randomSession() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_");
}

/** Gathers taps and turns them into one request per flush: one reaction per stream and emoji
 *  with its count, split so no reaction's count exceeds `maxCount`. Each tap keeps the stream it
 *  was made on, so taps made before the viewer switched streams still go to theirs.
 *
 *  Each request carries an idempotency key, `<session>:<sequence>`, and one request is
 *  outstanding at a time: until it is answered 202 (or refused), every flush sends it again,
 *  same key and same body, so the server counts it once whatever became of earlier attempts
 *  (a 503 after part of it was written, a lost answer, a reset connection). Taps made meanwhile
 *  wait for the next request. */
export class TapBatcher {
  constructor(maxCount = 100, session = randomSession()) {
    this.maxCount = maxCount;
    this.pending = new Map(); // stream -> (emoji -> taps)
    this.session = session;
    this.sequence = 0;
    this.outstanding = null; // { key, body } sent but not settled
  }

  tap(stream, emoji, times = 1) {
    if (!this.pending.has(stream)) this.pending.set(stream, new Map());
    const taps = this.pending.get(stream);
    taps.set(emoji, (taps.get(emoji) || 0) + times);
  }

  get size() {
    let total = 0;
    for (const taps of this.pending.values()) for (const n of taps.values()) total += n;
    return total;
  }

  /** The request to send now: the outstanding one again, or a new one (with a new key) for what
   *  was tapped since the last, or null when there is nothing to send. */
  next(userId) {
    if (this.outstanding) return this.outstanding;
    if (this.pending.size === 0) return null;
    const reactions = [];
    for (const [stream, taps] of this.pending) {
      for (const [emoji, count] of taps) {
        for (let left = count; left > 0; left -= this.maxCount) {
          reactions.push({ stream_id: stream, user_id: userId, emoji, count: Math.min(left, this.maxCount) });
        }
      }
    }
    this.pending.clear();
    this.sequence += 1;
    this.outstanding = { key: `${this.session}:${this.sequence}`, body: { reactions } };
    return this.outstanding;
  }

  /** The request was answered for good (accepted, or refused as it stands): the next flush
   *  sends new taps. */
  settle(request) {
    if (this.outstanding === request) this.outstanding = null;
  }
}

/** The viewer's own taps shown at once, before the server's counts include them. Each emoji's
 *  echo shrinks by however much the server's count of that emoji grows in a live update, so a
 *  tap is never shown twice: at worst, while others tap too, it is absorbed a little early. */
export class LocalEcho {
  constructor() {
    this.echo = new Map(); // emoji -> taps not yet seen in the server's counts
  }

  tap(emoji, times = 1) {
    this.echo.set(emoji, (this.echo.get(emoji) || 0) + times);
  }

  /** A window's state replaced `previous` (or nothing): its growth absorbs echoed taps. */
  absorb(previous, state) {
    const before = (previous && previous.counts) || {};
    for (const [emoji, count] of Object.entries(state.counts || {})) {
      const grown = count - (before[emoji] || 0);
      if (grown > 0 && this.echo.has(emoji)) {
        const left = this.echo.get(emoji) - grown;
        if (left > 0) this.echo.set(emoji, left);
        else this.echo.delete(emoji);
      }
    }
  }

  /** Echoed taps not yet in the server's counts. */
  get size() {
    let taps = 0;
    for (const n of this.echo.values()) taps += n;
    return taps;
  }

  /** `counts` with the echo added (a new object). */
  apply(counts) {
    const shown = { ...(counts || {}) };
    for (const [emoji, taps] of this.echo) shown[emoji] = (shown[emoji] || 0) + taps;
    return shown;
  }

  clear() {
    this.echo.clear();
  }
}

/** How often taps go out, in the help text's words ("every second", "every 250 ms"). */
export function sendingEvery(flushMs) {
  if (flushMs === 1000) return "every second";
  if (flushMs < 1000) return `every ${Math.round(flushMs)} ms`;
  return `every ${Math.round(flushMs / 100) / 10} s`;
}

/** Reconnect delay for attempt n (0-based), with "full jitter": uniform between 100 ms and a
 *  ceiling that doubles from 1 s up to 30 s. Every retry, the first included, is spread over
 *  its whole range, so an audience dropped at once (an outage, a deploy) comes back spread out
 *  rather than in waves against API Gateway's new-connection rate. */
export function reconnectDelay(attempt, random = Math.random) {
  const ceiling = Math.min(30000, 1000 * 2 ** Math.min(attempt, 15));
  return Math.max(100, Math.round(random() * ceiling));
}

/** API Gateway closes a WebSocket connection after 2 hours ("Connection duration for WebSocket
 *  API", API Gateway quotas). A page renews its connection before that, at a random moment
 *  between 100 and 115 minutes, so an audience that joined together at kick-off does not hit
 *  the cap, and reconnect, all in the same second. */
export const RENEW_AFTER_MS = 100 * 60 * 1000;
export const RENEW_SPREAD_MS = 15 * 60 * 1000;

/** When to renew a connection that just opened: `after` plus a random part of `spread` (both
 *  overridable, for tests). */
export function renewalDelay(random = Math.random, after = RENEW_AFTER_MS, spread = RENEW_SPREAD_MS) {
  return Math.round(after + random() * spread);
}

/** A stream id as the API accepts it (letters, digits, `-_.:`, 1 to 64 characters). */
export function validStreamId(text) {
  return /^[A-Za-z0-9_.:-]{1,64}$/.test(text);
}

/** Whether `hostname` is this machine: `localhost`, 127.0.0.0/8 or `[::1]`. */
export function isLoopbackHost(hostname) {
  return hostname === "localhost" || hostname === "[::1]" || hostname === "::1" || /^127\.\d+\.\d+\.\d+$/.test(hostname);
}

/** Whether an `?api=` or `?ws=` override may replace the served configuration: on a page served
 *  from this machine (a developer pointing it at a stack of their own), or when the served
 *  configuration's `overrideOrigins` lists the override's origin. Anything else would let a
 *  link to the real page send the viewer's bearer token to whoever the link names. */
export function overrideAllowed(overrideUrl, pageHostname, allowedOrigins = []) {
  let origin;
  try {
    origin = new URL(overrideUrl).origin;
  } catch {
    return false;
  }
  if (isLoopbackHost(pageHostname)) return true;
  return Array.isArray(allowedOrigins) && allowedOrigins.includes(origin);
}

// ---- AppSync Events ---------------------------------------------------------------------------

/** Whether `segment` is a channel path segment AppSync accepts (letters, digits and inner
 *  dashes, 1 to 50). */
function isSegment(segment) {
  return /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,48}[A-Za-z0-9])?$/.test(segment);
}

/** The AppSync Events channel of a stream, as notify publishes to it: `/{namespace}/{id}` when
 *  the id is a valid segment, else `h` and the FNV-1a 64 hash of the id in hex (ids may hold
 *  `_`, `.` and `:`). Frames name their stream, so a shared channel only costs deliveries. */
export function streamChannel(namespace, stream) {
  if (isSegment(stream)) return `/${namespace}/${stream}`;
  let hash = 0xcbf29ce484222325n;
  for (const byte of new TextEncoder().encode(stream)) {
    hash = ((hash ^ BigInt(byte)) * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return `/${namespace}/h${hash.toString(16).padStart(16, "0")}`;
}

/** The WebSocket subprotocols that open an AppSync Events connection: the protocol's name and
 *  the authorization (`{host, "x-api-key"}`) as base64url JSON. */
export function eventSubprotocols(authorization) {
  const bytes = new TextEncoder().encode(JSON.stringify(authorization));
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  const encoded = btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  return ["aws-appsync-event-ws", `header-${encoded}`];
}

/** The frames carried by an AppSync Events `data` message (none for other messages). The event
 *  is a JSON document as a string; a list of them is accepted too. */
export function eventFrames(message) {
  if (!message || message.type !== "data") return [];
  const events = Array.isArray(message.event) ? message.event : [message.event];
  const frames = [];
  for (const event of events) {
    try {
      const frame = typeof event === "string" ? JSON.parse(event) : event;
      if (frame && typeof frame === "object") frames.push(frame);
    } catch {
      // Not JSON: not ours.
    }
  }
  return frames;
}
