// Rekey's rewrite of the values at rest (Replica::ResealValues).
#include <functional>
#include <string>

#include <tidemap/replica/impl_internal.h>
#include <tidemap/storage/prefix_iterator.h>
#include <tidemap/storage/rows_internal.h>
#include <tidemap/storage/value_cipher.h>

namespace tidemap {

namespace {

// Records looked at per page: writes wait for at most one page.
constexpr size_t kResealPageRecords = 1000;

// Reseals the records after `*cursor` (empty: from the first), up to a page
// of them, in one batch; `*cursor` becomes the last record looked at.
// Returns true when the records ran out.
Result<bool> ResealPage(Store* store, const ValueCipher& cipher, bool sync, std::string* cursor,
                        ResealReport* report) {
  PrefixIterator records(*store, std::string(1, rows::kRecordPrefix));
  if (cursor->empty()) {
    records.SeekToFirst();
  } else {
    records.SeekAfter(*cursor);
  }
  Batch batch;
  size_t seen = 0;
  for (; records.Valid() && seen < kResealPageRecords; records.Next(), ++seen) {
    const std::string_view row_key = records.key();
    cursor->assign(row_key);
    ++report->records;
    TIDEMAP_ASSIGN_OR_RETURN(const uint8_t key_id, rows::RecordSealKeyId(row_key, records.value()));
    if (key_id == cipher.seal_key_id()) continue;
    TIDEMAP_ASSIGN_OR_RETURN(const rows::RecordValue rec,
                             rows::DecodeRecord(row_key, records.value(), &cipher));
    if (rec.tombstone) continue;
    batch.Put(row_key, rows::EncodeRecord(row_key, rec, &cipher));
    ++report->resealed;
  }
  TIDEMAP_RETURN_IF_ERROR(records.status());
  const bool done = !records.Valid();
  if (!batch.empty()) TIDEMAP_RETURN_IF_ERROR(store->Write(&batch, sync));
  return done;
}

}  // namespace

Result<ResealReport> Replica::ResealValues(
    const std::function<bool(const ResealReport&)>& on_page) {
  Impl& im = *impl_;
  if (im.options.value_cipher == nullptr) {
    return Status::InvalidArgument("this replica has no key for values at rest");
  }
  if (im.options.read_only) return Status::Refused("the replica is open read-only");
  ResealReport report;
  std::string cursor;
  for (bool done = false; !done;) {
    {
      // A page is rewritten while no commit runs, so no newer version of a
      // key can be overwritten by the old one resealed.
      MutexLock commit(&im.commit_mu);
      TIDEMAP_ASSIGN_OR_RETURN(
          done, ResealPage(im.store.get(), *im.options.value_cipher,
                           im.options.durability == Durability::kSync, &cursor, &report));
    }
    if (on_page && !on_page(report) && !done) {
      return Status::Unavailable("the reseal stopped after " + std::to_string(report.records) +
                                 " records; run it again to finish it");
    }
  }
  // Flushes the memtable and rewrites every table: the old sealed (or clear)
  // bytes are overwritten versions, which a full compaction drops, and the
  // log that held them is deleted.
  im.store->CompactRange(std::string_view(), std::string(1, '\xff'));
  return report;
}

Status Replica::BetweenCommits(const std::function<Status()>& fn) {
  MutexLock commit(&impl_->commit_mu);
  return fn();
}

}  // namespace tidemap
