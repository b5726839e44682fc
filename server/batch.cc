#include <tidemap/server/batch.h>

#include <array>
#include <cctype>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include <tidemap/base/coding.h>
#include <tidemap/base/crypto.h>
#include <tidemap/replica/limits_internal.h>
#include <tidemap/server/duration.h>
#include <tidemap/server/flat_json_internal.h>

namespace tidemap {

namespace {

const std::string_view* Find(const FlatMembers& op, std::string_view name) {
  for (const auto& [n, v] : op.members) {
    if (n == name) return &v;
  }
  return nullptr;
}

// Decodes padded standard base64 into *out, strictly (length a multiple of
// 4, padding only at the end, unused bits zero); false for anything else,
// which crypto::Base64Decode then judges. A table lookup per byte, where
// libsodium's decoder is constant-time and several times slower.
bool DecodeBase64Fast(std::string_view text, std::string* out) {
  static const auto kTable = [] {
    std::array<int8_t, 256> t{};
    t.fill(-1);
    constexpr std::string_view kAlphabet =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < kAlphabet.size(); ++i) {
      t[static_cast<unsigned char>(kAlphabet[i])] = static_cast<int8_t>(i);
    }
    return t;
  }();
  if (text.size() % 4 != 0) return false;
  size_t pad = 0;
  if (!text.empty() && text.back() == '=') pad = text[text.size() - 2] == '=' ? 2 : 1;
  out->resize(text.size() / 4 * 3);
  size_t o = 0;
  for (size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    uint32_t acc = 0;
    for (size_t j = 0; j < 4; ++j) {
      int8_t v = kTable[static_cast<unsigned char>(text[i + j])];
      if (v < 0) {
        if (!last || j < 4 - pad) return false;
        v = 0;
      }
      acc = (acc << 6) | static_cast<uint32_t>(v);
    }
    if (last && ((pad == 1 && (acc & 0xff) != 0) || (pad == 2 && (acc & 0xffff) != 0))) {
      return false;  // bits beyond the data
    }
    (*out)[o++] = static_cast<char>(acc >> 16);
    (*out)[o++] = static_cast<char>(acc >> 8);
    (*out)[o++] = static_cast<char>(acc);
  }
  out->resize(o - pad);
  return true;
}

// The bytes of `field` or of `field`_base64 (decoded into *scratch);
// `required` says whether their absence is an error. Absent and not
// required: nullopt.
Result<std::optional<std::string_view>> BytesOf(const FlatMembers& op, const std::string& field,
                                                bool required, std::string* scratch) {
  const std::string b64 = field + "_base64";
  const std::string_view* plain = Find(op, field);
  const std::string_view* encoded = Find(op, b64);
  if (plain != nullptr && encoded != nullptr) {
    return Status::InvalidArgument("both \"" + field + "\" and \"" + b64 + "\" are given");
  }
  if (plain != nullptr) return std::optional<std::string_view>(*plain);
  if (encoded != nullptr) {
    if (!DecodeBase64Fast(*encoded, scratch)) {
      TIDEMAP_ASSIGN_OR_RETURN(*scratch, crypto::Base64Decode(*encoded));
    }
    return std::optional<std::string_view>(*scratch);
  }
  if (required) return Status::InvalidArgument("\"" + field + "\" is missing");
  return std::optional<std::string_view>();
}

bool KnownField(std::string_view name) {
  for (std::string_view f :
       {"op", "map", "map_base64", "key", "key_base64", "value", "value_base64", "ttl"}) {
    if (name == f) return true;
  }
  return false;
}

constexpr std::string_view kOpKinds = "\"op\" must be \"put\" or \"delete\"";

// The members of a parsed op, each a string (views into `op`).
Status MembersOf(const nlohmann::json& op, FlatMembers* out) {
  out->clear();
  if (!op.is_object()) return Status::InvalidArgument("an op must be a JSON object");
  for (auto it = op.begin(); it != op.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& value = it.value();
    if (!KnownField(name)) return Status::InvalidArgument("unknown field \"" + name + "\"");
    if (!value.is_string()) {
      return Status::InvalidArgument(name == "op" ? std::string(kOpKinds)
                                                  : "\"" + name + "\" must be a string");
    }
    out->members.emplace_back(name, value.get_ref<const std::string&>());
  }
  return Status::Ok();
}

// Adds one op to `batch` after the checks Replica::Write makes; returns
// the bytes it counts against batch_bytes_max.
Result<size_t> AddOp(const FlatMembers& op, const Limits& limits, WriteBatch* batch) {
  for (const auto& [name, unused] : op.members) {
    if (!KnownField(name)) {
      return Status::InvalidArgument("unknown field \"" + std::string(name) + "\"");
    }
  }
  const std::string_view* kind = Find(op, "op");
  if (kind == nullptr) return Status::InvalidArgument(std::string(kOpKinds));
  const bool put = *kind == "put";
  if (!put && *kind != "delete") {
    return Status::InvalidArgument(std::string(kOpKinds) + ", not \"" + Printable(*kind) + "\"");
  }
  std::string scratch[3];
  TIDEMAP_ASSIGN_OR_RETURN(std::optional<std::string_view> map,
                           BytesOf(op, "map", true, &scratch[0]));
  TIDEMAP_ASSIGN_OR_RETURN(std::optional<std::string_view> key,
                           BytesOf(op, "key", true, &scratch[1]));
  TIDEMAP_ASSIGN_OR_RETURN(std::optional<std::string_view> value,
                           BytesOf(op, "value", put, &scratch[2]));
  if (!put && value.has_value()) return Status::InvalidArgument("a delete takes no value");
  PutOptions options;
  if (const std::string_view* ttl = Find(op, "ttl"); ttl != nullptr) {
    if (!put) return Status::InvalidArgument("a delete takes no ttl");
    TIDEMAP_ASSIGN_OR_RETURN(options.ttl_ms, ParseDurationMs("ttl", *ttl, kTtlMaxMs));
  }
  const std::string_view v = put ? *value : std::string_view();
  TIDEMAP_RETURN_IF_ERROR(CheckSizes(limits, *map, *key, v));
  if (put) {
    batch->Put(*map, *key, v, options);
  } else {
    batch->Delete(*map, *key);
  }
  return map->size() + key->size() + v.size();
}

// Adds the next op (its members, or why they could not be read) to `out`,
// keeping the running totals within the batch limits. False when it failed
// (out->error set).
bool Take(const FlatMembers& op, const Status& read, const Limits& limits, size_t* bytes,
          ParsedBatch* out) {
  const size_t index = out->batch.size();
  if (index >= limits.batch_ops_max) {
    out->error = BatchError{CheckBatch(limits, index + 1, 0), index};
    return false;
  }
  Result<size_t> n = read.ok() ? AddOp(op, limits, &out->batch) : Result<size_t>(read);
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
  FlatMembers members;
  while (!body.empty()) {
    const size_t eol = body.find('\n');
    std::string_view line = body.substr(0, eol);
    body = eol == std::string_view::npos ? std::string_view() : body.substr(eol + 1);
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    const std::optional<size_t> end = ReadFlatObject(line, &members);
    if (end.has_value() && SkipJsonSpace(line, *end) == line.size()) {
      if (!Take(members, Status::Ok(), limits, &bytes, out)) return;
      continue;
    }
    auto op = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (op.is_discarded()) {
      const size_t index = out->batch.size();
      out->error = BatchError{
          Status::InvalidArgument("op " + std::to_string(index) + ": line is not JSON"), index};
      return;
    }
    const Status read = MembersOf(op, &members);
    if (!Take(members, read, limits, &bytes, out)) return;
  }
}

// {"ops": [FLAT, ...]} read by ReadFlatObject alone; false (nothing taken)
// when the body is of another shape.
bool ReadFlatDocument(std::string_view body, std::vector<FlatMembers>* ops) {
  constexpr std::string_view kOps = "\"ops\"";
  size_t at = SkipJsonSpace(body, 0);
  if (body.substr(at, 1) != "{") return false;
  at = SkipJsonSpace(body, at + 1);
  if (body.substr(at, kOps.size()) != kOps) return false;
  at = SkipJsonSpace(body, at + kOps.size());
  if (body.substr(at, 1) != ":") return false;
  at = SkipJsonSpace(body, at + 1);
  if (body.substr(at, 1) != "[") return false;
  at = SkipJsonSpace(body, at + 1);
  if (body.substr(at, 1) != "]") {
    for (;;) {
      FlatMembers op;
      const std::optional<size_t> n = ReadFlatObject(body.substr(at), &op);
      if (!n.has_value()) return false;
      ops->push_back(std::move(op));
      at = SkipJsonSpace(body, at + *n);
      if (body.substr(at, 1) == "]") break;
      if (body.substr(at, 1) != ",") return false;
      ++at;
    }
  }
  at = SkipJsonSpace(body, at + 1);
  if (body.substr(at, 1) != "}") return false;
  return SkipJsonSpace(body, at + 1) == body.size();
}

void ParseJson(std::string_view body, const Limits& limits, ParsedBatch* out) {
  size_t bytes = 0;
  if (std::vector<FlatMembers> flat; ReadFlatDocument(body, &flat)) {
    for (const FlatMembers& op : flat) {
      if (!Take(op, Status::Ok(), limits, &bytes, out)) return;
    }
    return;
  }
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
  FlatMembers members;
  for (const auto& op : *ops) {
    const Status read = MembersOf(op, &members);
    if (!Take(members, read, limits, &bytes, out)) return;
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
