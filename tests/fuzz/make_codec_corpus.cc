// Writes the seed corpus of codec_fuzz: one small valid frame per body type
// (plus a few variants) into the directory given as the only argument. Run
// once by hand; the output is checked in under tests/fuzz/corpus/codec/.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <tidemap/schemas/codec.h>
#include <tidemap/schemas/messages.h>

namespace {

using tidemap::KeyedRecord;
using tidemap::Timestamp;
using tidemap::Version;
namespace msg = tidemap::msg;

KeyedRecord Rec(std::string key, std::string value, uint64_t ms, uint64_t origin,
                bool tombstone = false, std::string map = "users") {
  return KeyedRecord{std::move(map), std::move(key), std::move(value),
                     Version{Timestamp::FromParts(ms, 0), origin}, tombstone};
}

// A live record with the expiry `expiry_ms`.
KeyedRecord TtlRec(std::string key, std::string value, uint64_t ms, uint64_t origin,
                   uint64_t expiry_ms) {
  KeyedRecord r = Rec(std::move(key), std::move(value), ms, origin);
  r.expiry_ms = expiry_ms;
  return r;
}

msg::SummaryEntry Entry(uint64_t key_hash, uint64_t ms, uint64_t logical, uint64_t origin,
                        bool tombstone = false) {
  return msg::SummaryEntry{key_hash, Version{Timestamp::FromParts(ms, logical), origin}, tombstone};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTPUT_DIR\n", argv[0]);
    return 2;
  }
  const uint64_t ms = 1'780'000'000'000;
  const uint64_t a = 0x1111222233334444, b = 0x5555666677778888;
  const std::vector<std::pair<std::string, msg::Message>> messages = {
      {"hello",
       {1, msg::Hello{1, tidemap::Digest128{3, 4}, 4, 4, 0x0123456789abcdef, 93,
                      Version{Timestamp::FromParts(ms - 86'400'000, 2), b}, ms, 93}}},
      {"record_batch",
       {2, msg::RecordBatch{90,
                            93,
                            {Rec("alice", "{\"age\":3}", ms, a),
                             Rec(std::string("k\0y", 3), "", ms + 5, b, true)}}}},
      // Three maps and origins, coming back, hlc going down: every index path.
      {"record_batch_maps",
       {2, msg::RecordBatch{94,
                            99,
                            {Rec("a", "1", ms, a), Rec("b", "2", ms + 1, b, false, "groups"),
                             Rec("c", "", ms - 9, 0x99, true, "g"), Rec("d", "4", ms, a),
                             Rec("e", "5", ms + 70000, b, false, "groups")}}}},
      // Per-record TTL: expiries on some records (the expiries field).
      {
          "record_batch_ttl",
          {2, msg::RecordBatch{100,
                               103,
                               {TtlRec("a", "1", ms, a, ms + 90'000), Rec("b", "2", ms + 1, b),
                                Rec("c", "", ms + 2, a, true),
                                TtlRec("d", "4", ms + 3, b, ms + 4)}}}},
      {"batch_ack", {3, msg::BatchAck{93}}},
      {"batch_refused", {4, msg::BatchRefused{93, "clock 94 s ahead, limit 60 s"}}},
      {"tree_nodes", {5, msg::TreeNodes{1, 1, {0, 3}, {1, 2, 3, 4, 5, 6, 7, 8}, false}}},
      {"bucket_summaries",
       {6, msg::BucketSummaries{1,
                                {0x0102, 0x0a0b, 0xfff0},
                                {2, 0, 3},
                                {Entry(0x0102000000000010, ms, 0, a),
                                 Entry(0x0102000000340000, ms - 3600000, 2, b, true),
                                 Entry(0xfff0000000000001, ms - 5, 0, a),
                                 Entry(0xfff0000012000000, ms - 7, 0, b),
                                 Entry(0xfff0000012000001, ms - 7, 1, 0x99)},
                                true}}},
      {"diff_records",
       {7, msg::DiffRecords{1, {Rec("bob", "x", ms, b)}, {0x0102000000340000}, true}}},
      {"diff_end", {8, msg::DiffEnd{1}}},
      {"origin_records",
       {9,
        msg::OriginRecords{a, {Rec("carol", "1", ms, a), Rec("dave", "", ms - 2, a, true)}, true}}},
      {"goodbye",
       {10, msg::Goodbye{"peer 5555666677778888: its state predates our GC watermark; "
                         "re-bootstrap it from an empty data dir"}}},
  };
  for (const auto& [name, m] : messages) {
    tidemap::Result<std::string> bytes = tidemap::EncodeMessage(m);
    if (!bytes.ok()) {
      std::fprintf(stderr, "%s: %s\n", name.c_str(), bytes.status().ToString().c_str());
      return 1;
    }
    const std::string path = std::string(argv[1]) + "/" + name;
    std::ofstream(path, std::ios::binary) << *bytes;
    std::printf("%s: %zu bytes\n", path.c_str(), bytes->size());
  }
  return 0;
}
