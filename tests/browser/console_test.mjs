// The web console (/ui) in headless Chromium: two nodes with mutual trust,
// node A with a bearer token. Through the page of A it checks the token flow,
// the node panel, the change feed (and that it keeps up with a burst of
// 10,000 puts), that the peers table shows B disconnected within 2 s of B
// being killed, and that the key browser pages through those 10,000 keys; it
// saves a screenshot (console.png) to its work dir.
//
//   node console_test.mjs TIDEMAP_BIN CHROMIUM_BIN WORK_DIR
//
// Chromium is driven over the DevTools protocol on a pipe
// (--remote-debugging-pipe: fd 3 in, fd 4 out, NUL-separated JSON), so no
// port and no npm package are needed. Every child is killed on exit, and the
// whole run is bounded by RUN_TIMEOUT_MS. Exit 0 on success, 1 on failure.
import { spawn, execFileSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";

const RUN_TIMEOUT_MS = 120_000;
const KEYS = 10_000;
const PAGE_SIZE = 500;
const DISCONNECT_MS_MAX = 2000;
const TOKEN = "console-test-token";

const [tidemapBin, chromiumBin, workDir] = process.argv.slice(2);
if (!workDir) {
  console.error("usage: node console_test.mjs TIDEMAP_BIN CHROMIUM_BIN WORK_DIR");
  process.exit(2);
}

// ---- children and cleanup ----------------------------------------------------

const children = [];

function killAll() {
  for (const c of children) {
    if (c.exitCode !== null || c.signalCode !== null) continue;
    try {
      // Chromium runs in its own process group, with its helpers.
      if (c.group) process.kill(-c.pid, "SIGKILL");
      else c.kill("SIGKILL");
    } catch (e) {
      // already gone
    }
  }
}

process.on("exit", killAll);
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(signal, () => fail("stopped by " + signal));
}
const runTimer = setTimeout(() => fail("the run took over " + RUN_TIMEOUT_MS + " ms"),
                            RUN_TIMEOUT_MS);

function fail(message) {
  console.error("FAIL: " + message);
  for (const name of ["a.log", "b.log"]) {
    const file = path.join(workDir, name);
    if (fs.existsSync(file)) {
      console.error("---- " + name + " (last lines)");
      console.error(fs.readFileSync(file, "utf8").split("\n").slice(-20).join("\n"));
    }
  }
  process.exit(1);
}

function check(condition, message) {
  if (!condition) fail(message);
  console.log("ok: " + message);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitFor(what, timeoutMs, probe) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) fail("timed out after " + timeoutMs + " ms waiting for " + what);
    await sleep(50);
  }
}

// ---- nodes -------------------------------------------------------------------

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const port = server.address().port;
      server.close(() => resolve(port));
    });
  });
}

function initNode(name) {
  const dir = path.join(workDir, name);
  const out = execFileSync(tidemapBin, ["init", "--data", dir], { encoding: "utf8" });
  return { name, dir, publicKey: out.trim().split("\n").pop() };
}

function serve(node, peer, tokenFile) {
  const args = ["serve", "--data", node.dir, "--listen", "127.0.0.1:" + node.peerPort,
                "--http", "127.0.0.1:" + node.httpPort, "--peer", "127.0.0.1:" + peer.peerPort,
                "--trust", peer.publicKey, "--durability", "relaxed"];
  if (tokenFile) args.push("--http-token-file", tokenFile);
  const log = fs.openSync(path.join(workDir, node.name + ".log"), "w");
  const child = spawn(tidemapBin, args, { stdio: ["ignore", log, log] });
  children.push(child);
  node.child = child;
  node.url = "http://127.0.0.1:" + node.httpPort;
}

function api(node, pathAndQuery, init) {
  const headers = Object.assign({}, init && init.headers);
  if (node.token) headers.Authorization = "Bearer " + node.token;
  return fetch(node.url + pathAndQuery, Object.assign({}, init, { headers }));
}

