// The live change feed: GET /v1/watch read with fetch() (EventSource cannot
// send the Authorization header), parsed as server-sent events, resumed after
// a lost connection from the last event seen.
import { $, ApiError, authHeaders, bytesCell, cell } from "./common.js";

const FEED_ROWS_MAX = 200;
const WATCH_RETRY_MS_MAX = 5000;

const feed = {
  paused: false, lastId: "", controller: null, retryMs: 500, maps: new Set(), queue: [],
};

function setFeedState(text, ok) {
  const el = $("feed-state");
  el.textContent = text;
  el.className = "badge " + (ok ? "ok" : "bad");
}

function rememberMap(map) {
  if (map === undefined || feed.maps.has(map) || feed.maps.size >= 100) return;
  feed.maps.add(map);
  const option = document.createElement("option");
  option.value = map;
  $("maps").appendChild(option);
}

function eventKind(name, data) {
  if (name === "change") return data.tombstone ? "delete" : "put";
  return name;
}

function feedRow(name, data) {
  const tr = document.createElement("tr");
  tr.className = "fresh";
  const kind = eventKind(name, data);
  tr.appendChild(cell(data.seq));
  tr.appendChild(cell(kind + (data.remote ? " (remote)" : ""), "kind-" + kind));
  tr.appendChild(bytesCell(data, "map"));
  tr.appendChild(bytesCell(data, "key", "mono"));
  tr.appendChild(cell(data.hlc, "mono"));
  tr.appendChild(cell(data.origin, "mono"));
  return tr;
}

// Events are shown in batches, one per animation frame, and only the newest
// FEED_ROWS_MAX of a batch are built: a burst of writes costs the page little.
function addFeedRow(name, data) {
  rememberMap(data.map);
  if (feed.paused) return;
  feed.queue.push([name, data]);
  if (feed.queue.length > FEED_ROWS_MAX) feed.queue.shift();
  if (feed.queue.length === 1) requestAnimationFrame(flushFeed);
}

function flushFeed() {
  const rows = feed.queue.map(([name, data]) => feedRow(name, data)).reverse();
  feed.queue = [];
  const tbody = $("feed").tBodies[0];
  tbody.prepend(...rows);
  while (tbody.rows.length > FEED_ROWS_MAX) tbody.deleteRow(-1);
}

// One server-sent event (its lines without the blank line that ends it).
function handleEvent(block) {
  let name = "message";
  let id = null;
  const data = [];
  for (const line of block.split("\n")) {
    if (line === "" || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") name = value;
    else if (field === "id") id = value;
    else if (field === "data") data.push(value);
  }
  if (id !== null) feed.lastId = id;
  if (data.length === 0) return;
  const payload = JSON.parse(data.join("\n"));
  if (name === "error") {
    // The server closes the stream after this; resume where it says.
    feed.lastId = payload.resume_from ? String(payload.resume_from) : "";
    setFeedState(payload.code || "error", false);
    return;
  }
  addFeedRow(name, payload);
}

async function readStream(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      handleEvent(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
    }
  }
}

function watchPath() {
  const map = $("feed-map").value;
  return "/v1/watch" + (map ? "?map=" + encodeURIComponent(map) : "");
}

// Opens the stream and reads it until it ends; reconnects from the last event
// seen, as an EventSource would (Last-Event-ID), backing off while it fails.
async function watch() {
  const controller = new AbortController();
  feed.controller = controller;
  while (feed.controller === controller) {
    try {
      const headers = authHeaders(feed.lastId ? { "Last-Event-ID": feed.lastId } : {});
      const res = await fetch(watchPath(), { headers: headers, signal: controller.signal });
      if (res.status === 410) feed.lastId = "";  // too old to resume: start live
      if (!res.ok) throw new ApiError(res.status, null, "watch: " + res.status);
      setFeedState("live", true);
      feed.retryMs = 500;
      await readStream(res.body);
      setFeedState("reconnecting", false);
    } catch (err) {
      if (controller.signal.aborted) return;
      setFeedState(err instanceof ApiError && err.status === 401 ? "token needed" : "offline",
                   false);
    }
    await new Promise((resolve) => setTimeout(resolve, feed.retryMs));
    feed.retryMs = Math.min(feed.retryMs * 2, WATCH_RETRY_MS_MAX);
  }
}

export function restartWatch() {
  if (feed.controller) feed.controller.abort();
  feed.controller = null;
  feed.lastId = "";
  watch();
}

function togglePause() {
  feed.paused = !feed.paused;
  $("feed-pause").textContent = feed.paused ? "Resume" : "Pause";
}

export function startFeed() {
  $("feed-pause").addEventListener("click", togglePause);
  $("feed-clear").addEventListener("click", () => $("feed").tBodies[0].replaceChildren());
  $("feed-map").addEventListener("change", restartWatch);
  watch();
}
