// Unit tests of the client's pure logic: node --test web/
import test from "node:test";
import assert from "node:assert/strict";
import {
  WindowBook,
  TapBatcher,
  randomSession,
  LocalEcho,
  reconnectDelay,
  renewalDelay,
  RENEW_AFTER_MS,
  RENEW_SPREAD_MS,
  validStreamId,
  streamChannel,
  eventSubprotocols,
  eventFrames,
  isLoopbackHost,
  overrideAllowed,
  sendingEvery,
} from "./model.js";

const state = (start_ms, total, extra = {}) => ({ start_ms, total, counts: { fire: total }, ...extra });

test("keeps the largest total per window, whatever the order", () => {
  const book = new WindowBook();
  assert.equal(book.offer(state(0, 5)), true);
  assert.equal(book.offer(state(0, 9)), true);
  assert.equal(book.offer(state(0, 7)), false, "older state arriving late");
  assert.equal(book.offer(state(0, 9)), false, "duplicate");
  assert.equal(book.offer(state(0, 9, { final: true })), true, "same total, now final");
  assert.equal(book.offer(state(2000, 1)), true);
  assert.deepEqual(book.ordered().map((s) => [s.start_ms, s.total]), [[0, 9], [2000, 1]]);
  assert.equal(book.latest().start_ms, 2000);
  assert.equal(book.offer({ nonsense: true }), false);
});

test("forgets the oldest windows beyond its limit", () => {
  const book = new WindowBook(3);
  for (let i = 0; i < 5; i++) book.offer(state(i * 2000, 1));
  assert.deepEqual(book.ordered().map((s) => s.start_ms), [4000, 6000, 8000]);
});

test("batches taps into one request with counts, split at the maximum count", () => {
  const batcher = new TapBatcher(100, "session-a");
  assert.equal(batcher.next("u"), null);
  batcher.tap("m", "fire");
  batcher.tap("m", "fire");
  batcher.tap("m", "clap", 250);
  assert.equal(batcher.size, 252);
  const request = batcher.next("u");
  assert.equal(request.key, "session-a:1");
  assert.deepEqual(request.body.reactions, [
    { stream_id: "m", user_id: "u", emoji: "fire", count: 2 },
    { stream_id: "m", user_id: "u", emoji: "clap", count: 100 },
    { stream_id: "m", user_id: "u", emoji: "clap", count: 100 },
    { stream_id: "m", user_id: "u", emoji: "clap", count: 50 },
  ]);
  assert.equal(batcher.size, 0);
});

test("an unanswered request is sent again with its key and body until settled", () => {
  const batcher = new TapBatcher(100, "s");
  batcher.tap("semi", "fire", 2);
  batcher.tap("final", "fire");
  const first = batcher.next("u");
  assert.deepEqual(first.body.reactions, [
    { stream_id: "semi", user_id: "u", emoji: "fire", count: 2 },
    { stream_id: "final", user_id: "u", emoji: "fire", count: 1 },
  ]);
  // Taps made while it is outstanding wait for the next request.
  batcher.tap("final", "clap");
  assert.equal(batcher.next("u"), first, "the retry is the same request");
  batcher.settle(first);
  const second = batcher.next("u");
  assert.equal(second.key, "s:2");
  assert.deepEqual(second.body.reactions, [{ stream_id: "final", user_id: "u", emoji: "clap", count: 1 }]);
  batcher.settle(first); // a late answer to the first changes nothing
  assert.equal(batcher.next("u"), second);
  batcher.settle(second);
  assert.equal(batcher.next("u"), null);
});

test("sessions are random base64url ids", () => {
  const [a, b] = [randomSession(), randomSession()];
  assert.match(a, /^[A-Za-z0-9_-]{16}$/);
  assert.notEqual(a, b);
  assert.notEqual(new TapBatcher().session, new TapBatcher().session);
});

test("reconnect delays grow, are capped and jittered", () => {
  // Full jitter from the first retry: anywhere from 100 ms to the ceiling.
  assert.equal(reconnectDelay(0, () => 0), 100);
  assert.equal(reconnectDelay(0, () => 0.5), 500);
  assert.equal(reconnectDelay(0, () => 1), 1000);
  assert.equal(reconnectDelay(3, () => 1), 8000);
  assert.equal(reconnectDelay(20, () => 1), 30000);
  assert.equal(reconnectDelay(20, () => 0), 100);
  // Browsers dropped together, with evenly spread random draws, spread their first retry evenly
  // over the whole second (the old "half plus jitter" put them all in its second half).
  const firsts = Array.from({ length: 1000 }, (_, i) => reconnectDelay(0, () => i / 1000));
  const perTenth = Array.from({ length: 10 }, (_, i) => firsts.filter((d) => d >= i * 100 && d < (i + 1) * 100).length);
  assert.ok(Math.max(...perTenth) <= 200, `per 100 ms: ${perTenth}`);
});

