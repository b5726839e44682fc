// Proves the sans-I/O sync core between in-process replicas over a perfect
// in-order link: first contact repairs by tree diff in both directions;
// later writes stream by oplog tail and are acknowledged into the persisted
// cursor; a key rewritten many times while a peer was away ships once;
// changes flow on transitively (A -> B -> C) and never echo to their origin;
// a peer whose cursor fell below the pruned point is repaired by tree diff;
// a refused clock keeps the sender's data until the receiver accepts it; a
// node whose database was wiped or restored from an older backup is noticed
// by its incarnation and last seq, repaired and resynced (re-issued versions
// included); a stale node cannot bring back a key whose tombstone was purged
// (it gets the delete back, or is told to re-bootstrap); purged tombstones are
// not shipped back and forth; a gap found while a repair runs is repaired;
// and an out-of-order message or another protocol version closes the session.
#include <gtest/gtest.h>
#include <leveldb/env.h>
#include <leveldb/helpers/memenv.h>

#include <functional>
#include <map>

#include "tests/support/sync_pump.h"
#include "tests/support/test_util.h"
#include <tidemap/replica/sync.h>
#include <tidemap/replica/test_access_internal.h>

namespace tidemap {
namespace {

constexpr uint64_t kStartMs = 1'800'000'000'000;
constexpr uint64_t kHorizonMs = 10'000;  // tombstone GC horizon of every node here

struct Node {
  std::unique_ptr<ManualClock> clock;
  std::unique_ptr<Replica> replica;
};

class SyncTest : public ::testing::Test {
 protected:
  SyncTest() : env_(leveldb::NewMemEnv(leveldb::Env::Default())) {}

  Node& Add(uint64_t id, OplogRetention retention = {}, uint64_t horizon_ms = kHorizonMs) {
    Node& n = nodes_[id];
    n.clock = std::make_unique<ManualClock>(kStartMs);
    n.replica = OpenNode(id, "/n" + std::to_string(id), n.clock.get(), retention, horizon_ms);
    return n;
  }

  std::unique_ptr<Replica> OpenNode(uint64_t id, const std::string& path, ManualClock* clock,
                                    OplogRetention retention = {},
                                    uint64_t horizon_ms = kHorizonMs) {
    ReplicaOptions o;
    o.path = path;
    o.env = env_.get();
    o.clock = clock;
    o.node_id = id;
    o.retention = retention;
    o.tombstone_horizon_ms = horizon_ms;
    auto r = Replica::Open(std::move(o));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? std::move(r).value() : nullptr;
  }

  // Copies every file of database `from` to `to` (the database must be closed):
  // a backup, or its restore.
  void CopyDb(const std::string& from, const std::string& to) {
    std::vector<std::string> files;
    ASSERT_TRUE(env_->GetChildren(from, &files).ok());
    ASSERT_TRUE(env_->CreateDir(to).ok() || env_->FileExists(to));
    for (const std::string& f : files) {
      leveldb::SequentialFile* in = nullptr;
      if (!env_->NewSequentialFile(from + "/" + f, &in).ok()) continue;  // a directory
      std::unique_ptr<leveldb::SequentialFile> in_owner(in);
      leveldb::WritableFile* out = nullptr;
      ASSERT_TRUE(env_->NewWritableFile(to + "/" + f, &out).ok());
      std::unique_ptr<leveldb::WritableFile> out_owner(out);
      std::string scratch(1 << 16, '\0');
      for (;;) {
        leveldb::Slice chunk;
        ASSERT_TRUE(in->Read(scratch.size(), &chunk, scratch.data()).ok());
        if (chunk.empty()) break;
        ASSERT_TRUE(out->Append(chunk).ok());
      }
      ASSERT_TRUE(out->Close().ok());
    }
  }

  // The node loses its disk and comes back empty under the same id (its
  // identity key survived, its database did not); the clock keeps its time.
  Node& Wipe(uint64_t id) {
    Node& n = nodes_[id];
    n.replica.reset();
    ReplicaOptions o;
    o.path = "/n" + std::to_string(id) + "-wiped" + std::to_string(++wipes_);
    o.env = env_.get();
    o.clock = n.clock.get();
    o.node_id = id;
    o.tombstone_horizon_ms = kHorizonMs;
    auto r = Replica::Open(std::move(o));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    n.replica = std::move(r).value();
    return n;
  }

  // A connection: two sessions and a perfect in-order link between them.
  struct Link {
    std::unique_ptr<SyncSession> a, b;
    uint64_t bytes_a_to_b = 0, bytes_b_to_a = 0;  // approximate (record payloads)
  };

  Link Connect(uint64_t a, uint64_t b, SyncOptions opts = {}) {
    Link link;
    link.a = std::make_unique<SyncSession>(nodes_[a].replica.get(), b, opts);
    link.b = std::make_unique<SyncSession>(nodes_[b].replica.get(), a, opts);
    return link;
  }

  // What a call of Start, Poll or Receive appended to `out`: the messages
  // from index `from` on.
  using Observer = std::function<void(const std::vector<msg::Message>& out, size_t from)>;

  // Runs the link until both sides are idle; returns the number of exchange
  // rounds (each round delivers everything queued in both directions).
  // `observe`, when given, sees what each call appended.
  int Pump(Link& link, bool start = true, uint64_t now_ms = kStartMs, int rounds_max = 100,
           const Observer& observe = {}) {
    testing::SyncPumpOptions options;
    options.start = start;
    options.now_ms = now_ms;
    options.rounds_max = rounds_max;
    options.observe = observe;
    const testing::SyncPumpResult r = testing::PumpSync(*link.a, *link.b, options);
    EXPECT_TRUE(r.status.ok()) << r.status.ToString();
    return r.rounds;
  }

  // Runs the link until one side's Receive fails (a closed session) or both
  // are idle. When the failing side's replies end with a Goodbye, it reaches
  // the other side, as the transport sends it before closing. Returns each
  // side's first error (OK when it had none).
  std::pair<Status, Status> PumpUntilClosed(Link& link, uint64_t now_ms) {
    std::vector<msg::Message> to_b, to_a;
    EXPECT_TRUE(link.a->Start(now_ms, &to_b).ok());
    EXPECT_TRUE(link.b->Start(now_ms, &to_a).ok());
    Status sa, sb;
    for (int round = 0; round < 100; ++round) {
      EXPECT_TRUE(link.a->Poll(now_ms, &to_b).ok());
      EXPECT_TRUE(link.b->Poll(now_ms, &to_a).ok());
      if (to_a.empty() && to_b.empty()) break;
      std::vector<msg::Message> next_b, next_a, ignored;
      for (const auto& m : to_b) {
        if (sb.ok()) sb = link.b->Receive(m, now_ms, &next_a);
      }
      for (const auto& m : to_a) {
        if (sa.ok()) sa = link.a->Receive(m, now_ms, &next_b);
      }
      if (!sa.ok() || !sb.ok()) {
        // The closing side's last replies (its Goodbye) still reach the other.
        for (const auto& m : next_a) {
          if (!sb.ok() && sa.ok()) sa = link.a->Receive(m, now_ms, &ignored);
        }
        for (const auto& m : next_b) {
          if (!sa.ok() && sb.ok()) sb = link.b->Receive(m, now_ms, &ignored);
        }
        break;
      }
      to_b = std::move(next_b);
      to_a = std::move(next_a);
    }
    return {sa, sb};
  }

  std::string Scan(uint64_t id) {
    std::string out;
    EXPECT_TRUE(nodes_[id]
                    .replica
                    ->ForEachKeyMeta([&](const KeyMeta& m) {
                      auto rec = nodes_[id].replica->ReadRecord(m.map, m.key);
                      out += std::string(m.map) + "/" + std::string(m.key) + "=" +
                             (m.tombstone ? std::string("⊥") : (*rec)->value) + "@" +
                             m.version.ToString() + " ";
                      return true;
                    })
                    .ok());
    return out;
  }

  void ExpectConverged(std::initializer_list<uint64_t> ids) {
    const uint64_t first = *ids.begin();
    for (uint64_t id : ids) {
      EXPECT_EQ(nodes_[id].replica->MerkleRoot(), nodes_[first].replica->MerkleRoot())
          << "node " << id;
      EXPECT_EQ(Scan(id), Scan(first)) << "node " << id;
    }
  }

