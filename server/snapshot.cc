// Snapshot export, verify and import (contracts in server/snapshot.h).
#include <tidemap/server/snapshot.h>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <utility>
#include <vector>

namespace tidemap {

namespace {

namespace fs = std::filesystem;

// A FILE* closed when it goes.
struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

Result<File> OpenFile(const std::string& path, const char* mode) {
  File f(std::fopen(path.c_str(), mode));
  if (f == nullptr) {
    return Status::Unavailable("cannot open " + path + ": " + std::strerror(errno));
  }
  return f;
}

SnapshotFileReader::Source FileSource(std::FILE* f, const std::string& path) {
  return [f, path](char* buf, size_t n) -> Result<size_t> {
    const size_t got = std::fread(buf, 1, n, f);
    if (got == 0 && std::ferror(f)) {
      return Status::Unavailable("cannot read " + path + ": " + std::strerror(errno));
    }
    return got;
  };
}

// The path of the directory an import fills before it is renamed to `dir`:
// hidden, beside it (the same file system, so the rename is atomic).
fs::path ImportTempDir(const fs::path& dir) {
  return dir.parent_path() / ("." + dir.filename().string() + ".snapshot-import");
}

// `dir` without a trailing separator, so its filename is its last component.
fs::path Normalized(const std::string& dir) {
  fs::path p = fs::path(dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  if (p.parent_path().empty()) p = fs::path(".") / p;
  return p;
}

}  // namespace

// ---------------------------------------------------------------------------
// Export

Result<std::unique_ptr<SnapshotStream>> SnapshotStream::Open(const Replica& replica,
                                                             uint64_t now_ms) {
  std::unique_ptr<SnapshotStream> s(new SnapshotStream());
  TIDEMAP_ASSIGN_OR_RETURN(s->cursor_, SnapshotCursor::Open(replica, now_ms));
  SnapshotStream* self = s.get();
  s->writer_ = std::make_unique<SnapshotFileWriter>([self](std::string_view bytes) {
    self->out_->append(bytes);
    return Status::Ok();
  });
  s->counts_.header = s->cursor_->header();
  return s;
}

Result<bool> SnapshotStream::Next(size_t bytes_min, std::string* out) {
  if (finished_) return false;
  out_ = out;
  const size_t start = out->size();
  if (writer_->bytes() == 0) TIDEMAP_RETURN_IF_ERROR(writer_->WriteHeader(counts_.header));
  // Each page of the cursor is one frame, encoded straight from the rows.
  const SnapshotCursor::RecordFn add = [this](const SnapshotRecordView& r) {
    counts_.tombstones += r.tombstone ? 1 : 0;
    return writer_->AddRecord(r);
  };
  while (!records_done_ && out->size() - start < bytes_min) {
    TIDEMAP_ASSIGN_OR_RETURN(const bool more,
                             cursor_->Visit(kSnapshotFrameBytes, kSnapshotFrameRecordsMax, add));
    TIDEMAP_RETURN_IF_ERROR(writer_->FlushRecords());
    records_done_ = !more;
  }
  if (!records_done_) return true;
  TIDEMAP_ASSIGN_OR_RETURN(const std::vector<SnapshotWatermark> marks, cursor_->Watermarks());
  if (!marks.empty()) TIDEMAP_RETURN_IF_ERROR(writer_->WriteWatermarks(marks));
  if (writer_->records() != counts_.header.records) {
    return Status::Internal("snapshot: the replica counted " +
                            std::to_string(counts_.header.records) +
                            " records, its snapshot held " + std::to_string(writer_->records()));
  }
  TIDEMAP_RETURN_IF_ERROR(writer_->Finish());
  counts_.records = writer_->records();
  counts_.watermarks = marks.size();
  counts_.bytes = writer_->bytes();
  cursor_.reset();  // lets the store go on without the iterator
  finished_ = true;
  out_ = nullptr;
  return false;
}

Result<SnapshotCounts> ExportSnapshot(const Replica& replica, uint64_t now_ms,
                                      const std::function<Status(std::string_view)>& sink) {
  TIDEMAP_ASSIGN_OR_RETURN(std::unique_ptr<SnapshotStream> stream,
                           SnapshotStream::Open(replica, now_ms));
  std::string piece;
  for (bool more = true; more;) {
    piece.clear();
    TIDEMAP_ASSIGN_OR_RETURN(more, stream->Next(kSnapshotFrameBytes, &piece));
    TIDEMAP_RETURN_IF_ERROR(sink(piece));
  }
  return stream->counts();
}

Result<SnapshotCounts> ExportSnapshotFile(const Replica& replica, uint64_t now_ms,
                                          const std::string& path) {
  const std::string partial = path + ".partial";
  TIDEMAP_ASSIGN_OR_RETURN(File f, OpenFile(partial, "wb"));
  auto sink = [&](std::string_view bytes) {
    if (std::fwrite(bytes.data(), 1, bytes.size(), f.get()) != bytes.size()) {
      return Status::IOError("cannot write " + partial + ": " + std::strerror(errno));
    }
    return Status::Ok();
  };
  Result<SnapshotCounts> counts = ExportSnapshot(replica, now_ms, sink);
  if (counts.ok() && (std::fflush(f.get()) != 0 || ::fsync(::fileno(f.get())) != 0)) {
    counts = Status::IOError("cannot write " + partial + ": " + std::strerror(errno));
  }
  f.reset();
  if (counts.ok() && std::rename(partial.c_str(), path.c_str()) != 0) {
    counts =
        Status::IOError("cannot rename " + partial + " to " + path + ": " + std::strerror(errno));
  }
  if (!counts.ok()) std::remove(partial.c_str());
  return counts;
}

// ---------------------------------------------------------------------------
// Verify

Result<SnapshotCounts> VerifySnapshotFile(const std::string& path) {
  TIDEMAP_ASSIGN_OR_RETURN(File f, OpenFile(path, "rb"));
  SnapshotFileReader reader(FileSource(f.get(), path));
  SnapshotCounts counts;
  TIDEMAP_ASSIGN_OR_RETURN(counts.header, reader.ReadHeader());
  const RecordViewFn count = [&counts](const SnapshotRecordView& r) {
    counts.tombstones += r.tombstone ? 1 : 0;
    return Status::Ok();
  };
  std::vector<SnapshotWatermark> marks;
  for (;;) {
    TIDEMAP_ASSIGN_OR_RETURN(const SnapshotPart part, reader.Next(count, &marks));
    if (part == SnapshotPart::kEnd) break;
  }
  counts.records = reader.records();
  counts.watermarks = marks.size();
  counts.bytes = reader.offset();
  return counts;
}

// ---------------------------------------------------------------------------
// Import

namespace {

// Loads the file into the new data dir at `temp`; the report's fields but
// the file counts' bytes.
Result<SnapshotImportReport> ImportInto(const fs::path& temp, const std::string& path,
                                        const DataDirOptions& options) {
  TIDEMAP_ASSIGN_OR_RETURN(File f, OpenFile(path, "rb"));
  SnapshotFileReader reader(FileSource(f.get(), path));
  SnapshotImportReport report;
  TIDEMAP_ASSIGN_OR_RETURN(report.file.header, reader.ReadHeader());
  TIDEMAP_ASSIGN_OR_RETURN(std::unique_ptr<DataDir> dd, DataDir::Init(temp.string(), options));
  TIDEMAP_ASSIGN_OR_RETURN(std::unique_ptr<SnapshotLoader> loader,
                           SnapshotLoader::Begin(&dd->replica()));
  // Records go from the reader's frame buffer to the loader as views.
  const RecordViewFn add = [&](const SnapshotRecordView& r) {
    report.file.tombstones += r.tombstone ? 1 : 0;
    Status added = loader->Add(r);
    if (added.ok()) return added;
    return Status::Corruption("snapshot offset " + std::to_string(reader.offset()) + ": " +
                              added.message());
  };
  std::vector<SnapshotWatermark> marks;
  for (;;) {
    TIDEMAP_ASSIGN_OR_RETURN(const SnapshotPart part, reader.Next(add, &marks));
    if (part == SnapshotPart::kEnd) break;
  }
  if (Result<uint64_t> loaded = loader->Finish(marks); !loaded.ok()) {
    return loaded.status().code() == Status::Code::kInternal || loaded.status().IsIOError()
               ? loaded.status()
               : Status::Corruption("snapshot: " + loaded.status().message());
  }
  report.file.records = reader.records();
  report.file.watermarks = marks.size();
  report.file.bytes = reader.offset();
  report.public_key = dd->identity().public_key_text();
  report.node_id = dd->identity().node_id();
  report.incarnation = dd->replica().incarnation();
  report.merkle_root = dd->replica().MerkleRoot();
  return report;
}

}  // namespace

Result<SnapshotImportReport> ImportSnapshotFile(const std::string& dir, const std::string& path,
                                                const DataDirOptions& options) {
  const fs::path target = Normalized(dir);
  std::error_code ec;
  if (fs::exists(target, ec) && (!fs::is_directory(target, ec) || !fs::is_empty(target, ec))) {
    return Status::Refused("data dir " + dir +
                           " is not empty: a snapshot imports only into a new, empty data dir");
  }
  const fs::path temp = ImportTempDir(target);
  fs::remove_all(temp, ec);  // what an import that crashed left
  Result<SnapshotImportReport> report = ImportInto(temp, path, options);
  if (report.ok()) {
    // rename(2) replaces an empty directory, and only an empty one.
    if (std::rename(temp.c_str(), target.c_str()) != 0) {
      report = Status::IOError("cannot rename " + temp.string() + " to " + target.string() + ": " +
                               std::strerror(errno));
    }
  }
  if (!report.ok()) fs::remove_all(temp, ec);
  return report;
}

}  // namespace tidemap