test("connections are renewed before API Gateway's 2-hour cap, at spread-out moments", () => {
  const cap = 2 * 60 * 60 * 1000;
  assert.equal(renewalDelay(() => 0), RENEW_AFTER_MS);
  assert.equal(renewalDelay(() => 1), RENEW_AFTER_MS + RENEW_SPREAD_MS);
  assert.ok(RENEW_AFTER_MS + RENEW_SPREAD_MS < cap - 60 * 1000, "a minute of margin at the latest");
  const moments = new Set(Array.from({ length: 100 }, (_, i) => Math.floor(renewalDelay(() => i / 100) / 1000)));
  assert.equal(moments.size, 100, "100 viewers with different draws renew at 100 different seconds");
  assert.ok(renewalDelay() >= RENEW_AFTER_MS && renewalDelay() <= RENEW_AFTER_MS + RENEW_SPREAD_MS);
  assert.equal(renewalDelay(() => 0.5, 1000, 2000), 2000);
});

test("stream ids are checked like the API checks them", () => {
  assert.ok(validStreamId("ind-vs-aus_2026:final"));
  assert.ok(!validStreamId(""));
  assert.ok(!validStreamId("has space"));
  assert.ok(!validStreamId("x".repeat(65)));
});

test("echoes own taps until the server's counts include them, never twice", () => {
  const echo = new LocalEcho();
  echo.tap("fire", 3);
  echo.tap("clap");
  assert.deepEqual(echo.apply({ fire: 10 }), { fire: 13, clap: 1 });
  // The server's window grows by 2 fires: two of ours are in it now.
  echo.absorb({ counts: { fire: 10 } }, { counts: { fire: 12 } });
  assert.deepEqual(echo.apply({ fire: 12 }), { fire: 13, clap: 1 });
  // A new window with 5 fires (ours and others'): the rest is absorbed, not shown on top.
  echo.absorb(undefined, { counts: { fire: 5, clap: 1 } });
  assert.equal(echo.size, 0);
  assert.deepEqual(echo.apply({ fire: 5, clap: 1 }), { fire: 5, clap: 1 });
  // A state that did not grow (a duplicate) absorbs nothing.
  echo.tap("joy", 2);
  echo.absorb({ counts: { joy: 4 } }, { counts: { joy: 4 } });
  assert.equal(echo.size, 2);
  echo.clear();
  assert.equal(echo.size, 0);
});

test("stream channels match notify's, hashing ids AppSync would refuse", () => {
  assert.equal(streamChannel("streams", "final-2026"), "/streams/final-2026");
  // The same value crates/reactions/src/event_channel.rs checks.
  assert.equal(streamChannel("streams", "cup_final:2026.v2"), "/streams/h93e1ef301685e396");
  assert.match(streamChannel("streams", "a".repeat(64)), /^\/streams\/h[0-9a-f]{16}$/);
  assert.match(streamChannel("streams", "-x"), /^\/streams\/h[0-9a-f]{16}$/);
});

test("the AppSync subprotocols carry the authorization as base64url JSON", () => {
  const [name, header] = eventSubprotocols({ host: "h:1", "x-api-key": "da2-k" });
  assert.equal(name, "aws-appsync-event-ws");
  assert.ok(header.startsWith("header-") && !/[+/=]/.test(header), header);
  const json = Buffer.from(header.slice(7), "base64url").toString();
  assert.deepEqual(JSON.parse(json), { host: "h:1", "x-api-key": "da2-k" });
});

test("data messages yield their frames; anything else none", () => {
  const frame = { type: "windows", stream: "s", windows: [] };
  assert.deepEqual(eventFrames({ type: "data", id: "x", event: JSON.stringify(frame) }), [frame]);
  assert.deepEqual(eventFrames({ type: "data", id: "x", event: [JSON.stringify(frame)] }), [frame]);
  assert.deepEqual(eventFrames({ type: "data", id: "x", event: "{not json" }), []);
  assert.deepEqual(eventFrames({ type: "ka" }), []);
});

test("URL overrides of the APIs only on this machine or for listed origins", () => {
  for (const host of ["localhost", "127.0.0.1", "127.1.2.3", "[::1]"]) assert.ok(isLoopbackHost(host), host);
  for (const host of ["live.example.com", "127.0.0.1.evil.example", "10.0.0.1"]) assert.ok(!isLoopbackHost(host), host);
  assert.ok(overrideAllowed("https://attacker.example/api", "127.0.0.1"));
  assert.ok(!overrideAllowed("https://attacker.example/api", "live.example.com"));
  assert.ok(!overrideAllowed("https://attacker.example/api", "live.example.com", ["https://api.example.com"]));
  assert.ok(overrideAllowed("https://api.example.com/v2", "live.example.com", ["https://api.example.com"]));
  assert.ok(overrideAllowed("wss://ws.example.com/live", "live.example.com", ["wss://ws.example.com"]));
  assert.ok(!overrideAllowed("not a url", "127.0.0.1"));
  assert.ok(!overrideAllowed("https://api.example.com", "live.example.com", "https://api.example.com"));
});

test("the help text says how often taps go out", () => {
  assert.equal(sendingEvery(1000), "every second");
  assert.equal(sendingEvery(250), "every 250 ms");
  assert.equal(sendingEvery(2000), "every 2 s");
  assert.equal(sendingEvery(1500), "every 1.5 s");
});
