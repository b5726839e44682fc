@0xb4d355ab32a119d2;
# tidemap snapshot files, format version 1 (tidemap::kSnapshotFormatVersion).
#
# A snapshot file is a magic string and a sequence of frames, each one
# SnapshotFrame (an unpacked Cap'n Proto message); the framing, checksums and
# the order of the frames are described at the top of schemas/snapshot_file.cc.
# Evolution rule as for sync.capnp: only add fields at the end; a change an
# old reader cannot safely ignore is a new format version.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("tidemap::snapfile");

struct SnapshotFrame {
  body :union {
    header @0 :Header;
    records @1 :Records;
    watermarks @2 :Watermarks;
    trailer @3 :Trailer;
  }
}

struct Header {
  formatVersion @0 :UInt32;
  nodeId @1 :UInt64;
  incarnation @2 :UInt64;
  seq @3 :UInt64;
  records @4 :UInt64;
  createdMs @5 :UInt64;
}

# Records in (map, key) order, as the record and expiry blobs of sync.capnp's
# RecordBatch (grammars in schemas/codec.cc).
struct Records {
  count @0 :UInt32;
  records @1 :Data;
  expiries @2 :Data;
}

struct Watermark {
  bucket @0 :UInt32;
  hlc @1 :UInt64;
  origin @2 :UInt64;
}

struct Watermarks {
  watermarks @0 :List(Watermark);
}

struct Trailer {
  records @0 :UInt64;       # records in every Records frame
  frames @1 :UInt64;        # frames before this one, the header included
  fileChecksum @2 :UInt64;  # the chain of every earlier frame's checksum
}
