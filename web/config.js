// The pages' configuration: window.EMOSTREAM_CONFIG, else config.json next to the page (the
// local stack serves one), with ?api= and ?ws= overrides allowed only on a page served from
// this machine or for origins the configuration's `overrideOrigins` lists (a link must not send
// a viewer's token, or an admin's signed request, elsewhere).
import { overrideAllowed } from "./model.js";

export async function readConfig() {
  const params = new URLSearchParams(location.search);
  let config = window.EMOSTREAM_CONFIG;
  if (!config) {
    try {
      const response = await fetch("config.json", { cache: "no-store" });
      if (response.ok) config = await response.json();
    } catch {
      // No config.json: the URL parameters must say where the APIs are.
    }
  }
  config = { ...(config || {}) };
  for (const [param, key] of [["api", "apiUrl"], ["ws", "websocketUrl"]]) {
    const value = params.get(param);
    if (!value) continue;
    if (overrideAllowed(value, location.hostname, config.overrideOrigins)) config[key] = value;
    else console.warn(`?${param}= ignored: ${value} is not on this machine and config.json's overrideOrigins does not list it`);
  }
  if (config.apiUrl) config.apiUrl = config.apiUrl.replace(/\/$/, "");
  return config;
}

/** `url` (a page of this site) with the page's own `?api=` and `?ws=` carried over, so a link
 *  from a page pointed at another stack opens the next page on the same one. */
export function withOverrides(url) {
  const params = new URLSearchParams(location.search);
  const target = new URL(url, location.href);
  for (const name of ["api", "ws"]) {
    if (params.get(name)) target.searchParams.set(name, params.get(name));
  }
  return target.pathname.split("/").pop() + target.search;
}
