// Snapshot file codec.
//
// Grammar (integers big-endian):
//
//   file     := magic frame{header} frame{records}* frame{watermarks}* frame{trailer}
//   magic    := "TIDESNAP"
//   frame    := length:u32 checksum:u64 payload:byte{length}
//   payload  := one SnapshotFrame of schemas/snapshot.capnp, unpacked
//               (capnp::messageToFlatArray), so length is a multiple of 8
//   checksum := Hash64(payload, kFrameSeed)
//
// The file checksum (the trailer's fileChecksum) chains every frame before
// the trailer: c0 = Hash64(magic), c(i+1) = Hash64(length_i ++ checksum_i, c(i))
// with length and checksum as written. Each frame checksum covers its
// payload, so the chain covers every byte and the frames' order. The trailer
// also counts the frames and records, so a file cut at a frame boundary, a
// frame dropped or repeated, is refused as surely as a flipped byte; nothing
// may follow the trailer.
//
// The header's format version is checked before anything else is decoded: a
// reader refuses a version it does not know. Records frames carry the record
// and expiry blobs of the sync codec (grammars in schemas/codec.cc).
#include <tidemap/schemas/snapshot_file.h>

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <cstring>
#include <exception>
#include <string>
#include <utility>

#include <tidemap/base/check.h>
#include <tidemap/base/coding.h>
#include <tidemap/base/hash.h>
#include <tidemap/schemas/snapshot.capnp.h>

