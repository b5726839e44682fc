#include "tools/cli.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <optional>
#include <string>

#include "base/coding.h"
#include "server/data_dir.h"
#include "server/json.h"
#include "tools/serve.h"

namespace tidemap {

namespace {

constexpr size_t kScanPageItems = 1000;

// Where a command acts: a data dir opened directly, or a running node over HTTP.
struct Target {
  std::string data_dir;
  std::string http;

  void AddTo(CLI::App* cmd) {
    auto* data = cmd->add_option("--data", data_dir, "data dir to open directly (no daemon)");
    auto* h = cmd->add_option("--http", http, "HOST:PORT of a running node's HTTP API");
    data->excludes(h);
    h->excludes(data);
  }
};

int ExitCodeFor(const Status& s) {
  switch (s.code()) {
    case Status::Code::kOk:
      return kExitOk;
    case Status::Code::kNotFound:
      return kExitNotFound;
    case Status::Code::kInvalidArgument:
      return kExitUsage;
    case Status::Code::kRefused:
      return kExitRefused;
    default:
      return kExitUnreachable;
  }
}

int Fail(const Status& s) {
  std::fprintf(stderr, "tidemap: %s\n", s.message().c_str());
  return ExitCodeFor(s);
}

// Declares `lhs` from a Result, or reports its error and returns the exit code.
#define TIDEMAP_ASSIGN_OR_RETURN_INT(lhs, expr)                   \
  auto TIDEMAP_CONCAT_(cli_result_, __LINE__) = (expr);           \
  if (!TIDEMAP_CONCAT_(cli_result_, __LINE__).ok())               \
    return Fail(TIDEMAP_CONCAT_(cli_result_, __LINE__).status()); \
  lhs = std::move(TIDEMAP_CONCAT_(cli_result_, __LINE__)).value()

// Opens the command's target. Data dirs are the only kind this build reaches.
Result<std::unique_ptr<DataDir>> OpenTarget(const Target& target) {
  if (!target.http.empty()) {
    return Status::Unavailable("cannot reach " + target.http +
                               ": this build has no HTTP client yet; use --data DIR");
  }
  if (target.data_dir.empty()) {
    return Status::InvalidArgument("a target is required: --data DIR or --http HOST:PORT");
  }
  return DataDir::Open(target.data_dir);
}

// Reads take the same names as writes: an empty one is a usage error (exit 2)
// rather than "not found" or an empty scan. Writes get this check from the replica.
Status CheckNames(const std::string& map, const std::string* key) {
  if (map.empty()) return Status::InvalidArgument("map name must not be empty");
  if (key != nullptr && key->empty()) return Status::InvalidArgument("key must not be empty");
  return Status::Ok();
}

void WriteStdout(std::string_view bytes) { std::fwrite(bytes.data(), 1, bytes.size(), stdout); }

std::string ReadAllStdin() {
  std::string out;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), stdin)) > 0) out.append(buf, n);
  return out;
}

int CmdInit(const std::string& dir) {
  auto d = DataDir::Init(dir);
  if (!d.ok()) return Fail(d.status());
  std::printf("initialized %s\nnode id %s\n%s\n", dir.c_str(),
              NodeIdToString((*d)->identity().node_id()).c_str(),
              (*d)->identity().public_key_text().c_str());
  return kExitOk;
}

int CmdId(const std::string& dir) {
  auto identity = Identity::Load(dir);
  // No identity file means no data dir there: "cannot reach the data dir" (exit 3),
  // as for every other command, not "key not found" (exit 1).
  if (identity.status().IsNotFound()) return Fail(Status::Unavailable(identity.status().message()));
  if (!identity.ok()) return Fail(identity.status());
  std::printf("%s\n", identity->public_key_text().c_str());
  return kExitOk;
}

int CmdPut(const Target& target, const std::string& map, const std::string& key,
           const std::string& value_arg) {
  const std::string value = value_arg == "-" ? ReadAllStdin() : value_arg;
  TIDEMAP_ASSIGN_OR_RETURN_INT(auto d, OpenTarget(target));
  auto v = d->replica().Put(map, key, value);
  if (!v.ok()) return Fail(v.status());
  std::printf("%s\n", v->hlc.ToString().c_str());
  return kExitOk;
}

