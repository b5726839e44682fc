// Proves the oplog: the packed row codec (round trip, every flipped byte and
// every impossible count detected, messages naming the row's seq range), rows
// cut every 256 entries and at about 64 KiB, reads after a cursor that start
// mid-row and cross row boundaries, monotonic peer cursors, peer states tagged
// with the peer's database incarnation and replaced whole, pruning up to the
// slowest peer in whole rows (a row straddling the prune point stays, and the
// pruned watermark is a row boundary), the retention cap for a peer that
// stays away, and a corrupt stored row reported by the reads that reach it.
// Rows are checked by rendering the LevelDB rows' seq ranges ("1..256 257..300").
#include <gtest/gtest.h>
#include <leveldb/env.h>
#include <leveldb/helpers/memenv.h>

#include <algorithm>
#include <vector>

#include <tidemap/base/coding.h>
#include <tidemap/base/hash.h>
#include <tidemap/oplog/oplog.h>
#include <tidemap/storage/rows_internal.h>

namespace tidemap {
namespace {

OplogEntry Entry(uint64_t seq) {
  return OplogEntry{seq,
                    "m",
                    "k" + std::to_string(seq),
                    Version{Timestamp::FromParts(1000 + seq, 0), 7},
                    seq % 5 == 0,
                    seq % 3 == 0 ? uint64_t{0xb2} : 0};
}

std::vector<OplogEntry> Entries(uint64_t from, uint64_t to) {
  std::vector<OplogEntry> out;
  for (uint64_t n = 0; n <= to - from; ++n) out.push_back(Entry(from + n));  // `to` may be the max
  return out;
}

// "4..7 9" for the seqs of `entries` (runs of consecutive seqs).
std::string Seqs(const std::vector<OplogEntry>& entries) {
  std::string out;
  for (size_t i = 0; i < entries.size();) {
    size_t j = i;
    while (j + 1 < entries.size() && entries[j + 1].seq == entries[j].seq + 1) ++j;
    if (!out.empty()) out += ' ';
    out += std::to_string(entries[i].seq);
    if (j > i) out += ".." + std::to_string(entries[j].seq);
    i = j + 1;
  }
  return out;
}

// A row value with a valid checksum around `body`, as EncodeRow seals it.
std::string Seal(uint64_t last_seq, std::string body) {
  PutFixed32BE(&body, static_cast<uint32_t>(Hash64(body, last_seq)));
  return body;
}

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

  // Seqs from..to, committed `per_commit` at a time (one AppendRows call each).
  void Append(uint64_t from, uint64_t to, uint64_t per_commit) {
    for (uint64_t begin = from; begin <= to; begin += per_commit) {
      Batch b;
      Oplog::AppendRows(Entries(begin, std::min(to, begin + per_commit - 1)), &b);
      ASSERT_TRUE(store_->Write(&b, false).ok());
    }
  }

  // "1..256 257..300": the seq range of every stored LevelDB oplog row.
  std::string RowRanges() {
    std::string out;
    auto it = store_->NewIterator();
    for (it->Seek(std::string(1, rows::kOplogPrefix));
         it->Valid() && it->key()[0] == rows::kOplogPrefix; it->Next()) {
      EXPECT_EQ(it->key().size(), 9u);
      const uint64_t last_seq = DecodeFixed64BE(it->key().data() + 1);
      auto entries = Oplog::DecodeRow(last_seq, it->value());
      EXPECT_TRUE(entries.ok()) << entries.status().ToString();
      if (!entries.ok()) return "corrupt";
      EXPECT_EQ(entries->back().seq, last_seq);
      if (!out.empty()) out += ' ';
      out += std::to_string(entries->front().seq) + ".." + std::to_string(last_seq);
    }
    EXPECT_TRUE(it->status().ok());
    return out;
  }

  std::string ReadSeqs(uint64_t after, size_t max) {
    auto r = oplog_->ReadAfter(after, max);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? Seqs(*r) : r.status().ToString();
  }

  std::unique_ptr<leveldb::Env> env_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Oplog> oplog_;
};

TEST_F(OplogTest, RowRoundTripAndCorruption) {
  std::vector<OplogEntry> es = Entries(40, 42);
  es[1].map = std::string("m\0ap", 4);
  es[1].via = 0xfeed;
  es[2].tombstone = true;
  const std::string row = Oplog::EncodeRow(es);
  auto back = Oplog::DecodeRow(42, row);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, es);
  EXPECT_TRUE(Oplog::DecodeRow(43, row).status().IsCorruption());  // the last seq is bound in
  for (size_t i = 0; i < row.size(); ++i) {
    std::string bad = row;
    bad[i] ^= 0x20;
    const Status s = Oplog::DecodeRow(42, bad).status();
    EXPECT_TRUE(s.IsCorruption()) << "byte " << i;
    // Byte 0 is the count: flipped, it claims another range.
    if (i > 0) {
      EXPECT_NE(s.message().find("oplog row 40..42"), std::string::npos) << s.message();
    }
  }
  EXPECT_TRUE(Oplog::DecodeRow(42, row.substr(0, 3)).status().IsCorruption());
  EXPECT_TRUE(Oplog::DecodeRow(42, row.substr(0, row.size() - 1)).status().IsCorruption());

