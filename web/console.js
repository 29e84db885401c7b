// The broadcaster's console: the streams of the registry, and for the one chosen its start and
// end, its catalogue, its moderation switches (reactions paused, its own fair-use limit), live
// figures while it runs and, once it ended, the summary with its moments linked into the
// replay. The admin routes take only requests signed with AWS credentials (SigV4, IAM): the
// page sends them to a signing helper (`adminUrl` in config.json) that signs with the
// administrator's credentials, so no secret ever reaches the browser. The figures come from
// the public routes (`apiUrl`).
import { readConfig, withOverrides } from "./config.js";
import { catalogueText, figuresQuery, parseCatalogue, recentRate, replayLink, streamSummary } from "./summary.js";
import { renderCountList } from "./view.js";

const $ = (id) => document.getElementById(id);
const REFRESH_MS = 2000;

const state = {
  api: null,
  admin: null,
  streams: [],
  selected: null,
  timer: null,
  // What the moderation and catalogue boxes were filled with, so a refresh does not overwrite
  // what the broadcaster is typing.
  shownFor: null,
  // The window width of the last replay answer: how long a stream one read can hold.
  windowWidthMs: 2000,
};

function setState(kind, text) {
  $("console-state").dataset.state = kind;
  $("console-state").textContent = text;
}

function showError(error) {
  $("console-error").textContent = error ? String(error.message || error) : "";
}

async function call(url, options = {}) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(body.message || `HTTP ${response.status}`);
    error.status = response.status;
    error.code = body.error;
    throw error;
  }
  return body;
}

/** An admin route through the signing helper. The custom header makes a cross-site page's
 *  request need a CORS preflight, which the helper never grants. */
