// The body of POST /v1/batch (and of `tidemap import`'s files), parsed into
// one WriteBatch and checked against the replica's Limits before anything
// is written.
//
// Formats. JSON: {"ops": [OP, ...]}. NDJSON (application/x-ndjson): one OP
// per line; blank lines are skipped. An OP is an object:
//   {"op": "put",    "map": M, "key": K, "value": V [, "ttl": DURATION]}
//   {"op": "delete", "map": M, "key": K}
// A put's "ttl" is a string in the grammar of server/duration.h ("90s",
// "7d"), at most kTtlMaxMs: the record expires that long after the write.
// Names and values are bytes. A JSON string carries its UTF-8 bytes; any
// bytes at all go base64-encoded in "map_base64", "key_base64" or
// "value_base64" instead (as a scan page carries them). Any other field, a
// put without a value or a delete with one (or with a ttl) is an error.
//
// Contract: pure functions; the returned batch owns copies of its bytes.
#ifndef TIDEMAP_SERVER_BATCH_H_
#define TIDEMAP_SERVER_BATCH_H_

#include <cstddef>
#include <optional>
#include <string_view>

#include <tidemap/base/status.h>
#include <tidemap/replica/replica.h>

namespace tidemap {

enum class BatchFormat { kJson, kNdjson };

// Why a batch was refused: `status` is InvalidArgument for a malformed body
// or op, Refused for an op or the batch over a limit; `op` is the index
// (0-based, in body order) of the op at fault, none when the body as a whole
// is (not JSON, no "ops" array).
struct BatchError {
  Status status;
  std::optional<size_t> op;
};

// The batch of `body`, or the first error. Every op passes the checks
// Replica::Write makes (empty names, map/key/value sizes), and the batch
// stays within limits.batch_ops_max ops and limits.batch_bytes_max bytes
// (the op index is then the first op over).
struct ParsedBatch {
  WriteBatch batch;
  std::optional<BatchError> error;  // set: `batch` is incomplete and must not be written
};
ParsedBatch ParseBatch(std::string_view body, BatchFormat format, const Limits& limits);

// The format for a request's Content-Type: NDJSON for application/x-ndjson
// (parameters ignored), JSON for application/json or none; nullopt otherwise.
std::optional<BatchFormat> BatchFormatFor(std::string_view content_type);

}  // namespace tidemap

#endif  // TIDEMAP_SERVER_BATCH_H_