  const OplogEntry one = Entry(7);
  auto single = Oplog::DecodeRow(7, Oplog::EncodeRow({&one, 1}));
  ASSERT_TRUE(single.ok());
  EXPECT_EQ(*single, std::vector<OplogEntry>{one});
}

// Rows whose checksum is right but whose count cannot be: none, more than the
// seqs below the key, more than a row may hold, or bytes left over.
// A commit appends views of its entries (OplogEntryRef); the rows must be
// byte for byte those of the owning entries, and decode back to them.
TEST_F(OplogTest, EntryViewsEncodeLikeEntries) {
  const std::vector<OplogEntry> es = Entries(40, 339);  // more than one row
  std::vector<OplogEntryRef> refs;
  for (const OplogEntry& e : es) {
    refs.push_back(OplogEntryRef{e.seq, e.map, e.key, e.version, e.tombstone, e.via});
  }
  EXPECT_EQ(Oplog::EncodeRow(std::span(refs).first(7)), Oplog::EncodeRow(std::span(es).first(7)));
  Batch from_refs, from_entries;
  Oplog::AppendRows(refs, &from_refs);
  Oplog::AppendRows(es, &from_entries);
  ASSERT_TRUE(store_->Write(&from_refs, false).ok());
  EXPECT_EQ(from_refs.ApproximateBytes(), from_entries.ApproximateBytes());
  auto read = oplog_->ReadAfter(39, 1000);
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_EQ(*read, es);
}

TEST_F(OplogTest, ImpossibleCountsAreCorruption) {
  auto message = [](uint64_t last_seq, const std::string& row) {
    const Status s = Oplog::DecodeRow(last_seq, row).status();
    EXPECT_TRUE(s.IsCorruption());
    return s.message();
  };
  EXPECT_EQ(message(9, Seal(9, std::string(1, '\0'))),
            "oplog row ending at seq 9: impossible entry count");
  std::string two = Oplog::EncodeRow(Entries(1, 2));
  two.resize(two.size() - 4);
  two[0] = 3;  // three entries would start at seq 0
  EXPECT_EQ(message(2, Seal(2, two)), "oplog row ending at seq 2: impossible entry count");
  std::string over;
  PutVarint64(&over, Oplog::kRowEntriesMax + 1);
  EXPECT_EQ(message(1000, Seal(1000, over)),
            "oplog row ending at seq 1000: impossible entry count");
  std::string trailing = Oplog::EncodeRow(Entries(5, 6));
  trailing.resize(trailing.size() - 4);
  trailing.push_back('x');
  EXPECT_EQ(message(6, Seal(6, trailing)), "oplog row 5..6: bytes after the last entry");
  std::string short_by_one = Oplog::EncodeRow(Entries(5, 6));
  short_by_one.resize(short_by_one.size() - 4);
  short_by_one[0] = 3;  // claims 4..6 but holds two entries
  EXPECT_EQ(message(6, Seal(6, short_by_one)), "oplog row 4..6: seq 6 malformed");
}

TEST_F(OplogTest, SeqsAtTheTopOfTheRange) {
  Batch b;
  Oplog::AppendRows(Entries(UINT64_MAX - 2, UINT64_MAX), &b);
  ASSERT_TRUE(store_->Write(&b, false).ok());
  EXPECT_EQ(RowRanges(), "18446744073709551613..18446744073709551615");
  EXPECT_EQ(ReadSeqs(UINT64_MAX - 2, 10), "18446744073709551614..18446744073709551615");
  EXPECT_EQ(ReadSeqs(UINT64_MAX, 10), "");
  EXPECT_EQ(*oplog_->FirstSeq(), UINT64_MAX - 2);
}

TEST_F(OplogTest, RowsAreCutEvery256Entries) {
  Append(1, 600, 600);
  EXPECT_EQ(RowRanges(), "1..256 257..512 513..600");
  Append(601, 856, 256);
  Append(857, 857, 1);
  EXPECT_EQ(RowRanges(), "1..256 257..512 513..600 601..856 857..857");
}

TEST_F(OplogTest, RowsAreCutAtAbout64KiB) {
  std::vector<OplogEntry> es = Entries(1, 20);
  for (OplogEntry& e : es) e.key.assign(10 << 10, 'k');  // 10,269 bytes an entry
  Batch b;
  Oplog::AppendRows(es, &b);
  ASSERT_TRUE(store_->Write(&b, false).ok());
  // Six entries are 61,614 bytes; the seventh takes the row past 64 KiB.
  EXPECT_EQ(RowRanges(), "1..7 8..14 15..20");
  auto back = oplog_->ReadAfter(0, 100);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, es);
}

