// Builds a record blob and its expiry blob (the grammars at the top of
// schemas/codec.cc) one record at a time, from views: no KeyedRecord is
// needed and, once the writer's buffers have grown to a frame's size,
// nothing is allocated per record. This is the one encoder of the record
// blob: the snapshot writer (schemas/snapshot_file.h) encodes its records
// frames with it, straight from the rows a snapshot cursor reads, and the
// sync codec (codec_internal::EncodeRecords) feeds it views of KeyedRecords.
//
// Thread-safety: none; one thread uses a writer. The views passed to Add
// are copied before it returns.
#ifndef TIDEMAP_SCHEMAS_RECORD_BLOB_WRITER_H_
#define TIDEMAP_SCHEMAS_RECORD_BLOB_WRITER_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <tidemap/base/status.h>
#include <tidemap/schemas/snapshot.h>

namespace tidemap {

class RecordBlobWriter {
 public:
  // Appends one record. InvalidArgument (naming `body` and the record's
  // index) for a tombstone with a value or an expiry, which the blobs cannot
  // express; the writer is then unchanged.
  Status Add(const SnapshotRecordView& record, const char* body);

  size_t count() const { return count_; }
  // The bytes of the blobs so far, within a few bytes of the finished size.
  size_t bytes() const { return table_bytes_ + body_.size() + expiries_.size(); }

  // Completes the record blob: afterwards it is head() followed by body()
  // (the count and tables, then the records; both empty for no record), and
  // expiries() is the expiry blob. REQUIRES: called once before head().
  void Finish();
  std::string_view head() const { return head_; }
  std::string_view body() const { return body_; }
  std::string_view expiries() const { return expiries_; }

  // Forgets every record, keeping the buffers' memory.
  void Clear();

 private:
  // The index of `map` in the map table, adding it at first use.
  uint64_t MapIndex(std::string_view map);
  uint64_t OriginIndex(uint64_t origin);

  std::vector<std::string> maps_;  // the tables, in order of first use
  // Keyed by std::string, looked up by std::string_view.
  struct NameHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, uint64_t, NameHash, std::equal_to<>> map_index_;
  std::vector<uint64_t> origins_;
  std::unordered_map<uint64_t, uint64_t> origin_index_;
  std::string head_, body_, expiries_;
  size_t count_ = 0;
  size_t table_bytes_ = 0;  // of the map names and origins
  uint64_t prev_map_ = 0, prev_origin_ = 0, prev_hlc_ = 0;
  uint64_t next_expiry_ = 0;  // the previous expiry entry's record index + 1
};

}  // namespace tidemap

#endif  // TIDEMAP_SCHEMAS_RECORD_BLOB_WRITER_H_