async function waitHealthy(node) {
  await waitFor(node.name + " to answer /v1/health", 20_000, async () => {
    try {
      return (await api(node, "/v1/health")).ok;
    } catch (e) {
      return false;
    }
  });
}

async function loadKeys(node) {
  const started = Date.now();
  let next = 0;
  const worker = async () => {
    while (next < KEYS) {
      const i = next++;
      const key = "k" + String(i).padStart(5, "0");
      const res = await api(node, "/v1/maps/console/keys/" + key, { method: "PUT", body: "v" + i });
      if (!res.ok) fail("PUT " + key + ": " + res.status + " " + (await res.text()));
      await res.arrayBuffer();
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  console.log("loaded " + KEYS + " keys in " + (Date.now() - started) + " ms");
}

async function startCluster() {
  const a = initNode("a");
  const b = initNode("b");
  for (const n of [a, b]) {
    n.peerPort = await freePort();
    n.httpPort = await freePort();
  }
  const tokenFile = path.join(workDir, "token");
  fs.writeFileSync(tokenFile, TOKEN + "\n", { mode: 0o600 });
  serve(a, b, tokenFile);
  serve(b, a, null);
  a.token = TOKEN;
  await waitHealthy(a);
  await waitHealthy(b);
  return { a, b };
}

// ---- the console without a browser: what is public, what needs the token ----

async function checkServing(a) {
  const page = await fetch(a.url + "/ui");
  check(page.status === 200 && (await page.text()).includes("<title>tidemap console</title>"),
        "GET /ui answers the page without a token");
  const js = await fetch(a.url + "/ui/app.js");
  check(js.status === 200 && js.headers.get("content-type").startsWith("text/javascript"),
        "GET /ui/app.js is JavaScript");
  check(js.headers.get("content-security-policy").includes("default-src 'self'"),
        "the console's files carry a Content-Security-Policy");
  await js.arrayBuffer();
  const missing = await fetch(a.url + "/ui/nope.js");
  check(missing.status === 404, "GET /ui/nope.js is 404");
  await missing.arrayBuffer();
  const status = await fetch(a.url + "/v1/status");
  check(status.status === 401, "GET /v1/status without the token is still 401");
  await status.arrayBuffer();
  const watch = await fetch(a.url + "/v1/watch");
  check(watch.status === 401, "GET /v1/watch without the token is still 401");
  await watch.arrayBuffer();
}

// ---- Chromium over the DevTools protocol ---------------------------------------

class Browser {
  constructor() {
    const args = ["--headless=new", "--remote-debugging-pipe", "--disable-gpu",
                  "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                  "--user-data-dir=" + path.join(workDir, "chromium"), "--window-size=1400,1100",
                  "about:blank"];
    if (process.getuid && process.getuid() === 0) args.push("--no-sandbox");
    const log = fs.openSync(path.join(workDir, "chromium.log"), "w");
    this.child = spawn(chromiumBin, args,
                       { stdio: ["ignore", log, log, "pipe", "pipe"], detached: true });
    this.child.group = true;
    children.push(this.child);
    this.nextId = 1;
    this.pending = new Map();
    this.events = [];
    this.input = this.child.stdio[3];
    let buffer = "";
    this.child.stdio[4].on("data", (chunk) => {
      buffer += chunk.toString("utf8");
      let end;
      while ((end = buffer.indexOf("\0")) >= 0) {
        this.onMessage(JSON.parse(buffer.slice(0, end)));
        buffer = buffer.slice(end + 1);
      }
    });
    this.child.on("exit", () => {
      for (const { reject } of this.pending.values()) reject(new Error("chromium exited"));
    });
  }

  onMessage(msg) {
    if (msg.id !== undefined && this.pending.has(msg.id)) {
      const { resolve, reject, method } = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      if (msg.error) reject(new Error(method + ": " + msg.error.message));
      else resolve(msg.result);
    } else if (msg.method) {
      this.events.push(msg);
    }
  }

  send(method, params, sessionId) {
    const id = this.nextId++;
    const msg = { id, method, params: params || {} };
    if (sessionId) msg.sessionId = sessionId;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, method });
      this.input.write(JSON.stringify(msg) + "\0");
    });
  }

  async open(url) {
    const { targetId } = await this.send("Target.createTarget", { url: "about:blank" });
    const { sessionId } = await this.send("Target.attachToTarget", { targetId, flatten: true });
    this.session = sessionId;
    for (const domain of ["Page", "Runtime", "Log"]) await this.send(domain + ".enable", {}, sessionId);
    await this.send("Page.navigate", { url }, sessionId);
    await waitFor("the page to load", 30_000, () => this.events.some(
        (e) => e.method === "Page.loadEventFired" && e.sessionId === sessionId));
  }

  // The value of `expression` in the page (awaited when it is a promise).
  async eval(expression) {
    const r = await this.send("Runtime.evaluate",
                              { expression, awaitPromise: true, returnByValue: true },
                              this.session);
    if (r.exceptionDetails) {
      fail("page script failed: " + expression + ": " + JSON.stringify(r.exceptionDetails));
    }
    return r.result.value;
  }

  // Uncaught exceptions and script or security errors the page logged.
  pageErrors() {
    return this.events
      .filter((e) => e.method === "Runtime.exceptionThrown" ||
              (e.method === "Log.entryAdded" && e.params.entry.level === "error" &&
               ["javascript", "security"].includes(e.params.entry.source)))
      .map((e) => JSON.stringify(e.params));
  }

  async screenshot(file) {
    const { data } = await this.send("Page.captureScreenshot", { format: "png" }, this.session);
    fs.writeFileSync(file, Buffer.from(data, "base64"));
  }
}

