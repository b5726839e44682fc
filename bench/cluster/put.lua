-- wrk script of `make bench-cluster`: HTTP PUT of BENCH_VALUE-byte values
-- (default 100) under fresh keys, /v1/maps/bench/keys/PREFIX-THREAD-N, where
-- PREFIX is BENCH_PREFIX (one per run) and N counts each thread's requests.
-- done() prints one line, "wrk-result {json}", that scripts/bench-cluster.py
-- reads: requests, failures (socket errors and non-2xx answers), the run's
-- duration and the latency percentiles in microseconds.
--
-- Paced: with BENCH_RATE_PER_THREAD set (requests per second, > 0), each wrk
-- thread sends at most that many requests a second, spread over its
-- connections: delay() gives each request the next free slot of the thread's
-- schedule (slots 1/rate apart, on the monotonic clock through LuaJIT's FFI),
-- so a connection waits for its slot instead of sending on its previous
-- answer. A thread that falls behind catches up by at most kBacklogMs of
-- slots, not in one burst. wrk's timers count whole milliseconds: requests
-- leave in small bursts at most a millisecond apart.
local prefix = os.getenv("BENCH_PREFIX") or "k"
local value = string.rep("v", tonumber(os.getenv("BENCH_VALUE") or "100"))
local headers = { ["Content-Type"] = "application/octet-stream" }
local threads = 0
local counter = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

function request()
  counter = counter + 1
  local path = "/v1/maps/bench/keys/" .. prefix .. "-" .. thread_id .. "-" .. counter
  return wrk.format("PUT", path, headers, value)
end

local rate = tonumber(os.getenv("BENCH_RATE_PER_THREAD") or "")
if rate ~= nil and rate > 0 then
  local ffi = require("ffi")
  ffi.cdef [[
    typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
    int clock_gettime(int clock_id, bench_timespec* ts);
  ]]
  local CLOCK_MONOTONIC = 1
  local kBacklogMs = 50
  local ts = ffi.new("bench_timespec")
  local interval_ms = 1000 / rate
  local next_slot_ms = nil

  local function now_ms()
    ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
  end

  function delay()
    local now = now_ms()
    if next_slot_ms == nil or next_slot_ms < now - kBacklogMs then next_slot_ms = now end
    local slot = next_slot_ms
    next_slot_ms = next_slot_ms + interval_ms
    if slot <= now then return 0 end
    return math.floor(slot - now)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local failures = e.connect + e.read + e.write + e.status + e.timeout
  io.write(string.format(
    'wrk-result {"requests":%d,"failures":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, failures, summary.duration,
    latency:percentile(50), latency:percentile(99)))
end
