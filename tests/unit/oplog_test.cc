// Proves the oplog: row codec round trip and corruption detection, reads
// after a cursor, monotonic peer cursors, peer states tagged with the peer's
// database incarnation and replaced whole, pruning up to the slowest peer, the
// retention cap for a peer that stays away, and the pruned watermark.
#include <gtest/gtest.h>
#include <leveldb/env.h>
#include <leveldb/helpers/memenv.h>

#include "oplog/oplog.h"
#include "storage/rows.h"

namespace tidemap {
namespace {

class OplogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    env_.reset(leveldb::NewMemEnv(leveldb::Env::Default()));
    StoreOptions so;
    so.path = "/db";
    so.env = env_.get();
    auto s = Store::Open(so);
    ASSERT_TRUE(s.ok());
    store_ = std::move(s).value();
    oplog_ = std::make_unique<Oplog>(store_.get());
  }

  void Append(uint64_t from, uint64_t to) {
    Batch b;
    for (uint64_t seq = from; seq <= to; ++seq) {
      OplogEntry e{seq, "m", "k" + std::to_string(seq),
                   Version{Timestamp::FromParts(1000 + seq, 0), 7}, seq % 5 == 0};
      b.Put(Oplog::RowKey(seq), Oplog::EncodeRow(e));
    }
    ASSERT_TRUE(store_->Write(&b, false).ok());
  }

  std::unique_ptr<leveldb::Env> env_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Oplog> oplog_;
};

TEST_F(OplogTest, RowRoundTripAndCorruption) {
  OplogEntry e{42,    std::string("m\0ap", 4), "key", Version{Timestamp::FromParts(5, 6), 9}, true,
               0xfeed};
  const std::string row = Oplog::EncodeRow(e);
  auto back = Oplog::DecodeRow(42, row);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, e);
  EXPECT_TRUE(Oplog::DecodeRow(43, row).status().IsCorruption());  // seq is bound in
  for (size_t i = 0; i < row.size(); ++i) {
    std::string bad = row;
    bad[i] ^= 0x20;
    EXPECT_TRUE(Oplog::DecodeRow(42, bad).status().IsCorruption()) << "byte " << i;
  }
  EXPECT_TRUE(Oplog::DecodeRow(42, row.substr(0, 3)).status().IsCorruption());
}

TEST_F(OplogTest, ReadAfterCursor) {
  Append(1, 10);
  auto rows = oplog_->ReadAfter(3, 4);
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 4u);
  EXPECT_EQ(rows->front().seq, 4u);
  EXPECT_EQ(rows->back().seq, 7u);
  EXPECT_TRUE(oplog_->ReadAfter(10, 4)->empty());
  EXPECT_EQ(*oplog_->FirstSeq(), 1u);
}

TEST_F(OplogTest, PeerCursorsOnlyMoveForward) {
  EXPECT_TRUE(oplog_->PeerAck(5).status().IsNotFound());
  ASSERT_TRUE(oplog_->AddPeer(5).ok());
  EXPECT_EQ(*oplog_->PeerAck(5), 0u);
  ASSERT_TRUE(oplog_->SetPeerAck(5, 9).ok());
  ASSERT_TRUE(oplog_->SetPeerAck(5, 4).ok());  // stale ack: ignored
  EXPECT_EQ(*oplog_->PeerAck(5), 9u);
  ASSERT_TRUE(oplog_->AddPeer(5).ok());  // re-adding keeps the cursor
  EXPECT_EQ(*oplog_->PeerAck(5), 9u);
  ASSERT_TRUE(oplog_->RemovePeer(5).ok());
  EXPECT_TRUE(oplog_->PeerAcks()->empty());
}

// A peer's state also says which database of it the numbers are about;
// SetPeer replaces it all, the cursor moving back if need be (a repair of a
// peer whose database changed), while SetPeerAck and SetPeerReceived only
// move forward and keep the other fields.
TEST_F(OplogTest, PeerStateIsTaggedAndReplacedWhole) {
  EXPECT_TRUE(oplog_->Peer(7).status().IsNotFound());
  EXPECT_TRUE(oplog_->SetPeerReceived(7, 3).IsNotFound());
  ASSERT_TRUE(oplog_->SetPeer(7, PeerState{40, 0xabc, 12}).ok());
  ASSERT_TRUE(oplog_->SetPeerAck(7, 45).ok());
  ASSERT_TRUE(oplog_->SetPeerReceived(7, 10).ok());  // lower: ignored
  ASSERT_TRUE(oplog_->SetPeerReceived(7, 15).ok());
  EXPECT_EQ(*oplog_->Peer(7), (PeerState{45, 0xabc, 15}));
  ASSERT_TRUE(oplog_->SetPeer(7, PeerState{5, 0xdef, 2}).ok());  // another database
  EXPECT_EQ(*oplog_->Peer(7), (PeerState{5, 0xdef, 2}));
  EXPECT_EQ(*oplog_->PeerAck(7), 5u);
  EXPECT_EQ(oplog_->PeerAcks()->at(7), 5u);
}

TEST_F(OplogTest, PruneUpToSlowestPeer) {
  Append(1, 100);
  // No known peer: nothing is pruned below the cap.
  auto none = oplog_->Prune(100, OplogRetention{});
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->rows_pruned, 0u);

  ASSERT_TRUE(oplog_->SetPeerAck(1, 60).ok());
  ASSERT_TRUE(oplog_->SetPeerAck(2, 30).ok());
  auto stats = oplog_->Prune(100, OplogRetention{});
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->rows_pruned, 30u);
  EXPECT_EQ(stats->pruned_through, 30u);
  EXPECT_EQ(*oplog_->FirstSeq(), 31u);
  EXPECT_EQ(*oplog_->PrunedThrough(), 30u);
  EXPECT_EQ(oplog_->ReadAfter(0, 1)->front().seq, 31u);
}

TEST_F(OplogTest, RetentionCapPrunesPastAnAbsentPeer) {
  Append(1, 100);
  ASSERT_TRUE(oplog_->AddPeer(1).ok());  // never acknowledges anything
  OplogRetention cap;
  cap.rows_max = 25;
  auto stats = oplog_->Prune(100, cap);
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->pruned_through, 75u);
  EXPECT_EQ(*oplog_->FirstSeq(), 76u);
  // The peer's cursor (0) is now below the pruned point: the sync layer must
  // repair it by tree diff rather than stream from a gap.
  EXPECT_LT(*oplog_->PeerAck(1), *oplog_->PrunedThrough());
}

}  // namespace
}  // namespace tidemap
