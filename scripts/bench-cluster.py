#!/usr/bin/env python3
"""The cluster benchmark of `make bench-cluster` (docs/benchmarks.md).

Starts real `tidemap serve` daemons on 127.0.0.1 (free ports, temp data dirs):
a pair A, B with mutual trust, and a chain A <- B <- C. wrk (with
bench/cluster/put.lua) drives HTTP PUT load at A: CLIENTS connections,
VALUE-byte values, fresh keys. When redis-server is installed, a Redis
primary + replica (AOF everysec for relaxed, appendfsync always for sync) is
driven by redis-benchmark with the same clients, value size and a key space
of 10^9, alternating run by run with the tidemap pair.

Per run: writes/s and latency percentiles from the load tool, CPU per write of
the serving node (a) and of its replica (b) from /proc/PID/stat (utime +
stime, from the start of the load until the replica holds every write), CPU
per write of the load tool itself (wrk or redis-benchmark, from the children's
rusage), and the replica lag p99. For tidemap the lag comes from probes: every
10 ms a separate client puts a key of map `probe` to A and a watch on the last
node of the chain (map `probe` only) sees it arrive; the lag is arrival minus
A's acknowledgement. The probes ride in the same oplog as the load, so they wait
behind it. For Redis it is sampled every 10 ms from the primary's
master_repl_offset and the replica's offset (INFO replication).

Paced phase (unless --no-paced): after each full-load run of the pair, a
second pair on fresh daemons takes PACED_SHARE (80%) of the writes/s that run
just reached, the same put.lua spreading each wrk thread's requests over time
(BENCH_RATE_PER_THREAD), and the same probes time the replica lag: a line
`cluster system=tidemap durability=... clients=... paced_writes_per_s=...
target_writes_per_s=... replica_lag_p99_ms=...` per run, then their medians.

Prints one `cluster ...` line per run (prefixed `run N/RUNS`) on the way, then
the median of every field per system and durability as `cluster ...` lines,
and `ratio http_put_vs_redis_set_{relaxed,sync} MEDIAN (min .., max .., n=..)`
over the per-pair ratios of writes/s. Every process it starts is stopped on
exit, failure or Ctrl-C, and the temp dir removed.
"""
import argparse
import http.client
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
HERE = os.path.dirname(os.path.abspath(__file__))
LUA = os.path.join(HERE, "..", "bench", "cluster", "put.lua")
PROBE_INTERVAL_S = 0.010
PACED_SHARE = 0.8
CATCH_UP_TIMEOUT_S = 120.0

children = []  # every process started, stopped by stop_all()


def stop_all():
    for p in children:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + 10
    for p in children:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    children.clear()


def start(args, log_path):
    with open(log_path, "ab") as log:
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    children.append(p)
    return p


def stop(p):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    children.remove(p)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_s(pid):
    """User + system CPU seconds of process `pid` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children_cpu_s():
    """CPU seconds (user + system) of every child process waited for so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def wait_until(what, timeout_s, fn, interval_s=0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if fn():
            return
        time.sleep(interval_s)
    raise RuntimeError(f"timed out after {timeout_s} s waiting for {what}")


def percentile(values, pct):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(pct / 100 * len(s) + 0.5)) - 1))]


# --- tidemap ---------------------------------------------------------------


class Node:
    def __init__(self, binary, root, name):
        self.binary, self.name = binary, name
        self.dir = os.path.join(root, name)
        out = subprocess.run([binary, "init", "--data", self.dir], check=True,
                             capture_output=True, text=True).stdout
        self.public_key = out.strip().splitlines()[-1]
        self.port, self.http_port = free_port(), free_port()
        self.process = None

    def serve(self, durability, peers, trusted, log_path):
        args = [self.binary, "serve", "--data", self.dir, "--durability", durability,
                "--listen", f"127.0.0.1:{self.port}", "--http", f"127.0.0.1:{self.http_port}",
                "--log-level", "warn"]
        for p in peers:
            args += ["--peer", f"127.0.0.1:{p.port}"]
        for t in trusted:
            args += ["--trust", t.public_key]
        self.process = start(args, log_path)

    def status(self):
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=5)
            c.request("GET", "/v1/status")
            r = c.getresponse()
            body = r.read()
            c.close()
            return json.loads(body) if r.status == 200 else None
        except (OSError, ValueError, http.client.HTTPException):
            return None

    def connected_to(self, other):
        s = self.status()
        return s is not None and any(p.get("public_key") == other.public_key and p.get("connected")
                                     for p in s.get("peers", []))


