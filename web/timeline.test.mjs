// Unit tests of the pages' timeline logic: node --test web/
import test from "node:test";
import assert from "node:assert/strict";
import { MomentBook, ReplayTimeline, rollingRate, chartSlots, heatmapCells, clockText } from "./timeline.js";

const change = (from, status, revision, extra = {}) => ({
  type: "moment",
  stream: "s",
  status,
  revision,
  moment: { detected_from_ms: from, start_ms: from - 10000, end_ms: from + 7000, emoji: "fire", ended: false, ...extra },
});

test("moments keep their newest change and withdrawn ones go for good", () => {
  const book = new MomentBook();
  assert.equal(book.offer(change(20000, "provisional", 0)), true);
  assert.equal(book.offer(change(20000, "confirmed", 26000, { ended: true })), true);
  assert.equal(book.offer(change(20000, "provisional", 0)), false, "an older change arriving late");
  assert.equal(book.offer(change(20000, "confirmed", 26000, { ended: true })), false, "a duplicate");
  assert.equal(book.list()[0].moment.ended, true);
  assert.equal(book.offer(change(90000, "provisional", 0)), true);
  assert.equal(book.offer(change(90000, "withdrawn", 96000)), true);
  assert.equal(book.offer(change(90000, "provisional", 0)), false, "withdrawn stays withdrawn");
  assert.deepEqual(book.list().map((m) => m.moment.detected_from_ms), [20000]);
  // A moment as the moments route lists it: flat, with its status and revision beside it.
  assert.equal(book.offer({ ...change(5000, "confirmed", 9000).moment, status: "confirmed", revision: 9000 }), true);
  assert.equal(book.offer(change(5000, "confirmed", 9000)), false, "the same change as a frame");
  assert.deepEqual(book.list().map((m) => m.moment.detected_from_ms), [5000, 20000]);
});

test("a recording's counts are found by stream time", () => {
  const timeline = new ReplayTimeline({
    from_ms: 10000,
    to_ms: 22000,
    resolution_ms: 2000,
    emojis: ["fire", "clap"],
    buckets: [[0, 3, 1], [2, 0, 5], [5, 2, 0]],
  });
  assert.deepEqual(timeline.at(10500), { index: 0, start_ms: 10000, counts: { fire: 3, clap: 1 }, total: 4 });
  assert.deepEqual(timeline.at(12000), { index: 1, start_ms: 12000, counts: {}, total: 0 });
  assert.equal(timeline.at(15999).total, 5);
  assert.equal(timeline.at(22000), null, "past the end");
  assert.equal(timeline.at(9999), null, "before the start");
  assert.equal(timeline.totalThrough(9000), 0);
  assert.equal(timeline.totalThrough(14500), 9);
  assert.equal(timeline.totalThrough(30000), 11);
});

test("the live page's rate leaves out the window still counting", () => {
  const windows = [{ total: 10 }, { total: 30 }, { total: 50 }, { total: 1 }];
  assert.equal(rollingRate(windows, 2000, 2), 20, "(30 + 50) taps over 4 s");
  assert.equal(rollingRate([{ total: 9 }], 2000), 0, "only the live window: no rate yet");
  assert.equal(rollingRate([], 2000), 0);
});

test("the chart holds at least a minute of slots, at most its limit", () => {
  assert.equal(chartSlots(3, 2000, 90), 30, "a young stream's bars fill a minute's width");
  assert.equal(chartSlots(45, 2000, 90), 45);
  assert.equal(chartSlots(200, 2000, 90), 90);
  assert.equal(chartSlots(1, 1000, 20), 20);
});

test("heatmap cells and clock text", () => {
  const cells = heatmapCells({ from_ms: 1000, segment_ms: 500, intensity: [0, 0.5, 1, 7] });
  assert.deepEqual(cells.map((c) => [c.start_ms, c.intensity]), [[1000, 0], [1500, 0.5], [2000, 1], [2500, 1]]);
  assert.deepEqual(heatmapCells(null), []);
  assert.equal(clockText(0), "0:00");
  assert.equal(clockText(65500), "1:05");
  assert.equal(clockText(3723000), "1:02:03");
});
