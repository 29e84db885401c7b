// Unit tests of viewer identity's token handling: node --test web/
import test from "node:test";
import assert from "node:assert/strict";
import { ViewerIdentity, needsRefresh, tokenClaims } from "./identity.js";

const jwt = (claims) => `h.${Buffer.from(JSON.stringify(claims)).toString("base64url")}.s`;

class MemoryStorage {
  constructor() { this.items = new Map(); }
  getItem(key) { return this.items.has(key) ? this.items.get(key) : null; }
  setItem(key, value) { this.items.set(key, value); }
}

test("reads a token's claims, and nothing from garbage", () => {
  assert.deepEqual(tokenClaims(jwt({ sub: "viewer:ann", exp: 10 })), { sub: "viewer:ann", exp: 10 });
  assert.deepEqual(tokenClaims("garbage"), {});
});

test("refreshes a token before it lapses, by a fifth of its life at most 30 s", () => {
  const token = jwt({ iat: 1000, exp: 1900 }); // 15 minutes: refreshed from 30 s before
  assert.equal(needsRefresh(token, 1000_000), false);
  assert.equal(needsRefresh(token, 1869_000), false);
  assert.equal(needsRefresh(token, 1870_000), true);
  const short = jwt({ iat: 1000, exp: 1010 }); // 10 s: refreshed from 2 s before
  assert.equal(needsRefresh(short, 1007_000), false);
  assert.equal(needsRefresh(short, 1008_000), true);
  assert.equal(needsRefresh(null, 0), true);
  assert.equal(needsRefresh("garbage", 0), true);
});

test("signs in again with the same name when the token lapses or is refused", async () => {
  const issued = [];
  globalThis.fetch = async (url, request) => {
    const { viewer } = JSON.parse(request.body);
    const now = Math.floor(Date.now() / 1000);
    const token = jwt({ sub: `viewer:${viewer}`, iat: now, exp: now + 600, n: issued.length });
    issued.push(token);
    return { ok: true, status: 200, json: async () => ({ token, viewer: `viewer:${viewer}` }) };
  };
  const storage = new MemoryStorage();
  const identity = new ViewerIdentity({ signInUrl: "http://issuer/sign-in" }, storage);
  assert.equal(identity.enabled, true);
  assert.equal(identity.needsName, true);
  await identity.signIn("ann");
  assert.equal(identity.viewer, "viewer:ann");
  assert.equal(await identity.token(), issued[0]);
  identity.forgetToken();
  const [a, b] = await Promise.all([identity.token(), identity.token()]);
  assert.equal(a, issued[1]);
  assert.equal(b, issued[1], "concurrent callers share one sign-in");
  assert.equal(issued.length, 2);
  // A reload in the same tab keeps the name and token.
  const reloaded = new ViewerIdentity({ signInUrl: "http://issuer/sign-in" }, storage);
  assert.equal(reloaded.needsName, false);
  assert.equal(await reloaded.token(), issued[1]);
});

test("a refused name is reported with the issuer's message", async () => {
  globalThis.fetch = async () => ({ ok: false, status: 400, json: async () => ({ message: "bad name" }) });
  const identity = new ViewerIdentity({ signInUrl: "http://issuer/sign-in" }, new MemoryStorage());
  await assert.rejects(identity.signIn("a/b"), /bad name/);
  assert.equal(new ViewerIdentity({}, new MemoryStorage()).enabled, false);
});
