#include <tidemap/replica/limits_internal.h>

#include <string>

#include <tidemap/storage/rows_internal.h>

namespace tidemap {

Status CheckMapName(const Limits& limits, std::string_view map) {
  if (map.empty()) return Status::InvalidArgument("map name must not be empty");
  if (map.size() > limits.map_name_bytes_max) {
    return Status::Refused("map name is " + std::to_string(map.size()) + " bytes, limit " +
                           std::to_string(limits.map_name_bytes_max));
  }
  return Status::Ok();
}

Status CheckSizes(const Limits& limits, std::string_view map, std::string_view key,
                  std::string_view value) {
  if (map.empty()) return Status::InvalidArgument("map name must not be empty");
  if (key.empty()) return Status::InvalidArgument("key must not be empty");
  TIDEMAP_RETURN_IF_ERROR(CheckMapName(limits, map));
  if (key.size() > limits.key_bytes_max) {
    return Status::Refused("key is " + std::to_string(key.size()) + " bytes, limit " +
                           std::to_string(limits.key_bytes_max));
  }
  if (value.size() > limits.value_bytes_max) {
    return Status::Refused("value of " + rows::DescribeKey(map, key) + " is " +
                           std::to_string(value.size()) + " bytes, limit " +
                           std::to_string(limits.value_bytes_max));
  }
  return Status::Ok();
}

Status CheckBatch(const Limits& limits, size_t ops, size_t bytes) {
  if (ops > limits.batch_ops_max) {
    return Status::Refused("batch has " + std::to_string(ops) + " operations, limit " +
                           std::to_string(limits.batch_ops_max));
  }
  if (bytes > limits.batch_bytes_max) {
    return Status::Refused("batch is " + std::to_string(bytes) + " bytes, limit " +
                           std::to_string(limits.batch_bytes_max));
  }
  return Status::Ok();
}

}  // namespace tidemap
