// Keeps a dashboard page current without reloading it. One EventSource follows the control plane's event
// stream (the same one `rrm get events --watch` reads); when an event concerns what the page shows, the
// page's live region is fetched again from the server, already rendered, and swapped in. Also keeps the
// "12s ago" times and the countdowns current. The live region names its fragment URL and the event
// subjects it cares about.
"use strict";

(() => {
  const region = document.getElementById("live");
  const indicator = document.getElementById("live-status");
  if (!region) return;
  const subjects = (region.dataset.subjects || "").split(/\s+/).filter(Boolean);
  const DEBOUNCE_MS = 150;
  const RECONNECT_MS = 3000;

  const concerns = (subject) =>
    subjects.length === 0 ||
    subjects.some((s) => (s.endsWith("/") ? subject.startsWith(s) : subject === s));

  function showState(state, text) {
    if (!indicator) return;
    indicator.dataset.state = state;
    indicator.textContent = text;
  }

  function signIn() {
    const here = location.pathname + location.search;
    location.assign("/ui/login?next=" + encodeURIComponent(here));
  }

  let timer = null;
  let busy = false;
  let pending = false;

  function schedule() {
    if (timer === null) {
      timer = setTimeout(() => {
        timer = null;
        refresh();
      }, DEBOUNCE_MS);
    }
  }

  async function refresh() {
    if (busy) {
      pending = true;
      return;
    }
    busy = true;
    try {
      const response = await fetch(region.dataset.live, {
        credentials: "same-origin",
        cache: "no-store",
        headers: { Accept: "text/html" },
      });
      if (response.status === 401) {
        signIn();
        return;
      }
      // Our own server-rendered (autoescaped) HTML; a 404 or 422 body explains itself. Sections the
      // reader opened or closed stay that way.
      const opened = new Map([...region.querySelectorAll("details[id]")].map((d) => [d.id, d.open]));
      region.innerHTML = await response.text();
      for (const details of region.querySelectorAll("details[id]")) {
        if (opened.has(details.id)) details.open = opened.get(details.id);
      }
      updateTimes();
      pollIfAsked();
    } catch (error) {
      showState("offline", "offline");
    } finally {
      busy = false;
      if (pending) {
        pending = false;
        schedule();
      }
    }
  }

  // A region showing something that progresses without an event per step (a stage waiting for a cluster
  // says how far it got) asks, with data-poll-seconds, to be fetched again while it does.
  let pollTimer = null;

  function pollIfAsked() {
    clearTimeout(pollTimer);
    const asking = region.querySelector("[data-poll-seconds]");
    const seconds = asking ? Number(asking.dataset.pollSeconds) : NaN;
    if (seconds > 0) pollTimer = setTimeout(schedule, seconds * 1000);
  }

  let missedEvents = false;
  // The newest event the page has seen: at first the newest one when the server rendered it, so that an
  // event recorded between that and the stream's start is not missed.
  let lastEventId = region.dataset.eventsAfter || "";

  function connect() {
    const query = /^\d+$/.test(lastEventId) ? `?after=${lastEventId}` : "";
    const source = new EventSource("/api/v1/events/stream" + query);
    source.onopen = () => {
      showState("live", "live");
      if (missedEvents) {
        missedEvents = false;
        schedule();
      }
    };
    source.onmessage = (message) => {
      if (message.lastEventId) lastEventId = message.lastEventId;
      let event;
      try {
        event = JSON.parse(message.data);
      } catch (error) {
        return;
      }
      if (concerns(event.subject || "")) schedule();
    };
    source.onerror = () => {
      missedEvents = true;
      if (source.readyState === EventSource.CLOSED) {
        // Refused (a session that expired, a server that went away): the refresh tells which.
        showState("offline", "offline");
        source.close();
        refresh();
        setTimeout(connect, RECONNECT_MS);
      } else {
        showState("reconnecting", "reconnecting");
      }
    };
  }

  function ago(timestamp) {
    const moment = Date.parse(timestamp);
    if (Number.isNaN(moment)) return null;
    const seconds = Math.max(0, Math.floor((Date.now() - moment) / 1000));
    for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]]) {
      if (seconds >= size) return `${Math.floor(seconds / size)}${unit} ago`;
    }
    return `${seconds}s ago`;
  }

  // "1m30s": whole seconds, as the server renders them.
  function duration(seconds) {
    let rest = Math.max(0, Math.ceil(seconds));
    let text = "";
    for (const [unit, size] of [["h", 3600], ["m", 60]]) {
      if (rest >= size) {
        text += `${Math.floor(rest / size)}${unit}`;
        rest %= size;
      }
    }
    return rest || !text ? `${text}${rest}s` : text;
  }

  function updateTimes() {
    for (const element of document.querySelectorAll("time[datetime]")) {
      const text = ago(element.getAttribute("datetime"));
      if (text !== null && element.textContent !== text) element.textContent = text;
    }
    // Countdowns (a rollout's bake and deadline) start from what the server computed when it rendered
    // them, so a browser clock that is off does not matter.
    const now = Date.now();
    for (const element of document.querySelectorAll("[data-seconds]")) {
      if (!element.dataset.since) element.dataset.since = String(now);
      const left = Number(element.dataset.seconds) - (now - Number(element.dataset.since)) / 1000;
      if (Number.isNaN(left)) continue;
      const text = duration(left);
      if (element.textContent !== text) element.textContent = text;
    }
  }

  connect();
  updateTimes();
  pollIfAsked();
  setInterval(updateTimes, 1000);
})();
