// Viewer identity for the browser client. When the stack has it on (config `signInUrl`, the
// local demo issuer's sign-in; or `getToken`, an async function a broadcaster's site provides
// that returns a JWT from its own identity provider), the page needs a bearer token: it goes in
// the Authorization header of POST /reactions and in the `token` query parameter of the
// WebSocket connect (browsers cannot set headers on a WebSocket). Tokens are refreshed before
// they expire, and after the API refuses one (401), by signing in again with the same name.

const STORAGE_KEY = "emostream-viewer";

/** The claims of a JWT, without checking it (the server does): `{}` when unreadable. */
export function tokenClaims(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload.padEnd(Math.ceil(payload.length / 4) * 4, "=")));
  } catch {
    return {};
  }
}

/**
 * Whether `token` should be replaced at `nowMs`: expired, unreadable, or within a fifth of its
 * lifetime (at most 30 s) of expiring, so a request never leaves with a token about to lapse.
 */
export function needsRefresh(token, nowMs) {
  if (!token) return true;
  const { exp, iat } = tokenClaims(token);
  if (!Number.isFinite(exp)) return true;
  const lifetime = Number.isFinite(iat) ? exp - iat : 300;
  const margin = Math.min(30, Math.max(1, lifetime / 5));
  return nowMs / 1000 >= exp - margin;
}

export class ViewerIdentity {
  constructor(config, storage = globalThis.sessionStorage) {
    this.signInUrl = config.signInUrl || null;
    this.getToken = typeof config.getToken === "function" ? config.getToken : null;
    this.storage = storage;
    this.session = null;
    this.pending = null;
    this.signIns = 0;
    try {
      this.session = JSON.parse(storage.getItem(STORAGE_KEY)) || null;
    } catch {
      this.session = null;
    }
  }

  /** Whether the stack needs viewers' tokens. */
  get enabled() {
    return Boolean(this.signInUrl || this.getToken);
  }

  /** Whether a name is needed before a token can be had (the demo sign-in). */
  get needsName() {
    return !this.getToken && !(this.session && this.session.name);
  }

  /** The viewer id (the token's subject), once signed in. */
  get viewer() {
    return this.session ? this.session.viewer : null;
  }

  /** Signs in as `name` (demo issuer); throws with the issuer's message when refused. */
  async signIn(name) {
    const response = await fetch(this.signInUrl, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ viewer: name }),
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok || !body.token) throw new Error(body.message || `sign-in failed (${response.status})`);
    this.remember({ name, viewer: body.viewer, token: body.token });
  }

  remember(session) {
    this.session = session;
    this.signIns += 1;
    this.storage.setItem(STORAGE_KEY, JSON.stringify(session));
  }

  /** Drops the token (after a 401), keeping the name to sign in again. */
  forgetToken() {
    if (this.session) this.session = { ...this.session, token: null };
  }

  /** A token good for the next request: the current one, or a fresh one. */
  async token() {
    if (this.session && !needsRefresh(this.session.token, Date.now())) return this.session.token;
    // Concurrent callers (a flush and a reconnect) share one refresh.
    this.pending = this.pending || this.refresh().finally(() => { this.pending = null; });
    await this.pending;
    return this.session.token;
  }

  async refresh() {
    if (this.getToken) {
      const token = await this.getToken();
      this.remember({ name: null, viewer: tokenClaims(token).sub || null, token });
      return;
    }
    if (!this.session || !this.session.name) throw new Error("sign in first");
    await this.signIn(this.session.name);
  }
}
