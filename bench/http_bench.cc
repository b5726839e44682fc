// The served write path against the engine: POST /v1/batch with 1,000 puts
// (NDJSON, the values base64-encoded so the node stores exactly the bytes
// BM_ReplicaBatchPut1000 writes in process) to an HttpServer in this process
// over a relaxed replica, from one keep-alive client on loopback. Items are
// logical writes, as in bench/replica_bench.cc, so bench/main.cc's ratio
// http_batch_put_vs_in_process_batch compares the two directly. The client's
// bodies are built before the timed loop; parsing them is the server's work.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "bench/cpu.h"
#include "bench/workload.h"
#include <tidemap/base/clock.h>
#include <tidemap/base/crypto.h>
#include <tidemap/replica/replica.h>
#include <tidemap/server/http.h>

namespace tidemap {
namespace {

using bench::KeyString;
using bench::kMap;
using bench::kPayloadBytes;
using bench::TempDir;
using bench::TheValues;

constexpr uint64_t kNodeId = 0x7469'6465'6d61'7002;
constexpr int64_t kOps = 1000;
// As BM_ReplicaBatchPut1000: TIDEMAP_BENCH_PUT_WRITES logical writes per repetition.
const int64_t kBatches = static_cast<int64_t>(
    bench::CountFromEnv("TIDEMAP_BENCH_PUT_WRITES", 100'000, 1000, 10'000'000) / kOps);

// The NDJSON body of logical writes [first, first + kOps).
std::string BatchBody(uint64_t first) {
  std::string body;
  for (uint64_t i = first; i < first + kOps; ++i) {
    body += R"({"op":"put","map":")";
    body += kMap;
    body += R"(","key":")";
    body += KeyString(i);
    body += R"(","value_base64":")";
    body += crypto::Base64Encode(TheValues().At(i));
    body += "\"}\n";
  }
  return body;
}

// One keep-alive HTTP/1.1 connection; Post returns the status code (0 on
// a socket error) after reading the whole response.
class Client {
 public:
  explicit Client(uint16_t port) : fd_(socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd_ >= 0 && connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      close(fd_);
      fd_ = -1;
    }
  }
  ~Client() {
    if (fd_ >= 0) close(fd_);
  }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  int Post(std::string_view target, std::string_view body) {
    if (fd_ < 0) return 0;
    std::string req = "POST " + std::string(target) +
                      " HTTP/1.1\r\nHost: bench\r\nContent-Type: application/x-ndjson\r\n"
                      "Content-Length: " +
                      std::to_string(body.size()) + "\r\n\r\n";
    req += body;
    for (std::string_view rest = req; !rest.empty();) {
      const ssize_t n = send(fd_, rest.data(), rest.size(), MSG_NOSIGNAL);
      if (n <= 0) return 0;
      rest.remove_prefix(static_cast<size_t>(n));
    }
    size_t head_end;
    while ((head_end = buf_.find("\r\n\r\n")) == std::string::npos) {
      if (!Read()) return 0;
    }
    const size_t cl = buf_.find("Content-Length: ");
    const size_t length =
        cl < head_end ? std::strtoull(buf_.c_str() + cl + 16, nullptr, 10) : size_t{0};
    while (buf_.size() < head_end + 4 + length) {
      if (!Read()) return 0;
    }
    const int status = buf_.size() > 12 ? std::atoi(buf_.c_str() + 9) : 0;
    buf_.erase(0, head_end + 4 + length);
    return status;
  }

 private:
  bool Read() {
    char chunk[65536];
    const ssize_t n = recv(fd_, chunk, sizeof(chunk), 0);
    if (n <= 0) return false;
    buf_.append(chunk, static_cast<size_t>(n));
    return true;
  }

  int fd_;
  std::string buf_;
};

void BM_HttpBatchPut1000(benchmark::State& state) {
  TempDir dir;
  SystemClock clock;
  ReplicaOptions o;
  o.path = dir.db();
  o.clock = &clock;
  o.node_id = kNodeId;
  o.durability = Durability::kRelaxed;
  bench::WriteBufferFromEnv(&o.write_buffer_bytes);
  auto replica = Replica::Open(std::move(o));
  if (!dir.ok() || !replica.ok()) {
    state.SkipWithError(replica.ok() ? "no temp dir" : replica.status().ToString().c_str());
    return;
  }
  HttpOptions options;
  options.listen = "127.0.0.1:0";
  auto server = HttpServer::Start(options, HttpContext{replica->get(), "bench", {}});
  if (!server.ok()) {
    state.SkipWithError(server.status().ToString().c_str());
    return;
  }
  std::vector<std::string> bodies;
  for (int64_t b = 0; b < kBatches; ++b)
    bodies.push_back(BatchBody(static_cast<uint64_t>(b * kOps)));
  Client client((*server)->port());
  size_t next = 0;
  const double cpu_before = bench::ProcessCpuSeconds();
  for (auto _ : state) {
    const int status = client.Post("/v1/batch", bodies[next++ % bodies.size()]);
    if (status != 200) {
      state.SkipWithError(("POST /v1/batch answered " + std::to_string(status)).c_str());
      break;
    }
  }
  state.SetItemsProcessed(state.iterations() * kOps);
  state.SetBytesProcessed(state.iterations() * kOps * kPayloadBytes);
  bench::SetCpuPerItem(state, cpu_before, state.iterations() * kOps);
  server->reset();
  replica->reset();
}
BENCHMARK(BM_HttpBatchPut1000)
    ->Iterations(kBatches)
    ->UseRealTime()
    ->Repetitions(7)
    ->DisplayAggregatesOnly();

}  // namespace
}  // namespace tidemap
