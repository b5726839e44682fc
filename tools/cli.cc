#include "tools/cli.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <iterator>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tools/import.h"
#include "tools/key_args.h"
#include "tools/rekey.h"
#include "tools/serve.h"
#include "tools/snapshot.h"
#include "tools/target_args.h"
#include <tidemap/base/clock.h>
#include <tidemap/base/coding.h>
#include <tidemap/base/crypto.h>
#include <tidemap/base/version.h>
#include <tidemap/server/data_dir.h>
#include <tidemap/server/duration.h>
#include <tidemap/server/http_client.h>
#include <tidemap/server/json.h>
#include <tidemap/server/pending.h>
#include <tidemap/server/rekey_job.h>
#include <tidemap/server/status.h>
#include <tidemap/server/url.h>

namespace tidemap {

int ExitCodeFor(const Status& s) {
  switch (s.code()) {
    case Status::Code::kOk:
      return kExitOk;
    case Status::Code::kNotFound:
      return kExitNotFound;
    case Status::Code::kInvalidArgument:
      return kExitUsage;
    case Status::Code::kRefused:
    case Status::Code::kQuotaExceeded:
      return kExitRefused;
    default:
      return kExitUnreachable;
  }
}

int Fail(const Status& s) {
  std::fprintf(stderr, "tidemap: %s\n", s.message().c_str());
  return ExitCodeFor(s);
}

namespace {

constexpr size_t kScanPageItems = 1000;

// Declares `lhs` from a Result, or reports its error and returns the exit code.
#define TIDEMAP_ASSIGN_OR_RETURN_INT(lhs, expr)                   \
  auto TIDEMAP_CONCAT_(cli_result_, __LINE__) = (expr);           \
  if (!TIDEMAP_CONCAT_(cli_result_, __LINE__).ok())               \
    return Fail(TIDEMAP_CONCAT_(cli_result_, __LINE__).status()); \
  lhs = std::move(TIDEMAP_CONCAT_(cli_result_, __LINE__)).value()

enum class Access { kRead, kWrite };

// Opens the command's data dir target. A command that only reads opens it
// read-only: it writes nothing there, so it also works on a full disk.
Result<std::unique_ptr<DataDir>> OpenTarget(const Target& target, Access access) {
  if (target.data_dir.empty()) {
    return Target::Missing();
  }
  DataDirOptions options;
  options.read_only = access == Access::kRead;
  TIDEMAP_ASSIGN_OR_RETURN(options.value_key, target.keys.Source(target.data_dir));
  return DataDir::Open(target.data_dir, options);
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

int CmdInit(const std::string& dir, const KeyArgs& keys, bool encrypt) {
  DataDirOptions options;
  options.encrypt = encrypt;
  TIDEMAP_ASSIGN_OR_RETURN_INT(options.value_key, keys.Source(dir, /*for_init=*/encrypt));
  auto d = DataDir::Init(dir, options);
  if (!d.ok()) return Fail(d.status());
  if (encrypt) {
    std::printf("values encrypted at rest (%s), key from %s\n",
                std::string(crypto::AeadSuiteName((*d)->value_suite())).c_str(),
                options.value_key.passphrase.has_value() ? "a passphrase (Argon2id)"
                                                         : options.value_key.key_file.c_str());
  }
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

// One request to the target node; an error reply becomes its Status.
Result<HttpReply> Call(const Target& target, std::string_view method, const std::string& path,
                       std::string_view body = {}) {
  TIDEMAP_ASSIGN_OR_RETURN(HttpReply reply, HttpCall(target.Client(), method, path, body));
  TIDEMAP_RETURN_IF_ERROR(ReplyStatus(reply));
  return reply;
}

std::string KeyPath(const std::string& map, const std::string& key) {
  return "/v1/maps/" + PercentEncode(map) + "/keys/" + PercentEncode(key);
}

// A JSON document from a reply body.
Result<nlohmann::json> ReplyJson(const HttpReply& reply) {
  auto j = nlohmann::json::parse(reply.body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return Status::Unavailable("the node answered with malformed JSON: " +
                               Printable(reply.body, 200));
  }
  return j;
}

// PUT or DELETE over HTTP (`query`, when not empty, after a '?'): prints the version's HLC.
int HttpWrite(const Target& target, std::string_view method, const std::string& map,
              const std::string& key, std::string_view value, const std::string& query = {}) {
  const std::string path = query.empty() ? KeyPath(map, key) : KeyPath(map, key) + "?" + query;
  TIDEMAP_ASSIGN_OR_RETURN_INT(HttpReply reply, Call(target, method, path, value));
  TIDEMAP_ASSIGN_OR_RETURN_INT(nlohmann::json j, ReplyJson(reply));
  if (!j.contains("hlc") || !j["hlc"].is_string()) {
    return Fail(Status::Unavailable("the node's reply has no hlc: " + Printable(reply.body, 200)));
  }
  std::printf("%s\n", j["hlc"].get<std::string>().c_str());
  return kExitOk;
}

int CmdPut(const Target& target, const std::string& map, const std::string& key,
           const std::string& value_arg, const std::optional<std::string>& ttl) {
  PutOptions options;
  if (ttl.has_value()) {
    TIDEMAP_ASSIGN_OR_RETURN_INT(options.ttl_ms, ParseDurationMs("--ttl", *ttl, kTtlMaxMs));
  }
  const std::string value = value_arg == "-" ? ReadAllStdin() : value_arg;
  if (target.is_http()) {
    // The node parses `ttl` again, with the same grammar.
    return HttpWrite(target, "PUT", map, key, value,
                     ttl.has_value() ? "ttl=" + PercentEncode(*ttl) : std::string());
  }
  TIDEMAP_ASSIGN_OR_RETURN_INT(auto d, OpenTarget(target, Access::kWrite));
  auto v = d->replica().Put(map, key, value, options);
  if (!v.ok()) return Fail(v.status());
  std::printf("%s\n", v->hlc.ToString().c_str());
  return kExitOk;
}

int CmdGet(const Target& target, const std::string& map, const std::string& key) {
  if (Status s = CheckNames(map, &key); !s.ok()) return Fail(s);
  std::string value;
  if (target.is_http()) {
    TIDEMAP_ASSIGN_OR_RETURN_INT(HttpReply reply, Call(target, "GET", KeyPath(map, key)));
    value = std::move(reply.body);
  } else {
    TIDEMAP_ASSIGN_OR_RETURN_INT(auto d, OpenTarget(target, Access::kRead));
    auto rec = d->replica().Get(map, key);
    if (!rec.ok()) return Fail(rec.status());
    value = std::move(rec->value);
  }
  WriteStdout(value);
  // Exact bytes for pipes; a newline for people at a terminal.
  if (isatty(STDOUT_FILENO) && (value.empty() || value.back() != '\n')) WriteStdout("\n");
  return kExitOk;
}

int CmdDel(const Target& target, const std::string& map, const std::string& key) {
  if (target.is_http()) return HttpWrite(target, "DELETE", map, key, {});
  TIDEMAP_ASSIGN_OR_RETURN_INT(auto d, OpenTarget(target, Access::kWrite));
  auto v = d->replica().Delete(map, key);
  if (!v.ok()) return Fail(v.status());
  std::printf("%s\n", v->hlc.ToString().c_str());
  return kExitOk;
}

// Clears MAP: prints the clear's version. With --data the records it
// deletes are hidden at once and removed by the next `serve`.
int CmdClear(const Target& target, const std::string& map) {
  if (Status s = CheckNames(map, nullptr); !s.ok()) return Fail(s);
  if (target.is_http()) {
    TIDEMAP_ASSIGN_OR_RETURN_INT(HttpReply reply,
                                 Call(target, "DELETE", "/v1/maps/" + PercentEncode(map)));
    TIDEMAP_ASSIGN_OR_RETURN_INT(nlohmann::json j, ReplyJson(reply));
    if (!j.contains("hlc") || !j["hlc"].is_string()) {
      return Fail(
          Status::Unavailable("the node's reply has no hlc: " + Printable(reply.body, 200)));
    }
    std::printf("%s\n", j["hlc"].get<std::string>().c_str());
    return kExitOk;
  }
  TIDEMAP_ASSIGN_OR_RETURN_INT(auto d, OpenTarget(target, Access::kWrite));
  auto v = d->replica().ClearMap(map);
  if (!v.ok()) return Fail(v.status());
  std::printf("%s\n", v->hlc.ToString().c_str());
  return kExitOk;
}

// Bytes of a JSON object's `field`, or of `field`_base64.
Result<std::string> BytesField(const nlohmann::json& obj, const std::string& field) {
  if (obj.contains(field) && obj[field].is_string()) return obj[field].get<std::string>();
  const std::string b64 = field + "_base64";
  if (obj.contains(b64) && obj[b64].is_string()) {
    return crypto::Base64Decode(obj[b64].get<std::string>());
  }
  return Status::Unavailable("the node's scan page has no " + field);
}

Result<uint64_t> ParseNodeId(const std::string& hex) {
  uint64_t id = 0;
  const auto [ptr, ec] = std::from_chars(hex.data(), hex.data() + hex.size(), id, 16);
  if (hex.size() != 16 || ec != std::errc() || ptr != hex.data() + hex.size()) {
    return Status::Unavailable("malformed node id '" + Printable(hex) + "' from the node");
  }
  return id;
}

// One scan page over HTTP, read back into a ScanPage.
Result<ScanPage> HttpScan(const Target& target, const std::string& map, const std::string& prefix,
                          const std::optional<std::string>& after, size_t limit) {
  std::string path = "/v1/maps/" + PercentEncode(map) + "?limit=" + std::to_string(limit);
  if (!prefix.empty()) path += "&prefix=" + PercentEncode(prefix);
  if (after.has_value()) path += "&after=" + PercentEncode(*after);
  TIDEMAP_ASSIGN_OR_RETURN(HttpReply reply, Call(target, "GET", path));
  TIDEMAP_ASSIGN_OR_RETURN(nlohmann::json j, ReplyJson(reply));
  const Status malformed = Status::Unavailable("the node answered with a malformed scan page: " +
                                               Printable(reply.body, 200));
  if (!j.is_object() || !j.contains("items") || !j["items"].is_array()) return malformed;
  ScanPage page;
  for (const auto& obj : j["items"]) {
    if (!obj.is_object() || !obj.contains("hlc") || !obj["hlc"].is_string() ||
        !obj.contains("origin") || !obj["origin"].is_string()) {
      return malformed;
    }
    ScanItem item;
    TIDEMAP_ASSIGN_OR_RETURN(item.key, BytesField(obj, "key"));
    TIDEMAP_ASSIGN_OR_RETURN(item.value, BytesField(obj, "value"));
    TIDEMAP_ASSIGN_OR_RETURN(item.version.hlc, Timestamp::Parse(obj["hlc"].get<std::string>()));
    TIDEMAP_ASSIGN_OR_RETURN(item.version.origin, ParseNodeId(obj["origin"].get<std::string>()));
    if (obj.contains("expires") && obj["expires"].is_string()) {
      TIDEMAP_ASSIGN_OR_RETURN(const Timestamp expires,
                               Timestamp::Parse(obj["expires"].get<std::string>()));
      item.expiry_ms = expires.physical_ms();
    }
    page.items.push_back(std::move(item));
  }
  if (j.contains("next") && j["next"].is_string()) {
    page.next = j["next"].get<std::string>();
  } else if (j.contains("next_base64") && j["next_base64"].is_string()) {
    TIDEMAP_ASSIGN_OR_RETURN(page.next, crypto::Base64Decode(j["next_base64"].get<std::string>()));
  }
  return page;
}

int CmdScan(const Target& target, const std::string& map, const std::string& prefix,
            const std::optional<std::string>& after, size_t limit, bool json) {
  if (Status s = CheckNames(map, nullptr); !s.ok()) return Fail(s);
  std::unique_ptr<DataDir> d;
  if (!target.is_http()) {
    auto opened = OpenTarget(target, Access::kRead);
    if (!opened.ok()) return Fail(opened.status());
    d = std::move(*opened);
  }
  // With --limit: one page, with its `next`. Without: every item, in pages.
  // (Over HTTP a page may hold fewer items than asked when its values are
  // large; without --limit that changes nothing.)
  ScanPage all;
  std::optional<std::string> cursor = after;
  for (;;) {
    const size_t want = limit > 0 ? limit : kScanPageItems;
    auto page = d != nullptr ? d->replica().Scan(map, prefix, cursor, want)
                             : HttpScan(target, map, prefix, cursor, want);
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

// A JSON number field as an unsigned integer (0 when absent).
uint64_t U64(const nlohmann::json& j, const char* field) {
  return j.contains(field) && j[field].is_number_unsigned() ? j[field].get<uint64_t>() : 0;
}

std::string Str(const nlohmann::json& j, const char* field) {
  return j.contains(field) && j[field].is_string() ? j[field].get<std::string>() : std::string();
}

double Num(const nlohmann::json& j, const char* field) {
  return j.contains(field) && j[field].is_number() ? j[field].get<double>() : 0.0;
}

// A text progress bar of `width` cells for `percent` (0..100).
std::string ProgressBar(double percent, int width) {
  const int filled = std::clamp(static_cast<int>(percent * width / 100.0), 0, width);
  return "[" + std::string(static_cast<size_t>(filled), '#') +
         std::string(static_cast<size_t>(width - filled), '.') + "]";
}

// " of a 512.0 MiB quota", or "" without a quota.
std::string QuotaText(uint64_t quota_bytes) {
  if (quota_bytes == 0) return std::string();
  char buf[64];
  std::snprintf(buf, sizeof(buf), " of a %.1f MiB quota",
                static_cast<double>(quota_bytes) / (1 << 20));
  return buf;
}

void PrintStorage(const nlohmann::json& s) {
  const nlohmann::json storage = s.contains("storage") ? s["storage"] : nlohmann::json::object();
  const double mib = static_cast<double>(U64(storage, "used_bytes")) / (1 << 20);
  const std::string state = Str(storage, "state");
  const uint64_t quota = U64(storage, "quota_bytes");
  if (state == "writes_refused") {
    std::printf("storage     WRITES REFUSED (reads go on; retried every second): %s\n",
                Str(storage, "error").c_str());
  } else if (state == "full") {
    std::printf(
        "storage     FULL, %.1f MiB on disk%s: writes that add data are refused "
        "(quota_exceeded), reads and deletes go on\n",
        mib, QuotaText(quota).c_str());
  } else {
    std::printf("storage     %s, %.1f MiB on disk%s\n", state.empty() ? "ok" : state.c_str(), mib,
                QuotaText(quota).c_str());
  }
}

// "encryption  aes-256-gcm, new values sealed under key 2", with a running or
// failed rekey's progress; nothing when the document has no "encryption".
void PrintEncryption(const nlohmann::json& s) {
  if (!s.contains("encryption") || !s["encryption"].is_object()) return;
  const nlohmann::json& e = s["encryption"];
  if (!e.value("encrypted", false)) {
    std::printf("encryption  none (values stored in the clear)\n");
    return;
  }
  std::printf("encryption  %s, new values sealed under key %llu\n", Str(e, "suite").c_str(),
              static_cast<unsigned long long>(U64(e, "key_id")));
  const nlohmann::json rekey = e.contains("rekey") ? e["rekey"] : nlohmann::json::object();
  const std::string state = Str(rekey, "state");
  if (state == "running") {
    std::printf("            rekey running: %llu records looked at, %llu resealed\n",
                static_cast<unsigned long long>(U64(rekey, "records")),
                static_cast<unsigned long long>(U64(rekey, "resealed")));
  } else if (state == "failed") {
    std::printf("            rekey FAILED: %s\n", Str(rekey, "error").c_str());
  }
}

// The human form of a status document (server/json.h), the same for both
// targets. `bars`: a peer whose sync runs gets a progress bar line under its own.
void PrintStatus(const nlohmann::json& s, bool bars = false) {
  std::printf("node        %s\n", Str(s, "node_id").c_str());
  std::printf("public key  %s\n", Str(s, "public_key").c_str());
  std::printf("keys        %llu live, %llu tombstones\n",
              static_cast<unsigned long long>(U64(s, "keys")),
              static_cast<unsigned long long>(U64(s, "tombstones")));
  const nlohmann::json oplog = s.contains("oplog") ? s["oplog"] : nlohmann::json::object();
  if (U64(oplog, "first_seq") == 0) {
    std::printf("oplog       empty (last seq %llu)\n",
                static_cast<unsigned long long>(U64(oplog, "last_seq")));
  } else {
    std::printf("oplog       seq %llu..%llu\n",
                static_cast<unsigned long long>(U64(oplog, "first_seq")),
                static_cast<unsigned long long>(U64(oplog, "last_seq")));
  }
  PrintStorage(s);
  PrintEncryption(s);
  std::printf("merkle root %s\n", Str(s, "merkle_root").c_str());
  std::printf("hlc         %s\n", Str(s, "hlc").c_str());
  const nlohmann::json peers = s.contains("peers") ? s["peers"] : nlohmann::json::array();
  if (peers.empty()) std::printf("peers       none\n");
  for (const auto& p : peers) {
    // One short line of figures (under 100 columns for 7-digit lags), then
    // the address and the last error on lines of their own.
    // Node id 0: a configured address whose node has not answered yet.
    std::string line = Str(p, "node_id");
    if (line == NodeIdToString(0)) line = "(node not identified yet)";
    line += p.value("connected", false) ? " connected" : " not connected";
    line += "  acked " + std::to_string(U64(p, "acked_seq"));
    char buf[128];
    std::snprintf(buf, sizeof(buf), "  lag %llu (%.1f s)",
                  static_cast<unsigned long long>(U64(p, "lag")), Num(p, "lag_seconds"));
    line += buf;
    const int64_t offset_ms =
        p.contains("clock_offset_ms") && p["clock_offset_ms"].is_number_integer()
            ? p["clock_offset_ms"].get<int64_t>()
            : 0;
    std::snprintf(buf, sizeof(buf), "  clock %+lld ms", static_cast<long long>(offset_ms));
    line += buf;
    if (p.value("sync_in_progress", false)) {
      std::snprintf(buf, sizeof(buf), "  sync %.0f%%", Num(p, "sync_percent"));
      line += buf;
    }
    std::printf("peer        %s\n", line.c_str());
    if (const std::string address = Str(p, "address"); !address.empty()) {
      std::printf("            at %s\n", address.c_str());
    }
    if (const std::string error = Str(p, "last_error"); !error.empty()) {
      std::printf("            last error: %s\n", error.c_str());
    }
    if (bars && p.value("sync_in_progress", false)) {
      std::printf("            %s %.0f%%\n", ProgressBar(Num(p, "sync_percent"), 40).c_str(),
                  Num(p, "sync_percent"));
    }
  }
}

int CmdStatus(const Target& target, bool json, bool watch) {
  if (watch) {
    // Redraws the human status every half second until interrupted; on a
    // terminal, syncing peers get a progress bar and the screen is cleared
    // between frames.
    if (!target.is_http()) return Fail(Status::InvalidArgument("--watch needs --http"));
    const bool tty = isatty(STDOUT_FILENO) != 0;
    while (true) {
      TIDEMAP_ASSIGN_OR_RETURN_INT(HttpReply reply, Call(target, "GET", "/v1/status"));
      TIDEMAP_ASSIGN_OR_RETURN_INT(nlohmann::json doc, ReplyJson(reply));
      if (tty) std::printf("\x1b[H\x1b[2J");
      PrintStatus(doc, tty);
      std::printf("\n");
      std::fflush(stdout);
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  }
  nlohmann::json doc;
  if (target.is_http()) {
    TIDEMAP_ASSIGN_OR_RETURN_INT(HttpReply reply, Call(target, "GET", "/v1/status"));
    TIDEMAP_ASSIGN_OR_RETURN_INT(doc, ReplyJson(reply));
  } else {
    TIDEMAP_ASSIGN_OR_RETURN_INT(auto d, OpenTarget(target, Access::kRead));
    auto info = CollectStatusInfo(&d->replica(), d->identity().public_key_text());
    if (!info.ok()) return Fail(info.status());
    SystemClock clock;
    auto peers = PeersFromOplog(&d->replica(), info->stats.oplog_last_seq, clock.NowMillis());
    if (!peers.ok()) return Fail(peers.status());
    doc = StatusJson(*info, *peers);
    doc["encryption"] = EncryptionJson(*d, RekeyProgress{});
  }
  if (json) {
    std::printf("%s\n", doc.dump(2).c_str());
    return kExitOk;
  }
  PrintStatus(doc);
  return kExitOk;
}

// Prints a scrub report; true when the tree matches its rebuild.
bool PrintScrub(const ScrubReport& r) {
  std::printf("records          %llu\n", static_cast<unsigned long long>(r.records));
  std::printf("rebuilt root     %s\n", r.rebuilt_root.ToHex().c_str());
  std::printf("stored root      %s\n", r.stored_root.ToHex().c_str());
  std::printf("in-memory root   %s\n", r.memory_root.ToHex().c_str());
  std::printf("leaf mismatches  %llu\n", static_cast<unsigned long long>(r.leaf_mismatches));
  std::printf("index mismatches %llu\n", static_cast<unsigned long long>(r.index_mismatches));
  std::printf("value failures   %llu\n", static_cast<unsigned long long>(r.value_failures));
  return r.ok();
}

// DataDirOptions with the key of `dir`'s values from `keys`.
Result<DataDirOptions> KeyedOptions(const std::string& dir, const KeyArgs& keys) {
  DataDirOptions options;
  TIDEMAP_ASSIGN_OR_RETURN(options.value_key, keys.Source(dir));
  return options;
}

int CmdScrub(const std::string& dir, const KeyArgs& keys) {
  TIDEMAP_ASSIGN_OR_RETURN_INT(const DataDirOptions options, KeyedOptions(dir, keys));
  auto d = DataDir::Open(dir, options);
  if (!d.ok()) return Fail(d.status());
  auto report = (*d)->replica().Scrub();
  if (!report.ok()) return Fail(report.status());
  if (PrintScrub(*report)) {
    std::printf("OK: the stored Merkle tree matches a full rebuild\n");
    return kExitOk;
  }
  std::fprintf(stderr, "tidemap: MISMATCH: the stored Merkle tree differs from a rebuild of %s\n",
               dir.c_str());
  return kExitNotFound;
}

int CmdRepair(const std::string& dir, const KeyArgs& keys) {
  TIDEMAP_ASSIGN_OR_RETURN_INT(const DataDirOptions options, KeyedOptions(dir, keys));
  auto report = DataDir::Repair(dir, options);
  if (!report.ok()) return Fail(report.status());
  const DataDirRepairReport& r = *report;
  const auto u = [](uint64_t n) { return static_cast<unsigned long long>(n); };
  std::printf("repaired %s\n", dir.c_str());
  std::printf("tables           %llu\n", u(r.store.tables_after));
  std::printf(
      "tables damaged   %llu (what could be read was kept; the originals are in "
      "%s/db/lost)\n",
      u(r.store.tables_lost), dir.c_str());
  std::printf("records dropped  %llu log records or table entries LevelDB could not read\n",
              u(r.store.problems));
  for (const std::string& line : r.store.problem_lines) std::printf("  %s\n", line.c_str());
  std::printf("keys             %llu\n", u(r.keys));
  std::printf("tombstones       %llu\n", u(r.tombstones));
  std::printf("incarnation      %s (new: peers reconcile with this node by a full tree diff)\n",
              NodeIdToString(r.incarnation).c_str());
  const bool tree_ok = PrintScrub(r.scrub);
  const bool lost_any = r.store.tables_lost > 0 || r.store.problems > 0;
  if (!tree_ok) {
    std::fprintf(stderr, "tidemap: the Merkle tree of %s still differs from a rebuild\n",
                 dir.c_str());
    return kExitUnreachable;
  }
  std::printf("%s\n", lost_any ? "REPAIRED with losses: writes this node alone held may be gone; "
                                 "its peers send back what they hold"
                               : "OK: nothing was lost");
  return kExitOk;
}

// The human form of a pending document (server/pending.h).
void PrintPending(const nlohmann::json& doc) {
  const nlohmann::json peers = doc.contains("peers") ? doc["peers"] : nlohmann::json::array();
  if (peers.empty()) std::printf("no peers\n");
  for (const auto& p : peers) {
    std::printf("peer %s  %llu pending", Str(p, "node_id").c_str(),
                static_cast<unsigned long long>(U64(p, "count")));
    if (U64(p, "count") > 0) std::printf(", oldest %.1f s ago", Num(p, "oldest_age_seconds"));
    std::printf(", acked seq %llu\n", static_cast<unsigned long long>(U64(p, "acked_seq")));
    if (!p.contains("items") || !p["items"].is_array()) continue;
    for (const auto& item : p["items"]) {
      const auto text = [&](const char* field) {
        const std::string plain = Str(item, field);
        return plain.empty() ? "base64:" + Str(item, (std::string(field) + "_base64").c_str())
                             : plain;
      };
      std::printf("  seq %-8llu %-6s %s/%s  %s\n",
                  static_cast<unsigned long long>(U64(item, "seq")), Str(item, "op").c_str(),
                  text("map").c_str(), text("key").c_str(), Str(item, "hlc").c_str());
    }
    if (p.contains("next") && p["next"].is_number_unsigned()) {
      std::printf("  more: --after %llu\n", static_cast<unsigned long long>(U64(p, "next")));
    }
  }
}

// The pending document of a data dir (no transport: peers are its cursors).
Result<nlohmann::json> PendingFromDir(const Target& target, const std::string& peer, uint64_t after,
                                      size_t limit) {
  TIDEMAP_ASSIGN_OR_RETURN(auto d, OpenTarget(target, Access::kRead));
  Replica& replica = d->replica();
  SystemClock clock;
  const uint64_t now_ms = clock.NowMillis();
  TIDEMAP_ASSIGN_OR_RETURN(auto peers, PeersFromOplog(&replica, replica.LastSeq(), now_ms));
  if (!peer.empty()) {
    TIDEMAP_ASSIGN_OR_RETURN(net::PeerStatus one, FindPeer(peers, peer));
    peers = {std::move(one)};
  }
  std::vector<PendingPage> pages;
  for (const net::PeerStatus& p : peers) {
    TIDEMAP_ASSIGN_OR_RETURN(PendingPage page, ReadPending(replica, p, after, limit, now_ms));
    pages.push_back(std::move(page));
  }
  return PendingJson(pages);
}

int CmdPending(const Target& target, const std::string& peer, uint64_t after, size_t limit,
               bool json) {
  if (limit == 0) limit = kPendingDefaultItems;
  nlohmann::json doc;
  if (target.is_http()) {
    std::string path = "/v1/pending?limit=" + std::to_string(limit);
    if (after != 0) path += "&after=" + std::to_string(after);
    if (!peer.empty()) path += "&peer=" + PercentEncode(peer);
    TIDEMAP_ASSIGN_OR_RETURN_INT(HttpReply reply, Call(target, "GET", path));
    TIDEMAP_ASSIGN_OR_RETURN_INT(doc, ReplyJson(reply));
  } else {
    TIDEMAP_ASSIGN_OR_RETURN_INT(doc, PendingFromDir(target, peer, after, limit));
  }
  if (json) {
    std::printf("%s\n", doc.dump(2).c_str());
  } else {
    PrintPending(doc);
  }
  return kExitOk;
}

// Every command's arguments, filled in by the parser.
struct CliArgs {
  std::string dir;
  Target target;
  std::string map, key, value, prefix;
  std::optional<std::string> after;
  std::optional<std::string> ttl;
  size_t limit = 0;
  bool json = false;
  bool watch = false;
  std::string peer;
  uint64_t pending_after = 0;
  bool encrypt = false;
  KeyArgs keys;
  RekeyArgs rekey;
  ServeArgs serve;
  ImportArgs import;
  SnapshotArgs snapshot;
};

// A command and what runs when it is the one parsed.
using Command = std::pair<CLI::App*, std::function<int()>>;

// A command that takes a data dir alone.
void AddDirCommand(CLI::App* app, CliArgs* a, std::vector<Command>* out, const char* name,
                   const char* help, const char* dir_help, int (*run)(const std::string& dir)) {
  CLI::App* cmd = app->add_subcommand(name, help);
  cmd->add_option("--data", a->dir, dir_help)->required();
  out->emplace_back(cmd, [a, run] { return run(a->dir); });
}

// A command that takes a data dir and the key of its values.
CLI::App* AddKeyedDirCommand(CLI::App* app, CliArgs* a, std::vector<Command>* out, const char* name,
                             const char* help, const char* dir_help, std::function<int()> run) {
  CLI::App* cmd = app->add_subcommand(name, help);
  cmd->add_option("--data", a->dir, dir_help)->required();
  a->keys.AddTo(cmd);
  out->emplace_back(cmd, std::move(run));
  return cmd;
}

// Encryption at rest: init (with --encrypt) and rekey (tools/rekey.h).
void AddAtRestCommands(CLI::App* app, CliArgs* a, std::vector<Command>* out) {
  CLI::App* init =
      app->add_subcommand("init", "create a data dir and identity, print the public key");
  init->add_option("--data", a->dir, "the data dir to create")->required();
  init->add_flag("--encrypt", a->encrypt,
                 "seal values at rest under --key-file (created when missing) or a passphrase");
  a->keys.AddTo(init);
  out->emplace_back(init, [a] { return CmdInit(a->dir, a->keys, a->encrypt); });
  AddRekeyCommand(app, &a->rekey);
  out->emplace_back(a->rekey.command, [a] { return RunRekey(a->rekey); });
}

// Commands on one key of a target: put, get, del.
void AddKeyCommands(CLI::App* app, CliArgs* a, std::vector<Command>* out) {
  const auto add = [&](const char* name, const char* help) {
    CLI::App* cmd = app->add_subcommand(name, help);
    a->target.AddTo(cmd);
    cmd->add_option("MAP", a->map, "map name")->required();
    cmd->add_option("KEY", a->key, "key")->required();
    return cmd;
  };
  CLI::App* put = add("put", "write VALUE under MAP/KEY (VALUE - reads stdin)");
  put->add_option("VALUE", a->value, "value, or - to read it from stdin")->required();
  put->add_option("--ttl", a->ttl,
                  "time to live: the record expires this long after the write (90s, 15m, 7d)");
  out->emplace_back(put, [a] { return CmdPut(a->target, a->map, a->key, a->value, a->ttl); });
  out->emplace_back(add("get", "print the value of MAP/KEY; exit 1 when absent"),
                    [a] { return CmdGet(a->target, a->map, a->key); });
  out->emplace_back(add("del", "delete MAP/KEY (writes a tombstone)"),
                    [a] { return CmdDel(a->target, a->map, a->key); });
}

// `clear TARGET MAP`.
void AddClearCommand(CLI::App* app, CliArgs* a, std::vector<Command>* out) {
  CLI::App* clear = app->add_subcommand(
      "clear", "clear MAP: delete every record of it older than the clear, on every replica");
  a->target.AddTo(clear);
  clear->add_option("MAP", a->map, "map name")->required();
  out->emplace_back(clear, [a] { return CmdClear(a->target, a->map); });
}

// Commands that read a whole target: scan, status, pending.
void AddReadCommands(CLI::App* app, CliArgs* a, std::vector<Command>* out) {
  CLI::App* scan = app->add_subcommand("scan", "list the live keys of MAP in key order");
  a->target.AddTo(scan);
  scan->add_option("MAP", a->map, "map name")->required();
  scan->add_option("--prefix", a->prefix, "only keys starting with P");
  scan->add_option("--after", a->after, "start strictly after this key (a page's next)");
  scan->add_option("--limit", a->limit, "one page of at most N items (1..10000)")
      ->check(CLI::Range(1, 10000));
  scan->add_flag("--json", a->json, "print a JSON page");
  out->emplace_back(
      scan, [a] { return CmdScan(a->target, a->map, a->prefix, a->after, a->limit, a->json); });
  CLI::App* status = app->add_subcommand("status", "show the node's state");
  a->target.AddTo(status);
  status->add_flag("--json", a->json, "print JSON");
  status->add_flag("--watch", a->watch,
                   "redraw every 0.5 s until interrupted, with progress bars on a terminal "
                   "(--http only)");
  out->emplace_back(status, [a] { return CmdStatus(a->target, a->json, a->watch); });
  CLI::App* pending = app->add_subcommand(
      "pending", "list the local writes each peer has not acknowledged yet (count, oldest age)");
  a->target.AddTo(pending);
  pending->add_option("--peer", a->peer, "only this peer: its public key or node id");
  pending->add_option("--after", a->pending_after, "start after this oplog seq (a page's more:)");
  pending->add_option("--limit", a->limit, "at most N writes per peer (1..1000, default 100)")
      ->check(CLI::Range(1, 1000));
  pending->add_flag("--json", a->json, "print JSON");
  out->emplace_back(
      pending, [a] { return CmdPending(a->target, a->peer, a->pending_after, a->limit, a->json); });
}

}  // namespace

int RunCli(const std::vector<std::string>& args) {
  CLI::App app{"tidemap: a replicated last-writer-wins map store", "tidemap"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "help for every command");
  app.set_version_flag("--version", "tidemap " TIDEMAP_VERSION_STRING, "print the version");
  CliArgs a;
  std::vector<Command> commands;
  AddAtRestCommands(&app, &a, &commands);
  AddDirCommand(&app, &a, &commands, "id", "print this node's public key", "the data dir", CmdId);
  AddKeyCommands(&app, &a, &commands);
  AddClearCommand(&app, &a, &commands);
  AddReadCommands(&app, &a, &commands);
  constexpr const char* kOffline = "the data dir (not held by a running node)";
  AddKeyedDirCommand(
      &app, &a, &commands, "scrub",
      "compare the stored Merkle tree with a full rebuild (exit 0 when they match, 1 not)",
      kOffline, [&a] { return CmdScrub(a.dir, a.keys); });
  AddKeyedDirCommand(
      &app, &a, &commands, "repair",
      "rebuild a damaged database from the files that can still be read, then scrub it", kOffline,
      [&a] { return CmdRepair(a.dir, a.keys); });
  AddImportCommand(&app, &a.import);
  commands.emplace_back(a.import.command, [&a] { return RunImport(a.import); });
  AddSnapshotCommand(&app, &a.snapshot);
  commands.emplace_back(a.snapshot.export_command->get_parent(),
                        [&a] { return RunSnapshot(a.snapshot); });
  AddServeCommand(&app, &a.serve);
  commands.emplace_back(a.serve.command, [&a] { return RunServe(a.serve); });
  commands.emplace_back(
      app.add_subcommand("demo",
                         "a three-node cluster on loopback, narrated: replication, a partition, "
                         "its repair (about a second; nothing is left behind)"),
      [] { return RunDemo(); });

  std::vector<std::string> reversed(args.rbegin(), args.rend());
  try {
    app.parse(reversed);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? kExitOk : kExitUsage;
  }
  for (const auto& [cmd, run] : commands) {
    if (cmd->parsed()) return run();
  }
  return kExitUsage;  // require_subcommand(1) makes this unreachable
}

}  // namespace tidemap
