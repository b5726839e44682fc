// GET and POST /v1/admin/rekey: a running node's rekey of its values at
// rest (server/rekey_job.h). POST takes {"new_key_file": "/abs/path"}, a path
// the node reads on its own file system (the key never crosses HTTP), starts
// the rekey on the job's thread and answers 202 with the progress; 409
// while one runs. GET answers the progress.
#include <tidemap/server/http_internal.h>
#include <tidemap/server/rekey_job.h>

namespace tidemap {

namespace {

// The new key file's path from a POST body.
Result<std::string> NewKeyFileOf(const std::string& body) {
  const auto j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return Status::InvalidArgument(
        R"(the body must be a JSON object: {"new_key_file": "/abs/path/on/the/node"})");
  }
  for (const auto& [name, value] : j.items()) {
    if (name != "new_key_file") {
      return Status::InvalidArgument("unknown field '" + Printable(name) + "' in the body");
    }
  }
  const auto it = j.find("new_key_file");
  if (it == j.end() || !it->is_string()) {
    return Status::InvalidArgument(R"(the body needs "new_key_file": a path on the node)");
  }
  return it->get<std::string>();
}

}  // namespace

Result<Response> HttpServer::Impl::HandleRekey(http::verb method, std::string body) {
  if (method == http::verb::get) {
    // A server without a data dir (an embedding application's) has never rekeyed: idle.
    const RekeyProgress progress =
        context.rekey == nullptr ? RekeyProgress{} : context.rekey->Progress();
    return JsonResponse(http::status::ok, RekeyProgressJson(progress), true);
  }
  if (context.rekey == nullptr) {
    return Status::NotFound("no route POST /v1/admin/rekey: this server has no data dir to rekey");
  }
  TIDEMAP_ASSIGN_OR_RETURN(const std::string new_key_file, NewKeyFileOf(body));
  const Result<bool> started = context.rekey->Start(new_key_file);
  if (!started.ok()) {
    // Every refusal here is of the request: the node, its key or the file named.
    const Status& s = started.status();
    if (s.code() == Status::Code::kInternal) return s;
    return ErrorResponse(http::status::bad_request, Status::CodeName(s.code()), s.message());
  }
  const RekeyProgress progress = context.rekey->Progress();
  if (!*started) {
    return ErrorResponse(http::status::conflict, "rekey_running",
                         "a rekey to " + progress.new_key_file + " is running (" +
                             std::to_string(progress.records) +
                             " records looked at); wait for it to end");
  }
  return JsonResponse(http::status::accepted, RekeyProgressJson(progress), true);
}

}  // namespace tidemap
