#include "tools/import.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tools/cli.h"
#include <tidemap/server/batch.h>
#include <tidemap/server/data_dir.h>
#include <tidemap/server/http_client.h>

namespace tidemap {

namespace {

// A chunk is sent once it holds chunk_ops ops or this many bytes, well
// within the default batch limits (10,000 ops, 64 MiB).
constexpr size_t kChunkBytesMax = size_t{8} << 20;
constexpr auto kRedrawEvery = std::chrono::milliseconds(100);
constexpr auto kPlainLineEvery = std::chrono::seconds(5);
constexpr int kBarWidth = 30;

// Where the chunks go: a node over HTTP, or a data dir opened here.
class Sink {
 public:
  virtual ~Sink() = default;
  // Writes one NDJSON chunk as one batch. On failure `op` may name the
  // chunk's op at fault (0-based).
  virtual Status Send(const std::string& ndjson, std::optional<size_t>* op) = 0;
};

class HttpSink : public Sink {
 public:
  explicit HttpSink(HttpClientOptions options) : options_(std::move(options)) {}
  Status Send(const std::string& ndjson, std::optional<size_t>* op) override {
    TIDEMAP_ASSIGN_OR_RETURN(
        HttpReply reply, HttpCall(options_, "POST", "/v1/batch", ndjson, "application/x-ndjson"));
    const Status s = ReplyStatus(reply);
    if (!s.ok()) {
      const auto j = nlohmann::json::parse(reply.body, nullptr, /*allow_exceptions=*/false);
      if (j.is_object() && j.contains("op") && j["op"].is_number_unsigned()) {
        *op = j["op"].get<size_t>();
      }
    }
    return s;
  }

 private:
  const HttpClientOptions options_;
};

class DirSink : public Sink {
 public:
  explicit DirSink(std::unique_ptr<DataDir> dir) : dir_(std::move(dir)) {}
  Status Send(const std::string& ndjson, std::optional<size_t>* op) override {
    Replica& replica = dir_->replica();
    ParsedBatch parsed = ParseBatch(ndjson, BatchFormat::kNdjson, replica.limits());
    if (parsed.error.has_value()) {
      *op = parsed.error->op;
      return parsed.error->status;
    }
    return replica.Write(parsed.batch).status();
  }

 private:
  std::unique_ptr<DataDir> dir_;
};

// Progress on stderr: a bar redrawn in place on a terminal (ops and rate
// alone when the input's size is unknown), else a plain line now and then.
class Progress {
 public:
  Progress(uint64_t total_bytes, bool quiet)
      : total_(total_bytes), tty_(isatty(STDERR_FILENO) != 0), quiet_(quiet) {}

  void Update(uint64_t bytes, uint64_t ops, bool final = false) {
    if (quiet_) return;
    const auto now = std::chrono::steady_clock::now();
    if (!final && now - last_ < (tty_ ? kRedrawEvery : kPlainLineEvery)) return;
    last_ = now;
    const double secs = std::chrono::duration<double>(now - start_).count();
    const double rate = secs > 0 ? static_cast<double>(ops) / secs : 0;
    std::string text;
    if (total_ > 0) {
      const double frac = std::min(1.0, static_cast<double>(bytes) / static_cast<double>(total_));
      if (tty_) {
        const int filled = static_cast<int>(frac * kBarWidth);
        text = "[" + std::string(static_cast<size_t>(filled), '#') +
               std::string(static_cast<size_t>(kBarWidth - filled), '.') + "] ";
      }
      text += std::to_string(static_cast<int>(frac * 100)) + "%  ";
    }
    text += std::to_string(ops) + " ops  " + std::to_string(static_cast<uint64_t>(rate)) + " ops/s";
    if (tty_) {
      std::fprintf(stderr, "\r%s\033[K%s", text.c_str(), final ? "\n" : "");
    } else if (!final) {
      std::fprintf(stderr, "import: %s\n", text.c_str());
    }
    std::fflush(stderr);
  }