// ---- the checks through the page ---------------------------------------------

const text = (id) => `document.getElementById(${JSON.stringify(id)})?.textContent`;

async function checkToken(browser, a) {
  await waitFor("the page to ask for the token", 30_000,
                () => browser.eval(text("conn") + ' === "token needed"'));
  check(true, "without a token the page says it needs one");
  await browser.eval(`(() => {
      document.getElementById("token").value = ${JSON.stringify(TOKEN)};
      document.getElementById("token-form").requestSubmit();
    })()`);
  const status = await (await api(a, "/v1/status")).json();
  await waitFor("the node panel", 15_000,
                () => browser.eval(text("node-id") + " === " + JSON.stringify(status.node_id)));
  check(true, "with the token the page shows node " + status.node_id);
  check(await browser.eval(text("node-version")) === status.version,
        "the node panel shows the version " + status.version);
  check(await browser.eval(`sessionStorage.getItem("tidemap.token")`) === TOKEN,
        "the token is kept in sessionStorage");
}

async function checkFeed(browser, a) {
  await waitFor("the change feed to go live", 10_000,
                () => browser.eval(text("feed-state") + ' === "live"'));
  const res = await api(a, "/v1/maps/feed/keys/hello", { method: "PUT", body: "world" });
  check(res.ok, "PUT feed/hello");
  await res.arrayBuffer();
  await waitFor("the change in the feed", 5_000, () => browser.eval(
      `[...document.querySelectorAll("#feed tbody tr")].some(
          (tr) => tr.cells[2].textContent === "feed" && tr.cells[3].textContent === "hello")`));
  check(true, "the change feed shows the put of feed/hello");
}

// After a burst of 10,000 puts the feed holds its newest 200 changes, the
// newest on top.
async function checkFeedKeepsUp(browser, a) {
  const status = await (await api(a, "/v1/status")).json();
  const last = status.oplog.last_seq;
  const feedTop = `(() => {
      const rows = document.querySelectorAll("#feed tbody tr");
      return rows.length + "/" + (rows.length ? rows[0].cells[0].textContent : "");
    })()`;
  await waitFor("the feed to show seq " + last, 15_000,
                async () => (await browser.eval(feedTop)) === "200/" + last);
  check(true, "after the burst the feed shows the newest 200 changes, seq " + last + " on top");
}

