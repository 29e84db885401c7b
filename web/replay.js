// The replay page: a stream's reactions played back against its recording. It reads the stream
// (`GET /streams/{id}`), its exact counts at the window's resolution with the heatmap
// (`GET /streams/{id}/replay`) and its moments (`GET /streams/{id}/moments`), then follows a
// clock: the `<video>` named by ?video= (its currentTime from ?origin=, ms since the epoch,
// else from when the stream went live), or the page's own timeline when there is none. Seeking,
// pausing and 2× speed move the counts and the swarm with the clock; the heatmap sits under the
// scrubber; a moment jumps the clock to it. ?stream= picks the stream; ?at= (ms into the
// recording) starts there.
import { readConfig } from "./config.js";
import { MomentBook, ReplayTimeline, heatmapCells, clockText } from "./timeline.js";
import { Swarm, pauseControl, renderCountList, renderMoments, reducedMotion } from "./view.js";

const $ = (id) => document.getElementById(id);
const MAX_FLOATS_PER_BUCKET = 30;

/** The page's own timeline: a position that runs at `rate` while playing. */
class OwnClock {
  constructor(duration) {
    this.duration = duration;
    this.position = 0;
    this.rate = 1;
    this.playingSince = null; // performance.now() when play started, with the position then
  }

  now() {
    if (this.playingSince === null) return this.position;
    const [since, from] = this.playingSince;
    const at = from + (performance.now() - since) * this.rate;
    if (at >= this.duration) {
      this.position = this.duration;
      this.playingSince = null;
    }
    return Math.min(at, this.duration);
  }

  get paused() {
    return this.playingSince === null;
  }

  play() {
    if (this.position >= this.duration) this.position = 0;
    this.playingSince = [performance.now(), this.position];
  }

  pause() {
    this.position = this.now();
    this.playingSince = null;
  }

  seek(ms) {
    const playing = !this.paused;
    this.position = Math.max(0, Math.min(ms, this.duration));
    this.playingSince = playing ? [performance.now(), this.position] : null;
  }

  setRate(rate) {
    const playing = !this.paused;
    this.position = this.now();
    this.rate = rate;
    this.playingSince = playing ? [performance.now(), this.position] : null;
  }
}

/** A `<video>` as the clock: the recording's own time, seeking and speed. */
class VideoClock {
  constructor(video) {
    this.video = video;
  }

  now() {
    return this.video.currentTime * 1000;
  }

  get paused() {
    return this.video.paused;
  }

  play() {
    this.video.play().catch(() => {});
  }

  pause() {
    this.video.pause();
  }

  seek(ms) {
    this.video.currentTime = Math.max(0, ms / 1000);
  }

  setRate(rate) {
    this.video.playbackRate = rate;
  }
}

const replay = {
  stream: null,
  origin: 0,
  duration: 0,
  timeline: null,
  moments: new MomentBook(),
  emojis: [],
  clock: null,
  swarm: null,
  shownIndex: null,
  dragging: false,
};

function glyphOf(name) {
  const emoji = replay.emojis.find((e) => e.name === name);
  return emoji ? emoji.glyph : name;
}

function setState(state, text) {
  $("replay-state").dataset.state = state;
  $("replay-state").textContent = text;
}

async function getJson(url) {
  const response = await fetch(url);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.message || `HTTP ${response.status}`);
  return body;
}

/** The counts at the window's resolution, or as fine as one answer may hold (10,800 buckets:
 *  three hours of 1 s windows). The route picks about a thousand buckets when asked for none;
 *  a longer recording is asked again at its window width when that fits. */
async function loadCounts(api, stream, from, to) {
  const base = `${api}/streams/${encodeURIComponent(stream)}/replay?from=${from}&to=${to}`;
  const first = await getJson(base);
  const width = first.window_width_ms;
  if (first.resolution_ms === width) return first;
  // At most 10,799 buckets before the route widens the range to whole buckets (one more).
  const windows = Math.ceil((first.to_ms - first.from_ms) / width);
  const finest = Math.max(1, Math.ceil(windows / 10799)) * width;
  if (finest >= first.resolution_ms) return first;
  return getJson(`${base}&resolution=${finest}`);
}

function renderHeatmap(heatmap) {
  const strip = $("heatmap");
  strip.replaceChildren();
  const cells = heatmapCells(heatmap);
  for (const cell of cells) {
    const span = document.createElement("span");
    const left = ((cell.start_ms - replay.origin) / replay.duration) * 100;
    span.style.left = `${left}%`;
    span.style.width = `${(heatmap.segment_ms / replay.duration) * 100}%`;
    span.style.opacity = String(0.08 + cell.intensity * 0.92);
    span.dataset.intensity = String(cell.intensity);
    strip.append(span);
  }
  strip.dataset.cells = String(cells.length);
}

function showMoments() {
  // A moment moves the clock to its start, playing or paused as it was (like a chapter).
  renderMoments($("moments"), replay.moments.list(), glyphOf, replay.origin, (moment) => {
    replay.clock.seek(moment.start_ms - replay.origin);
    replay.swarm.clear();
  });
}

function showPlayState() {
  $("play").textContent = replay.clock.paused ? "Play" : "Pause";
}

/** Shows the bucket at the clock's position: counts, totals, the swarm for a bucket newly
 *  reached in play (a seek shows the counts, not a burst), and the position for tests. */
