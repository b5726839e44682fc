// The migration of a version 4 database: its expiry queue (one 'x' row per
// record, storage/expiry_rows.cc) becomes packed expiry rows, and the
// schema version becomes 5. Nothing else differs between the two versions.
#include <functional>
#include <string>

#include <tidemap/base/coding.h>
#include <tidemap/replica/impl_internal.h>
#include <tidemap/storage/prefix_iterator.h>
#include <tidemap/storage/rows_internal.h>

namespace tidemap {

namespace {

// Queue rows one migration batch moves at most.
constexpr size_t kMigrateBatchRows = 10'000;

// Adds the queue rows after `*after` (all from the first when empty), at
// most `rows_max` of them, to `out`; sets `*after` to the last one's key and
// `*more` when rows remain.
Status ReadQueueRows(
    const Store& store, size_t rows_max, std::string* after, bool* more,
    const std::function<void(const rows::ExpiryEntryRef&, std::string_view)>& out) {
  PrefixIterator queue(store, std::string_view(&rows::kExpiryPrefix, 1));
  if (after->empty()) {
    queue.SeekToFirst();
  } else {
    queue.SeekAfter(*after);
  }
  *more = false;
  for (size_t n = 0; queue.Valid(); queue.Next(), ++n) {
    if (n == rows_max) {
      *more = true;
      break;
    }
    rows::ExpiryEntryRef e;
    if (!rows::ParseLegacyExpiryQueueKey(queue.key(), &e.expiry_ms, &e.version, &e.map, &e.key)) {
      return Status::Corruption("malformed expiry queue row " + Printable(queue.key()));
    }
    TIDEMAP_ASSIGN_OR_RETURN(e.seq, rows::DecodeU64(queue.value(), "expiry queue seq"));
    out(e, queue.key());
    after->assign(queue.key());
  }
  return queue.status();
}

}  // namespace

Status Replica::Impl::MigrateExpiryQueue() {
  std::string after;
  bool more = true;
  if (options.read_only) {
    // Nothing may be written: the rows are held as pending entries, which a
    // read-only replica never flushes.
    ExpiryPending held;
    while (more) {
      TIDEMAP_RETURN_IF_ERROR(
          ReadQueueRows(*store, kMigrateBatchRows, &after, &more,
                        [&](const rows::ExpiryEntryRef& e, std::string_view) { held.Add(e); }));
    }
    expiry_index.Add(held);
    return Status::Ok();
  }
  // Each batch commits the rows it moves with the deletion of their queue
  // rows, so a crash leaves only unmoved rows, which the next open moves.
  while (more) {
    Batch batch;
    ExpiryRowWriter writer(&expiry_index);
    TIDEMAP_RETURN_IF_ERROR(ReadQueueRows(*store, kMigrateBatchRows, &after, &more,
                                          [&](const rows::ExpiryEntryRef& e, std::string_view key) {
                                            writer.Add(e, &batch);
                                            batch.Delete(key);
                                          }));
    writer.Finish(&batch);
    if (!more) {
      batch.Put(rows::MetaKey(rows::kMetaSchemaVersion), rows::EncodeU64(rows::kSchemaVersion));
    }
    TIDEMAP_RETURN_IF_ERROR(store->Write(&batch, /*sync=*/true));
  }
  expiry_migration_due = false;
  return Status::Ok();
}

}  // namespace tidemap
