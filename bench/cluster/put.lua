-- wrk script of `make bench-cluster`: HTTP PUT of BENCH_VALUE-byte values
-- (default 100) under fresh keys, /v1/maps/bench/keys/PREFIX-THREAD-N, where
-- PREFIX is BENCH_PREFIX (one per run) and N counts each thread's requests.
-- done() prints one line, "wrk-result {json}", that scripts/bench-cluster.py
-- reads: requests, failures (socket errors and non-2xx answers), the run's
-- duration and the latency percentiles in microseconds.
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

function done(summary, latency, requests)
  local e = summary.errors
  local failures = e.connect + e.read + e.write + e.status + e.timeout
  io.write(string.format(
    'wrk-result {"requests":%d,"failures":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, failures, summary.duration,
    latency:percentile(50), latency:percentile(99)))
end
