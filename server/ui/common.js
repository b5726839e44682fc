// What every part of the web console shares: the bearer token (kept in
// sessionStorage, so it is forgotten with the tab), API calls that carry it,
// the error banner, and small DOM helpers.
const TOKEN_KEY = "tidemap.token";

export const $ = (id) => document.getElementById(id);

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function authHeaders(extra) {
  const headers = Object.assign({}, extra);
  if (token()) headers.Authorization = "Bearer " + token();
  return headers;
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// GETs `path` and returns its JSON; throws ApiError with the API's message.
export async function getJson(path) {
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

export function showError(message) {
  const el = $("error");
  el.textContent = message || "";
  el.hidden = !message;
}

export function describeError(err) {
  if (err instanceof ApiError && err.status === 401) {
    return "This node needs a bearer token: paste it in the field above (" + err.message + ").";
  }
  return err.message || String(err);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export function cell(text, className) {
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

export function bytesCell(obj, name, className) {
  const f = bytesField(obj, name);
  const td = cell(f.text, className);
  if (f.binary) td.classList.add("binary");
  td.title = f.text;
  return td;
}

