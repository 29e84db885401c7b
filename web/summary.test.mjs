import { test } from "node:test";
import assert from "node:assert/strict";
import { catalogueText, emojiTotals, parseCatalogue, recentRate, replayLink, streamSummary } from "./summary.js";

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

test("the recent rate counts only buckets that ended in the span", () => {
  // Buckets at 14–16 s (40 taps) and 20–22 s (6 taps).
  assert.equal(recentRate(answer, 22000, 10000), 4.6);
  assert.equal(recentRate(answer, 21000, 10000), 4, "the bucket still counting is left out");
  assert.equal(recentRate(answer, 60000, 10000), 0);
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