  double Seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  const uint64_t total_;
  const bool tty_, quiet_;
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_ = start_;
};

Result<std::unique_ptr<Sink>> OpenSink(const Target& target) {
  if (target.is_http()) return std::unique_ptr<Sink>(new HttpSink(target.Client()));
  if (target.data_dir.empty()) return Target::Missing();
  DataDirOptions options;
  TIDEMAP_ASSIGN_OR_RETURN(options.value_key, target.keys.Source(target.data_dir));
  TIDEMAP_ASSIGN_OR_RETURN(std::unique_ptr<DataDir> dir, DataDir::Open(target.data_dir, options));
  return std::unique_ptr<Sink>(new DirSink(std::move(dir)));
}

// The ops of one chunk and the file's line number of each.
struct Chunk {
  std::string ndjson;
  std::vector<uint64_t> lines;
};

}  // namespace

void AddImportCommand(CLI::App* app, ImportArgs* a) {
  CLI::App* cmd = app->add_subcommand(
      "import",
      "write the ops of an NDJSON file (one {\"op\",\"map\",\"key\",\"value\"} a line, "
      "as POST /v1/batch takes them) in atomic batches, with a progress bar");
  a->command = cmd;
  a->target.AddTo(cmd);
  cmd->add_option("FILE", a->file, "the NDJSON file, or - to read stdin")->required();
  cmd->add_option("--batch", a->chunk_ops, "ops per batch (1..10000, default 1000)")
      ->check(CLI::Range(1, 10000));
  cmd->add_flag("--quiet", a->quiet, "no progress on stderr");
}

int RunImport(const ImportArgs& a) {
  std::ifstream file;
  std::istream* in = &std::cin;
  uint64_t total = 0;
  if (a.file != "-") {
    file.open(a.file, std::ios::binary);
    if (!file) return Fail(Status::InvalidArgument("cannot read " + a.file));
    std::error_code ec;
    total = std::filesystem::file_size(a.file, ec);
    if (ec) total = 0;
    in = &file;
  }
  Result<std::unique_ptr<Sink>> opened = OpenSink(a.target);
  if (!opened.ok()) return Fail(opened.status());
  std::unique_ptr<Sink> sink = std::move(opened).value();
  Progress progress(total, a.quiet);
  uint64_t ops = 0, bytes = 0, line_no = 0, batches = 0;
  Chunk chunk;
  auto flush = [&]() -> Status {
    if (chunk.lines.empty()) return Status::Ok();
    std::optional<size_t> op;
    const Status s = sink->Send(chunk.ndjson, &op);
    if (!s.ok()) {
      const uint64_t line =
          op.has_value() && *op < chunk.lines.size() ? chunk.lines[*op] : chunk.lines.front();
      const std::string written = ops == 0
                                      ? std::string("nothing was written")
                                      : "the " + std::to_string(ops) + " ops before line " +
                                            std::to_string(chunk.lines.front()) + " were written";
      return s.WithContext(a.file + " line " + std::to_string(line) + " (" + written + ")");
    }
    ops += chunk.lines.size();
    ++batches;
    chunk = Chunk{};
    progress.Update(bytes, ops);
    return Status::Ok();
  };
  for (std::string line; std::getline(*in, line);) {
    ++line_no;
    bytes += line.size() + 1;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    chunk.ndjson += line;
    chunk.ndjson += '\n';
    chunk.lines.push_back(line_no);
    if (chunk.lines.size() >= a.chunk_ops || chunk.ndjson.size() >= kChunkBytesMax) {
      if (Status s = flush(); !s.ok()) return Fail(s);
    }
  }
  if (in->bad()) return Fail(Status::Unavailable("reading " + a.file + " failed"));
  if (Status s = flush(); !s.ok()) return Fail(s);
  progress.Update(bytes, ops, /*final=*/true);
  std::printf("imported %llu ops in %llu %s (%.1f s)\n", static_cast<unsigned long long>(ops),
              static_cast<unsigned long long>(batches), batches == 1 ? "batch" : "batches",
              progress.Seconds());
  return kExitOk;
}

}  // namespace tidemap