  std::unique_ptr<leveldb::Env> env_;
  std::map<uint64_t, Node> nodes_;
  int wipes_ = 0;
};

TEST_F(SyncTest, IdenticalEmptyReplicasExchangeOnlyHellos) {
  Add(1);
  Add(2);
  Link link = Connect(1, 2);
  Pump(link);
  EXPECT_EQ(link.a->stats().messages_sent, 1u);
  EXPECT_EQ(link.b->stats().messages_sent, 1u);
  EXPECT_TRUE(link.a->Idle());
  EXPECT_TRUE(link.b->Idle());
}

TEST_F(SyncTest, FirstContactRepairsBothSidesByTreeDiff) {
  Node& a = Add(1);
  Node& b = Add(2);
  for (int i = 0; i < 300; ++i) ASSERT_TRUE(a.replica->Put("m", "a" + std::to_string(i), "x").ok());
  for (int i = 0; i < 200; ++i) ASSERT_TRUE(b.replica->Put("m", "b" + std::to_string(i), "y").ok());
  ASSERT_TRUE(b.replica->Put("m", "a7", "b's newer a7").ok());  // conflicts: newer stamp wins
  ASSERT_TRUE(a.replica->Delete("m", "b3").ok());               // a tombstone for a key A never had
  Link link = Connect(1, 2);
  const int rounds = Pump(link);
  ExpectConverged({1, 2});
  EXPECT_EQ(a.replica->Get("m", "a7")->value, "b's newer a7");
  EXPECT_EQ(a.replica->Stats()->keys, 499u);
  EXPECT_GE(link.a->stats().diffs_completed + link.b->stats().diffs_completed, 1u);
  EXPECT_LE(rounds, 12);
  // Both cursors reached the end of the log: the snapshot by the diff, then
  // the rows each side applied from the other (skipped, never echoed back).
  EXPECT_EQ(*ReplicaTestAccess::oplog(*a.replica).PeerAck(2), a.replica->LastSeq());
  EXPECT_EQ(*ReplicaTestAccess::oplog(*b.replica).PeerAck(1), b.replica->LastSeq());
  EXPECT_EQ(a.replica->LastSeq(), 501u);  // 301 own changes + 200 of B's that won here
}

// Many small records differ: diff chunks stay within the record-count bound
// and the receiver's batch limit (a 16k-record chunk used to be refused).
TEST_F(SyncTest, LargeDiffIsChunkedWithinBatchLimits) {
  Node& a = Add(1);
  Node& b = Add(2);
  WriteBatch wa, wb;
  for (int i = 0; i < 6000; ++i) wa.Put("m", "a" + std::to_string(i), "x");
  for (int i = 0; i < 6000; ++i) wb.Put("m", "b" + std::to_string(i), "y");
  ASSERT_TRUE(a.replica->Write(wa).ok());
  ASSERT_TRUE(b.replica->Write(wb).ok());
  SyncOptions opts;
  opts.batch_records_max = 500;
  Link link = Connect(1, 2, opts);
  Pump(link);
  ExpectConverged({1, 2});
  EXPECT_EQ(a.replica->Stats()->keys, 12000u);
}

// The bytes of records in DiffRecords and OriginRecords among `messages`
// from index `from` on.
size_t RecordBytesFrom(const std::vector<msg::Message>& messages, size_t from) {
  size_t bytes = 0;
  auto add = [&](const std::vector<KeyedRecord>& records) {
    for (const KeyedRecord& r : records) bytes += r.map.size() + r.key.size() + r.value.size();
  };
  for (size_t i = from; i < messages.size(); ++i) {
    if (auto* d = std::get_if<msg::DiffRecords>(&messages[i].body)) add(d->records);
    if (auto* o = std::get_if<msg::OriginRecords>(&messages[i].body)) add(o->records);
  }
  return bytes;
}

// What a windowed run of a link saw: the most bytes of records any one call
// of Start, Receive or Poll emitted, and how many calls emitted some.
struct WindowedRun {
  size_t max_call_bytes = 0;
  int calls_with_records = 0;

