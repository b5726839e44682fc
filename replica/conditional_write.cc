// Conditional writes (Replica::PutIf, DeleteIf): one op whose precondition
// the commit leader checks against the key's stored state (group_commit.cc).
#include <utility>

#include <tidemap/replica/impl_internal.h>
#include <tidemap/replica/limits_internal.h>

namespace tidemap {

Result<ConditionalWrite> Replica::CommitIf(const WriteBatch& batch,
                                           const WriteCondition& condition) {
  Impl* impl = impl_.get();
  const WriteBatch::Op op = batch.op(0);
  const Limits& limits = impl->options.limits;
  TIDEMAP_RETURN_IF_ERROR(CheckSizes(limits, op.map, op.key, op.value));
  const size_t bytes = op.map.size() + op.key.size() + op.value.size();
  TIDEMAP_RETURN_IF_ERROR(CheckBatch(limits, 1, bytes));
  Writer w(&impl->queue);
  w.local = &batch;
  w.bytes = bytes;
  w.condition = &condition;
  const Status s = impl->Commit(&w);
  if (w.condition_failed) return ConditionalWrite{false, w.current};
  TIDEMAP_RETURN_IF_ERROR(s);
  impl->local_writes.fetch_add(1, std::memory_order_relaxed);
  return ConditionalWrite{true, w.versions.front()};
}

Result<ConditionalWrite> Replica::PutIf(std::string_view map, std::string_view key,
                                        std::string_view value, const WriteCondition& condition,
                                        const PutOptions& options) {
  WriteBatch b;
  b.Put(map, key, value, options);
  return CommitIf(b, condition);
}

Result<ConditionalWrite> Replica::DeleteIf(std::string_view map, std::string_view key,
                                           const WriteCondition& condition) {
  WriteBatch b;
  b.Delete(map, key);
  return CommitIf(b, condition);
}

}  // namespace tidemap
