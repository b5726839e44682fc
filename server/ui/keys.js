// The key browser: one page of GET /v1/maps/{map} at a time, paged with the
// scan's `after` cursor.
import { $, bytesCell, cell, describeError, getJson, showError } from "./common.js";

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

export function startKeyBrowser() {
  $("browse-form").addEventListener("submit", startBrowse);
  $("next").addEventListener("click", () => loadPage(browse.next));
  $("prev").addEventListener("click", previousPage);
  $("first").addEventListener("click", firstPage);
}
