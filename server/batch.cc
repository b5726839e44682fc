#include <tidemap/server/batch.h>

#include <cctype>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include <tidemap/base/crypto.h>
#include <tidemap/replica/limits_internal.h>

namespace tidemap {

namespace {

// The bytes of `field` (a JSON string) or of `field`_base64; `required`
// says whether its absence is an error. Absent and not required: nullopt.
Result<std::optional<std::string>> BytesOf(const nlohmann::json& op, const std::string& field,
                                           bool required) {
  const std::string b64 = field + "_base64";
  const auto plain = op.find(field);
  const auto encoded = op.find(b64);
  if (plain != op.end() && encoded != op.end()) {
    return Status::InvalidArgument("both \"" + field + "\" and \"" + b64 + "\" are given");
  }
  if (plain != op.end()) {
    if (!plain->is_string()) return Status::InvalidArgument("\"" + field + "\" must be a string");
    return std::optional<std::string>(plain->get<std::string>());
  }
  if (encoded != op.end()) {
    if (!encoded->is_string()) return Status::InvalidArgument("\"" + b64 + "\" must be a string");
    TIDEMAP_ASSIGN_OR_RETURN(std::string bytes, crypto::Base64Decode(encoded->get<std::string>()));
    return std::optional<std::string>(std::move(bytes));
  }
  if (required) return Status::InvalidArgument("\"" + field + "\" is missing");
  return std::optional<std::string>();
}

bool KnownField(const std::string& name) {
  for (std::string_view f :
       {"op", "map", "map_base64", "key", "key_base64", "value", "value_base64"}) {
    if (name == f) return true;
  }
  return false;
}

// Adds one op to `batch` after the checks Replica::Write makes; returns
// the bytes it counts against batch_bytes_max.
Result<size_t> AddOp(const nlohmann::json& op, const Limits& limits, WriteBatch* batch) {
  if (!op.is_object()) return Status::InvalidArgument("an op must be a JSON object");
  for (const auto& [name, unused] : op.items()) {
    if (!KnownField(name)) return Status::InvalidArgument("unknown field \"" + name + "\"");
  }
  const auto kind = op.find("op");
  if (kind == op.end() || !kind->is_string()) {
    return Status::InvalidArgument("\"op\" must be \"put\" or \"delete\"");
  }
  const bool put = *kind == "put";
  if (!put && *kind != "delete") {
    return Status::InvalidArgument("\"op\" must be \"put\" or \"delete\", not " + kind->dump());
  }
  TIDEMAP_ASSIGN_OR_RETURN(std::optional<std::string> map, BytesOf(op, "map", true));
  TIDEMAP_ASSIGN_OR_RETURN(std::optional<std::string> key, BytesOf(op, "key", true));
  TIDEMAP_ASSIGN_OR_RETURN(std::optional<std::string> value, BytesOf(op, "value", put));
  if (!put && value.has_value()) return Status::InvalidArgument("a delete takes no value");
  const std::string_view v = put ? std::string_view(*value) : std::string_view();
  TIDEMAP_RETURN_IF_ERROR(CheckSizes(limits, *map, *key, v));
  if (put) {
    batch->Put(*map, *key, v);
  } else {
    batch->Delete(*map, *key);
  }
  return map->size() + key->size() + v.size();
}

// Parses the next op (a JSON document) and adds it to `out`, keeping the
// running totals within the batch limits. False when it failed (out->error set).
bool Take(const nlohmann::json& op, const Limits& limits, size_t* bytes, ParsedBatch* out) {
  const size_t index = out->batch.size();
  if (index >= limits.batch_ops_max) {
    out->error = BatchError{CheckBatch(limits, index + 1, 0), index};
    return false;
  }
  Result<size_t> n = AddOp(op, limits, &out->batch);
  if (!n.ok()) {
    out->error = BatchError{n.status().WithContext("op " + std::to_string(index)), index};
    return false;
  }
  *bytes += *n;
  if (Status s = CheckBatch(limits, index + 1, *bytes); !s.ok()) {
    out->error = BatchError{s.WithContext("op " + std::to_string(index)), index};
    return false;
  }
  return true;
}

void ParseNdjson(std::string_view body, const Limits& limits, ParsedBatch* out) {
  size_t bytes = 0;
  while (!body.empty()) {
    const size_t eol = body.find('\n');
    std::string_view line = body.substr(0, eol);
    body = eol == std::string_view::npos ? std::string_view() : body.substr(eol + 1);
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    auto op = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (op.is_discarded()) {
      const size_t index = out->batch.size();
      out->error = BatchError{
          Status::InvalidArgument("op " + std::to_string(index) + ": line is not JSON"), index};
      return;
    }
    if (!Take(op, limits, &bytes, out)) return;
  }
}

void ParseJson(std::string_view body, const Limits& limits, ParsedBatch* out) {
  auto doc = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    out->error = BatchError{Status::InvalidArgument("the batch body is not JSON"), std::nullopt};
    return;
  }
  const auto ops = doc.is_object() ? doc.find("ops") : doc.end();
  if (!doc.is_object() || ops == doc.end() || !ops->is_array() || doc.size() != 1) {
    out->error = BatchError{
        Status::InvalidArgument("the batch body must be {\"ops\": [...]} and nothing else"),
        std::nullopt};
    return;
  }
  size_t bytes = 0;
  for (const auto& op : *ops) {
    if (!Take(op, limits, &bytes, out)) return;
  }
}

}  // namespace

ParsedBatch ParseBatch(std::string_view body, BatchFormat format, const Limits& limits) {
  ParsedBatch out;
  if (format == BatchFormat::kNdjson) {
    ParseNdjson(body, limits, &out);
  } else {
    ParseJson(body, limits, &out);
  }
  return out;
}

std::optional<BatchFormat> BatchFormatFor(std::string_view content_type) {
  std::string media(content_type.substr(0, content_type.find(';')));
  while (!media.empty() && media.back() == ' ') media.pop_back();
  for (char& c : media) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (media == "application/x-ndjson") return BatchFormat::kNdjson;
  if (media.empty() || media == "application/json") return BatchFormat::kJson;
  return std::nullopt;
}

}  // namespace tidemap
