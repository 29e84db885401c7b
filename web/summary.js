// The broadcaster's figures of one stream, from a replay answer (GET /streams/{id}/replay) and
// its moments: the total, each emoji's taps, the busiest bucket, the rate over the last few
// seconds and the moments worth a link. Pure, so the console shows what the tests check.

/** Each emoji's taps in `answer` (columnar rows: bucket index, then a count per emoji). */
export function emojiTotals(answer) {
  const names = answer.emojis || [];
  const totals = {};
  for (const row of answer.buckets || []) {
    for (let i = 1; i < row.length; i += 1) {
      if (row[i] > 0) totals[names[i - 1]] = (totals[names[i - 1]] || 0) + row[i];
    }
  }
  return totals;
}

/** The stream's summary: `total` taps, `top` emojis ([name, taps], most first, at most
 *  `topCount`), the `peak` bucket ({start_ms, rate} in taps a second over `resolution_ms`, or
 *  null with no taps) and the moments not withdrawn, in order of start. */
export function streamSummary(answer, moments = [], topCount = 5) {
  const totals = emojiTotals(answer);
  const top = Object.entries(totals).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
  const total = top.reduce((sum, [, taps]) => sum + taps, 0);
  const resolution = answer.resolution_ms || answer.window_width_ms || 1000;
  let peak = null;
  for (const row of answer.buckets || []) {
    const taps = row.slice(1).reduce((a, b) => a + b, 0);
    const rate = taps / (resolution / 1000);
    if (taps > 0 && (!peak || rate > peak.rate)) {
      peak = { start_ms: answer.from_ms + row[0] * resolution, rate, resolution_ms: resolution };
    }
  }
  const kept = moments
    .filter((m) => m.status !== "withdrawn")
    .sort((a, b) => a.start_ms - b.start_ms);
  return { total, top: top.slice(0, topCount), peak, moments: kept };
}

/** Taps a second over the last whole buckets of `answer` that fit in the `spanMs` before
 *  `nowMs` (a bucket still counting would read low), divided by the time they cover; with
 *  buckets coarser than the span, the last whole bucket. Buckets absent from the answer had no
 *  taps. */
export function recentRate(answer, nowMs, spanMs = 10000) {
  const resolution = answer.resolution_ms || 1000;
  const end = Math.floor((nowMs - answer.from_ms) / resolution);
  const first = Math.max(0, end - Math.max(1, Math.floor(spanMs / resolution)));
  if (end <= first) return 0;
  let taps = 0;
  for (const row of answer.buckets || []) {
    if (row[0] >= first && row[0] < end) taps += row.slice(1).reduce((a, b) => a + b, 0);
  }
  return taps / (((end - first) * resolution) / 1000);
}

/** Most windows one replay read covers (the route's `MAX_WINDOWS_READ`). */
export const MAX_WINDOWS_READ = 43200;

/** The replay query of a stream's figures at `nowMs`: its whole run while that fits one read,
 *  else the last that fits (`partial`), a minute short of the limit for clocks that differ.
 *  No `to` for a whole run, so every console asks the same URL and a cache can answer. */
export function figuresQuery(entry, nowMs, windowWidthMs = 2000) {
  const end = entry.ended_ms || nowMs;
  const span = (MAX_WINDOWS_READ - Math.ceil(60000 / windowWidthMs)) * windowWidthMs;
  if (end - entry.started_ms <= span) return { query: `from=${entry.started_ms}`, partial: false };
  return { query: `from=${end - span}&to=${end}`, partial: true };
}

/** A catalogue as the console's text box shows it: one `name glyph` per line. */
export function catalogueText(emojis) {
  return (emojis || []).map((e) => `${e.name} ${e.glyph}`).join("\n");
}

/** Reads the text box back into `[{name, glyph}]`, or throws naming the line that is not
 *  `name glyph` (the route checks the names and glyphs themselves). */
export function parseCatalogue(text) {
  const emojis = [];
  text.split("\n").forEach((line, index) => {
    const trimmed = line.trim();
    if (!trimmed) return;
    const match = trimmed.match(/^(\S+)\s+(\S+)$/);
    if (!match) throw new Error(`line ${index + 1}: write a name, a space and the emoji (like "fire 🔥")`);
    emojis.push({ name: match[1], glyph: match[2] });
  });
  return emojis;
}

/** The replay page's link to `at_ms` of `stream` (from its start `origin`). */
export function replayLink(stream, origin, atMs) {
  const at = Math.max(0, Math.round(atMs - origin));
  return `replay.html?stream=${encodeURIComponent(stream)}&at=${at}`;
}
