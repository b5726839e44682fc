#include "tools/snapshot.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <utility>

#include "tools/cli.h"
#include <tidemap/base/clock.h>
#include <tidemap/server/data_dir.h>
#include <tidemap/server/http_client.h>
#include <tidemap/server/snapshot.h>

namespace tidemap {

namespace {

std::string Utc(uint64_t ms) {
  const std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

void PrintCounts(const SnapshotCounts& c) {
  const SnapshotHeader& h = c.header;
  std::printf("format       %u\nnode         %s\nincarnation  %s\nseq          %llu\n",
              h.format_version, NodeIdToString(h.node_id).c_str(),
              NodeIdToString(h.incarnation).c_str(), static_cast<unsigned long long>(h.seq));
  std::printf("created      %s\nrecords      %llu (%llu tombstones)\nwatermarks   %llu\n",
              Utc(h.created_ms).c_str(), static_cast<unsigned long long>(c.records),
              static_cast<unsigned long long>(c.tombstones),
              static_cast<unsigned long long>(c.watermarks));
  std::printf("bytes        %llu\n", static_cast<unsigned long long>(c.bytes));
}

// GET /v1/snapshot into FILE (through FILE.partial), then a verify pass for the counts.
Result<SnapshotCounts> ExportOverHttp(const SnapshotArgs& a) {
  const HttpClientOptions o = a.target.Client();
  const std::string partial = a.file + ".partial";
  std::FILE* f = std::fopen(partial.c_str(), "wb");
  if (f == nullptr)
    return Status::Unavailable("cannot open " + partial + ": " + std::strerror(errno));
  auto sink = [&](std::string_view bytes) {
    if (std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size()) {
      return Status::IOError("cannot write " + partial + ": " + std::strerror(errno));
    }
    return Status::Ok();
  };
  Result<HttpReply> reply = HttpGetStreamed(o, "/v1/snapshot", sink);
  Status s = reply.ok() ? ReplyStatus(*reply) : reply.status();
  if (std::fclose(f) != 0 && s.ok()) s = Status::IOError("cannot write " + partial);
  if (s.ok() && std::rename(partial.c_str(), a.file.c_str()) != 0) {
    s = Status::IOError("cannot rename " + partial + ": " + std::strerror(errno));
  }
  if (!s.ok()) {
    std::remove(partial.c_str());
    return s;
  }
  // The bytes as received: a node that sent a damaged file leaves none behind.
  Result<SnapshotCounts> counts = VerifySnapshotFile(a.file);
  if (!counts.ok()) std::remove(a.file.c_str());
  return counts;
}

int RunExport(const SnapshotArgs& a) {
  Result<SnapshotCounts> counts = Status::InvalidArgument("");
  if (a.target.is_http()) {
    counts = ExportOverHttp(a);
  } else if (!a.target.data_dir.empty()) {
    DataDirOptions options;
    options.read_only = true;
    auto key = a.target.keys.Source(a.target.data_dir);
    if (!key.ok()) return Fail(key.status());
    options.value_key = std::move(key).value();
    auto dir = DataDir::Open(a.target.data_dir, options);
    if (!dir.ok()) return Fail(dir.status());
    SystemClock clock;
    counts = ExportSnapshotFile((*dir)->replica(), clock.NowMillis(), a.file);
  } else {
    return Fail(Target::Missing());
  }
  if (!counts.ok()) return Fail(counts.status());
  std::printf("exported %s\n", a.file.c_str());
  PrintCounts(*counts);
  return kExitOk;
}

int RunVerify(const SnapshotArgs& a) {
  Result<SnapshotCounts> counts = VerifySnapshotFile(a.file);
  if (!counts.ok()) return Fail(counts.status());
  std::printf("snapshot %s\n", a.file.c_str());
  PrintCounts(*counts);
  std::printf("OK\n");
  return kExitOk;
}

int RunImportSnapshot(const SnapshotArgs& a) {
  DataDirOptions options;
  options.encrypt = a.encrypt;
  auto key = a.target.keys.Source(a.target.data_dir, /*for_init=*/a.encrypt);
  if (!key.ok()) return Fail(key.status());
  options.value_key = std::move(key).value();
  Result<SnapshotImportReport> r = ImportSnapshotFile(a.target.data_dir, a.file, options);
  if (!r.ok()) return Fail(r.status());
  std::printf("imported %s into %s\n", a.file.c_str(), a.target.data_dir.c_str());
  PrintCounts(r->file);
  std::printf("node id      %s (new)\nincarnation  %s (new)\nmerkle_root  %s\n%s\n",
              NodeIdToString(r->node_id).c_str(), NodeIdToString(r->incarnation).c_str(),
              r->merkle_root.ToHex().c_str(), r->public_key.c_str());
  return kExitOk;
}

}  // namespace

void AddSnapshotCommand(CLI::App* app, SnapshotArgs* a) {
  CLI::App* snap = app->add_subcommand(
      "snapshot", "back up a node to a snapshot file, restore one into a new data dir, check one");
  snap->require_subcommand(1);
  CLI::App* exp = snap->add_subcommand(
      "export", "write a consistent snapshot of every map to FILE (a live node: --http)");
  a->target.AddTo(exp);
  exp->add_option("FILE", a->file, "the snapshot file to write")->required();
  a->export_command = exp;
  CLI::App* imp = snap->add_subcommand(
      "import", "restore FILE into a new, empty data dir (a new identity; start it with peers)");
  imp->add_option("--data", a->target.data_dir, "the data dir to create (absent or empty)")
      ->required();
  imp->add_flag("--encrypt", a->encrypt,
                "seal the restored values at rest under --key-file or --passphrase-file");
  a->target.keys.AddTo(imp);
  imp->add_option("FILE", a->file, "the snapshot file")->required();
  a->import_command = imp;
  CLI::App* ver = snap->add_subcommand(
      "verify", "check FILE without importing it: print its header and counts (exit 0, or 3)");
  ver->add_option("FILE", a->file, "the snapshot file")->required();
  a->verify_command = ver;
}

int RunSnapshot(const SnapshotArgs& a) {
  if (a.export_command->parsed()) return RunExport(a);
  if (a.import_command->parsed()) return RunImportSnapshot(a);
  return RunVerify(a);
}

}  // namespace tidemap