class Probes:
    """Puts map `probe` keys to `src` every 10 ms; a watch on `dst` times their arrival."""

    def __init__(self, src, dst):
        self.src, self.dst = src, dst
        self.acked, self.arrived = {}, {}
        self.stopping = threading.Event()
        self.watch_ready = threading.Event()
        self.watch_conn = None
        self.threads = [threading.Thread(target=self._watch, daemon=True),
                        threading.Thread(target=self._put, daemon=True)]

    def start(self):
        self.threads[0].start()
        if not self.watch_ready.wait(10):
            raise RuntimeError("the probe watch did not start")
        self.threads[1].start()

    def _watch(self):
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.dst.http_port, timeout=None)
            self.watch_conn = c
            c.request("GET", "/v1/watch?map=probe")
            r = c.getresponse()
            self.watch_ready.set()
            for line in r:
                if line.startswith(b"data: "):
                    key = json.loads(line[6:]).get("key")
                    if key is not None:
                        self.arrived.setdefault(key, time.monotonic())
        except (OSError, ValueError, http.client.HTTPException):
            pass  # closed by finish()

    def _put(self):
        c = http.client.HTTPConnection("127.0.0.1", self.src.http_port, timeout=30)
        n = 0
        while not self.stopping.is_set():
            n += 1
            key = f"p{n}"
            try:
                c.request("PUT", f"/v1/maps/probe/keys/{key}", body=b"x")
                r = c.getresponse()
                r.read()
            except (OSError, http.client.HTTPException):
                return  # the node is going: an interrupted run
            if r.status // 100 == 2:
                self.acked[key] = time.monotonic()
            self.stopping.wait(PROBE_INTERVAL_S)
        c.close()

    def stop_putting(self):
        self.stopping.set()
        self.threads[1].join()

    def lag_p99_ms(self, timeout_s):
        """Waits for every acknowledged probe to arrive (up to timeout_s), closes the watch."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(k not in self.arrived for k in self.acked):
            time.sleep(0.05)
        now = time.monotonic()
        lags = [max(0.0, self.arrived.get(k, now) - t) * 1000 for k, t in self.acked.items()]
        try:
            self.watch_conn.sock.shutdown(socket.SHUT_RDWR)
        except (OSError, AttributeError):
            pass
        return percentile(lags, 99)


def run_wrk(url, args, prefix, rate=None):
    """wrk with put.lua at full speed, or with `rate` writes/s over all its threads."""
    env = dict(os.environ, BENCH_PREFIX=prefix, BENCH_VALUE=str(args.value))
    if rate is not None:
        env["BENCH_RATE_PER_THREAD"] = f"{rate / args.wrk_threads:.3f}"
    cmd = ["wrk", f"-t{args.wrk_threads}", f"-c{args.clients}", f"-d{args.duration}s",
           "--timeout", "10s", "-s", LUA, url]
    cpu0 = children_cpu_s()
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("wrk-result "):
            w = json.loads(line[len("wrk-result "):])
            w["client_cpu_s"] = children_cpu_s() - cpu0
            return w
    raise RuntimeError("wrk printed no result:\n" + out)


def tidemap_run(args, durability, chain, run_id, root, rate=None):
    """One run on fresh daemons: a pair (chain=False) or a chain of three; wrk
    at full speed, or paced at `rate` writes/s."""
    os.makedirs(root)
    names = ["a", "b", "c"] if chain else ["a", "b"]
    nodes = [Node(args.tidemap, root, n) for n in names]
    try:
        for i, n in enumerate(nodes):  # each dials the one before it
            peers = [nodes[i - 1]] if i > 0 else []
            trusted = [m for m in (nodes[i - 1:i] + nodes[i + 1:i + 2])]
            n.serve(durability, peers, trusted, os.path.join(root, n.name + ".log"))
        for n in nodes:
            wait_until(f"{n.name}'s HTTP API", 30, lambda n=n: n.status() is not None)
        for x, y in zip(nodes, nodes[1:]):
            wait_until(f"{y.name} connected to {x.name}", 30, lambda x=x, y=y: y.connected_to(x))
        a, b, last = nodes[0], nodes[1], nodes[-1]
        probes = Probes(a, last)
        probes.start()
        cpu0 = [cpu_s(n.process.pid) for n in nodes]
        w = run_wrk(f"http://127.0.0.1:{a.http_port}", args, f"r{run_id}", rate)
        cpu_a = cpu_s(a.process.pid) - cpu0[0]
        probes.stop_putting()
        keys = lambda n: (n.status() or {}).get("keys", -1)
        want = keys(a)
        wait_until("the replicas to catch up", CATCH_UP_TIMEOUT_S,
                   lambda: all(keys(n) >= want for n in nodes[1:]), 0.02)
        cpu_b = cpu_s(b.process.pid) - cpu0[1]
        lag = probes.lag_p99_ms(10)
        return result_of(w, cpu_a, cpu_b, lag)
    finally:
        for n in nodes:
            if n.process is not None:
                stop(n.process)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def result_of(w, cpu_a_s, cpu_b_s, lag_ms):
    writes = w["requests"] - w["failures"]
    if w["failures"] or writes <= 0:
        raise RuntimeError(f"the load had failures: {w}")
    return {"writes_per_s": writes / (w["duration_us"] / 1e6),
            "p50_ms": w["p50_us"] / 1000, "p99_ms": w["p99_us"] / 1000,
            "cpu_us_per_write_a": cpu_a_s * 1e6 / writes,
            "cpu_us_per_write_b": cpu_b_s * 1e6 / writes,
            "cpu_us_per_write_client": w["client_cpu_s"] * 1e6 / writes,
            "replica_lag_p99_ms": lag_ms}


# --- Redis -----------------------------------------------------------------


def redis_info(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"*2\r\n$4\r\nINFO\r\n$11\r\nreplication\r\n")
        data = b""
        while b"\r\n" not in data:
            data += s.recv(65536)
        size = int(data[1:data.index(b"\r\n")])
        header = data.index(b"\r\n") + 2
        while len(data) < header + size:
            data += s.recv(65536)
    text = data[header:header + size].decode()
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


class OffsetSampler:
    """Samples the primary's and the replica's replication offsets every 10 ms."""

    def __init__(self, primary, replica):
        self.ports = (primary, replica)
        self.samples = ([], [])
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self.stopping.is_set():
            for i, key in ((0, "master_repl_offset"), (1, "slave_repl_offset")):
                try:
                    info = redis_info(self.ports[i])
                except (OSError, ValueError):
                    return  # the servers are going: an interrupted run
                self.samples[i].append((time.monotonic(), int(info.get(key, "0"))))
            self.stopping.wait(PROBE_INTERVAL_S)

    def lag_p99_ms(self, end):
        """Over the primary's samples up to `end`: when the replica first reached each offset."""
        self.stopping.set()
        self.thread.join()
        replica = self.samples[1]
        lags, j = [], 0
        for t, off in self.samples[0]:
            if t > end:
                break
            while j < len(replica) and (replica[j][1] < off or replica[j][0] < t):
                j += 1
            lags.append(((replica[j][0] if j < len(replica) else time.monotonic()) - t) * 1000)
        return percentile(lags, 99)


