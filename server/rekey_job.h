// RekeyJob: the rekey of a running node's data dir (DataDir::RekeyServing)
// on a thread of its own, started by POST /v1/admin/rekey, and its progress
// for GET /v1/admin/rekey and the `encryption` object of status JSON.
//
// The request returns once the rekey is started: the HTTP event loop and
// the worker pool never wait for it. Reads and writes go on while it runs.
//
// Threading: every method from any thread. The data dir and the logger are
// borrowed and must outlive the job; the destructor (or Stop) asks a
// running rekey to stop after its current page and joins its thread. A
// rekey stopped so is left in progress in the data dir, to be finished by
// the next rekey to the same key (see server/data_dir.h).
#ifndef TIDEMAP_SERVER_REKEY_JOB_H_
#define TIDEMAP_SERVER_REKEY_JOB_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include <nlohmann/json.hpp>

#include <tidemap/base/mutex.h>
#include <tidemap/base/status.h>
#include <tidemap/server/data_dir.h>

namespace spdlog {
class logger;
}

namespace tidemap {

// A rekey's progress: state idle (none since the node started), running,
// done or failed; the records looked at and the values resealed so far;
// the error of a failed one.
struct RekeyProgress {
  enum class State { kIdle, kRunning, kDone, kFailed };
  State state = State::kIdle;
  uint64_t records = 0;
  uint64_t resealed = 0;
  std::string error;
  std::string new_key_file;
  bool resumed = false;                    // it finished a rekey started before (a crash, a stop)
  uint8_t old_key_id = 0, new_key_id = 0;  // set when done
};

std::string_view RekeyStateName(RekeyProgress::State state);
// {"state", "records", "resealed", "error" (null unless failed),
//  "new_key_file" (null when idle), "resumed", "old_key_id", "new_key_id"
//  (the last two when done)}
nlohmann::json RekeyProgressJson(const RekeyProgress& progress);

// {"encrypted": false} for values in the clear, else {"encrypted": true,
//  "suite", "key_id" (new values are sealed under it), "rekey": `progress`}.
nlohmann::json EncryptionJson(const DataDir& dir, const RekeyProgress& progress);

class RekeyJob {
 public:
  RekeyJob(DataDir* dir, std::shared_ptr<spdlog::logger> log);
  ~RekeyJob();  // Stop()
  RekeyJob(const RekeyJob&) = delete;
  RekeyJob& operator=(const RekeyJob&) = delete;

  // Starts a rekey to the key in `new_key_file` (created when missing, as
  // `tidemap rekey --data` does) on the job's thread. False, starting
  // nothing, while a rekey runs. Checked first, in the caller's thread:
  // InvalidArgument when the values are in the clear, `new_key_file` is
  // not an absolute path, or the job is stopped; the errors of
  // LoadValueKeyFile for a file that exists (Refused when group or others
  // may access it, Corruption when it is not a key file).
  Result<bool> Start(const std::string& new_key_file);
  RekeyProgress Progress() const;
  // EncryptionJson(dir, Progress()).
  nlohmann::json EncryptionJson() const;
  // The same in Prometheus text: tidemap_values_encrypted{suite} (0 or 1),
  // and for encrypted values tidemap_value_key_id, tidemap_rekey_running,
  // tidemap_rekey_records and tidemap_rekey_resealed (of the last rekey).
  std::string MetricsText() const;
  // Stops a running rekey after its current page and joins the thread.
  // Idempotent; Start refuses afterwards.
  void Stop();

 private:
  void Run(std::string new_key_file);

  DataDir* const dir_;
  const std::shared_ptr<spdlog::logger> log_;
  std::atomic<bool> stop_{false};
  mutable Mutex mu_;
  RekeyProgress progress_ TIDEMAP_GUARDED_BY(mu_);
  std::thread thread_ TIDEMAP_GUARDED_BY(mu_);  // the last rekey's, joined by Stop or Start
};

}  // namespace tidemap

#endif  // TIDEMAP_SERVER_REKEY_JOB_H_
