#include <tidemap/schemas/messages.h>

#include <tidemap/base/overloaded.h>

namespace tidemap::msg {

const char* BodyName(const Body& body) {
  return std::visit(Overloaded{
                        [](const Hello&) { return "hello"; },
                        [](const RecordBatch&) { return "record_batch"; },
                        [](const BatchAck&) { return "batch_ack"; },
                        [](const BatchRefused&) { return "batch_refused"; },
                        [](const TreeNodes&) { return "tree_nodes"; },
                        [](const BucketSummaries&) { return "bucket_summaries"; },
                        [](const DiffRecords&) { return "diff_records"; },
                        [](const DiffEnd&) { return "diff_end"; },
                        [](const OriginRecords&) { return "origin_records"; },
                        [](const Goodbye&) { return "goodbye"; },
                    },
                    body);
}

}  // namespace tidemap::msg