def redis_run(args, durability, root, rate_hint):
    os.makedirs(root)
    fsync = "always" if durability == "sync" else "everysec"
    ports = (free_port(), free_port())
    procs = []
    try:
        for i, port in enumerate(ports):
            d = os.path.join(root, f"r{i}")
            os.makedirs(d)
            cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", d,
                   "--save", "", "--appendonly", "yes", "--appendfsync", fsync,
                   "--daemonize", "no", "--loglevel", "warning"]
            if i == 1:
                cmd += ["--replicaof", "127.0.0.1", str(ports[0])]
            procs.append(start(cmd, os.path.join(root, f"redis{i}.log")))
            wait_until(f"redis {port}", 30, lambda p=port: _redis_up(p))
        wait_until("the Redis replica's link", 30,
                   lambda: redis_info(ports[1]).get("master_link_status") == "up")
        sampler = OffsetSampler(*ports)
        sampler.thread.start()
        cpu0 = [cpu_s(p.pid) for p in procs]
        requests = max(10000, int(rate_hint * args.duration))
        cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(ports[0]), "-c", str(args.clients),
               "-d", str(args.value), "-r", "1000000000", "-t", "set", "-n", str(requests), "-P",
               "1", "--csv"]
        t0, client0 = time.monotonic(), children_cpu_s()
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        end, client_cpu_s = time.monotonic(), children_cpu_s() - client0
        cpu_a = cpu_s(procs[0].pid) - cpu0[0]
        primary_off = redis_info(ports[0])["master_repl_offset"]
        wait_until("the Redis replica to catch up", CATCH_UP_TIMEOUT_S,
                   lambda: redis_info(ports[1]).get("slave_repl_offset") == primary_off, 0.02)
        cpu_b = cpu_s(procs[1].pid) - cpu0[1]
        lag = sampler.lag_p99_ms(end)
        row = [line for line in out.splitlines() if line.startswith('"SET"')][0]
        cols = [c.strip('"') for c in row.split(",")]
        # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms",...
        w = {"requests": requests, "failures": 0, "duration_us": int((end - t0) * 1e6),
             "p50_us": float(cols[4]) * 1000, "p99_us": float(cols[6]) * 1000,
             "client_cpu_s": client_cpu_s}
        res = result_of(w, cpu_a, cpu_b, lag)
        res["writes_per_s"] = float(cols[1])  # its own clock, without the start-up
        return res
    finally:
        for p in procs:
            stop(p)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def _redis_up(port):
    try:
        redis_info(port)
        return True
    except (OSError, ValueError):
        return False


