#include <tidemap/server/rekey_job.h>

#include <spdlog/spdlog.h>

#include <filesystem>
#include <utility>

#include <tidemap/storage/value_key.h>

namespace tidemap {

std::string_view RekeyStateName(RekeyProgress::State state) {
  switch (state) {
    case RekeyProgress::State::kIdle:
      return "idle";
    case RekeyProgress::State::kRunning:
      return "running";
    case RekeyProgress::State::kDone:
      return "done";
    case RekeyProgress::State::kFailed:
      return "failed";
  }
  return "unknown";
}

nlohmann::json RekeyProgressJson(const RekeyProgress& p) {
  nlohmann::json j = {{"state", RekeyStateName(p.state)}, {"records", p.records},
                      {"resealed", p.resealed},           {"error", nullptr},
                      {"new_key_file", nullptr},          {"resumed", p.resumed}};
  if (p.state == RekeyProgress::State::kFailed) j["error"] = p.error;
  if (p.state != RekeyProgress::State::kIdle) j["new_key_file"] = p.new_key_file;
  if (p.state == RekeyProgress::State::kDone) {
    j["old_key_id"] = p.old_key_id;
    j["new_key_id"] = p.new_key_id;
  }
  return j;
}

RekeyJob::RekeyJob(DataDir* dir, std::shared_ptr<spdlog::logger> log)
    : dir_(dir), log_(std::move(log)) {}

RekeyJob::~RekeyJob() { Stop(); }

Result<bool> RekeyJob::Start(const std::string& new_key_file) {
  if (!dir_->encrypted()) {
    return Status::InvalidArgument("data dir " + dir_->dir() +
                                   " is not encrypted at rest; there is no key to change");
  }
  if (new_key_file.empty() || !std::filesystem::path(new_key_file).is_absolute()) {
    return Status::InvalidArgument(
        "new_key_file must be an absolute path on the node's file system, not '" + new_key_file +
        "'");
  }
  // Before the key file is read: the running rekey may be writing it.
  if (Progress().state == RekeyProgress::State::kRunning) return false;
  // A key file that exists must be one the rekey can use; a missing one is
  // created by the rekey.
  if (auto key = LoadValueKeyFile(new_key_file); !key.ok() && !key.status().IsUnavailable()) {
    return key.status();
  }
  MutexLock lock(&mu_);
  if (stop_.load()) return Status::InvalidArgument("the node is stopping");
  if (progress_.state == RekeyProgress::State::kRunning) return false;
  if (thread_.joinable()) thread_.join();  // the last rekey's, which has ended
  progress_ = RekeyProgress{};
  progress_.state = RekeyProgress::State::kRunning;
  progress_.new_key_file = new_key_file;
  log_->info("rekey to {} started: values are resealed while the node serves", new_key_file);
  thread_ = std::thread([this, new_key_file] { Run(new_key_file); });
  return true;
}

void RekeyJob::Run(std::string new_key_file) {
  const auto on_page = [this](const ResealReport& r) {
    MutexLock lock(&mu_);
    progress_.records = r.records;
    progress_.resealed = r.resealed;
    return !stop_.load();
  };
  auto report = dir_->RekeyServing(new_key_file, on_page);
  if (report.ok()) {
    log_->info("rekey to {} done: key {} -> key {}, {} records, {} values resealed{}", new_key_file,
               report->old_key_id, report->new_key_id, report->reseal.records,
               report->reseal.resealed, report->resumed ? " (finished a rekey in progress)" : "");
  } else {
    log_->error("rekey to {} failed: {}", new_key_file, report.status().message());
  }
  MutexLock lock(&mu_);
  if (!report.ok()) {
    progress_.state = RekeyProgress::State::kFailed;
    progress_.error = report.status().message();
    return;
  }
  progress_.state = RekeyProgress::State::kDone;
  progress_.records = report->reseal.records;
  progress_.resealed = report->reseal.resealed;
  progress_.resumed = report->resumed;
  progress_.old_key_id = report->old_key_id;
  progress_.new_key_id = report->new_key_id;
}

RekeyProgress RekeyJob::Progress() const {
  MutexLock lock(&mu_);
  return progress_;
}

nlohmann::json EncryptionJson(const DataDir& dir, const RekeyProgress& progress) {
  if (!dir.encrypted()) return {{"encrypted", false}};
  return {{"encrypted", true},
          {"suite", crypto::AeadSuiteName(dir.value_suite())},
          {"key_id", dir.value_key_id()},
          {"rekey", RekeyProgressJson(progress)}};
}

nlohmann::json RekeyJob::EncryptionJson() const {
  return tidemap::EncryptionJson(*dir_, Progress());
}

std::string RekeyJob::MetricsText() const {
  const auto gauge = [](std::string_view name, std::string_view help, std::string_view labels,
                        uint64_t value) {
    std::string out = "# HELP " + std::string(name) + " " + std::string(help) + "\n# TYPE " +
                      std::string(name) + " gauge\n" + std::string(name);
    out += labels.empty() ? " " : "{" + std::string(labels) + "} ";
    return out + std::to_string(value) + "\n";
  };
  if (!dir_->encrypted()) {
    return gauge("tidemap_values_encrypted", "Whether values are sealed at rest (1) or not (0).",
                 "", 0);
  }
  const RekeyProgress p = Progress();
  return gauge("tidemap_values_encrypted", "Whether values are sealed at rest (1) or not (0).",
               "suite=\"" + std::string(crypto::AeadSuiteName(dir_->value_suite())) + "\"", 1) +
         gauge("tidemap_value_key_id", "Id of the key new values are sealed under.", "",
               dir_->value_key_id()) +
         gauge("tidemap_rekey_running", "Whether a rekey of the values at rest runs (1) or not.",
               "", p.state == RekeyProgress::State::kRunning ? 1 : 0) +
         gauge("tidemap_rekey_records", "Records the last rekey looked at.", "", p.records) +
         gauge("tidemap_rekey_resealed", "Values the last rekey resealed under the new key.", "",
               p.resealed);
}

void RekeyJob::Stop() {
  stop_.store(true);
  std::thread running;
  {
    MutexLock lock(&mu_);
    running = std::move(thread_);
  }
  if (running.joinable()) running.join();
}

}  // namespace tidemap
