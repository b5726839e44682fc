// The node panel and the peers table, from GET /v1/status polled every
// second (a peer that drops shows as disconnected at the next poll).
import { $, ApiError, cell, describeError, getJson, showError } from "./common.js";

const STATUS_INTERVAL_MS = 1000;

function formatOffset(ms) {
  if (ms === null || ms === undefined) return "–";
  return (ms > 0 ? "+" : "") + ms + " ms";
}

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
export async function refreshStatus() {
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

export function startStatus() {
  refreshStatus();
  setInterval(refreshStatus, STATUS_INTERVAL_MS);
  setInterval(showStatusAge, STATUS_INTERVAL_MS);
}