# --- report ----------------------------------------------------------------

FIELDS = ["writes_per_s", "p50_ms", "p99_ms", "cpu_us_per_write_a", "cpu_us_per_write_b",
          "cpu_us_per_write_client", "replica_lag_p99_ms"]


def line(system, durability, args, r):
    def fmt(k):
        return f"{r[k]:.0f}" if k == "writes_per_s" else f"{r[k]:.2f}"
    return (f"cluster system={system} durability={durability} clients={args.clients} "
            f"value={args.value} " + " ".join(f"{k}={fmt(k)}" for k in FIELDS))


def paced_line(durability, args, r, target):
    return (f"cluster system=tidemap durability={durability} clients={args.clients} "
            f"paced_writes_per_s={r['writes_per_s']:.0f} target_writes_per_s={target:.0f} "
            f"replica_lag_p99_ms={r['replica_lag_p99_ms']:.2f}")


def median_of(results):
    return {k: statistics.median(r[k] for r in results) for k in FIELDS}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tidemap", required=True, help="the tidemap executable")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--duration", type=int, default=6, help="seconds of load per run")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--value", type=int, default=100)
    ap.add_argument("--wrk-threads", type=int, default=2)
    ap.add_argument("--durability", default="relaxed,sync")
    ap.add_argument("--no-chain", action="store_true", help="skip the chain of three")
    ap.add_argument("--no-redis", action="store_true", help="skip Redis even when installed")
    ap.add_argument("--no-paced", action="store_true",
                    help=f"skip the paced runs at {PACED_SHARE:.0%} of the full-load rate")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data)")
    args = ap.parse_args()
    redis = not args.no_redis and shutil.which("redis-server") and shutil.which("redis-benchmark")
    if not redis:
        print("bench-cluster: redis-server not installed (or --no-redis): tidemap only", flush=True)
    root = tempfile.mkdtemp(prefix="tidemap-bench-cluster-")
    print(f"bench-cluster: {os.cpu_count()} cores, temp dir {root}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ratios, medians = {}, []
    try:
        for durability in args.durability.split(","):
            tm, rd, paced = [], [], []
            for i in range(1, args.runs + 1):
                tm.append(tidemap_run(args, durability, False, f"{durability}{i}",
                                      os.path.join(root, f"tidemap-{durability}-{i}")))
                print(f"run {i}/{args.runs} " + line("tidemap", durability, args, tm[-1]), flush=True)
                if not args.no_paced:
                    target = PACED_SHARE * tm[-1]["writes_per_s"]
                    paced.append((tidemap_run(args, durability, False, f"{durability}{i}p",
                                              os.path.join(root, f"paced-{durability}-{i}"),
                                              target), target))
                    print(f"run {i}/{args.runs} " + paced_line(durability, args, *paced[-1]),
                          flush=True)
                if redis:
                    hint = rd[-1]["writes_per_s"] if rd else tm[-1]["writes_per_s"] * 2
                    rd.append(redis_run(args, durability, os.path.join(root, f"redis-{durability}-{i}"),
                                        hint))
                    print(f"run {i}/{args.runs} " + line("redis", durability, args, rd[-1]), flush=True)
            medians.append(line("tidemap", durability, args, median_of(tm)))
            if paced:
                medians.append(paced_line(
                    durability, args, median_of([r for r, _ in paced]),
                    statistics.median(t for _, t in paced)))
            if redis:
                medians.append(line("redis", durability, args, median_of(rd)))
                ratios[durability] = [t["writes_per_s"] / r["writes_per_s"] for t, r in zip(tm, rd)]
            if not args.no_chain:
                c = tidemap_run(args, durability, True, f"{durability}c",
                                os.path.join(root, f"chain-{durability}"))
                medians.append(line("tidemap-chain3", durability, args, c))
                print("run 1/1 " + medians[-1], flush=True)
        for m in medians:
            print(m)
        for durability, rs in ratios.items():
            print(f"ratio http_put_vs_redis_set_{durability} {statistics.median(rs):.2f} "
                  f"(min {min(rs):.2f}, max {max(rs):.2f}, n={len(rs)})")
    except KeyboardInterrupt:
        print("bench-cluster: interrupted", file=sys.stderr)
        return 130
    finally:
        stop_all()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
