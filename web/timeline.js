// What the pages show over time, without the DOM (node --test): moments as they are proposed,
// confirmed and withdrawn; a recording's counts by stream time (replay); the rolling rate and
// the stream's total on the live page; and the heatmap under a replay's scrubber.

/** Keeps, per moment (its first spike window, `detected_from_ms`), the change with the highest
 *  revision; a withdrawn moment is dropped (and stays dropped: a late copy of an older change
 *  does not bring it back). */
export class MomentBook {
  constructor() {
    this.moments = new Map(); // detected_from_ms -> {moment, status, revision}
    this.withdrawn = new Map(); // detected_from_ms -> revision withdrawn at
  }

  /** Offers a `moment` frame (or a moment of `GET /streams/{id}/moments`); true when it
   *  changed what is shown. */
  offer(change) {
    const moment = change && change.moment ? change.moment : change;
    if (!moment || typeof moment.detected_from_ms !== "number") return false;
    const id = moment.detected_from_ms;
    const revision = Number(change.revision) || 0;
    if (this.withdrawn.has(id) && this.withdrawn.get(id) >= revision) return false;
    const kept = this.moments.get(id);
    if (kept && kept.revision > revision) return false;
    if (kept && kept.revision === revision && kept.status === change.status) return false;
    if (change.status === "withdrawn") {
      this.withdrawn.set(id, revision);
      return this.moments.delete(id);
    }
    this.moments.set(id, { moment, status: change.status || "confirmed", revision });
    return true;
  }

  /** The moments shown, oldest first. */
  list() {
    return [...this.moments.values()].sort((a, b) => a.moment.start_ms - b.moment.start_ms);
  }

  clear() {
    this.moments.clear();
    this.withdrawn.clear();
  }
}

/** A recording's counts by stream time, from a `GET /streams/{id}/replay` answer: the bucket
 *  holding any instant, and the stream's taps up to it. */
export class ReplayTimeline {
  constructor(answer) {
    this.from = answer.from_ms;
    this.to = answer.to_ms;
    this.resolution = answer.resolution_ms;
    this.emojis = answer.emojis || [];
    this.rows = new Map(); // bucket index -> counts per emoji column
    for (const row of answer.buckets || []) this.rows.set(row[0], row.slice(1));
    // Taps before and in each bucket, in bucket order, for the running total.
    this.running = [];
    let sum = 0;
    for (const index of [...this.rows.keys()].sort((a, b) => a - b)) {
      sum += this.rows.get(index).reduce((a, b) => a + b, 0);
      this.running.push([index, sum]);
    }
    this.total = sum;
  }

  /** The bucket holding stream time `t` (ms since the epoch): its start, its counts per emoji
   *  and their total; null outside the recording. */
  at(t) {
    if (!(t >= this.from && t < this.to)) return null;
    const index = Math.floor((t - this.from) / this.resolution);
    const row = this.rows.get(index) || [];
    const counts = {};
    let total = 0;
    this.emojis.forEach((emoji, column) => {
      const n = row[column] || 0;
      if (n) counts[emoji] = n;
      total += n;
    });
    return { index, start_ms: this.from + index * this.resolution, counts, total };
  }

  /** The stream's taps from the recording's start up to the end of the bucket holding `t`. */
  totalThrough(t) {
    if (t < this.from) return 0;
    if (t >= this.to) return this.total;
    const index = Math.floor((t - this.from) / this.resolution);
    // The last bucket with taps at or before `index` (a binary search over the running sums).
    let [low, high, through] = [0, this.running.length - 1, 0];
    while (low <= high) {
      const middle = (low + high) >> 1;
      if (this.running[middle][0] <= index) {
        through = this.running[middle][1];
        low = middle + 1;
      } else {
        high = middle - 1;
      }
    }
    return through;
  }
}

/** Taps per second over the `spanMs` before the window counting at `nowMs` (the live page's
 *  rolling rate): windows are stored only where there were taps, so the span is by the clock,
 *  not a number of windows; it does not drop to zero as each window starts, and falls to zero
 *  once taps stop. `totals` maps window starts to their totals. */
export function rollingRate(totals, nowMs, widthMs, spanMs = 10000) {
  if (!(widthMs > 0) || !(spanMs > 0)) return 0;
  const current = Math.floor(nowMs / widthMs) * widthMs;
  let taps = 0;
  for (const [start, total] of totals) {
    if (start >= current - spanMs && start < current) taps += total || 0;
  }
  return taps / (spanMs / 1000);
}

/** The requests that sum a stream's taps from `started` to `before` (a window start) exactly
 *  with the replay route: one at a resolution coarse enough for the route's bucket bound, up to
 *  the last bucket boundary before `before`, and the windows after it at the window width (the
 *  route widens a range to whole buckets, which would count windows from `before` on too). */
export function earlierRanges(started, before, widthMs, maxBuckets = 10800) {
  if (!(before > started) || !(widthMs > 0)) return [];
  const windows = Math.ceil((before - started) / widthMs);
  const resolution = Math.max(1, Math.ceil(windows / (maxBuckets - 1))) * widthMs;
  const split = Math.floor(before / resolution) * resolution;
  const ranges = [];
  if (split > started) ranges.push({ from: started, to: split, resolution });
  const tail = Math.max(started, split);
  if (before > tail) ranges.push({ from: tail, to: before, resolution: widthMs });
  return ranges;
}

/** How many bar slots the history chart has: the windows it holds, but never fewer than a
 *  minute's, so a young stream's bars fill the chart instead of crowding its right edge. */
export function chartSlots(windowCount, widthMs, limit) {
  const minute = Math.max(1, Math.ceil(60000 / (widthMs || 2000)));
  return Math.min(limit, Math.max(windowCount, Math.min(minute, limit)));
}

/** The heatmap's cells: for each segment its share of the busiest (0–1) and when it starts. */
export function heatmapCells(heatmap) {
  if (!heatmap || !Array.isArray(heatmap.intensity)) return [];
  return heatmap.intensity.map((intensity, i) => ({
    intensity: Math.max(0, Math.min(1, Number(intensity) || 0)),
    start_ms: heatmap.from_ms + i * heatmap.segment_ms,
  }));
}

/** `ms` as the player shows it: `m:ss`, or `h:mm:ss` past an hour. */
export function clockText(ms) {
  const seconds = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = String(seconds % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}