TEST_F(OplogTest, ReadAfterStartsMidRowAndCrossesRows) {
  Append(1, 10, 10);
  Append(11, 310, 300);
  Append(311, 315, 5);
  ASSERT_EQ(RowRanges(), "1..10 11..266 267..310 311..315");
  EXPECT_EQ(ReadSeqs(3, 4), "4..7");
  EXPECT_EQ(ReadSeqs(8, 5), "9..13");
  EXPECT_EQ(ReadSeqs(260, 10), "261..270");
  EXPECT_EQ(ReadSeqs(265, 2), "266..267");
  EXPECT_EQ(ReadSeqs(266, 1), "267");
  EXPECT_EQ(ReadSeqs(309, 100), "310..315");
  EXPECT_EQ(ReadSeqs(0, 1000), "1..315");
  EXPECT_EQ(ReadSeqs(315, 5), "");
  EXPECT_EQ(ReadSeqs(5, 0), "");
  auto across = oplog_->ReadAfter(8, 5);
  ASSERT_TRUE(across.ok());
  EXPECT_EQ(*across, Entries(9, 13));  // the entries themselves, not only their seqs
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
  Append(1, 100, 1);
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

// Rows go whole: the one holding the prune point stays, entries below the
// point included, and pruned_through is the last seq of the last row deleted,
// so every seq at or below it really is gone.
TEST_F(OplogTest, PruneKeepsTheRowThatStraddlesThePrunePoint) {
  Append(1, 100, 10);
  ASSERT_TRUE(oplog_->SetPeerAck(1, 60).ok());
  ASSERT_TRUE(oplog_->SetPeerAck(2, 35).ok());
  auto stats = oplog_->Prune(100, OplogRetention{});
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->rows_pruned, 30u);  // entries, in three rows
  EXPECT_EQ(stats->pruned_through, 30u);
  EXPECT_EQ(*oplog_->PrunedThrough(), 30u);
  EXPECT_EQ(*oplog_->FirstSeq(), 31u);
  EXPECT_EQ(RowRanges(), "31..40 41..50 51..60 61..70 71..80 81..90 91..100");
  EXPECT_EQ(ReadSeqs(0, 3), "31..33");
  EXPECT_EQ(ReadSeqs(34, 2), "35..36");  // below the prune point, still served

  ASSERT_TRUE(oplog_->SetPeerAck(2, 59).ok());
  stats = oplog_->Prune(100, OplogRetention{});
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->rows_pruned, 20u);
  EXPECT_EQ(stats->pruned_through, 50u);
  EXPECT_EQ(RowRanges(), "51..60 61..70 71..80 81..90 91..100");

  ASSERT_TRUE(oplog_->SetPeerAck(1, 100).ok());
  ASSERT_TRUE(oplog_->SetPeerAck(2, 100).ok());
  stats = oplog_->Prune(100, OplogRetention{});
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->rows_pruned, 50u);
  EXPECT_EQ(stats->pruned_through, 100u);
  EXPECT_EQ(RowRanges(), "");
  EXPECT_EQ(*oplog_->FirstSeq(), 0u);
  EXPECT_EQ(ReadSeqs(0, 10), "");
}

TEST_F(OplogTest, RetentionCapPrunesPastAnAbsentPeer) {
  Append(1, 100, 1);
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

// The cap counts entries, not rows, and rounds down to a row boundary: a
// 25-entry cap over rows of ten keeps 30 entries.
TEST_F(OplogTest, RetentionCapCountsEntriesAndKeepsWholeRows) {
  Append(1, 100, 10);
  ASSERT_TRUE(oplog_->AddPeer(1).ok());
  OplogRetention cap;
  cap.rows_max = 25;
  auto stats = oplog_->Prune(100, cap);
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->rows_pruned, 70u);
  EXPECT_EQ(stats->pruned_through, 70u);
  EXPECT_EQ(RowRanges(), "71..80 81..90 91..100");
}

// A flipped byte in a stored packed row: every read that reaches the row
// reports it, naming its seq range; reads past it are unaffected.
TEST_F(OplogTest, CorruptStoredRowIsReportedWithItsRange) {
  Append(1, 30, 10);
  std::string bytes = *store_->Get(Oplog::RowKey(20));
  bytes[bytes.size() / 2] ^= 0x01;
  Batch b;
  b.Put(Oplog::RowKey(20), bytes);
  ASSERT_TRUE(store_->Write(&b, false).ok());
  for (uint64_t after : {uint64_t{0}, uint64_t{12}, uint64_t{19}}) {
    const Status s = oplog_->ReadAfter(after, 100).status();
    EXPECT_TRUE(s.IsCorruption()) << after;
    EXPECT_EQ(s.message(), "oplog row 11..20: checksum mismatch");
  }
  EXPECT_EQ(ReadSeqs(0, 10), "1..10");  // stops before the corrupt row
  EXPECT_EQ(ReadSeqs(20, 100), "21..30");
  EXPECT_EQ(*oplog_->FirstSeq(), 1u);
}

}  // namespace
}  // namespace tidemap
