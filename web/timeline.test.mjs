// Unit tests of the pages' timeline logic: node --test web/
import test from "node:test";
import assert from "node:assert/strict";
import { MomentBook, ReplayTimeline, rollingRate, earlierRanges, chartSlots, heatmapCells, clockText } from "./timeline.js";

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

test("the live page's rate is over the last 10 s by the clock, without the window counting", () => {
  const totals = new Map([[0, 99], [10000, 30], [16000, 50], [20000, 7]]);
  // Counting now: the window from 20,000; the span is 10,000 to 20,000.
  assert.equal(rollingRate(totals, 21500, 2000), 8, "(30 + 50) taps over 10 s");
  assert.equal(rollingRate(totals, 60000, 2000), 0, "taps stopped: the rate falls to zero");
  assert.equal(rollingRate(new Map(), 21500, 2000), 0);
});

test("the taps before the page's windows are asked for in ranges the route answers exactly", () => {
  // Ten minutes of 2 s windows: one range at the window width (300 buckets).
  assert.deepEqual(earlierRanges(1000000, 1600000, 2000), [{ from: 1000000, to: 1600000, resolution: 2000 }]);
  // A day: a coarse range up to the last bucket boundary, then the windows after it.
  const day = earlierRanges(0, 86400000 + 6000, 2000);
  assert.equal(day.length, 2);
  assert.equal(day[0].resolution, 10000, "five windows a bucket: 43,203 windows in at most 10,799 buckets");
  assert.ok((day[0].to - day[0].from) / day[0].resolution <= 10799);
  assert.equal(day[0].to % day[0].resolution, 0);
  assert.deepEqual(day[1], { from: day[0].to, to: 86406000, resolution: 2000 });
  assert.deepEqual(earlierRanges(5000, 5000, 2000), []);
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