int CmdGet(const Target& target, const std::string& map, const std::string& key) {
  if (Status s = CheckNames(map, &key); !s.ok()) return Fail(s);
  TIDEMAP_ASSIGN_OR_RETURN_INT(auto d, OpenTarget(target));
  auto rec = d->replica().Get(map, key);
  if (!rec.ok()) return Fail(rec.status());
  WriteStdout(rec->value);
  // Exact bytes for pipes; a newline for people at a terminal.
  if (isatty(STDOUT_FILENO) && (rec->value.empty() || rec->value.back() != '\n')) WriteStdout("\n");
  return kExitOk;
}

int CmdDel(const Target& target, const std::string& map, const std::string& key) {
  TIDEMAP_ASSIGN_OR_RETURN_INT(auto d, OpenTarget(target));
  auto v = d->replica().Delete(map, key);
  if (!v.ok()) return Fail(v.status());
  std::printf("%s\n", v->hlc.ToString().c_str());
  return kExitOk;
}

int CmdScan(const Target& target, const std::string& map, const std::string& prefix,
            const std::optional<std::string>& after, size_t limit, bool json) {
  if (Status s = CheckNames(map, nullptr); !s.ok()) return Fail(s);
  TIDEMAP_ASSIGN_OR_RETURN_INT(auto d, OpenTarget(target));
  // With --limit: one page, with its `next`. Without: every item, in pages.
  ScanPage all;
  std::optional<std::string> cursor = after;
  for (;;) {
    const size_t want = limit > 0 ? limit : kScanPageItems;
    auto page = d->replica().Scan(map, prefix, cursor, want);
    if (!page.ok()) return Fail(page.status());
    std::move(page->items.begin(), page->items.end(), std::back_inserter(all.items));
    all.next = page->next;
    if (limit > 0 || !page->next.has_value()) break;
    cursor = page->next;
  }
  if (json) {
    std::printf("%s\n", ScanPageJson(all).dump(2).c_str());
    return kExitOk;
  }
  for (const ScanItem& item : all.items) {
    std::printf("%s\t%s\n", Printable(item.key, 4096).c_str(), Printable(item.value, 4096).c_str());
  }
  if (all.next.has_value()) std::printf("(more after %s)\n", Printable(*all.next).c_str());
  return kExitOk;
}

int CmdStatus(const Target& target, bool json) {
  TIDEMAP_ASSIGN_OR_RETURN_INT(auto d, OpenTarget(target));
  auto stats = d->replica().Stats();
  if (!stats.ok()) return Fail(stats.status());
  auto acks = d->replica().oplog().PeerAcks();
  if (!acks.ok()) return Fail(acks.status());
  StatusInfo info{d->identity().public_key_text(), *stats, d->replica().MerkleRoot()};
  if (json) {
    std::printf("%s\n", StatusJson(info, *acks).dump(2).c_str());
    return kExitOk;
  }
  const ReplicaStats& s = *stats;
  std::printf("node        %s\n", NodeIdToString(s.node_id).c_str());
  std::printf("public key  %s\n", info.public_key.c_str());
  std::printf("keys        %llu live, %llu tombstones\n", static_cast<unsigned long long>(s.keys),
              static_cast<unsigned long long>(s.tombstones));
  if (s.oplog_first_seq == 0) {
    std::printf("oplog       empty (last seq %llu)\n",
                static_cast<unsigned long long>(s.oplog_last_seq));
  } else {
    std::printf("oplog       seq %llu..%llu\n", static_cast<unsigned long long>(s.oplog_first_seq),
                static_cast<unsigned long long>(s.oplog_last_seq));
  }
  std::printf("merkle root %s\n", info.merkle_root.ToHex().c_str());
  std::printf("hlc         %s\n", s.hlc_last.ToString().c_str());
  if (acks->empty()) std::printf("peers       none\n");
  for (const auto& [peer, acked] : *acks) {
    std::printf(
        "peer        %s acked %llu, lag %llu\n", NodeIdToString(peer).c_str(),
        static_cast<unsigned long long>(acked),
        static_cast<unsigned long long>(s.oplog_last_seq > acked ? s.oplog_last_seq - acked : 0));
  }
  return kExitOk;
}