namespace tidemap {

namespace {

constexpr uint64_t kFrameSeed = 0x534e4150u;  // "SNAP"
constexpr size_t kFramePrefixBytes = 12;      // length:u32 checksum:u64
constexpr char kBody[] = "snapshot records";

std::string Str(uint64_t n) { return std::to_string(n); }

uint64_t ChainStart() { return Hash64(kSnapshotMagic); }

uint64_t ChainNext(uint64_t chain, std::string_view prefix) { return Hash64(prefix, chain); }

capnp::Data::Reader AsData(std::string_view s) {
  return capnp::Data::Reader(reinterpret_cast<const kj::byte*>(s.data()), s.size());
}

std::string_view AsView(capnp::Data::Reader d) {
  return std::string_view(reinterpret_cast<const char*>(d.begin()), d.size());
}

// The flat bytes of a built frame (capnp::messageToFlatArray's) into `*out`,
// replacing its contents: the segment table (the count less one, each
// segment's words, u32 little-endian, padded to a word), then the segments.
void FlattenInto(capnp::MessageBuilder& builder, std::string* out) {
  const kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segments =
      builder.getSegmentsForOutput();
  out->clear();
  auto put32 = [out](size_t v) {
    for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  };
  put32(segments.size() - 1);
  for (const kj::ArrayPtr<const capnp::word>& segment : segments) put32(segment.size());
  if (segments.size() % 2 == 0) put32(0);
  for (const kj::ArrayPtr<const capnp::word>& segment : segments) {
    const kj::ArrayPtr<const kj::byte> bytes = segment.asBytes();
    out->append(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
  }
}

// The flat bytes of a built frame.
std::string Flatten(capnp::MallocMessageBuilder& builder) {
  std::string out;
  FlattenInto(builder, &out);
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------
// Writer

SnapshotFileWriter::SnapshotFileWriter(Sink sink) : sink_(std::move(sink)), chain_(ChainStart()) {}

Status SnapshotFileWriter::WriteFrame(std::string_view payload) {
  if (!error_.ok()) return error_;
  std::string prefix;
  PutFixed32BE(&prefix, static_cast<uint32_t>(payload.size()));
  PutFixed64BE(&prefix, Hash64(payload, kFrameSeed));
  chain_ = ChainNext(chain_, prefix);
  ++frames_;
  error_ = sink_(prefix);
  if (error_.ok()) error_ = sink_(payload);
  bytes_ += prefix.size() + payload.size();
  return error_;
}

Status SnapshotFileWriter::WriteHeader(const SnapshotHeader& header) {
  if (!error_.ok()) return error_;
  error_ = sink_(kSnapshotMagic);
  if (!error_.ok()) return error_;
  bytes_ += kSnapshotMagic.size();
  capnp::MallocMessageBuilder builder;
  auto h = builder.initRoot<snapfile::SnapshotFrame>().getBody().initHeader();
  h.setFormatVersion(header.format_version);
  h.setNodeId(header.node_id);
  h.setIncarnation(header.incarnation);
  h.setSeq(header.seq);
  h.setRecords(header.records);
  h.setCreatedMs(header.created_ms);
  return WriteFrame(Flatten(builder));
}

Status SnapshotFileWriter::WriteRecords(const std::vector<KeyedRecord>& records) {
  if (!error_.ok()) return error_;
  TIDEMAP_CHECK(pending_.count() == 0);
  if (records.empty()) return Status::InvalidArgument("snapshot: an empty records frame");
  for (const KeyedRecord& r : records) {
    const Status added =
        AddRecord(SnapshotRecordView{r.map, r.key, r.value, r.version, r.tombstone, r.expiry_ms});
    if (!added.ok()) {
      pending_.Clear();
      return added;
    }
  }
  return FlushRecords();
}

Status SnapshotFileWriter::AddRecord(const SnapshotRecordView& record) {
  if (!error_.ok()) return error_;
  return pending_.Add(record, kBody);
}

Status SnapshotFileWriter::FlushRecords() {
  if (!error_.ok()) return error_;
  if (pending_.count() == 0) return Status::Ok();
  pending_.Finish();
  const std::string_view head = pending_.head(), body = pending_.body();
  // The message is built in segment_ after one word kept for the segment
  // table, so that a one-segment frame is sent from there without a copy.
  // A builder leaves the words it used zeroed, as the next one needs them.
  const size_t words = (pending_.bytes() + head.size()) / 8 + 16;
  if (segment_.size() < words + 1) segment_.assign(words + 1, 0);
  std::string_view flat;
  try {
    auto* first = reinterpret_cast<capnp::word*>(segment_.data() + 1);
    capnp::MallocMessageBuilder builder(kj::arrayPtr(first, segment_.size() - 1));
    auto r = builder.initRoot<snapfile::SnapshotFrame>().getBody().initRecords();
    r.setCount(static_cast<uint32_t>(pending_.count()));
    capnp::Data::Builder blob = r.initRecords(static_cast<unsigned>(head.size() + body.size()));
    std::memcpy(blob.begin(), head.data(), head.size());
    std::memcpy(blob.begin() + head.size(), body.data(), body.size());
    r.setExpiries(AsData(pending_.expiries()));
    const auto segments = builder.getSegmentsForOutput();
    if (segments.size() == 1 && segments[0].begin() == first) {
      std::string table(4, '\0');  // one segment: the count less one, then its words
      for (int i = 0; i < 4; ++i) table.push_back(static_cast<char>(segments[0].size() >> (8 * i)));
      std::memcpy(segment_.data(), table.data(), table.size());
      flat = std::string_view(reinterpret_cast<const char*>(segment_.data()),
                              (segments[0].size() + 1) * sizeof(uint64_t));
    } else {
      FlattenInto(builder, &frame_);
      flat = frame_;
    }
    records_ += pending_.count();
    pending_.Clear();
    const Status written = WriteFrame(flat);
    segment_[0] = 0;
    return written;
  } catch (const kj::Exception& e) {
    segment_[0] = 0;
    return Status::Internal(std::string("snapshot: encoding records: ") +
                            e.getDescription().cStr());
  }
}

Status SnapshotFileWriter::WriteWatermarks(const std::vector<SnapshotWatermark>& watermarks) {
  if (!error_.ok()) return error_;
  capnp::MallocMessageBuilder builder;
  auto list = builder.initRoot<snapfile::SnapshotFrame>().getBody().initWatermarks().initWatermarks(
      static_cast<unsigned>(watermarks.size()));
  for (size_t i = 0; i < watermarks.size(); ++i) {
    auto w = list[static_cast<unsigned>(i)];
    w.setBucket(watermarks[i].bucket);
    w.setHlc(watermarks[i].version.hlc.raw);
    w.setOrigin(watermarks[i].version.origin);
  }
  return WriteFrame(Flatten(builder));
}

Status SnapshotFileWriter::Finish() {
  if (!error_.ok()) return error_;
  capnp::MallocMessageBuilder builder;
  auto t = builder.initRoot<snapfile::SnapshotFrame>().getBody().initTrailer();
  t.setRecords(records_);
  t.setFrames(frames_);
  t.setFileChecksum(chain_);
  return WriteFrame(Flatten(builder));
}

// ---------------------------------------------------------------------------
// Reader

SnapshotFileReader::SnapshotFileReader(Source source, SnapshotFileLimits limits)
    : source_(std::move(source)), limits_(limits), chain_(ChainStart()) {}

Status SnapshotFileReader::Fail(uint64_t at, const std::string& reason) const {
  return Status::Corruption("snapshot offset " + Str(at) + ": " + reason);
}

Result<bool> SnapshotFileReader::ReadExact(char* buf, size_t n, std::string_view what) {
  size_t got = 0;
  while (got < n) {
    TIDEMAP_ASSIGN_OR_RETURN(const size_t r, source_(buf + got, n - got));
    if (r == 0) {
      if (got == 0 && what.empty()) return false;
      return Fail(offset_, "the file ends inside " + std::string(what.empty() ? "a frame" : what) +
                               " (" + Str(got) + " of " + Str(n) + " bytes): truncated");
    }
    got += r;
    offset_ += r;
  }
  return true;
}

Result<bool> SnapshotFileReader::ReadFrame() {
  frame_offset_ = offset_;
  char prefix[kFramePrefixBytes];
  TIDEMAP_ASSIGN_OR_RETURN(const bool any, ReadExact(prefix, sizeof(prefix), ""));
  if (!any) return false;
  const uint32_t length = DecodeFixed32BE(prefix);
  const uint64_t checksum = DecodeFixed64BE(prefix + 4);
  if (length == 0 || length % 8 != 0 || length > limits_.frame_bytes_max) {
    return Fail(frame_offset_, "bad frame length " + Str(length) + " (a multiple of 8, 8 to " +
                                   Str(limits_.frame_bytes_max) + ")");
  }
  payload_.resize(length / 8);
  payload_bytes_ = length;
  TIDEMAP_RETURN_IF_ERROR(
      ReadExact(reinterpret_cast<char*>(payload_.data()), length, "a frame").status());
  const std::string_view payload(reinterpret_cast<const char*>(payload_.data()), length);
  if (Hash64(payload, kFrameSeed) != checksum) {
    return Fail(frame_offset_, "frame checksum mismatch (corrupt bytes)");
  }
  chain_ = ChainNext(chain_, std::string_view(prefix, sizeof(prefix)));
  ++frames_;
  return true;
}

namespace {

// A frame decoded into our values. Throws kj::Exception on malformed Cap'n Proto.
struct FrameReader {
  capnp::FlatArrayMessageReader reader;
  snapfile::SnapshotFrame::Body::Reader body;
  FrameReader(kj::ArrayPtr<const capnp::word> words, const DecodeLimits& limits)
      : reader(words, Options(limits)), body(reader.getRoot<snapfile::SnapshotFrame>().getBody()) {}
  static capnp::ReaderOptions Options(const DecodeLimits& limits) {
    capnp::ReaderOptions o;
    o.traversalLimitInWords = limits.traversal_words_max;
    o.nestingLimit = limits.nesting_max;
    return o;
  }
};

}  // namespace

Result<SnapshotHeader> SnapshotFileReader::ReadHeader() {
  char magic[kSnapshotMagic.size()];
  TIDEMAP_ASSIGN_OR_RETURN(const bool any, ReadExact(magic, sizeof(magic), ""));
  if (!any) return Fail(0, "the file is empty");
  if (std::string_view(magic, sizeof(magic)) != kSnapshotMagic) {
    return Fail(0, "not a tidemap snapshot file (bad magic)");
  }
  TIDEMAP_ASSIGN_OR_RETURN(const bool frame, ReadFrame());
  if (!frame) return Fail(offset_, "the file ends before its header: truncated");
  try {
    FrameReader f(
        kj::arrayPtr(reinterpret_cast<const capnp::word*>(payload_.data()), payload_.size()),
        limits_.decode);
    if (!f.body.isHeader()) return Fail(frame_offset_, "the first frame is not a header");
    auto h = f.body.getHeader();
    if (h.getFormatVersion() != kSnapshotFormatVersion) {
      return Fail(frame_offset_, "format version " + Str(h.getFormatVersion()) +
                                     "; this build reads version " + Str(kSnapshotFormatVersion));
    }
    header_ = SnapshotHeader{h.getFormatVersion(), h.getNodeId(),  h.getIncarnation(),
                             h.getSeq(),           h.getRecords(), h.getCreatedMs()};
  } catch (const kj::Exception& e) {
    return Fail(frame_offset_, std::string("malformed header: ") + e.getDescription().cStr());
  }
  return header_;
}

Result<SnapshotPart> SnapshotFileReader::Next(std::vector<KeyedRecord>* records,
                                              std::vector<SnapshotWatermark>* watermarks) {
  return Next(
      [records](const SnapshotRecordView& r) {
        records->push_back(KeyedRecord{std::string(r.map), std::string(r.key), std::string(r.value),
                                       r.version, r.tombstone, r.expiry_ms});
        return Status::Ok();
      },
      watermarks);
}

namespace {

// The record count a records blob starts with (0 for an empty or malformed one).
uint64_t BlobCount(std::string_view blob) {
  uint64_t count = 0;
  return GetVarint64(&blob, &count) ? count : 0;
}

}  // namespace

Result<SnapshotPart> SnapshotFileReader::Next(const RecordViewFn& on_record,
                                              std::vector<SnapshotWatermark>* watermarks) {
  if (ended_) return SnapshotPart::kEnd;
  const uint64_t chain_before = chain_;
  TIDEMAP_ASSIGN_OR_RETURN(const bool frame, ReadFrame());
  if (!frame) return Fail(offset_, "the file ends without its trailer: truncated");
  try {
    FrameReader f(
        kj::arrayPtr(reinterpret_cast<const capnp::word*>(payload_.data()), payload_.size()),
        limits_.decode);
    if (f.body.isRecords()) {
      if (watermarks_seen_) return Fail(frame_offset_, "records after the watermarks");
      auto r = f.body.getRecords();
      const std::string_view blob = AsView(r.getRecords());
      if (BlobCount(blob) == 0 || BlobCount(blob) != r.getCount()) {
        return Fail(frame_offset_, "records frame holds " + Str(BlobCount(blob)) +
                                       " records, says " + Str(r.getCount()));
      }
      Status passed;  // the first error of on_record
      Result<uint64_t> n = VisitRecordBlob(blob, AsView(r.getExpiries()), limits_.decode, kBody,
                                           [&](const SnapshotRecordView& v) {
                                             passed = on_record(v);
                                             return passed;
                                           });
      if (!passed.ok()) return passed;
      if (!n.ok()) return Fail(frame_offset_, n.status().message());
      records_ += *n;
      return SnapshotPart::kRecords;
    }
    if (f.body.isWatermarks()) {
      watermarks_seen_ = true;
      for (auto w : f.body.getWatermarks().getWatermarks()) {
        watermarks->push_back(
            SnapshotWatermark{w.getBucket(), Version{Timestamp{w.getHlc()}, w.getOrigin()}});
      }
      return SnapshotPart::kWatermarks;
    }
    if (!f.body.isTrailer()) return Fail(frame_offset_, "unexpected frame (a second header?)");
    auto t = f.body.getTrailer();
    if (t.getFileChecksum() != chain_before) {
      return Fail(frame_offset_, "file checksum mismatch (frames missing, repeated or reordered)");
    }
    if (t.getFrames() != frames_ - 1 || t.getRecords() != records_ || header_.records != records_) {
      return Fail(frame_offset_, "counts disagree: header says " + Str(header_.records) +
                                     " records, trailer " + Str(t.getRecords()) + " records in " +
                                     Str(t.getFrames()) + " frames, the file holds " +
                                     Str(records_) + " in " + Str(frames_ - 1));
    }
  } catch (const kj::Exception& e) {
    return Fail(frame_offset_, std::string("malformed frame: ") + e.getDescription().cStr());
  }
  char extra = 0;
  TIDEMAP_ASSIGN_OR_RETURN(const bool more, ReadExact(&extra, 1, ""));
  if (more) return Fail(offset_ - 1, "bytes after the trailer");
  ended_ = true;
  return SnapshotPart::kEnd;
}

}  // namespace tidemap