function frame() {
  const position = replay.clock.now();
  const t = replay.origin + position;
  document.body.dataset.position = String(Math.round(position));
  const shown = clockText(position);
  if ($("clock").textContent !== shown) {
    $("clock").textContent = shown;
    $("scrubber").setAttribute("aria-valuetext", `${shown} of ${clockText(replay.duration)}`);
  }
  if (!replay.dragging) $("scrubber").value = String(Math.round(position));
  const bucket = replay.timeline.at(t);
  const index = bucket ? bucket.index : null;
  if (index !== replay.shownIndex) {
    const stepped = replay.shownIndex !== null && index === replay.shownIndex + 1;
    replay.shownIndex = index;
    const counts = bucket ? bucket.counts : {};
    const total = bucket ? bucket.total : 0;
    renderCountList($("replay-counts"), counts, glyphOf);
    $("replay-counts").dataset.bucketStart = bucket ? String(bucket.start_ms) : "";
    $("replay-total").textContent = String(total);
    const rate = total / (replay.timeline.resolution / 1000);
    $("replay-rate").textContent = String(Math.round(rate));
    $("replay-so-far").textContent = String(replay.timeline.totalThrough(t));
    const peak = Math.max(1, ...Object.values(replay.busiest));
    replay.swarm.showIntensity(total / peak, `${Math.round(rate)} taps a second`);
    if (stepped && !replay.clock.paused && !reducedMotion.matches) {
      let released = 0;
      for (const [name, n] of Object.entries(counts)) {
        const floats = Math.min(Math.ceil(Math.sqrt(n)), MAX_FLOATS_PER_BUCKET - released);
        replay.swarm.add(glyphOf(name), floats);
        released += floats;
      }
    }
  }
  requestAnimationFrame(frame);
}

function wireControls() {
  const scrubber = $("scrubber");
  scrubber.max = String(replay.duration);
  scrubber.step = "100";
  scrubber.disabled = false;
  scrubber.addEventListener("pointerdown", () => {
    replay.dragging = true;
  });
  for (const end of ["pointerup", "pointercancel"]) {
    scrubber.addEventListener(end, () => {
      replay.dragging = false;
    });
  }
  scrubber.addEventListener("input", () => {
    replay.clock.seek(Number(scrubber.value));
    replay.swarm.clear();
  });
  scrubber.addEventListener("change", () => {
    replay.dragging = false;
    replay.clock.seek(Number(scrubber.value));
  });
  const play = $("play");
  play.disabled = false;
  play.addEventListener("click", () => {
    if (replay.clock.paused) replay.clock.play();
    else replay.clock.pause();
    showPlayState();
  });
  const speed = $("speed");
  speed.disabled = false;
  let rate = 1;
  speed.addEventListener("click", () => {
    rate = rate === 1 ? 2 : 1;
    replay.clock.setRate(rate);
    speed.textContent = `Speed ${rate}×`;
    document.body.dataset.rate = String(rate);
  });
  // Space plays and pauses, unless a control has the focus (it has its own use for Space).
  document.addEventListener("keydown", (event) => {
    if (event.key !== " " || event.target !== document.body) return;
    event.preventDefault();
    play.click();
  });
  $("duration").textContent = clockText(replay.duration);
}

async function start() {
  const params = new URLSearchParams(location.search);
  const config = await readConfig();
  const stream = params.get("stream");
  if (!config.apiUrl || !stream) {
    setState("refused", "Open this page with ?stream=… (and a config.json naming the API)");
    return;
  }
  replay.stream = stream;
  const api = config.apiUrl;
  try {
    const entry = await getJson(`${api}/streams/${encodeURIComponent(stream)}`);
    replay.emojis = entry.emojis || [];
    $("replay-title").textContent = entry.title || stream;
    const origin = Number(params.get("origin")) || entry.started_ms;
    if (!origin) throw new Error("this stream has not gone live yet: nothing to replay");
    const end = entry.ended_ms || Date.now();
    replay.origin = origin;
    replay.duration = Math.max(1, end - origin);
    const [answer, moments] = await Promise.all([
      loadCounts(api, stream, origin, end),
      getJson(`${api}/streams/${encodeURIComponent(stream)}/moments`).catch(() => ({ moments: [] })),
    ]);
    replay.timeline = new ReplayTimeline(answer);
    replay.busiest = {};
    for (const row of answer.buckets || []) {
      replay.busiest[row[0]] = row.slice(1).reduce((a, b) => a + b, 0);
    }
    for (const moment of moments.moments || []) replay.moments.offer(moment);
    renderHeatmap(answer.heatmap);
    showMoments();
    document.body.dataset.resolution = String(replay.timeline.resolution);
    document.body.dataset.origin = String(origin);
  } catch (error) {
    setState("refused", `Cannot replay ${stream}: ${error.message}`);
    return;
  }
  const videoUrl = params.get("video");
  if (videoUrl) {
    const video = $("video");
    video.src = videoUrl;
    video.hidden = false;
    replay.clock = new VideoClock(video);
    video.addEventListener("play", showPlayState);
    video.addEventListener("pause", showPlayState);
  } else {
    replay.clock = new OwnClock(replay.duration);
  }
  replay.swarm = new Swarm($("swarm"), $("intensity"));
  pauseControl($("motion"), replay.swarm);
  wireControls();
  const at = Number(params.get("at"));
  if (at > 0) replay.clock.seek(at);
  setState("live", `Replay · ${stream}`);
  document.body.dataset.ready = "true";
  requestAnimationFrame(frame);
}

start();