int CmdScrub(const std::string& dir) {
  auto d = DataDir::Open(dir);
  if (!d.ok()) return Fail(d.status());
  auto report = (*d)->replica().Scrub();
  if (!report.ok()) return Fail(report.status());
  const ScrubReport& r = *report;
  std::printf("records          %llu\n", static_cast<unsigned long long>(r.records));
  std::printf("rebuilt root     %s\n", r.rebuilt_root.ToHex().c_str());
  std::printf("stored root      %s\n", r.stored_root.ToHex().c_str());
  std::printf("in-memory root   %s\n", r.memory_root.ToHex().c_str());
  std::printf("leaf mismatches  %llu\n", static_cast<unsigned long long>(r.leaf_mismatches));
  std::printf("index mismatches %llu\n", static_cast<unsigned long long>(r.index_mismatches));
  if (r.ok()) {
    std::printf("OK: the stored Merkle tree matches a full rebuild\n");
    return kExitOk;
  }
  std::fprintf(stderr, "tidemap: MISMATCH: the stored Merkle tree differs from a rebuild of %s\n",
               dir.c_str());
  return kExitNotFound;
}

}  // namespace

int RunCli(const std::vector<std::string>& args) {
  CLI::App app{"tidemap: a replicated last-writer-wins map store", "tidemap"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "help for every command");

  std::string dir;
  auto* init = app.add_subcommand("init", "create a data dir and identity, print the public key");
  init->add_option("--data", dir, "the data dir to create")->required();
  auto* id = app.add_subcommand("id", "print this node's public key");
  id->add_option("--data", dir, "the data dir")->required();

  Target target;
  std::string map, key, value;
  auto* put = app.add_subcommand("put", "write VALUE under MAP/KEY (VALUE - reads stdin)");
  target.AddTo(put);
  put->add_option("MAP", map, "map name")->required();
  put->add_option("KEY", key, "key")->required();
  put->add_option("VALUE", value, "value, or - to read it from stdin")->required();

  auto* get = app.add_subcommand("get", "print the value of MAP/KEY; exit 1 when absent");
  target.AddTo(get);
  get->add_option("MAP", map, "map name")->required();
  get->add_option("KEY", key, "key")->required();

  auto* del = app.add_subcommand("del", "delete MAP/KEY (writes a tombstone)");
  target.AddTo(del);
  del->add_option("MAP", map, "map name")->required();
  del->add_option("KEY", key, "key")->required();

  std::string prefix;
  std::optional<std::string> after;
  size_t limit = 0;
  bool json = false;
  auto* scan = app.add_subcommand("scan", "list the live keys of MAP in key order");
  target.AddTo(scan);
  scan->add_option("MAP", map, "map name")->required();
  scan->add_option("--prefix", prefix, "only keys starting with P");
  scan->add_option("--after", after, "start strictly after this key (a page's next)");
  scan->add_option("--limit", limit, "one page of at most N items (1..10000)")
      ->check(CLI::Range(1, 10000));
  scan->add_flag("--json", json, "print a JSON page");

  auto* status = app.add_subcommand("status", "show the node's state");
  target.AddTo(status);
  status->add_flag("--json", json, "print JSON");

  auto* scrub = app.add_subcommand(
      "scrub",
      "compare the stored Merkle tree with a full rebuild (exit 0 when they match, 1 not)");
  scrub->add_option("--data", dir, "the data dir (not held by a running node)")->required();

  ServeArgs serve;
  AddServeCommand(&app, &serve);

  app.add_subcommand("demo", "a narrated walkthrough of a replica in a temporary dir");

  std::vector<std::string> reversed(args.rbegin(), args.rend());
  try {
    app.parse(reversed);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? kExitOk : kExitUsage;
  }

  if (init->parsed()) return CmdInit(dir);
  if (id->parsed()) return CmdId(dir);
  if (put->parsed()) return CmdPut(target, map, key, value);
  if (get->parsed()) return CmdGet(target, map, key);
  if (del->parsed()) return CmdDel(target, map, key);
  if (scan->parsed()) return CmdScan(target, map, prefix, after, limit, json);
  if (status->parsed()) return CmdStatus(target, json);
  if (scrub->parsed()) return CmdScrub(dir);
  if (serve.command->parsed()) return RunServe(serve);
  return RunDemo();
}

}  // namespace tidemap