const peerState = (key) => `(() => {
    const row = document.querySelector('#peers tbody tr[data-peer=${JSON.stringify(key)}]');
    return row ? row.dataset.connected + "/" + row.cells[2].textContent : "missing";
  })()`;

async function checkDisconnect(browser, b) {
  await waitFor("peer B shown connected", 20_000,
                async () => (await browser.eval(peerState(b.publicKey))) === "true/connected");
  check(true, "the peers table shows B connected");
  b.child.kill("SIGKILL");
  const killed = Date.now();
  await waitFor("peer B shown disconnected", 10_000, async () =>
    (await browser.eval(peerState(b.publicKey))) === "false/disconnected");
  const elapsed = Date.now() - killed;
  check(elapsed <= DISCONNECT_MS_MAX,
        "the peers table shows B disconnected " + elapsed + " ms after the kill (at most " +
        DISCONNECT_MS_MAX + ")");
}

const rangeOf = `(() => {
    const r = document.getElementById("range").dataset;
    const rows = document.querySelectorAll("#keys tbody tr");
    return { busy: document.getElementById("keys").hasAttribute("aria-busy"),
             first: Number(r.first), last: Number(r.last), end: r.end === "true",
             rows: rows.length, lastKey: rows.length ? rows[rows.length - 1].cells[0].textContent : "",
             next: !document.getElementById("next").disabled };
  })()`;

async function waitPage(browser, last) {
  return waitFor("a page after key " + last, 10_000, async () => {
    const r = await browser.eval(rangeOf);
    return !r.busy && r.last > last ? r : null;
  });
}

async function checkPaging(browser) {
  await browser.eval(`(() => {
      document.getElementById("map").value = "console";
      document.getElementById("limit").value = "${PAGE_SIZE}";
      document.getElementById("browse-form").requestSubmit();
    })()`);
  let r = await waitPage(browser, 0);
  let pages = 1;
  let seen = r.rows;
  let previousLast = "";
  while (r.next) {
    check(r.first === seen - r.rows + 1 && r.lastKey > previousLast, "page " + pages +
          " holds keys " + r.first + "–" + r.last + " (last " + r.lastKey + ")");
    previousLast = r.lastKey;
    await browser.eval(`document.getElementById("next").click()`);
    r = await waitPage(browser, r.last);
    pages++;
    seen += r.rows;
  }
  check(pages === KEYS / PAGE_SIZE && seen === KEYS && r.last === KEYS && r.end,
        "the key browser paged through " + seen + " keys in " + pages + " pages");
  check(r.lastKey === "k" + String(KEYS - 1).padStart(5, "0"), "the last key is " + r.lastKey);
  await browser.eval(`document.getElementById("prev").click()`);
  r = await waitFor("the previous page", 10_000, async () => {
    const p = await browser.eval(rangeOf);
    return !p.busy && p.last === KEYS - PAGE_SIZE ? p : null;
  });
  check(r.first === KEYS - 2 * PAGE_SIZE + 1 && r.next, "Previous goes back one page");
}

async function main() {
  fs.rmSync(workDir, { recursive: true, force: true });
  fs.mkdirSync(workDir, { recursive: true });
  const { a, b } = await startCluster();
  await checkServing(a);
  const browser = new Browser();
  await browser.open(a.url + "/ui");
  await checkToken(browser, a);
  await checkFeed(browser, a);
  await loadKeys(a);
  await checkFeedKeepsUp(browser, a);
  await checkDisconnect(browser, b);
  await checkPaging(browser);
  const shot = path.join(workDir, "console.png");
  await browser.screenshot(shot);
  check(fs.statSync(shot).size > 10_000, "screenshot saved to " + shot);
  const errors = browser.pageErrors();
  check(errors.length === 0, "the page logged no script or security errors" +
        (errors.length ? ":\n" + errors.join("\n") : ""));
  clearTimeout(runTimer);
  killAll();
  console.log("PASS");
}

main().catch((err) => fail(err.stack || String(err)));
