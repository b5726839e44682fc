#include "tools/rekey.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include <nlohmann/json.hpp>

#include "tools/cli.h"
#include <tidemap/base/coding.h>
#include <tidemap/server/data_dir.h>
#include <tidemap/server/http_client.h>

namespace tidemap {

namespace {

// How often a waiting rekey asks the node for its progress.
constexpr auto kPollInterval = std::chrono::milliseconds(200);
// How often its progress is printed when stderr is not a terminal.
constexpr auto kLogInterval = std::chrono::seconds(2);

unsigned long long U(uint64_t n) { return static_cast<unsigned long long>(n); }

void PrintDone(const std::string& where, bool resumed, int old_id, int new_id,
               const std::string& new_key_file, uint64_t records, uint64_t resealed) {
  if (old_id == 0) {
    std::printf("%s: every value was already under key %d (%s)\n", where.c_str(), new_id,
                new_key_file.c_str());
  } else {
    std::printf("%s %s: key %d -> key %d (%s)\n", resumed ? "finished the rekey of" : "rekeyed",
                where.c_str(), old_id, new_id, new_key_file.c_str());
  }
  std::printf("records          %llu\n", U(records));
  std::printf("resealed         %llu\n", U(resealed));
  std::printf("OK: every value is sealed under the new key; the database was compacted\n");
}

int RekeyDataDir(const RekeyArgs& a) {
  DataDirOptions options;
  auto source = a.target.keys.Source(a.target.data_dir);
  if (!source.ok()) return Fail(source.status());
  options.value_key = std::move(source).value();
  auto report = DataDir::Rekey(a.target.data_dir, options, a.new_key_file);
  if (!report.ok()) return Fail(report.status());
  const DataDirRekeyReport& r = *report;
  PrintDone(a.target.data_dir, r.resumed, r.old_key_id, r.new_key_id, a.new_key_file,
            r.reseal.records, r.reseal.resealed);
  return kExitOk;
}

// A reply's JSON body, or the error it carries: a refusal of the node's (a
// key file others may read: code "refused"; a rekey running: 409) is Refused.
Result<nlohmann::json> ReplyDocument(const Result<HttpReply>& reply) {
  if (!reply.ok()) return reply.status();
  auto j = nlohmann::json::parse(reply->body, nullptr, /*allow_exceptions=*/false);
  if (const Status s = ReplyStatus(*reply); !s.ok()) {
    const bool refused =
        reply->status == 409 || (j.is_object() && j.value("code", std::string()) == "refused");
    return refused ? Status::Refused(s.message()) : s;
  }
  if (j.is_discarded() || !j.is_object() || !j.contains("state")) {
    return Status::Unavailable("the node answered with malformed JSON: " +
                               Printable(reply->body, 200));
  }
  return j;
}

// GET /v1/admin/rekey until the rekey ends; its last progress document.
Result<nlohmann::json> WaitForRekey(const HttpClientOptions& client, nlohmann::json doc) {
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  auto last_log = std::chrono::steady_clock::now();
  while (doc.value("state", "") == "running") {
    std::this_thread::sleep_for(kPollInterval);
    TIDEMAP_ASSIGN_OR_RETURN(doc, ReplyDocument(HttpCall(client, "GET", "/v1/admin/rekey")));
    const auto now = std::chrono::steady_clock::now();
    if (!tty && now - last_log < kLogInterval) continue;
    last_log = now;
    std::fprintf(stderr, "%srekey: %llu records looked at, %llu resealed%s", tty ? "\r" : "",
                 U(doc.value("records", uint64_t{0})), U(doc.value("resealed", uint64_t{0})),
                 tty ? "" : "\n");
  }
  if (tty) std::fprintf(stderr, "\n");
  return doc;
}

int RekeyNode(const RekeyArgs& a) {
  std::error_code ec;
  const std::string path = std::filesystem::absolute(a.new_key_file, ec).string();
  if (ec)
    return Fail(Status::InvalidArgument("--new-key-file " + a.new_key_file + ": " + ec.message()));
  const HttpClientOptions client = a.target.Client();
  const std::string body = nlohmann::json{{"new_key_file", path}}.dump();
  auto started =
      ReplyDocument(HttpCall(client, "POST", "/v1/admin/rekey", body, "application/json"));
  if (!started.ok()) return Fail(started.status());
  if (a.no_wait) {
    std::printf(
        "rekey of %s to %s started; its progress: `tidemap status --http %s --json` "
        "(encryption.rekey)\n",
        a.target.http.c_str(), path.c_str(), a.target.http.c_str());
    return kExitOk;
  }
  auto ended = WaitForRekey(client, std::move(started).value());
  if (!ended.ok()) return Fail(ended.status());
  const nlohmann::json& doc = *ended;
  if (doc.value("state", "") != "done") {
    return Fail(Status::Unavailable("the rekey of " + a.target.http + " failed: " +
                                    doc.value("error", std::string("(no reason given)"))));
  }
  PrintDone(a.target.http, doc.value("resumed", false), doc.value("old_key_id", 0),
            doc.value("new_key_id", 0), path, doc.value("records", uint64_t{0}),
            doc.value("resealed", uint64_t{0}));
  std::printf(
      "the node serves on; start it from now on with the new key: key_file = \"%s\" "
      "(or --key-file)\n",
      path.c_str());
  return kExitOk;
}

}  // namespace

void AddRekeyCommand(CLI::App* app, RekeyArgs* a) {
  CLI::App* cmd = app->add_subcommand(
      "rekey", "reseal every value at rest under a new key, then compact (a running node: --http)");
  a->target.AddTo(cmd);
  cmd->add_option("--new-key-file", a->new_key_file,
                  "the new key (created, mode 0600, when missing); with --http, a path on the "
                  "node's file system")
      ->required();
  cmd->add_flag("--no-wait", a->no_wait, "with --http: return once the rekey has started");
  a->command = cmd;
}

int RunRekey(const RekeyArgs& a) {
  if (a.no_wait && !a.target.is_http()) {
    return Fail(Status::InvalidArgument("--no-wait is for --http: a --data rekey runs here"));
  }
  if (a.target.is_http()) return RekeyNode(a);
  if (a.target.data_dir.empty()) return Fail(Target::Missing());
  return RekeyDataDir(a);
}

}  // namespace tidemap
