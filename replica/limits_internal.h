// Size checks of writes against Limits, run before anything is queued.
//
// Contract: InvalidArgument for an empty map name or key; Refused, naming the
// limit and the size, for anything over a limit. Pure functions.
#ifndef TIDEMAP_REPLICA_LIMITS_INTERNAL_H_
#define TIDEMAP_REPLICA_LIMITS_INTERNAL_H_

#include <cstddef>
#include <string_view>

#include <tidemap/base/status.h>
#include <tidemap/replica/replica.h>

namespace tidemap {

// One op (local or remote).
Status CheckSizes(const Limits& limits, std::string_view map, std::string_view key,
                  std::string_view value);
// A map name alone (a map's clear, whose key is the reserved empty one).
Status CheckMapName(const Limits& limits, std::string_view map);
// A whole batch: `ops` ops of `bytes` bytes (map, key and value sizes).
Status CheckBatch(const Limits& limits, size_t ops, size_t bytes);

}  // namespace tidemap

#endif  // TIDEMAP_REPLICA_LIMITS_INTERNAL_H_
