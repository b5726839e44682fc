// The tidemap web console: the node and its peers from GET /v1/status (polled
// every second), a key browser over GET /v1/maps/{map} (cursor paging with
// `after`), and a live change feed from GET /v1/watch. Every API call carries
// the bearer token the user gave (kept in sessionStorage, so it is forgotten
// with the tab); the watch stream is read with fetch() rather than
// EventSource because EventSource cannot send an Authorization header.
"use strict";

const STATUS_INTERVAL_MS = 1000;
const FEED_ROWS_MAX = 200;
const WATCH_RETRY_MS_MAX = 5000;
const TOKEN_KEY = "tidemap.token";

const $ = (id) => document.getElementById(id);

// ---- API access -----------------------------------------------------------

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function authHeaders(extra) {
  const headers = Object.assign({}, extra);
  if (token()) headers.Authorization = "Bearer " + token();
  return headers;
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// GETs `path` and returns its JSON; throws ApiError with the API's message.
async function getJson(path) {
  const res = await fetch(path, { headers: authHeaders(), cache: "no-store" });
  const text = await res.text();
  let body = null;
  try {
    body = JSON.parse(text);
  } catch (e) {
    body = null;
  }
  if (!res.ok) {
    const message = body && body.error ? body.error : res.status + " " + res.statusText;
    throw new ApiError(res.status, body && body.code, message);
  }
  return body;
}

function showError(message) {
  const el = $("error");
  el.textContent = message || "";
  el.hidden = !message;
}

function describeError(err) {
  if (err instanceof ApiError && err.status === 401) {
    return "This node needs a bearer token: paste it in the field above (" + err.message + ").";
  }
  return err.message || String(err);
}

// ---- small DOM helpers ------------------------------------------------------

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "–" : String(text);
  if (className) td.className = className;
  return td;
}

// The text of a field that the API gives as `name` (UTF-8) or `name_base64`.
function bytesField(obj, name) {
  if (obj[name] !== undefined) return { text: obj[name], binary: false };
  if (obj[name + "_base64"] !== undefined) {
    return { text: "base64:" + obj[name + "_base64"], binary: true };
  }
  return { text: "", binary: false };
}

function bytesCell(obj, name, className) {
  const f = bytesField(obj, name);
  const td = cell(f.text, className);
  if (f.binary) td.classList.add("binary");
  td.title = f.text;
  return td;
}

function shortKey(key) {
  return key && key.length > 20 ? key.slice(0, 10) + "…" + key.slice(-6) : key;
}

function formatOffset(ms) {
  if (ms === null || ms === undefined) return "–";
  return (ms > 0 ? "+" : "") + ms + " ms";
}

// ---- node and peers (GET /v1/status) ---------------------------------------

let lastStatusAt = 0;
let statusInFlight = false;

function renderNode(s) {
  $("node-id").textContent = s.node_id;
  $("node-key").textContent = s.public_key;
  $("node-address").textContent = location.host;
  $("node-version").textContent = s.version || "–";
  const storage = s.storage || {};
  const state = storage.state || "–";
  const el = $("node-storage");
  el.textContent = state + (storage.error ? ": " + storage.error : "") +
      (storage.used_bytes !== undefined ? " (" + formatBytes(storage.used_bytes) + ")" : "");
  el.className = "state " + (state === "ok" ? "ok" : "bad");
  $("node-keys").textContent = s.keys;
  $("node-tombstones").textContent = s.tombstones;
  $("node-oplog").textContent = s.oplog ? s.oplog.first_seq + " – " + s.oplog.last_seq : "–";
  $("node-hlc").textContent = s.hlc || "–";
  $("node-merkle").textContent = s.merkle_root;
}

function formatBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
}

function syncCell(p) {
  const td = document.createElement("td");
  if (!p.sync_in_progress) {
    td.textContent = "idle";
    return td;
  }
  const percent = Math.max(0, Math.min(100, Number(p.sync_percent) || 0));
  const bar = document.createElement("span");
  bar.className = "bar";
  const fill = document.createElement("span");
  fill.style.width = percent + "%";
  bar.appendChild(fill);
  td.appendChild(bar);
  td.appendChild(document.createTextNode(percent.toFixed(0) + "%"));
  return td;
}

function peerRow(p) {
  const tr = document.createElement("tr");
  tr.dataset.peer = p.public_key || p.node_id;
  tr.dataset.connected = String(!!p.connected);
  // A peer dialed but not yet through a handshake has no key and a zero id.
  const known = p.public_key || !/^0+$/.test(p.node_id);
  const name = cell(known ? p.node_id : "not identified yet", "mono");
  name.title = p.public_key || "";
  tr.appendChild(name);
  tr.appendChild(cell(p.address));
  tr.appendChild(cell(p.connected ? "connected" : "disconnected",
                      "state " + (p.connected ? "ok" : "bad")));
  const lag = p.lag + (p.lag === 1 ? " record" : " records") +
      (p.lag_seconds ? ", " + Number(p.lag_seconds).toFixed(1) + " s" : "");
  tr.appendChild(cell(lag));
  tr.appendChild(cell(formatOffset(p.clock_offset_ms)));
  tr.appendChild(syncCell(p));
  tr.appendChild(cell(p.last_error));
  return tr;
}

function renderPeers(peers) {
  const tbody = $("peers").tBodies[0];
  tbody.replaceChildren(...peers.map(peerRow));
  $("peers-empty").hidden = peers.length > 0;
}

