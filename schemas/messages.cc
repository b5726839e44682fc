#include "schemas/messages.h"

namespace tidemap::msg {

namespace {
template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;
}  // namespace

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
                    },
                    body);
}

}  // namespace tidemap::msg
