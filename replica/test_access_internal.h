// ReplicaTestAccess: the parts of a Replica its API does not hand out (its
// oplog and its clock), for tests that set up or inspect states the API has
// no call for (a peer's cursor moved by hand, a timestamp from the replica's
// own clock). Not installed; defined in replica.cc, used by tests only.
//
// The references are valid while the replica lives; the same thread-safety
// as the Replica's own use of them (both are thread-safe).
#ifndef TIDEMAP_REPLICA_TEST_ACCESS_INTERNAL_H_
#define TIDEMAP_REPLICA_TEST_ACCESS_INTERNAL_H_

#include <tidemap/hlc/hlc.h>
#include <tidemap/oplog/oplog.h>
#include <tidemap/replica/replica.h>

namespace tidemap {

class ReplicaTestAccess {
 public:
  static Oplog& oplog(Replica& replica);
  static Hlc& hlc(Replica& replica);
};

}  // namespace tidemap

#endif  // TIDEMAP_REPLICA_TEST_ACCESS_INTERNAL_H_
