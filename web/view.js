// DOM pieces the live page and the replay page share: the list of counts per emoji, the swarm
// of rising emojis (released at a steady pace, so it keeps flowing between updates, and never
// animated when the viewer asks for reduced motion), the intensity bar shown instead of the
// swarm then, the pause control every moving part honours, and the list of moments.
import { clockText } from "./timeline.js";

export const reducedMotion = window.matchMedia("(prefers-reduced-motion: reduce)");

/** Fills `list` with one item per emoji of `counts`, most tapped first. */
export function renderCountList(list, counts, glyphOf) {
  list.replaceChildren();
  const entries = Object.entries(counts || {}).sort((a, b) => b[1] - a[1]);
  for (const [name, count] of entries) {
    const item = document.createElement("li");
    item.dataset.emoji = name;
    const label = document.createElement("span");
    label.textContent = glyphOf(name);
    label.setAttribute("aria-label", name.replace(/_/g, " "));
    const value = document.createElement("span");
    value.className = "count";
    value.textContent = String(count);
    item.append(label, value);
    list.append(item);
  }
}

/** The rising emojis: floats queued by `add` go out a few at a time over the next `spreadMs`,
 *  so an update's taps rise as a stream rather than a burst that leaves the swarm empty until
 *  the next. Paused (the viewer's control) or with reduced motion, nothing rises; with reduced
 *  motion `intensity` shows how busy it is instead. */
export class Swarm {
  constructor(element, intensity, spreadMs = 1000, maxQueued = 120) {
    this.element = element;
    this.intensity = intensity;
    this.spreadMs = spreadMs;
    this.maxQueued = maxQueued;
    this.queue = [];
    this.paused = false;
    this.timer = setInterval(() => this.tick(), 100);
  }

  /** Queues `count` floats of `glyph` (the oldest queued go first; past the bound, the
   *  oldest are dropped). */
  add(glyph, count) {
    if (this.paused || reducedMotion.matches) return;
    for (let i = 0; i < count; i++) this.queue.push(glyph);
    if (this.queue.length > this.maxQueued) this.queue.splice(0, this.queue.length - this.maxQueued);
  }

  tick() {
    if (!this.queue.length) return;
    const ticks = Math.max(1, this.spreadMs / 100);
    const now = Math.max(1, Math.ceil(this.queue.length / ticks));
    for (const glyph of this.queue.splice(0, now)) this.release(glyph);
  }

  release(glyph) {
    if (this.paused || reducedMotion.matches) return;
    const float = document.createElement("span");
    float.textContent = glyph;
    float.style.left = `${5 + Math.random() * 90}%`;
    float.addEventListener("animationend", () => float.remove());
    this.element.append(float);
  }

  /** How busy it is now, 0–1 (the intensity bar; its label says the rate). */
  showIntensity(fraction, label) {
    if (!this.intensity) return;
    const value = Math.max(0, Math.min(1, fraction || 0));
    this.intensity.style.setProperty("--intensity", String(value));
    this.intensity.dataset.intensity = value.toFixed(3);
    this.intensity.setAttribute("aria-valuenow", String(Math.round(value * 100)));
    if (label) this.intensity.setAttribute("aria-valuetext", label);
  }

  setPaused(paused) {
    this.paused = paused;
    if (paused) {
      this.queue = [];
      this.element.replaceChildren();
    }
  }

  clear() {
    this.queue = [];
    this.element.replaceChildren();
  }
}

/** Wires `button` to pause and resume `swarm`, remembering the choice for this site. */
export function pauseControl(button, swarm) {
  const show = () => {
    button.textContent = swarm.paused ? "Resume animation" : "Pause animation";
    button.setAttribute("aria-pressed", String(swarm.paused));
    document.body.dataset.motionPaused = String(swarm.paused);
  };
  // Storage may be blocked (a privacy setting): the control then lasts for the page only.
  const stored = () => {
    try {
      return localStorage.getItem("emostream-motion-paused") === "true";
    } catch {
      return false;
    }
  };
  swarm.setPaused(stored());
  button.addEventListener("click", () => {
    swarm.setPaused(!swarm.paused);
    try {
      localStorage.setItem("emostream-motion-paused", String(swarm.paused));
    } catch {
      // Not remembered.
    }
    show();
  });
  show();
}

/** Fills `list` with `moments` (from a MomentBook), each a button that calls `open(moment)`;
 *  times are shown from `origin` (the recording's start) when known. */
export function renderMoments(list, moments, glyphOf, origin, open) {
  list.replaceChildren();
  for (const { moment, status } of moments) {
    const item = document.createElement("li");
    item.dataset.detectedFrom = String(moment.detected_from_ms);
    item.dataset.status = status;
    const button = document.createElement("button");
    button.type = "button";
    const when = origin ? clockText(moment.start_ms - origin) : new Date(moment.start_ms).toLocaleTimeString();
    const state = status === "provisional" ? " · just now" : moment.ended ? "" : " · going on";
    button.textContent = `${glyphOf(moment.emoji)} ${when}${state}`;
    button.setAttribute(
      "aria-label",
      `Moment at ${when}: ${moment.emoji.replace(/_/g, " ")}, peak ${Math.round(moment.peak_rate || 0)} taps a second${state}`,
    );
    button.addEventListener("click", () => open(moment));
    item.append(button);
    list.append(item);
  }
}
