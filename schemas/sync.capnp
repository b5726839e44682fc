@0x9c64296f80b0eb14;
# tidemap sync protocol, version 2 (tidemap::kSyncProtocolVersion, sent in Hello).
# Version 2 added the records' expiries (per-record TTL), which a version 1
# peer would ignore and so keep expiring records forever: the versions refuse
# each other.
#
# One frame payload is one Message, serialized as a packed Cap'n Proto message
# (capnp::writePackedMessage); net/ adds the length prefix. schemas/codec.cc maps these structs to
# and from the C++ values of schemas/messages.h and documents every choice made
# here for size.
#
# Evolution rule: only add fields at the end of a struct (the next ordinal) and
# union members at the end of the union; never renumber, remove, retype or give
# a field a new meaning. A change an old peer cannot safely ignore bumps the
# protocol version in Hello. The grammars of the Data blobs (in schemas/codec.cc)
# are part of their fields' meaning: a reader refuses what it does not know
# (e.g. a reserved flag bit), so a new encoding is a new field or a new protocol
# version, never new bytes in an old blob.
#
# The rule binds from the release of version 1. Until then the schema still
# changes freely (RecordBatch and DiffRecords records went from a List(Record)
# to a Data blob, and frames went from unpacked to packed, before release).

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("tidemap::wire");

struct Message {
  seq @0 :UInt64;  # per session and direction, from 1
  body :union {
    hello @1 :Hello;
    recordBatch @2 :RecordBatch;
    batchAck @3 :BatchAck;
    batchRefused @4 :BatchRefused;
    treeNodes @5 :TreeNodes;
    bucketSummaries @6 :BucketSummaries;
    diffRecords @7 :DiffRecords;
    diffEnd @8 :DiffEnd;
    originRecords @9 :OriginRecords;
    goodbye @10 :Goodbye;
  }
}

# 72 bytes of data, so a whole hello frame is 112 bytes. The peer's identity is
# not in it: the transport authenticated the connection before any hello.
struct Hello {
  protocolVersion @0 :UInt32;  # first, so every later version can read it
  treeFanoutBits @1 :UInt16;
  treeDepth @2 :UInt16;
  merkleRootLo @3 :UInt64;
  merkleRootHi @4 :UInt64;
  incarnation @5 :UInt64;        # the sender's database incarnation, never 0
  lastSeq @6 :UInt64;            # the sender's highest oplog seq
  gcWatermarkHlc @7 :UInt64;     # the sender's GC watermark (0, 0: none)
  gcWatermarkOrigin @8 :UInt64;
  physicalMs @9 :UInt64;         # the sender's clock when it sent this (ms since epoch)
  records @10 :UInt64;           # the sender's records, live and tombstones
  heldIncarnation @11 :UInt64;   # the receiver's incarnation the sender's cursor is about (0: none)
  heldSeq @12 :UInt64;           # the receiver's highest seq the sender acknowledged
}

# Records travel as one Data blob per message, not as a List(struct): a
# struct with its version inline and three byte strings cost ~55 bytes a small
# record beyond the record's own bytes, while the blob shares map names and
# origins across the message and delta-codes the hlc (grammar and sizes in
# schemas/codec.cc).
struct RecordBatch {
  firstSeq @0 :UInt64;
  lastSeq @1 :UInt64;
  records @2 :Data;  # the records, packed: grammar in schemas/codec.cc
  expiries @3 :Data; # the expiries of records that have one: grammar in schemas/codec.cc
}

struct BatchAck {
  lastSeq @0 :UInt64;
}

struct BatchRefused {
  lastSeq @0 :UInt64;
  reason @1 :Text;
  quotaExceeded @2 :Bool; # out of storage; older peers leave it false and ignore it
}

struct TreeNodes {
  diffId @0 :UInt64;
  level @1 :UInt32;
  last @2 :Bool = true;
  parents @3 :List(UInt32);
  childDigests @4 :List(UInt64);  # parents.size() * fanout, parent by parent
}

struct BucketSummaries {
  diffId @0 :UInt64;
  last @1 :Bool = true;
  buckets @2 :List(UInt32);
  counts @3 :List(UInt32);  # counts[i] entries belong to buckets[i]
  entries @4 :Data;         # sum(counts) entries, bit-packed: grammar in schemas/codec.cc
}

struct DiffRecords {
  diffId @0 :UInt64;
  last @1 :Bool = true;
  records @2 :Data;           # as RecordBatch.records
  requests @3 :List(UInt64);  # key hashes
  expiries @4 :Data;          # as RecordBatch.expiries
}

struct DiffEnd {
  diffId @0 :UInt64;
}

struct OriginRecords {
  origin @0 :UInt64;
  last @1 :Bool = true;
  records @2 :Data;  # as RecordBatch.records
  expiries @3 :Data; # as RecordBatch.expiries
}

struct Goodbye {
  reason @0 :Text;
}