function setConnState(text, ok) {
  const el = $("conn");
  el.textContent = text;
  el.className = "badge " + (ok ? "ok" : "bad");
}

// One status request at a time: a slow answer delays the next poll instead of
// piling requests up.
async function refreshStatus() {
  if (statusInFlight) return;
  statusInFlight = true;
  try {
    const s = await getJson("/v1/status");
    renderNode(s);
    renderPeers(s.peers || []);
    lastStatusAt = Date.now();
    setConnState("online", true);
    if ($("error").dataset.source === "status") {
      showError("");
      $("error").dataset.source = "";
    }
  } catch (err) {
    setConnState(err instanceof ApiError && err.status === 401 ? "token needed" : "offline", false);
    showError(describeError(err));
    $("error").dataset.source = "status";
  } finally {
    statusInFlight = false;
  }
}

function showStatusAge() {
  $("status-age").textContent = lastStatusAt
    ? "last at " + new Date(lastStatusAt).toLocaleTimeString()
    : "never";
}

// ---- key browser (GET /v1/maps/{map}) --------------------------------------

// Each page is fetched by the cursor of the page before it; `pages` holds, for
// every page shown so far, its cursor and its item count, so Previous needs no
// backwards scan.
const browse = { map: "", prefix: "", limit: 100, pages: [], next: null };

function percentEncodeBytes(bytes) {
  let out = "";
  for (const b of bytes) out += "%" + b.toString(16).padStart(2, "0").toUpperCase();
  return out;
}

function base64Bytes(text) {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

// A page's `next` as a query value: UTF-8 text, or the bytes of next_base64.
function cursorOf(page) {
  if (page.next !== null && page.next !== undefined) return encodeURIComponent(page.next);
  if (page.next_base64 !== undefined) return percentEncodeBytes(base64Bytes(page.next_base64));
  return null;
}

function scanPath(after) {
  let path = "/v1/maps/" + encodeURIComponent(browse.map) + "?limit=" + browse.limit;
  if (browse.prefix) path += "&prefix=" + encodeURIComponent(browse.prefix);
  if (after !== null) path += "&after=" + after;
  return path;
}

function keyRow(item) {
  const tr = document.createElement("tr");
  tr.appendChild(bytesCell(item, "key", "mono"));
  tr.appendChild(bytesCell(item, "value", "value"));
  tr.appendChild(cell(item.hlc, "mono"));
  tr.appendChild(cell(item.origin, "mono"));
  return tr;
}

function renderRange(count) {
  const before = browse.pages.slice(0, -1).reduce((n, p) => n + p.count, 0);
  const end = browse.next === null;
  const el = $("range");
  el.dataset.first = String(before + 1);
  el.dataset.last = String(before + count);
  el.dataset.end = String(end);
  el.textContent = count === 0
    ? "no keys"
    : "keys " + (before + 1) + "–" + (before + count) + " · page " + browse.pages.length +
        (end ? " · end of map" : "");
}

// Shows the page fetched with cursor `after` (null: the first) as page number
// browse.pages.length + 1.
async function loadPage(after) {
  const table = $("keys");
  table.setAttribute("aria-busy", "true");
  setPagerEnabled(false);
  try {
    const page = await getJson(scanPath(after));
    browse.pages.push({ after: after, count: page.items.length });
    browse.next = cursorOf(page);
    table.tBodies[0].replaceChildren(...page.items.map(keyRow));
    renderRange(page.items.length);
    showError("");
  } catch (err) {
    showError(describeError(err));
  } finally {
    table.removeAttribute("aria-busy");
    setPagerEnabled(true);
  }
}

function setPagerEnabled(enabled) {
  $("first").disabled = !enabled || browse.pages.length <= 1;
  $("prev").disabled = !enabled || browse.pages.length <= 1;
  $("next").disabled = !enabled || browse.next === null;
  $("load").disabled = !enabled;
}

function startBrowse(event) {
  event.preventDefault();
  browse.map = $("map").value;
  browse.prefix = $("prefix").value;
  browse.limit = Number($("limit").value);
  browse.pages = [];
  browse.next = null;
  loadPage(null);
}

function previousPage() {
  browse.pages.pop();
  const current = browse.pages.pop();
  loadPage(current.after);
}

function firstPage() {
  browse.pages = [];
  loadPage(null);
}

// ---- change feed (GET /v1/watch) -------------------------------------------

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

function restartWatch() {
  if (feed.controller) feed.controller.abort();
  feed.controller = null;
  feed.lastId = "";
  watch();
}

// ---- wiring ----------------------------------------------------------------

function useToken(event) {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  refreshStatus();
  restartWatch();
}

function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
  refreshStatus();
  restartWatch();
}

function togglePause() {
  feed.paused = !feed.paused;
  $("feed-pause").textContent = feed.paused ? "Resume" : "Pause";
}

function start() {
  $("token-form").addEventListener("submit", useToken);
  $("token-clear").addEventListener("click", forgetToken);
  $("browse-form").addEventListener("submit", startBrowse);
  $("next").addEventListener("click", () => loadPage(browse.next));
  $("prev").addEventListener("click", previousPage);
  $("first").addEventListener("click", firstPage);
  $("feed-pause").addEventListener("click", togglePause);
  $("feed-clear").addEventListener("click", () => $("feed").tBodies[0].replaceChildren());
  $("feed-map").addEventListener("change", restartWatch);
  refreshStatus();
  setInterval(refreshStatus, STATUS_INTERVAL_MS);
  setInterval(showStatusAge, STATUS_INTERVAL_MS);
  watch();
}

start();