  void Observe(const std::vector<msg::Message>& out, size_t from) {
    const size_t bytes = RecordBytesFrom(out, from);
    max_call_bytes = std::max(max_call_bytes, bytes);
    if (bytes > 0) ++calls_with_records;
  }
};

constexpr size_t kWindowBytes = 64 << 10;
constexpr size_t kChunkBytes = 16 << 10;
constexpr size_t kValueBytes = 1000;

SyncOptions WindowedOptions() {
  SyncOptions opts;
  opts.records_window_bytes = kWindowBytes;
  opts.diff_chunk_bytes_max = kChunkBytes;
  return opts;
}

// A bootstrap of ~2 MB never has more than a window of records (plus the
// chunk that crosses its end) emitted at once, in either direction, and
// still converges.
TEST_F(SyncTest, DiffRecordsMoveAWindowAtATime) {
  Node& a = Add(1);
  Node& b = Add(2);
  WriteBatch wa, wb;
  for (int i = 0; i < 2000; ++i) {
    if (i % 1000 == 999) {
      ASSERT_TRUE(a.replica->Write(wa).ok());
      wa = WriteBatch{};
    }
    wa.Put("m", "a" + std::to_string(i), std::string(kValueBytes, 'x'));
  }
  ASSERT_TRUE(a.replica->Write(wa).ok());
  for (int i = 0; i < 300; ++i) wb.Put("m", "b" + std::to_string(i), std::string(kValueBytes, 'y'));
  ASSERT_TRUE(b.replica->Write(wb).ok());
  Link link = Connect(1, 2, WindowedOptions());
  // A transport polls when its send queue has room; here, once a round.
  WindowedRun run;
  Pump(link, true, kStartMs, 1000,
       [&](const std::vector<msg::Message>& out, size_t from) { run.Observe(out, from); });
  EXPECT_TRUE(link.a->Idle());
  EXPECT_TRUE(link.b->Idle());
  ExpectConverged({1, 2});
  EXPECT_EQ(b.replica->Stats()->keys, 2300u);
  EXPECT_LE(run.max_call_bytes, kWindowBytes + kChunkBytes + kValueBytes + 16);
  EXPECT_GE(run.calls_with_records, 2000 * static_cast<int>(kValueBytes) / int{kWindowBytes});
}

// A bootstrap, where every bucket differs, sends the bucket summaries of the
// full side a window at a time too, never the summaries of every key in one
// call, and still converges.
TEST_F(SyncTest, SummariesMoveAWindowAtATime) {
  constexpr int kKeys = 6000;
  constexpr size_t kSummaryWindowBytes = 8 << 10;  // about 680 summary entries
  Node& a = Add(1);
  Node& b = Add(2);
  WriteBatch wa;
  for (int i = 0; i < kKeys; ++i) wa.Put("m", "a" + std::to_string(i), "x");
  ASSERT_TRUE(a.replica->Write(wa).ok());
  SyncOptions opts;
  opts.records_window_bytes = kSummaryWindowBytes;
  opts.diff_chunk_bytes_max = 2 << 10;
  Link link = Connect(1, 2, opts);
  size_t max_call_entries = 0, total_entries = 0;
  int calls_with_entries = 0;
  Pump(link, true, kStartMs, 1000, [&](const std::vector<msg::Message>& out, size_t from) {
    size_t entries = 0;
    for (size_t i = from; i < out.size(); ++i) {
      if (auto* bs = std::get_if<msg::BucketSummaries>(&out[i].body)) entries += bs->entries.size();
    }
    max_call_entries = std::max(max_call_entries, entries);
    total_entries += entries;
    if (entries > 0) ++calls_with_entries;
  });
  ExpectConverged({1, 2});
  EXPECT_EQ(b.replica->Stats()->keys, static_cast<uint64_t>(kKeys));
  EXPECT_GE(total_entries, static_cast<size_t>(kKeys));  // every key's summary went out
  // A window of entries plus the buckets of one read that cross its end.
  EXPECT_LE(max_call_entries, 2 * kSummaryWindowBytes / 12);
  EXPECT_GE(calls_with_entries, static_cast<int>(kKeys * 12 / kSummaryWindowBytes));
}

// The key hashes a diff requests ride on its last DiffRecords chunks, a
// chunk's worth on any one, never all in one frame (a bootstrap requests
// every key: past a few million keys one frame would pass the frame limit).
TEST_F(SyncTest, RequestsAreSpreadOverChunks) {
  constexpr int kKeys = 3000;
  constexpr size_t kChunkBytesSmall = 2 << 10;  // 256 requests a chunk
  Node& a = Add(1);
  Node& b = Add(2);
  WriteBatch wa, wb;
  for (int i = 0; i < kKeys; ++i) wa.Put("m", "a" + std::to_string(i), "x");
  for (int i = 0; i < kKeys; ++i) wb.Put("m", "b" + std::to_string(i), "y");
  ASSERT_TRUE(a.replica->Write(wa).ok());
  ASSERT_TRUE(b.replica->Write(wb).ok());
  SyncOptions opts;
  opts.diff_chunk_bytes_max = kChunkBytesSmall;
  Link link = Connect(1, 2, opts);
  size_t max_requests = 0, total_requests = 0;
  Pump(link, true, kStartMs, 1000, [&](const std::vector<msg::Message>& out, size_t from) {
    for (size_t i = from; i < out.size(); ++i) {
      if (auto* d = std::get_if<msg::DiffRecords>(&out[i].body)) {
        max_requests = std::max(max_requests, d->requests.size());
        total_requests += d->requests.size();
      }
    }
  });
  ExpectConverged({1, 2});
  EXPECT_EQ(a.replica->Stats()->keys, 2u * kKeys);
  EXPECT_GE(total_requests, static_cast<size_t>(kKeys));  // one side asked for the other's keys
  EXPECT_LE(max_requests, kChunkBytesSmall / 8);
}

// A diff that owes the peer most of our keys (a bootstrap) reads them in one
// pass over the records, so they go out in key order (a lookup per key
// would send them in key-hash order), a window at a time.
TEST_F(SyncTest, DenseDiffSendsRecordsInKeyOrder) {
  Node& a = Add(1);
  Node& b = Add(2);
  WriteBatch wa;
  for (int i = 0; i < 3000; ++i) {
    char key[8];
    std::snprintf(key, sizeof(key), "k%04d", i);
    wa.Put("m", key, std::string(100, 'x'));
  }
  ASSERT_TRUE(a.replica->Write(wa).ok());
  Link link = Connect(1, 2, WindowedOptions());
  std::vector<std::string> sent;
  WindowedRun run;
  Pump(link, true, kStartMs, 1000, [&](const std::vector<msg::Message>& out, size_t from) {
    run.Observe(out, from);
    for (size_t i = from; i < out.size(); ++i) {
      if (auto* d = std::get_if<msg::DiffRecords>(&out[i].body)) {
        for (const KeyedRecord& r : d->records) sent.push_back(r.key);
      }
    }
  });
  ExpectConverged({1, 2});
  EXPECT_EQ(b.replica->Stats()->keys, 3000u);
  ASSERT_EQ(sent.size(), 3000u);
  EXPECT_TRUE(std::is_sorted(sent.begin(), sent.end()));
  EXPECT_LE(run.max_call_bytes, kWindowBytes + kChunkBytes + 200);
  EXPECT_GE(run.calls_with_records, 3000 * 105 / int{kWindowBytes});
}

// The resync of a wiped node's records (all of them sent back to it) moves
// a window at a time too.
TEST_F(SyncTest, OriginResyncMovesAWindowAtATime) {
  Node& a = Add(1);
  Add(2);
  WriteBatch wa;
  for (int i = 0; i < 900; ++i) wa.Put("m", "a" + std::to_string(i), std::string(kValueBytes, 'x'));
  ASSERT_TRUE(a.replica->Write(wa).ok());
  {
    Link link = Connect(1, 2);
    Pump(link);
  }
  ExpectConverged({1, 2});
  Wipe(1);
  Link link = Connect(1, 2, WindowedOptions());
  // A transport polls when its send queue has room; here, once a round.
  WindowedRun run;
  Pump(link, true, kStartMs, 1000,
       [&](const std::vector<msg::Message>& out, size_t from) { run.Observe(out, from); });
  EXPECT_TRUE(link.a->Idle());
  EXPECT_TRUE(link.b->Idle());
  ExpectConverged({1, 2});
  EXPECT_EQ(nodes_[1].replica->Stats()->keys, 900u);
  EXPECT_FALSE(link.b->stats().peer_reset.empty());
  EXPECT_LE(run.max_call_bytes, kWindowBytes + kChunkBytes + kValueBytes + 16);
  EXPECT_GE(run.calls_with_records, 900 * static_cast<int>(kValueBytes) / int{kWindowBytes});
}

TEST_F(SyncTest, LaterWritesStreamAndAdvanceTheCursor) {
  Node& a = Add(1);
  Node& b = Add(2);
  Link link = Connect(1, 2);
  Pump(link);
  for (int i = 0; i < 2500; ++i)
    ASSERT_TRUE(a.replica->Put("m", "k" + std::to_string(i), "v").ok());
  Pump(link, /*start=*/false);
  ExpectConverged({1, 2});
  EXPECT_EQ(*ReplicaTestAccess::oplog(*a.replica).PeerAck(2), 2500u);
  EXPECT_EQ(link.a->stats().records_sent, 2500u);
  EXPECT_EQ(link.b->stats().records_applied, 2500u);
  // First contact found equal (empty) roots: no diff was needed.
  EXPECT_EQ(link.a->stats().diffs_completed + link.b->stats().diffs_completed, 0u);
  // B's applied remote records got B's own seqs, with A's origin kept.
  auto rows = b.replica->ReadOplog(0, 1);
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(rows->front().version.origin, 1u);
}

// Streaming reads a batch's records a chunk of oplog rows at a time; a batch
// still stops at the first record that takes it to batch_bytes_max, its
// seqs follow the previous batch's, and a key rewritten later ships once,
// with its last value.
TEST_F(SyncTest, StreamedBatchesStopAtTheirByteBudgetAndShipARewrittenKeyOnce) {
  Node& a = Add(1);
  Add(2);
  SyncOptions opts;
  opts.batch_bytes_max = 8 << 10;
  Link link = Connect(1, 2, opts);
  Pump(link);
  const std::string value(1000, 'v');
  for (int i = 0; i < 60; ++i) {
    ASSERT_TRUE(a.replica->Put("m", "k" + std::to_string(i), value).ok());
    if (i % 2 == 0) {
      ASSERT_TRUE(a.replica->Put("m", "hot", std::to_string(i)).ok());
    }
  }
  std::vector<msg::RecordBatch> batches;
  Pump(link, /*start=*/false, kStartMs, 100,
       [&](const std::vector<msg::Message>& out, size_t from) {
         for (size_t i = from; i < out.size(); ++i) {
           // B's batches (A's records, never echoed back) carry no record.
           auto* b = std::get_if<msg::RecordBatch>(&out[i].body);
           if (b != nullptr && !b->records.empty()) batches.push_back(*b);
         }
       });
  ExpectConverged({1, 2});
  EXPECT_EQ(nodes_[2].replica->Get("m", "hot")->value, "58");
  EXPECT_EQ(link.a->stats().records_sent, 61u);
  ASSERT_GT(batches.size(), 5u);
  uint64_t next_seq = batches.front().first_seq;
  size_t records = 0;
  for (const msg::RecordBatch& b : batches) {
    EXPECT_EQ(b.first_seq, next_seq);
    next_seq = b.last_seq + 1;
    size_t before_last = 0;
    for (size_t i = 0; i + 1 < b.records.size(); ++i) {
      const KeyedRecord& r = b.records[i];
      before_last += r.map.size() + r.key.size() + r.value.size() + 32;
    }
    EXPECT_LT(before_last, opts.batch_bytes_max);
    records += b.records.size();
  }
  EXPECT_EQ(records, 61u);
  EXPECT_EQ(next_seq, a.replica->LastSeq() + 1);
}

TEST_F(SyncTest, AKeyRewrittenWhileThePeerWasAwayShipsOnce) {
  Node& a = Add(1);
  Add(2);
  {
    Link link = Connect(1, 2);
    Pump(link);
  }
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(a.replica->Put("m", "hot", std::to_string(i)).ok());
  Link link = Connect(1, 2);
  Pump(link);
  ExpectConverged({1, 2});
  EXPECT_EQ(link.a->stats().records_sent, 1u);
  EXPECT_EQ(nodes_[2].replica->Get("m", "hot")->value, "999");
}

TEST_F(SyncTest, ChangesFlowTransitivelyAndNeverEchoToTheirOrigin) {
  Node& a = Add(1);
  Add(2);
  Add(3);
  Link ab = Connect(1, 2);
  Link bc = Connect(2, 3);
  Pump(ab);
  Pump(bc);
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(a.replica->Put("m", "k" + std::to_string(i), "v").ok());
  Pump(ab, false);
  Pump(bc, false);
  ExpectConverged({1, 2, 3});
  EXPECT_EQ(bc.a->stats().records_sent, 50u);  // B forwarded A's writes to C
  // C's rows all originate at A; streaming them to B (which forwarded them)
  // sends their records, but back towards A nothing is echoed.
  Pump(ab, false);
  EXPECT_EQ(ab.b->stats().records_sent, 0u);
}

// Records written by a third node (0x77) reach A and B separately; a diff
// exchanges them. What each side applied from the other gets a fresh seq in
// its oplog, but streaming must not send it back to the peer it came from.
TEST_F(SyncTest, RecordsAppliedFromAPeerAreNotStreamedBackToIt) {
  Node& a = Add(1);
  Node& b = Add(2);
  std::vector<KeyedRecord> only_a, only_b;
  for (int i = 0; i < 30; ++i) {
    only_a.push_back({"m", "a" + std::to_string(i), "x",
                      Version{Timestamp::FromParts(kStartMs - 100, static_cast<uint64_t>(i)), 0x77},
                      false});
    only_b.push_back({"m", "b" + std::to_string(i), "y",
                      Version{Timestamp::FromParts(kStartMs - 50, static_cast<uint64_t>(i)), 0x77},
                      false});
  }
  ASSERT_TRUE(a.replica->ApplyRemote(only_a, 0x77).ok());
  ASSERT_TRUE(b.replica->ApplyRemote(only_b, 0x77).ok());
  // They know each other already: cursors at the ends of their logs.
  ASSERT_TRUE(ReplicaTestAccess::oplog(*a.replica).SetPeerAck(2, a.replica->LastSeq()).ok());
  ASSERT_TRUE(ReplicaTestAccess::oplog(*b.replica).SetPeerAck(1, b.replica->LastSeq()).ok());
  Link link = Connect(1, 2);
  link.a->RequestDiff();
  Pump(link);
  ExpectConverged({1, 2});
  EXPECT_EQ(link.a->stats().records_sent, 30u);  // by the diff only, no echo
  EXPECT_EQ(link.b->stats().records_sent, 30u);
  EXPECT_EQ(*ReplicaTestAccess::oplog(*a.replica).PeerAck(2), a.replica->LastSeq());
}

TEST_F(SyncTest, PeerBelowThePrunedPointIsRepairedByTreeDiff) {
  OplogRetention tight;
  tight.rows_max = 10;
  Node& a = Add(1, tight);
  Node& b = Add(2);
  {
    Link link = Connect(1, 2);
    Pump(link);
  }
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(a.replica->Put("m", "k" + std::to_string(i), "v").ok());
  auto pruned = a.replica->PruneOplog();
  ASSERT_TRUE(pruned.ok());
  EXPECT_EQ(pruned->pruned_through, 90u);  // past B's cursor (0)
  Link link = Connect(1, 2);
  Pump(link);
  ExpectConverged({1, 2});
  EXPECT_EQ(b.replica->Stats()->keys, 100u);
  EXPECT_GE(link.a->stats().diffs_completed, 1u);
  EXPECT_EQ(*ReplicaTestAccess::oplog(*a.replica).PeerAck(2), 100u);
}

TEST_F(SyncTest, RefusedClockKeepsTheDataUntilTheReceiverAccepts) {
  Node& a = Add(1);
  Node& b = Add(2);
  Link link = Connect(1, 2);
  Pump(link);
  a.clock->Advance(120'000);  // A's clock runs two minutes ahead of B's
  ASSERT_TRUE(a.replica->Put("m", "future", "v").ok());
  Pump(link, false, kStartMs);
  EXPECT_NE(link.a->stats().last_error.find("ahead"), std::string::npos)
      << link.a->stats().last_error;
  EXPECT_TRUE(b.replica->Get("m", "future").status().IsNotFound());
  EXPECT_EQ(*ReplicaTestAccess::oplog(*a.replica).PeerAck(2), 0u);  // not acknowledged: A keeps it
  b.clock->Advance(120'000);                                        // B's clock is fixed
  Pump(link, false, kStartMs + 10'000);                             // after the retry pause
  EXPECT_EQ(b.replica->Get("m", "future")->value, "v");
  EXPECT_TRUE(link.a->stats().last_error.empty());
  ExpectConverged({1, 2});
}

// A tree diff that brings records too far ahead for the receiver's clock
// applies the others and keeps the session; diffs started after a pause
// (doubled each time they refuse again) ask for the rest until the clock
// allows them.
TEST_F(SyncTest, DiffAppliesWhatItCanAndAsksAgainForRecordsRefusedForTheirClock) {
  Node& a = Add(1);
  Node& b = Add(2);
  constexpr int kKeys = 50;
  for (int i = 0; i < kKeys; ++i) {
    ASSERT_TRUE(a.replica->Put("m", "k" + std::to_string(i), "v").ok());
  }
  a.clock->Advance(120'000);  // A's clock now runs two minutes ahead of B's
  ASSERT_TRUE(a.replica->Put("m", "future", "v").ok());
  ASSERT_TRUE(a.replica->Put("m", "k7", "later").ok());
  // First contact: everything goes by tree diff, none of it by the stream.
  Link link = Connect(1, 2);
  Pump(link);  // every call returns OK: the session stays open
  EXPECT_GE(link.b->stats().diffs_completed, 1u);
  EXPECT_EQ(link.b->stats().records_refused, 2u);
  EXPECT_NE(link.b->stats().last_error.find("ahead"), std::string::npos)
      << link.b->stats().last_error;
  EXPECT_NE(link.b->stats().last_error.find("and 1 more"), std::string::npos)
      << link.b->stats().last_error;
  // A diff sends what A holds now: k7 only at its later version.
  EXPECT_TRUE(b.replica->Get("m", "future").status().IsNotFound());
  EXPECT_TRUE(b.replica->Get("m", "k7").status().IsNotFound());
  for (int i = 0; i < kKeys; ++i) {
    if (i != 7) {
      EXPECT_TRUE(b.replica->Get("m", "k" + std::to_string(i)).ok()) << i;
    }
  }
  EXPECT_FALSE(link.b->Idle());  // the next diff is due
  // No diff before the pause (refused_retry_ms, 5 s) is over.
  const uint64_t diffs = link.b->stats().diffs_completed;
  Pump(link, false, kStartMs + 4'000);
  EXPECT_EQ(link.b->stats().diffs_completed, diffs);
  // After it, one that refuses them again; the next pause is 10 s.
  Pump(link, false, kStartMs + 5'000);
  EXPECT_EQ(link.b->stats().diffs_completed, diffs + 1);
  EXPECT_EQ(link.b->stats().records_refused, 4u);
  b.clock->Advance(120'000);  // B's clock is fixed
  Pump(link, false, kStartMs + 14'000);
  EXPECT_EQ(link.b->stats().diffs_completed, diffs + 1);
  EXPECT_TRUE(b.replica->Get("m", "future").status().IsNotFound());
  // The diff after that brings both records and ends the error.
  Pump(link, false, kStartMs + 15'000);
  EXPECT_EQ(link.b->stats().diffs_completed, diffs + 2);
  ASSERT_TRUE(b.replica->Get("m", "future").ok());
  EXPECT_EQ(b.replica->Get("m", "future")->value, "v");
  ASSERT_TRUE(b.replica->Get("m", "k7").ok());
  EXPECT_EQ(b.replica->Get("m", "k7")->value, "later");
  EXPECT_TRUE(link.b->stats().last_error.empty()) << link.b->stats().last_error;
  EXPECT_EQ(link.b->stats().records_refused, 4u);
  EXPECT_TRUE(link.a->Idle());
  EXPECT_TRUE(link.b->Idle());
  ExpectConverged({1, 2});
}

// Found by the simulator (seed 16): the side that answers a diff step with
// DiffEnd (nothing differs any more) must finish the diff too, or it stays
// "in a diff" forever: never idle, its held acks never persisted, and (as the
// lower id) it never starts another periodic diff on that connection.
TEST_F(SyncTest, PeriodicDiffOfEqualTreesFinishesOnBothSides) {
  Node& a = Add(1);
  Add(2);
  SyncOptions opts;
  opts.diff_interval_ms = 1'000;
  Link link = Connect(1, 2, opts);
  Pump(link);
  ASSERT_TRUE(a.replica->Put("m", "k", "v").ok());
  Pump(link, /*start=*/false);
  // The periodic diff (started by the lower id) finds equal trees at once.
  Pump(link, /*start=*/false, kStartMs + 1'000);
  EXPECT_EQ(link.a->stats().diffs_completed, 1u);
  EXPECT_EQ(link.b->stats().diffs_completed, 1u);
  EXPECT_FALSE(link.b->stats().diff_in_progress);
  EXPECT_TRUE(link.a->Idle());
  EXPECT_TRUE(link.b->Idle());
  // And the next one starts and ends as well.
  Pump(link, /*start=*/false, kStartMs + 2'000);
  EXPECT_EQ(link.a->stats().diffs_completed, 2u);
  EXPECT_EQ(link.b->stats().diffs_completed, 2u);
}

// The same at the bottom of the tree: the trees differed during the descent,
// but when the bucket summaries arrive the receiver already got the missing
// record elsewhere, so nothing is sent or requested; it answers DiffEnd, which
// must finish its diff and, as this is first contact, persist its held cursor.
TEST_F(SyncTest, DiffThatFindsNothingAtTheBottomFinishesOnBothSides) {
  Node& a = Add(1);
  Node& b = Add(2);
  ASSERT_TRUE(a.replica->Put("m", "k", "v").ok());
  Link link = Connect(1, 2);
  std::vector<msg::Message> to_b, to_a;
  ASSERT_TRUE(link.a->Start(kStartMs, &to_b).ok());
  ASSERT_TRUE(link.b->Start(kStartMs, &to_a).ok());
  bool applied_elsewhere = false;
  for (int round = 0; round < 100 && !(to_a.empty() && to_b.empty()); ++round) {
    for (const auto& m : to_b) {
      if (std::holds_alternative<msg::BucketSummaries>(m.body) && !applied_elsewhere) {
        // B gets A's record from a third replica while the summaries travel.
        auto rec = a.replica->ReadRecord("m", "k");
        ASSERT_TRUE(rec.ok() && rec->has_value());
        ASSERT_TRUE(b.replica->ApplyRemote({&**rec, 1}, 3).ok());
        applied_elsewhere = true;
      }
    }
    std::vector<msg::Message> next_b, next_a;
    for (const auto& m : to_b) ASSERT_TRUE(link.b->Receive(m, kStartMs, &next_a).ok());
    for (const auto& m : to_a) ASSERT_TRUE(link.a->Receive(m, kStartMs, &next_b).ok());
    to_b = std::move(next_b);
    to_a = std::move(next_a);
    ASSERT_TRUE(link.a->Poll(kStartMs, &to_b).ok());
    ASSERT_TRUE(link.b->Poll(kStartMs, &to_a).ok());
  }
  ASSERT_TRUE(applied_elsewhere) << "the diff never reached the bucket summaries";
  ExpectConverged({1, 2});
  EXPECT_TRUE(link.a->Idle());
  EXPECT_TRUE(link.b->Idle());
  EXPECT_FALSE(link.b->stats().diff_in_progress);
  EXPECT_EQ(*ReplicaTestAccess::oplog(*b.replica).PeerAck(1), b.replica->LastSeq());
}

// Found by the simulator (seed 261): a first-contact repair diff covers the
// rows written between the session's start and the diff's start and moves
// the cursor past them, but streaming still pointed at the first of them.
// Once pruning removed them (the cursor allowed it), the stream read nothing,
// never moved on, and the session was never idle again.
TEST_F(SyncTest, RowsCoveredByARepairAreNotStreamedAgain) {
  Node& a = Add(1);
  Add(2);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(a.replica->Put("m", "k" + std::to_string(i), "v").ok());
  Link link = Connect(1, 2);
  std::vector<msg::Message> to_b, to_a;
  ASSERT_TRUE(link.a->Start(kStartMs, &to_b).ok());
  ASSERT_TRUE(link.b->Start(kStartMs, &to_a).ok());
  // Written after the session started, before its repair diff starts.
  for (int i = 10; i < 13; ++i) ASSERT_TRUE(a.replica->Put("m", "k" + std::to_string(i), "v").ok());
  // Only messages move (no Poll, so nothing streams) until the diff is done.
  for (int round = 0; round < 100 && !(to_a.empty() && to_b.empty()); ++round) {
    std::vector<msg::Message> next_b, next_a;
    for (const auto& m : to_b) ASSERT_TRUE(link.b->Receive(m, kStartMs, &next_a).ok());
    for (const auto& m : to_a) ASSERT_TRUE(link.a->Receive(m, kStartMs, &next_b).ok());
    to_b = std::move(next_b);
    to_a = std::move(next_a);
  }
  ExpectConverged({1, 2});
  ASSERT_EQ(*ReplicaTestAccess::oplog(*a.replica).PeerAck(2), 13u);
  auto pruned = a.replica->PruneOplog();
  ASSERT_TRUE(pruned.ok());
  ASSERT_EQ(pruned->pruned_through, 13u);  // every row: B acknowledged them all
  const uint64_t sent_by_diff = link.a->stats().records_sent;
  Pump(link, /*start=*/false);
  EXPECT_TRUE(link.a->Idle());
  EXPECT_TRUE(link.b->Idle());
  EXPECT_EQ(link.a->stats().records_sent, sent_by_diff);  // the diff sent them; not again
}

// The retention cap may prune every row a peer has not acknowledged, with no
// newer row behind them: the stream must see that gap and repair the peer
// by tree diff, as it does when some rows are left.
TEST_F(SyncTest, PeerWhoseRowsWereAllPrunedIsRepaired) {
  OplogRetention none;
  none.rows_max = 0;
  Node& a = Add(1, none);
  Add(2);
  SyncOptions no_periodic;
  no_periodic.diff_interval_ms = 0;
  Link link = Connect(1, 2, no_periodic);
  Pump(link);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(a.replica->Put("m", "k" + std::to_string(i), "v").ok());
  auto pruned = a.replica->PruneOplog();
  ASSERT_TRUE(pruned.ok());
  ASSERT_EQ(pruned->pruned_through, 5u);  // the log is empty; B acknowledged none of it
  Pump(link, /*start=*/false);
  ExpectConverged({1, 2});
  EXPECT_GE(link.a->stats().diffs_completed, 1u);
  EXPECT_TRUE(link.a->Idle());
  EXPECT_EQ(*ReplicaTestAccess::oplog(*a.replica).PeerAck(2), 5u);
}

// When pruning overtakes a peer while a diff is already running, that diff
// cannot be the repair: its tree comparisons may predate the rows that went
// missing. Here the periodic diff's first step left before ten writes, whose
// rows were then pruned; the peer answers DiffEnd (the trees it compared were
// equal), and the ten keys must still reach it.
TEST_F(SyncTest, GapFoundDuringARunningDiffIsRepairedByANewDiff) {
  OplogRetention tight;
  tight.rows_max = 2;
  Node& a = Add(1, tight);
  Add(2);
  SyncOptions opts;
  opts.diff_interval_ms = 1'000;
  Link link = Connect(1, 2, opts);
  Pump(link);
  ASSERT_TRUE(a.replica->Put("m", "k0", "v").ok());
  Pump(link, /*start=*/false);
  ASSERT_EQ(*ReplicaTestAccess::oplog(*a.replica).PeerAck(2), 1u);
  const uint64_t t = kStartMs + 1'000;
  std::vector<msg::Message> to_b, to_a;
  ASSERT_TRUE(link.a->Poll(t, &to_b).ok());  // the periodic diff starts
  ASSERT_TRUE(link.a->stats().diff_in_progress);
  for (int i = 1; i <= 10; ++i) ASSERT_TRUE(a.replica->Put("m", "k" + std::to_string(i), "v").ok());
  ASSERT_TRUE(a.replica->PruneOplog().ok());  // rows 2..9 go: B acknowledged none of them
  ASSERT_TRUE(link.a->Poll(t, &to_b).ok());   // the stream finds the gap
  for (int round = 0; round < 100 && !(to_a.empty() && to_b.empty()); ++round) {
    std::vector<msg::Message> next_b, next_a;
    for (const auto& m : to_b) ASSERT_TRUE(link.b->Receive(m, t, &next_a).ok());
    for (const auto& m : to_a) ASSERT_TRUE(link.a->Receive(m, t, &next_b).ok());
    to_b = std::move(next_b);
    to_a = std::move(next_a);
    ASSERT_TRUE(link.a->Poll(t, &to_b).ok());
    ASSERT_TRUE(link.b->Poll(t, &to_a).ok());
  }
  ExpectConverged({1, 2});
  EXPECT_TRUE(link.a->Idle());
}

// Found by the simulator (seed 248 with TIDEMAP_SIM_PERIODIC_DIFFS=0): a
// repair diff is running (first contact) when pruning removes rows written
// after its snapshot, before they were streamed. The running diff cannot
// cover them (its first steps predate them): the stream must see the gap and
// repair the peer again, not skip it because "a repair is pending".
TEST_F(SyncTest, GapAfterTheSnapshotOfARunningRepairIsRepairedAgain) {
  OplogRetention tight;
  tight.rows_max = 2;
  Node& a = Add(1, tight);
  Add(2);
  ASSERT_TRUE(a.replica->Put("m", "k0", "v").ok());
  SyncOptions no_periodic;
  no_periodic.diff_interval_ms = 0;
  Link link = Connect(1, 2, no_periodic);
  std::vector<msg::Message> to_b, to_a, ignored;
  ASSERT_TRUE(link.a->Start(kStartMs, &to_b).ok());
  ASSERT_TRUE(link.b->Start(kStartMs, &to_a).ok());
  // A takes B's hello and starts its repair diff (snapshot: seq 1)...
  for (const auto& m : to_a) ASSERT_TRUE(link.a->Receive(m, kStartMs, &to_b).ok());
  to_a.clear();
  ASSERT_TRUE(link.a->stats().diff_in_progress);
  // ...then writes ten keys whose rows are pruned before they are streamed.
  for (int i = 1; i <= 10; ++i) ASSERT_TRUE(a.replica->Put("m", "k" + std::to_string(i), "v").ok());
  ASSERT_TRUE(a.replica->PruneOplog().ok());
  ASSERT_GT(*ReplicaTestAccess::oplog(*a.replica).FirstSeq(), 2u);
  for (int round = 0; round < 100 && !(to_a.empty() && to_b.empty() && round > 0); ++round) {
    ASSERT_TRUE(link.a->Poll(kStartMs, &to_b).ok());
    ASSERT_TRUE(link.b->Poll(kStartMs, &to_a).ok());
    std::vector<msg::Message> next_b, next_a;
    for (const auto& m : to_b) ASSERT_TRUE(link.b->Receive(m, kStartMs, &next_a).ok());
    for (const auto& m : to_a) ASSERT_TRUE(link.a->Receive(m, kStartMs, &next_b).ok());
    to_b = std::move(next_b);
    to_a = std::move(next_a);
  }
  ExpectConverged({1, 2});
  EXPECT_TRUE(link.a->Idle());
  EXPECT_TRUE(link.b->Idle());
  EXPECT_GE(link.a->stats().diffs_completed, 2u);
}

// Found by the simulator (with TIDEMAP_SIM_PERIODIC_DIFFS=0, seeds 67, 206,
// 220, 248, 249, 282 and 287 of 1..300 never converged, all with wipes). A
// node that lost its database but kept its id used to be repaired only by the
// diff of its first session with each peer: the peer still held a cursor for
// it and streamed only what followed, and once that first session was cut
// before its diff ended, the next one was not a first contact either (the
// wiped node had registered the peer). Now its new database has another
// incarnation, which its Hello carries: the peer's stored cursor no longer
// counts, and nothing is persisted until a repair has finished.
TEST_F(SyncTest, WipedPeerWhoseFirstDiffIsCutStillConverges) {
  Add(1);
  Node& b = Add(2);
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(b.replica->Put("m", "k" + std::to_string(i), "v").ok());
  SyncOptions no_periodic;
  no_periodic.diff_interval_ms = 0;
  {
    Link link = Connect(1, 2, no_periodic);
    Pump(link);
  }
  ExpectConverged({1, 2});
  EXPECT_EQ(*ReplicaTestAccess::oplog(*b.replica).PeerAck(1), 50u);
  Wipe(1);
  {
    // The first session after the wipe exchanges hellos; A starts its
    // repair diff, and the connection drops before the diff gets anywhere.
    Link link = Connect(1, 2, no_periodic);
    std::vector<msg::Message> to_b, to_a, ignored;
    ASSERT_TRUE(link.a->Start(kStartMs, &to_b).ok());
    ASSERT_TRUE(link.b->Start(kStartMs, &to_a).ok());
    ASSERT_TRUE(link.a->Receive(to_a[0], kStartMs, &ignored).ok());
    EXPECT_TRUE(link.a->stats().diff_in_progress);
  }
  Link link = Connect(1, 2, no_periodic);
  Pump(link);
  EXPECT_TRUE(link.a->Idle());
  EXPECT_TRUE(link.b->Idle());
  ExpectConverged({1, 2});
  EXPECT_NE(link.b->stats().peer_reset.find("another database"), std::string::npos)
      << link.b->stats().peer_reset;
  // B's cursor for A is A's new database's: moved back to what the repair gave it.
  auto state = ReplicaTestAccess::oplog(*b.replica).Peer(1);
  ASSERT_TRUE(state.ok());
  EXPECT_EQ(state->incarnation, nodes_[1].replica->incarnation());
}

// A node that lost its database (and with it the persisted HLC bound) but
// kept its id can re-issue a version its former self issued, with other
// bytes (the simulator counts such re-issues: wipe_version_reissued,
// equal_version_conflicts). The Merkle item digest covers the version, not
// the value, so two replicas holding one version with different bytes have
// equal trees and no diff looks; and the peer never streams the old record
// to the wiped node because it originated there. The peer sees the new
// incarnation in the Hello and resyncs the records of that origin both ways
// (OriginRecords), so the tie rule picks one copy on both sides.
TEST_F(SyncTest, WipedNodeReissuingAVersionStillConverges) {
  Node& a = Add(1);
  Node& b = Add(2);
  auto old_version = a.replica->Put("m", "k", "old bytes");
  ASSERT_TRUE(old_version.ok());
  {
    Link link = Connect(1, 2);
    Pump(link);
  }
  ASSERT_EQ(b.replica->Get("m", "k")->value, "old bytes");
  Wipe(1);
  a.clock->Set(kStartMs);  // the machine's clock reads what it read then
  // New bytes that lose the tie against the old ones.
  const Digest128 old_digest = Hash128("old bytes", 0);
  std::string new_value;
  for (int i = 0;; ++i) {
    new_value = "new bytes " + std::to_string(i);
    const Digest128 d = Hash128(new_value, 0);
    if (d.hi != old_digest.hi ? d.hi < old_digest.hi : d.lo < old_digest.lo) break;
  }
  auto new_version = a.replica->Put("m", "k", new_value);
  ASSERT_TRUE(new_version.ok());
  ASSERT_EQ(*new_version, *old_version) << "the wiped node re-issued its former version";
  Link link = Connect(1, 2);
  Pump(link);
  EXPECT_EQ(a.replica->MerkleRoot(), b.replica->MerkleRoot());  // equal trees...
  ExpectConverged({1, 2});  // ...and equal bytes: the old ones, which win the tie
  EXPECT_EQ(a.replica->Get("m", "k")->value, "old bytes");
  EXPECT_TRUE(link.a->Idle());
  EXPECT_TRUE(link.b->Idle());
}

// ---------------------------------------------------------------------------
// Tombstone GC across replicas.

// A node that was away holds a deleted key's old live version; the other side
// has purged the key's tombstone. The old version never comes back: by
// default the delete is restored in its place and a tree diff ships it to
// the stale node, so both converge on the key being deleted (and purge it
// again later).
TEST_F(SyncTest, StalePeerCannotResurrectAPurgedKeyAndIsRepaired) {
  Node& a = Add(1);
  Add(2);
  ASSERT_TRUE(a.replica->Put("m", "k", "old").ok());
  const KeyedRecord old = **a.replica->ReadRecord("m", "k");
  const Version del = *a.replica->Delete("m", "k");
  ASSERT_TRUE(a.replica->Put("m", "other", "v").ok());
  {
    Link link = Connect(1, 2);
    Pump(link);  // B, A's only known peer, holds the tombstone and acknowledged it
  }
  a.clock->Advance(kHorizonMs + 1);
  ASSERT_EQ(a.replica->PurgeTombstones()->purged, 1u);
  // C took the old version before the delete and was away ever since.
  Node& c = Add(3);
  ASSERT_TRUE(c.replica->ApplyRemote({&old, 1}, 1).ok());

  Link link = Connect(1, 3);
  Pump(link, /*start=*/true, a.clock->NowMillis());
  ExpectConverged({1, 3});
  EXPECT_EQ(Scan(3), "m/k=⊥@" + del.ToString() + " m/other=v@" +
                         a.replica->Get("m", "other")->version.ToString() + " ");
  EXPECT_EQ(link.a->stats().stale_redeleted, 1u);
  EXPECT_EQ(link.a->stats().stale_note,
            "peer 0000000000000003: its state predates our GC watermark " + del.ToString() +
                " (it sent map 'm', key 'k' at " + old.version.ToString() +
                ", deleted and purged here): the delete was restored and sent back");
  EXPECT_TRUE(link.a->Idle());
  EXPECT_TRUE(link.b->Idle());
  // Once its known peers (C, and B again) acknowledged the restored delete,
  // A purges it again.
  EXPECT_EQ(a.replica->PurgeTombstones()->purged, 0u);
  Link ab = Connect(1, 2);
  Pump(ab, /*start=*/true, a.clock->NowMillis());
  EXPECT_EQ(a.replica->PurgeTombstones()->purged, 1u);
}

// With refuse_stale_peers, the stale node's data never merges: the session
// ends with an error that tells it to re-bootstrap, and the stale node learns
// why from the Goodbye.
TEST_F(SyncTest, StalePeerIsToldToRebootstrapWhenRefused) {
  Node& a = Add(1);
  Add(2);
  ASSERT_TRUE(a.replica->Put("m", "k", "old").ok());
  const KeyedRecord old = **a.replica->ReadRecord("m", "k");
  ASSERT_TRUE(a.replica->Delete("m", "k").ok());
  {
    Link link = Connect(1, 2);
    Pump(link);
  }
  a.clock->Advance(kHorizonMs + 1);
  ASSERT_EQ(a.replica->PurgeTombstones()->purged, 1u);
  const Version watermark = a.replica->gc_watermark();
  Node& c = Add(3);
  ASSERT_TRUE(c.replica->ApplyRemote({&old, 1}, 1).ok());

  SyncOptions refuse;
  refuse.refuse_stale_peers = true;
  Link link = Connect(1, 3, refuse);
  const auto [sa, sc] = PumpUntilClosed(link, a.clock->NowMillis());
  ASSERT_TRUE(sa.IsRefused()) << sa.ToString();
  EXPECT_EQ(sa.message(), "peer 0000000000000003: its state predates our GC watermark " +
                              watermark.ToString() + " (it sent map 'm', key 'k' at " +
                              old.version.ToString() +
                              ", deleted and purged here); re-bootstrap it from an empty data dir");
  ASSERT_TRUE(sc.IsRefused()) << sc.ToString();
  EXPECT_EQ(sc.message(), "peer 0000000000000001 closed the session: " + sa.message());
  EXPECT_EQ(link.b->stats().last_error, sc.message());
  EXPECT_TRUE(a.replica->Get("m", "k").status().IsNotFound());
  EXPECT_EQ(a.replica->Stats()->tombstones, 0u);
  EXPECT_EQ(a.replica->Stats()->stale_records_dropped, 1u);
}

// The same through streaming: a known peer's oplog row carries a deleted
// key's old version (here C got it late, from the node that wrote it). The
// delete is restored, the batch acknowledged, and a diff repairs C.
TEST_F(SyncTest, StaleRecordInAStreamedBatchIsAnsweredWithTheDelete) {
  Node& a = Add(1);
  Add(2);
  const KeyedRecord old{"m", "k", "old", Version{Timestamp::FromParts(kStartMs - 5, 0), 9}, false};
  ASSERT_TRUE(a.replica->ApplyRemote({&old, 1}, 9).ok());
  const Version del = *a.replica->Delete("m", "k");
  {
    Link link = Connect(1, 2);
    Pump(link);
  }
  a.clock->Advance(kHorizonMs + 1);
  ASSERT_EQ(a.replica->PurgeTombstones()->purged, 1u);
  Node& c = Add(3);
  ASSERT_TRUE(c.replica->ApplyRemote({&old, 1}, 9).ok());
  // A and C know each other already, from A's former run (a node that tells
  // A it holds seqs A had not written when it opened would mean A lost them):
  // no repair, C streams its row to A.
  a.replica.reset();
  a.replica = OpenNode(1, "/n1", a.clock.get());
  ASSERT_TRUE(ReplicaTestAccess::oplog(*a.replica)
                  .SetPeer(3, PeerState{a.replica->LastSeq(), c.replica->incarnation(), 0})
                  .ok());
  ASSERT_TRUE(ReplicaTestAccess::oplog(*c.replica)
                  .SetPeer(1, PeerState{0, a.replica->incarnation(), a.replica->LastSeq()})
                  .ok());
  Link link = Connect(1, 3);
  Pump(link, /*start=*/true, a.clock->NowMillis());
  ExpectConverged({1, 3});
  EXPECT_EQ(Scan(3), "m/k=⊥@" + del.ToString() + " ");
  EXPECT_EQ(link.a->stats().stale_redeleted, 1u);
  EXPECT_GE(link.a->stats().diffs_completed, 1u);
  EXPECT_EQ(*ReplicaTestAccess::oplog(*c.replica).PeerAck(1),
            c.replica->LastSeq());  // its row was acknowledged
}

// A purged replica and one that still holds the tombstone differ in that
// bucket until the second purges too. Their diffs find the difference but
// ship nothing: the side that purged does not ask for the tombstone, the
// other does not send it to a peer whose watermark covers it. Then both
// purge, and their roots are equal.
TEST_F(SyncTest, PurgedTombstonesAreNotShippedBackAndForth) {
  Node& a = Add(1);
  Node& b = Add(2, {}, 2 * kHorizonMs);  // B keeps tombstones longer
  SyncOptions opts;
  opts.diff_interval_ms = 1'000;
  {
    Link link = Connect(1, 2, opts);
    Pump(link);
    ASSERT_TRUE(a.replica->Put("m", "k", "v").ok());
    ASSERT_TRUE(a.replica->Put("m", "keep", "v").ok());
    ASSERT_TRUE(a.replica->Delete("m", "k").ok());
    Pump(link, /*start=*/false);
  }
  ExpectConverged({1, 2});
  a.clock->Advance(kHorizonMs + 1);
  b.clock->Advance(kHorizonMs + 1);
  ASSERT_EQ(a.replica->PurgeTombstones()->purged, 1u);
  ASSERT_EQ(b.replica->PurgeTombstones()->purged, 0u);
  ASSERT_NE(a.replica->MerkleRoot(), b.replica->MerkleRoot());

  const uint64_t t = a.clock->NowMillis();
  Link link = Connect(1, 2, opts);
  Pump(link, /*start=*/true, t);
  Pump(link, /*start=*/false, t + 1'000);  // a periodic diff
  EXPECT_GE(link.a->stats().diffs_completed, 1u);
  EXPECT_EQ(link.a->stats().records_sent, 0u);
  EXPECT_EQ(link.b->stats().records_sent, 0u);
  EXPECT_TRUE(link.a->Idle());
  EXPECT_TRUE(link.b->Idle());
  EXPECT_EQ(Scan(1), "m/keep=v@" + a.replica->Get("m", "keep")->version.ToString() + " ");
  EXPECT_EQ(b.replica->Stats()->tombstones, 1u);

  b.clock->Advance(kHorizonMs);
  ASSERT_EQ(b.replica->PurgeTombstones()->purged, 1u);
  ExpectConverged({1, 2});
  Pump(link, /*start=*/false, t + 2'000);
  EXPECT_EQ(link.a->stats().records_sent + link.b->stats().records_sent, 0u);
}

// A node restored from an older backup: the same incarnation, but fewer rows
// than its peer acknowledged from it, and it reuses the seqs it lost for new
// changes. The peer notices (its received seq is past the Hello's last seq),
// repairs it by tree diff and resends the records the node wrote and lost.
TEST_F(SyncTest, NodeRestoredFromAnOlderBackupIsRepaired) {
  Node& a = Add(1);
  Node& b = Add(2);
  {
    Link link = Connect(1, 2);
    Pump(link);  // empty: equal roots, cursors tagged with each other's incarnation
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(a.replica->Put("m", "k" + std::to_string(i), "v").ok());
    Pump(link, /*start=*/false);
  }
  EXPECT_EQ(ReplicaTestAccess::oplog(*b.replica).Peer(1)->received, 5u);
  const uint64_t incarnation = a.replica->incarnation();
  a.replica.reset();
  CopyDb("/n1", "/n1-backup");
  a.replica = OpenNode(1, "/n1", a.clock.get());
  {
    for (int i = 5; i < 10; ++i)
      ASSERT_TRUE(a.replica->Put("m", "k" + std::to_string(i), "v").ok());
    Link link = Connect(1, 2);
    Pump(link);
  }
  EXPECT_EQ(ReplicaTestAccess::oplog(*b.replica).Peer(1)->received, 10u);
  a.replica.reset();
  a.replica = OpenNode(1, "/n1-backup", a.clock.get());  // the restore
  ASSERT_EQ(a.replica->incarnation(), incarnation);
  ASSERT_EQ(a.replica->LastSeq(), 5u);
  ASSERT_TRUE(a.replica->Put("m", "after-restore", "v").ok());  // seq 6 again, another change

  Link link = Connect(1, 2);
  Pump(link);
  ExpectConverged({1, 2});
  EXPECT_EQ(a.replica->Stats()->keys, 11u);
  EXPECT_NE(link.b->stats().peer_reset.find("went back in time"), std::string::npos)
      << link.b->stats().peer_reset;
  EXPECT_TRUE(link.a->stats().peer_reset.empty());
  // A noticed it too (B holds its seq 10; it had 5 when it opened), and left
  // the repair to B, which saw it in A's Hello: same incarnation.
  EXPECT_EQ(a.replica->storage_health().lost_writes_detected, 1u);
  EXPECT_NE(a.replica->storage_health().last_lost_writes.find("the peer repairs this node"),
            std::string::npos)
      << a.replica->storage_health().last_lost_writes;
  EXPECT_EQ(a.replica->incarnation(), incarnation);
  EXPECT_TRUE(link.a->Idle());
  EXPECT_TRUE(link.b->Idle());
  // B's state for A now describes the restored database.
  EXPECT_EQ(*ReplicaTestAccess::oplog(*b.replica).Peer(1),
            (PeerState{b.replica->LastSeq(), incarnation, a.replica->LastSeq()}));
}

// As above, but the restored node wrote past the seq its peer holds before
// they met again, and one of its new writes took the version of one it lost
// (its clock had moved past the HLC bound the backup holds): from the Hello
// the peer cannot tell. The node can (the peer holds its seq 10; it opened
// at 5): it takes a new incarnation and ends the session, and the next one
// repairs and resyncs it, so both end with the same bytes under that version.
TEST_F(SyncTest, RestoredNodeThatWrotePastItsPeersCursorTakesANewIncarnation) {
  Node& a = Add(1);
  Node& b = Add(2);
  Link first = Connect(1, 2);
  Pump(first);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(a.replica->Put("m", "k" + std::to_string(i), "v").ok());
  Pump(first, /*start=*/false);
  a.replica.reset();
  CopyDb("/n1", "/n1-backup");
  a.replica = OpenNode(1, "/n1", a.clock.get());
  a.clock->Advance(5'000);  // past the bound the backup holds
  for (int i = 5; i < 10; ++i) ASSERT_TRUE(a.replica->Put("m", "k" + std::to_string(i), "v").ok());
  Link second = Connect(1, 2);
  Pump(second, /*start=*/true, a.clock->NowMillis());
  ASSERT_EQ(ReplicaTestAccess::oplog(*b.replica).Peer(1)->received, 10u);
  const Version lost_k5 = b.replica->Get("m", "k5").value().version;
  a.replica.reset();
  a.replica = OpenNode(1, "/n1-backup", a.clock.get());  // the restore
  const uint64_t incarnation = a.replica->incarnation();
  const Version k5 = *a.replica->Put("m", "k5", "other");
  ASSERT_EQ(k5, lost_k5) << "the test needs a reissued version";
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(a.replica->Put("m", "x" + std::to_string(i), "v").ok());
  ASSERT_GT(a.replica->LastSeq(), 10u);  // past B's cursor: B's check cannot fire

  Link third = Connect(1, 2);
  testing::SyncPumpOptions options;
  options.now_ms = a.clock->NowMillis();
  const testing::SyncPumpResult closed = testing::PumpSync(*third.a, *third.b, options);
  ASSERT_TRUE(closed.status.IsCorruption()) << closed.status.ToString();
  EXPECT_NE(closed.status.message().find("lost writes that peer 0000000000000002 holds"),
            std::string::npos)
      << closed.status.ToString();
  EXPECT_NE(a.replica->incarnation(), incarnation);
  EXPECT_EQ(a.replica->storage_health().lost_writes_detected, 1u);

  Link fourth = Connect(1, 2);
  Pump(fourth, /*start=*/true, a.clock->NowMillis());
  EXPECT_NE(fourth.b->stats().peer_reset.find("another database"), std::string::npos)
      << fourth.b->stats().peer_reset;
  ExpectConverged({1, 2});  // values included: k5 has one set of bytes on both
  EXPECT_EQ(a.replica->Stats()->keys, 16u);
  EXPECT_EQ(a.replica->Get("m", "k5")->value, b.replica->Get("m", "k5")->value);
}

TEST_F(SyncTest, BootstrapReportsProgressAndThePeersClockOffset) {
  // b starts empty and a holds 6000 keys: while the diff runs, b's percent
  // rises strictly between 0 and 100 as record chunks arrive, a's as it
  // sends them, and both are 0 again once the diff is over. Each side measures the other's clock
  // from its hello (a's runs 1500 ms ahead of b's here).
  Node& a = Add(1);
  Add(2);
  WriteBatch wa;
  for (int i = 0; i < 6000; ++i) wa.Put("m", "a" + std::to_string(i), "x");
  ASSERT_TRUE(a.replica->Write(wa).ok());
  SyncOptions opts;
  opts.batch_records_max = 500;
  Link link = Connect(1, 2, opts);
  std::vector<msg::Message> to_b, to_a;
  ASSERT_TRUE(link.a->Start(kStartMs + 1500, &to_b).ok());
  ASSERT_TRUE(link.b->Start(kStartMs, &to_a).ok());
  std::vector<double> seen, seen_by_sender;
  for (int round = 0; round < 200 && !(to_a.empty() && to_b.empty() && round > 0); ++round) {
    std::vector<msg::Message> next_a, next_b;
    for (const auto& m : to_b) {
      ASSERT_TRUE(link.b->Receive(m, kStartMs, &next_a).ok());
      if (link.b->stats().diff_in_progress) seen.push_back(link.b->stats().sync_percent);
    }
    for (const auto& m : to_a) {
      ASSERT_TRUE(link.a->Receive(m, kStartMs + 1500, &next_b).ok());
      if (link.a->stats().diff_in_progress) seen_by_sender.push_back(link.a->stats().sync_percent);
    }
    ASSERT_TRUE(link.a->Poll(kStartMs + 1500, &next_b).ok());
    if (link.a->stats().diff_in_progress) seen_by_sender.push_back(link.a->stats().sync_percent);
    ASSERT_TRUE(link.b->Poll(kStartMs, &next_a).ok());
    to_a = std::move(next_a);
    to_b = std::move(next_b);
  }
  ExpectConverged({1, 2});
  bool partway = false;
  for (double p : seen) {
    EXPECT_GE(p, 0.0);
    EXPECT_LT(p, 100.0);
    partway = partway || (p > 10 && p < 90);
  }
  EXPECT_TRUE(partway) << "percents seen: " << ::testing::PrintToString(seen);
  // The sending side shows its progress too (records sent of those it holds
  // beyond the peer's), not 0 throughout; it answers the requests of a
  // bootstrap in few calls, so its figure moves in large steps.
  double sender_max = 0;
  for (double p : seen_by_sender) {
    EXPECT_GE(p, 0.0);
    EXPECT_LT(p, 100.0);
    sender_max = std::max(sender_max, p);
  }
  EXPECT_GT(sender_max, 50.0) << "sender's percents: " << ::testing::PrintToString(seen_by_sender);
  EXPECT_EQ(link.a->stats().sync_percent, 0.0);
  EXPECT_FALSE(link.b->stats().diff_in_progress);
  EXPECT_EQ(link.b->stats().sync_percent, 0.0);
  EXPECT_EQ(link.b->stats().peer_clock_offset_ms, 1500);
  EXPECT_EQ(link.a->stats().peer_clock_offset_ms, -1500);
}

TEST_F(SyncTest, OutOfOrderMessageClosesTheSession) {
  Add(1);
  Add(2);
  Link link = Connect(1, 2);
  std::vector<msg::Message> to_b, to_a;
  ASSERT_TRUE(link.a->Start(kStartMs, &to_b).ok());
  msg::Message skipped = to_b[0];
  skipped.seq = 2;
  EXPECT_TRUE(link.b->Start(kStartMs, &to_a).ok());
  Status s = link.b->Receive(skipped, kStartMs, &to_a);
  EXPECT_TRUE(s.IsInvalidArgument());
  EXPECT_NE(s.message().find("out of order"), std::string::npos);
}

TEST_F(SyncTest, AnotherProtocolVersionIsRefused) {
  Add(1);
  Add(2);
  SyncSession a(nodes_[1].replica.get(), 2, {});
  std::vector<msg::Message> out;
  ASSERT_TRUE(a.Start(kStartMs, &out).ok());
  msg::Hello future;
  future.protocol_version = kSyncProtocolVersion + 1;
  const SyncStoreInfo info = static_cast<const SyncStore&>(*nodes_[2].replica).Info();
  future.tree_fanout_bits = info.tree_fanout_bits;
  future.tree_depth = info.tree_depth;
  Status s = a.Receive(msg::Message{1, future}, kStartMs, &out);
  EXPECT_TRUE(s.IsRefused());
  EXPECT_NE(s.message().find("protocol version"), std::string::npos) << s.message();
}

// A peer of protocol version 1 predates per-record TTL: it would keep a
// TTL'd record forever, so it is refused with an error that says so.
TEST_F(SyncTest, APeerBeforeTtlIsRefusedWithTheReason) {
  Add(1);
  Add(2);
  SyncSession a(nodes_[1].replica.get(), 2, {});
  std::vector<msg::Message> out;
  ASSERT_TRUE(a.Start(kStartMs, &out).ok());
  msg::Hello old;
  old.protocol_version = 1;
  const SyncStoreInfo info = static_cast<const SyncStore&>(*nodes_[2].replica).Info();
  old.tree_fanout_bits = info.tree_fanout_bits;
  old.tree_depth = info.tree_depth;
  old.incarnation = 7;
  Status s = a.Receive(msg::Message{1, old}, kStartMs, &out);
  EXPECT_TRUE(s.IsRefused());
  EXPECT_EQ(s.message(),
            "peer speaks protocol version 1, this node 2 (the peer predates per-record TTL and "
            "would keep expiring records forever: upgrade it)");
}

}  // namespace
}  // namespace tidemap