function admin(method, path, body) {
  return call(`${state.admin}${path}`, {
    method,
    headers: { "content-type": "application/json", "x-emostream-console": "1" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

function streamPath(id) {
  return `/streams/${encodeURIComponent(id)}`;
}

function renderStreams() {
  const rows = $("stream-rows");
  rows.replaceChildren();
  for (const stream of state.streams) {
    const row = document.createElement("tr");
    row.dataset.stream = stream.id;
    if (state.selected === stream.id) row.setAttribute("aria-current", "true");
    for (const text of [stream.id, stream.title, statusText(stream)]) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.append(cell);
    }
    const open = document.createElement("button");
    open.type = "button";
    open.textContent = "Open";
    open.setAttribute("aria-label", `Open ${stream.title}`);
    open.addEventListener("click", () => select(stream.id));
    const cell = document.createElement("td");
    cell.append(open);
    row.append(cell);
    rows.append(row);
  }
}

function statusText(stream) {
  return stream.status === "live" && stream.reactions_paused ? "live · reactions paused" : stream.status;
}

async function loadStreams() {
  const listing = await admin("GET", "/streams");
  state.streams = listing.streams || [];
  renderStreams();
}

function selectedEntry() {
  return state.streams.find((s) => s.id === state.selected);
}

function renderSelected() {
  const entry = selectedEntry();
  $("selected").hidden = !entry;
  if (!entry) return;
  $("selected-title").textContent = entry.title;
  $("selected-status").textContent = statusText(entry);
  $("selected").dataset.status = entry.status;
  $("start").disabled = entry.status !== "scheduled";
  $("end").disabled = entry.status === "ended";
  $("watch-link").href = withOverrides(`index.html?stream=${encodeURIComponent(entry.id)}`);
  $("replay-link").href = withOverrides(`replay.html?stream=${encodeURIComponent(entry.id)}`);
  $("replay-link").hidden = !entry.started_ms;
  $("figures-heading").textContent = entry.status === "ended" ? "Summary" : "Live";
  if (state.shownFor !== `${entry.id}@${entry.updated_ms}`) {
    state.shownFor = `${entry.id}@${entry.updated_ms}`;
    $("paused").checked = Boolean(entry.reactions_paused);
    $("fair-use").value = entry.fair_use_limit ?? "";
    $("catalogue-text").value = catalogueText(entry.emojis);
  }
}

function glyphOf(name) {
  const entry = selectedEntry();
  const emoji = entry && (entry.emojis || []).find((e) => e.name === name);
  return emoji ? emoji.glyph : name;
}

function renderFigures(entry, answer, moments) {
  const summary = streamSummary(answer, moments);
  $("total").textContent = String(summary.total);
  $("total").dataset.total = String(summary.total);
  const live = entry.status === "live";
  $("rate").textContent = live ? recentRate(answer, Date.now()).toFixed(1) : "0";
  $("peak").textContent = summary.peak
    ? `${Math.round(summary.peak.rate)}/s over ${summary.peak.resolution_ms / 1000} s at ${new Date(summary.peak.start_ms).toLocaleTimeString()}`
    : "–";
  renderCountList($("top"), Object.fromEntries(summary.top), glyphOf);
  const list = $("moment-list");
  list.replaceChildren();
  for (const moment of summary.moments) {
    const item = document.createElement("li");
    item.dataset.status = moment.status;
    const link = document.createElement("a");
    link.href = withOverrides(replayLink(entry.id, entry.started_ms, moment.start_ms));
    const at = Math.max(0, Math.round((moment.start_ms - entry.started_ms) / 1000));
    const when = `${Math.floor(at / 60)}:${String(at % 60).padStart(2, "0")}`;
    link.textContent = `${glyphOf(moment.emoji)} ${when} · peak ${Math.round(moment.peak_rate)}/s`;
    link.setAttribute("aria-label", `Replay the moment at ${when}: ${moment.emoji.replace(/_/g, " ")}`);
    item.append(link);
    list.append(item);
  }
  $("no-moments").hidden = summary.moments.length > 0;
}

function clearFigures() {
  for (const id of ["total", "rate"]) $(id).textContent = "0";
  $("total").dataset.total = "0";
  $("peak").textContent = "–";
  $("top").replaceChildren();
  $("moment-list").replaceChildren();
  $("no-moments").hidden = false;
  $("figures-span").hidden = true;
}

async function refreshFigures() {
  const entry = selectedEntry();
  if (!entry) return;
  if (!entry.started_ms) {
    clearFigures();
    return;
  }
  const path = `${state.api}${streamPath(entry.id)}`;
  const { query, partial } = figuresQuery(entry, Date.now(), state.windowWidthMs);
  const [answer, moments] = await Promise.all([call(`${path}/replay?${query}`), call(`${path}/moments`)]);
  if (answer.window_width_ms) state.windowWidthMs = answer.window_width_ms;
  if (state.selected === entry.id) {
    renderFigures(entry, answer, moments.moments || []);
    $("figures-span").hidden = !partial;
  }
}

async function refresh() {
  try {
    await loadStreams();
    renderSelected();
    await refreshFigures();
    setState("live", "Signed in");
  } catch (error) {
    reportAdminError(error);
  }
}

function reportAdminError(error) {
  if (error.status === 403) {
    setState("refused", "Not allowed");
    showError(`The API refused the signing helper's request: ${error.message} (its credentials need execute-api:Invoke on /admin/*, and must not have expired).`);
  } else {
    setState("reconnecting", "Retrying…");
    showError(error);
  }
}

async function select(id) {
  state.selected = id;
  state.shownFor = null;
  clearFigures();
  const url = new URL(location.href);
  url.searchParams.set("stream", id);
  history.replaceState(null, "", url);
  renderStreams();
  renderSelected();
  await refresh();
}

/** Runs an admin change, shows its error if any, and refreshes. */
async function change(work) {
  showError(null);
  try {
    await work();
    state.shownFor = null;
  } catch (error) {
    showError(error);
  }
  await refresh();
}

function wire() {
  $("create").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("new-id").value.trim();
    const title = $("new-title").value.trim();
    change(async () => {
      await admin("PUT", streamPath(id), { title });
      $("new-id").value = "";
      $("new-title").value = "";
      state.selected = id;
    });
  });
  $("start").addEventListener("click", () => change(() => admin("POST", `${streamPath(state.selected)}/start`)));
  $("end").addEventListener("click", () => {
    if (!confirm("End the stream? Reactions stop for good; its counts become its recording.")) return;
    change(() => admin("POST", `${streamPath(state.selected)}/end`));
  });
  $("moderation").addEventListener("submit", (event) => {
    event.preventDefault();
    // Only what this console changed is sent, so it does not undo another console's switch.
    const entry = selectedEntry();
    const text = $("fair-use").value.trim();
    if ($("fair-use").validity.badInput || (text !== "" && !/^[0-9]+$/.test(text))) {
      showError("The fair-use limit is a whole number of taps (1 to 10,000), or empty for the deployment's.");
      return;
    }
    const changes = {};
    if ($("paused").checked !== Boolean(entry.reactions_paused)) changes.reactions_paused = $("paused").checked;
    const limit = text === "" ? null : Number(text);
    if (limit !== (entry.fair_use_limit ?? null)) changes.fair_use_limit = limit;
    if (Object.keys(changes).length === 0) {
      showError("Nothing to change: the switches already say that.");
      return;
    }
    change(() => admin("PUT", streamPath(state.selected), changes));
  });
  $("catalogue").addEventListener("submit", (event) => {
    event.preventDefault();
    change(() => admin("PUT", streamPath(state.selected), { emojis: parseCatalogue($("catalogue-text").value) }));
  });
}

async function start() {
  const config = await readConfig();
  if (!config.apiUrl || !config.adminUrl) {
    setState("refused", "No signing helper");
    showError("config.json names no adminUrl: the console needs a signing helper for the admin routes (the local stack serves one; see docs/broadcaster-console.md).");
    return;
  }
  state.api = config.apiUrl;
  state.admin = config.adminUrl.replace(/\/$/, "");
  $("signed-as").textContent = config.adminIdentity ? `Admin requests are signed as ${config.adminIdentity}.` : "";
  wire();
  state.selected = new URLSearchParams(location.search).get("stream");
  await refresh();
  document.body.dataset.ready = "true";
  state.timer = setInterval(refresh, REFRESH_MS);
}

start();
