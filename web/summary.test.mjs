import { test } from "node:test";
import assert from "node:assert/strict";
import { catalogueText, emojiTotals, figuresQuery, parseCatalogue, recentRate, replayLink, streamSummary } from "./summary.js";

const answer = {
  from_ms: 10000,
  resolution_ms: 2000,
  window_width_ms: 2000,
  emojis: ["clap", "fire"],
  buckets: [
    [0, 3, 1],
    [2, 0, 40],
    [5, 6, 0],
  ],
};

test("totals and the summary add the rows up", () => {
  assert.deepEqual(emojiTotals(answer), { clap: 9, fire: 41 });
  const summary = streamSummary(answer, [
    { start_ms: 30000, status: "confirmed" },
    { start_ms: 20000, status: "withdrawn" },
    { start_ms: 12000, status: "provisional" },
  ]);
  assert.equal(summary.total, 50);
  assert.deepEqual(summary.top, [["fire", 41], ["clap", 9]]);
  assert.deepEqual(summary.peak, { start_ms: 14000, rate: 20, resolution_ms: 2000 });
  assert.deepEqual(summary.moments.map((m) => m.start_ms), [12000, 30000]);
  assert.equal(streamSummary({ ...answer, buckets: [] }).peak, null);
  assert.equal(streamSummary(answer, [], 1).top.length, 1);
});

test("the recent rate counts only buckets that ended, over the time they cover", () => {
  // Buckets at 10–12 s (4 taps), 14–16 s (40 taps) and 20–22 s (6 taps).
  assert.equal(recentRate(answer, 22000, 10000), 4.6, "12–22 s: 46 taps in 10 s");
  assert.equal(recentRate(answer, 21000, 10000), 4.4, "10–20 s: the bucket still counting is left out");
  assert.equal(recentRate(answer, 13000, 10000), 2, "10–12 s: one bucket has ended");
  assert.equal(recentRate(answer, 11000, 10000), 0, "none has ended");
  assert.equal(recentRate(answer, 60000, 10000), 0);
  // Buckets coarser than the span: the last whole one.
  const coarse = { from_ms: 0, resolution_ms: 20000, buckets: [[0, 100], [1, 400]] };
  assert.equal(recentRate(coarse, 45000, 10000), 20);
});

test("a stream's figures read its whole run while one read holds it, else the last that fits", () => {
  const entry = { started_ms: 1000000, ended_ms: null };
  assert.deepEqual(figuresQuery(entry, 1000000 + 3600000), { query: "from=1000000", partial: false });
  const day = 86400000;
  const long = figuresQuery(entry, 1000000 + 2 * day, 2000);
  assert.equal(long.partial, true);
  const [from, to] = long.query.match(/from=(\d+)&to=(\d+)/).slice(1).map(Number);
  assert.equal(to, 1000000 + 2 * day);
  assert.ok((to - from) / 2000 <= 43200 - 30, "within the route's read");
  const ended = { started_ms: 0, ended_ms: 3 * day };
  assert.equal(figuresQuery(ended, 10 * day, 2000).query.endsWith(`to=${3 * day}`), true);
});

test("catalogue text goes both ways and names the bad line", () => {
  const emojis = [{ name: "fire", glyph: "🔥" }, { name: "red_card", glyph: "🟥" }];
  assert.deepEqual(parseCatalogue(catalogueText(emojis)), emojis);
  assert.deepEqual(parseCatalogue("\n fire 🔥 \n\n"), [{ name: "fire", glyph: "🔥" }]);
  assert.throws(() => parseCatalogue("fire 🔥\nclap"), /line 2/);
  assert.throws(() => parseCatalogue("fire 🔥 extra"), /line 1/);
});

test("replay links count from the stream's start", () => {
  assert.equal(replayLink("cup final", 1000, 61000), "replay.html?stream=cup%20final&at=60000");
  assert.equal(replayLink("a", 1000, 0), "replay.html?stream=a&at=0");
});
