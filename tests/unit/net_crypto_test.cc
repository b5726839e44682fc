// Proves net/'s crypto half without sockets: the crypto wrappers agree with
// each other, the trust file parses (comments, CRLF, the line of a bad key), two
// Handshakes wired back to back authenticate each other whatever the byte
// split, refuse strangers, themselves, other versions, replays and tampering
// with the reason reaching the peer, and the SecureChannel they hand over
// detects every flipped bit, reordered, replayed, dropped and truncated frame
// and refuses oversized length prefixes before buffering them. Handshakes
// are moved through in-memory byte queues (a Party's inbox).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tests/support/test_util.h"
#include <tidemap/base/crypto.h>
#include <tidemap/net/frame.h>
#include <tidemap/net/frame_internal.h>
#include <tidemap/net/handshake.h>
#include <tidemap/net/handshake_internal.h>
#include <tidemap/net/trust.h>

namespace tidemap::net {
namespace {

namespace fs = std::filesystem;
using internal::HandshakeTestAccess;
using internal::HandshakeType;
using Role = Handshake::Role;

bool SameKey(const crypto::SymmetricKey& a, const crypto::SymmetricKey& b) {
  return std::memcmp(a.data(), b.data(), a.size()) == 0;
}

// ---- base/crypto wrappers ----

TEST(CryptoTest, KeyExchangeAgreesAndRejectsLowOrderKeys) {
  const crypto::KxKeyPair client = crypto::KxKeyPair::Generate();
  const crypto::KxKeyPair server = crypto::KxKeyPair::Generate();
  crypto::SymmetricKey crx, ctx, srx, stx;
  ASSERT_TRUE(client.ClientSessionKeys(server.public_key(), &crx, &ctx).ok());
  ASSERT_TRUE(server.ServerSessionKeys(client.public_key(), &srx, &stx).ok());
  EXPECT_TRUE(SameKey(ctx, srx));
  EXPECT_TRUE(SameKey(crx, stx));
  EXPECT_FALSE(SameKey(crx, ctx));

  const crypto::KxPublicKey zero{};  // a low-order point: the shared secret would be zero
  crypto::SymmetricKey rx, tx;
  EXPECT_TRUE(client.ClientSessionKeys(zero, &rx, &tx).IsCorruption());
  EXPECT_TRUE(server.ServerSessionKeys(zero, &rx, &tx).IsCorruption());
}

TEST(CryptoTest, SeededKeysAreReproducibleAndHashesSeparateInputs) {
  const auto seed = crypto::SymmetricKey::FromBytesForTesting("seed");
  EXPECT_EQ(crypto::KxKeyPair::FromSeedForTesting(seed).public_key(),
            crypto::KxKeyPair::FromSeedForTesting(seed).public_key());
  EXPECT_NE(crypto::KxKeyPair::Generate().public_key(), crypto::KxKeyPair::Generate().public_key());

  EXPECT_EQ(crypto::GenericHash({"ab", "c"}), crypto::GenericHash({"a", "bc"}));  // concatenation
  EXPECT_NE(crypto::GenericHash({"abc"}), crypto::GenericHash({"abd"}));
  const auto key = crypto::SymmetricKey::FromBytesForTesting("k");
  EXPECT_TRUE(SameKey(crypto::DeriveKey(key, {"x"}), crypto::DeriveKey(key, {"x"})));
  EXPECT_FALSE(SameKey(crypto::DeriveKey(key, {"x"}), crypto::DeriveKey(key, {"y"})));
  EXPECT_FALSE(SameKey(crypto::DeriveKey(key, {"x"}),
                       crypto::DeriveKey(crypto::SymmetricKey::FromBytesForTesting("j"), {"x"})));
}

TEST(CryptoTest, SecretStreamRoundTripsTagsAndRefusesTheWrongAd) {
  const auto key = crypto::SymmetricKey::FromBytesForTesting("stream key");
  std::string header;
  crypto::SecretStreamPush push(key, &header);
  ASSERT_EQ(header.size(), crypto::kStreamHeaderBytes);
  std::string c1, c2, c3;
  push.Push("hello", "ad", crypto::StreamTag::kMessage, &c1);
  push.Push("", "", crypto::StreamTag::kFinal, &c2);
  EXPECT_EQ(c1.size(), 5 + crypto::kStreamOverheadBytes);
  EXPECT_EQ(c2.size(), crypto::kStreamOverheadBytes);

  Result<crypto::SecretStreamPull> pull = crypto::SecretStreamPull::Start(key, header);
  ASSERT_TRUE(pull.ok());
  std::string plain;
  crypto::StreamTag tag{};
  ASSERT_TRUE(pull->Pull(c1, "ad", &plain, &tag).ok());
  EXPECT_EQ(plain, "hello");
  EXPECT_EQ(tag, crypto::StreamTag::kMessage);
  ASSERT_TRUE(pull->Pull(c2, "", &plain, &tag).ok());
  EXPECT_EQ(plain, "");
  EXPECT_EQ(tag, crypto::StreamTag::kFinal);

  Result<crypto::SecretStreamPull> other = crypto::SecretStreamPull::Start(key, header);
  ASSERT_TRUE(other.ok());
  EXPECT_TRUE(other->Pull(c1, "da", &plain, &tag).IsCorruption());
  EXPECT_TRUE(crypto::SecretStreamPull::Start(key, "short").status().IsInvalidArgument());
}

// ---- Trust file ----

std::string KeyText(uint8_t fill) {
  crypto::PublicKey key;
  key.fill(fill);
  return crypto::PublicKeyToText(key);
}

crypto::PublicKey FilledKey(uint8_t fill) {
  crypto::PublicKey key;
  key.fill(fill);
  return key;
}

class TrustFileTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = testing::MakeTempDir("tidemap-trust-test"); }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Write(const std::string& contents) {
    const std::string path = dir_ + "/trust.txt";
    std::ofstream(path, std::ios::binary) << contents;
    return path;
  }
  std::string dir_;
};

TEST_F(TrustFileTest, ParsesKeysCommentsBlankLinesAndCrlf) {
  std::string upper = KeyText(0xab);
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  const std::string path = Write("# the cluster\r\n" + KeyText(0x01) + "\r\n\r\n   \t\n  " +
                                 KeyText(0x02) + "  # node b\n" + upper + "\n" + KeyText(0x01) +
                                 "\n#" + KeyText(0x03) + "\n" + KeyText(0x04));  // no final LF
  Result<TrustList> trust = LoadTrustFile(path);
  ASSERT_TRUE(trust.ok()) << trust.status().ToString();
  EXPECT_EQ(trust->size(), 4u);
  EXPECT_TRUE(trust->Contains(FilledKey(0x01)));
  EXPECT_TRUE(trust->Contains(FilledKey(0x02)));
  EXPECT_TRUE(trust->Contains(FilledKey(0xab)));
  EXPECT_TRUE(trust->Contains(FilledKey(0x04)));
  EXPECT_FALSE(trust->Contains(FilledKey(0x03)));  // commented out

  Result<TrustList> empty = LoadTrustFile(Write("# nobody yet\n\n"));
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->size(), 0u);
}

TEST_F(TrustFileTest, BadKeyNamesFileAndLine) {
  const std::string path = Write("# header\r\n" + KeyText(0x01) + "\r\n3f2a\r\n");
  Result<TrustList> trust = LoadTrustFile(path);
  ASSERT_FALSE(trust.ok());
  EXPECT_TRUE(trust.status().IsInvalidArgument());
  EXPECT_EQ(trust.status().message(),
            "trust file " + path + " line 3: not a public key (expected 64 hex digits): \"3f2a\"");

  // 64 characters, one of them not hex.
  std::string almost = KeyText(0x05);
  almost[10] = 'g';
  Result<TrustList> bad_hex = LoadTrustFile(Write("\n\n\n\n" + almost + "\n"));
  ASSERT_FALSE(bad_hex.ok());
  EXPECT_NE(bad_hex.status().message().find(" line 5: not a public key"), std::string::npos)
      << bad_hex.status().message();
}

TEST_F(TrustFileTest, UnreadableFilesNameFileAndReason) {
  const std::string missing = dir_ + "/nope.txt";
  Result<TrustList> r = LoadTrustFile(missing);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsNotFound());
  EXPECT_EQ(r.status().message(), "trust file " + missing + ": No such file or directory");

  Result<TrustList> d = LoadTrustFile(dir_);
  ASSERT_FALSE(d.ok());
  EXPECT_TRUE(d.status().IsIOError());
  EXPECT_EQ(d.status().message(), "trust file " + dir_ + ": Is a directory");

  Result<TrustList> big = LoadTrustFile(Write(std::string(kTrustFileBytesMax + 1, '#')));
  ASSERT_FALSE(big.ok());
  EXPECT_TRUE(big.status().IsInvalidArgument());
  EXPECT_NE(big.status().message().find("larger than"), std::string::npos);
}

// ---- Handshake ----

struct Node {
  crypto::PublicKey public_key{};
  std::string secret_key;
};

Node MakeNode() {
  Node n;
  EXPECT_TRUE(crypto::GenerateSigningKeyPair(&n.public_key, &n.secret_key).ok());
  return n;
}

HandshakeConfig ConfigFor(const Node& node, const TrustList* trust) {
  HandshakeConfig c;
  c.secret_key = node.secret_key;
  c.public_key = node.public_key;
  c.trust = trust;
  return c;
}

// One side of a connection: its handshake, the bytes the peer sent that it has
// not consumed yet, and everything it sent.
struct Party {
  Party(Role role, HandshakeConfig config) : hs(role, std::move(config)) {}
  Handshake hs;
  Status status;
  std::string inbox;
  std::string sent;
  bool active() const { return status.ok() && !hs.done(); }
};

// Feeds `p` up to `chunk` bytes of its inbox; what it sends lands in the
// peer's inbox. Returns whether anything moved.
bool FeedOnce(Party* p, Party* peer, size_t chunk) {
  if (!p->active() || p->inbox.empty()) return false;
  std::string out;
  size_t consumed = 0;
  const std::string_view in = std::string_view(p->inbox).substr(0, chunk);
  p->status = p->hs.Feed(in, &out, &consumed);
  EXPECT_LE(consumed, in.size());
  // Input is only left over once the handshake is over.
  if (consumed < in.size()) {
    EXPECT_FALSE(p->active());
  }
  p->inbox.erase(0, consumed);
  peer->inbox += out;
  p->sent += out;
  return consumed > 0 || !out.empty();
}

// Starts both sides and moves bytes `chunk` at a time until nothing moves.
void RunHandshake(Party* initiator, Party* responder, size_t chunk) {
  std::string out;
  initiator->status = initiator->hs.Start(&out);
  responder->inbox += out;
  initiator->sent += out;
  out.clear();
  responder->status = responder->hs.Start(&out);
  EXPECT_TRUE(out.empty());
  for (bool moved = true; moved;) {
    moved = FeedOnce(responder, initiator, chunk);
    moved = FeedOnce(initiator, responder, chunk) || moved;
  }
}

std::vector<uint8_t> Types(std::string_view bytes) {
  std::string_view rest;
  std::vector<uint8_t> types;
  for (const auto& m : internal::SplitHandshakeMessages(bytes, &rest)) types.push_back(m.type);
  EXPECT_TRUE(rest.empty()) << rest.size() << " bytes after the last whole message";
  return types;
}

constexpr uint8_t T(HandshakeType t) { return static_cast<uint8_t>(t); }

class HandshakeTest : public ::testing::Test {
 protected:
  HandshakeTest() : a_(MakeNode()), b_(MakeNode()) {
    trust_.Add(a_.public_key);
    trust_.Add(b_.public_key);
  }
  Node a_, b_;
  TrustList trust_;
};

class HandshakeSplitTest : public HandshakeTest, public ::testing::WithParamInterface<size_t> {};

TEST_P(HandshakeSplitTest, BothSidesAuthenticateAndTalk) {
  Party i(Role::kInitiator, ConfigFor(a_, &trust_));
  Party r(Role::kResponder, ConfigFor(b_, &trust_));
  RunHandshake(&i, &r, GetParam());
  ASSERT_TRUE(i.status.ok()) << i.status.ToString();
  ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  ASSERT_TRUE(i.hs.done());
  ASSERT_TRUE(r.hs.done());
  EXPECT_EQ(i.hs.peer_public_key(), b_.public_key);
  EXPECT_EQ(r.hs.peer_public_key(), a_.public_key);
  EXPECT_EQ(i.hs.peer_node_id(), crypto::NodeIdOf(b_.public_key));
  EXPECT_EQ(r.hs.peer_node_id(), crypto::NodeIdOf(a_.public_key));
  EXPECT_EQ(Types(i.sent),
            (std::vector<uint8_t>{T(HandshakeType::kHello), T(HandshakeType::kInitiatorProof)}));
  EXPECT_EQ(Types(r.sent),
            (std::vector<uint8_t>{T(HandshakeType::kResponderProof), T(HandshakeType::kAccept)}));
  EXPECT_TRUE(i.inbox.empty());
  EXPECT_TRUE(r.inbox.empty());

  auto ic = i.hs.TakeChannel(1 << 16);
  auto rc = r.hs.TakeChannel(1 << 16);
  ASSERT_TRUE(ic.ok() && rc.ok());
  EXPECT_TRUE(i.hs.TakeChannel(1 << 16).status().IsInvalidArgument());  // only once
  std::string wire;
  ASSERT_TRUE((*ic)->Seal("ping", &wire).ok());
  ASSERT_TRUE((*rc)->Feed(wire).ok());
  auto got = (*rc)->Next();
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ(**got, "ping");
  wire.clear();
  ASSERT_TRUE((*rc)->Seal("pong", &wire).ok());
  ASSERT_TRUE((*ic)->Feed(wire).ok());
  got = (*ic)->Next();
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ(**got, "pong");
}

INSTANTIATE_TEST_SUITE_P(Splits, HandshakeSplitTest, ::testing::Values(1, 2, 7, 4096));

// The responder may send frames right behind its accept, in the same write:
// the initiator's Feed stops at the end of the accept and the channel opens them.
TEST_F(HandshakeTest, BytesAfterTheHandshakeAreLeftForTheChannel) {
  Handshake i(Role::kInitiator, ConfigFor(a_, &trust_));
  Handshake r(Role::kResponder, ConfigFor(b_, &trust_));
  std::string to_r, to_i, unused;
  size_t consumed = 0;
  ASSERT_TRUE(i.Start(&to_r).ok());
  ASSERT_TRUE(r.Start(&unused).ok());
  ASSERT_TRUE(r.Feed(to_r, &to_i, &consumed).ok());
  to_r.clear();
  ASSERT_TRUE(i.Feed(to_i, &to_r, &consumed).ok());
  to_i.clear();
  ASSERT_TRUE(r.Feed(to_r, &to_i, &consumed).ok());
  ASSERT_TRUE(r.done());
  const size_t accept_bytes = to_i.size();
  auto rc = r.TakeChannel(1024);
  ASSERT_TRUE(rc.ok());
  ASSERT_TRUE((*rc)->Seal("first", &to_i).ok());
  ASSERT_TRUE((*rc)->Seal("second", &to_i).ok());

  std::string out;
  ASSERT_TRUE(i.Feed(to_i, &out, &consumed).ok());
  ASSERT_TRUE(i.done());
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(consumed, accept_bytes);
  // Done: later calls consume nothing.
  size_t again = 99;
  ASSERT_TRUE(i.Feed(std::string_view(to_i).substr(consumed), &out, &again).ok());
  EXPECT_EQ(again, 0u);

  auto ic = i.TakeChannel(1024);
  ASSERT_TRUE(ic.ok());
  ASSERT_TRUE((*ic)->Feed(std::string_view(to_i).substr(consumed)).ok());
  auto m1 = (*ic)->Next();
  auto m2 = (*ic)->Next();
  ASSERT_TRUE(m1.ok() && m1->has_value() && m2.ok() && m2->has_value());
  EXPECT_EQ(**m1, "first");
  EXPECT_EQ(**m2, "second");
}

TEST_F(HandshakeTest, UntrustedInitiatorIsRefusedAndTold) {
  TrustList only_b;
  only_b.Add(b_.public_key);
  Party i(Role::kInitiator, ConfigFor(a_, &trust_));
  Party r(Role::kResponder, ConfigFor(b_, &only_b));
  RunHandshake(&i, &r, 1);
  const std::string a_text = crypto::PublicKeyToText(a_.public_key);
  EXPECT_TRUE(r.status.IsRefused());
  EXPECT_EQ(r.status.message(), "untrusted peer " + a_text);
  EXPECT_TRUE(i.status.IsRefused());
  EXPECT_EQ(i.status.message(), "refused by peer: untrusted key " + a_text);
  EXPECT_FALSE(i.hs.done());
  EXPECT_FALSE(r.hs.done());
  // What the node counts the refusals by.
  EXPECT_EQ(r.hs.refusal(), RefusalReason::kUntrusted);
  EXPECT_FALSE(r.hs.refused_by_peer());
  EXPECT_TRUE(r.hs.first_message_received());
  EXPECT_EQ(i.hs.refusal(), std::nullopt);
  EXPECT_TRUE(i.hs.refused_by_peer());
  // All the stranger got is one refusal: no proof, no frames.
  EXPECT_EQ(Types(r.sent), std::vector<uint8_t>{T(HandshakeType::kRefuse)});
  EXPECT_TRUE(i.inbox.empty());
  EXPECT_EQ(Types(i.sent), std::vector<uint8_t>{T(HandshakeType::kHello)});
  EXPECT_TRUE(r.hs.TakeChannel(1024).status().IsInvalidArgument());
  EXPECT_TRUE(i.hs.TakeChannel(1024).status().IsInvalidArgument());

  // Failed for good: later Feeds return the same error.
  std::string out;
  size_t consumed = 0;
  EXPECT_EQ(r.hs.Feed("more", &out, &consumed).message(), r.status.message());
  EXPECT_TRUE(out.empty());
}

TEST_F(HandshakeTest, UntrustedResponderIsRefusedByTheInitiator) {
  TrustList only_a;
  only_a.Add(a_.public_key);
  Party i(Role::kInitiator, ConfigFor(a_, &only_a));
  Party r(Role::kResponder, ConfigFor(b_, &trust_));
  RunHandshake(&i, &r, 1);
  const std::string b_text = crypto::PublicKeyToText(b_.public_key);
  EXPECT_TRUE(i.status.IsRefused());
  EXPECT_EQ(i.status.message(), "untrusted peer " + b_text);
  EXPECT_TRUE(r.status.IsRefused());
  EXPECT_EQ(r.status.message(), "refused by peer: untrusted key " + b_text);
  // The initiator never proved itself to the untrusted responder.
  EXPECT_EQ(Types(i.sent),
            (std::vector<uint8_t>{T(HandshakeType::kHello), T(HandshakeType::kRefuse)}));
  EXPECT_FALSE(i.hs.done());
  EXPECT_FALSE(r.hs.done());
}

TEST_F(HandshakeTest, ConnectingToItselfIsRefused) {
  Party i(Role::kInitiator, ConfigFor(a_, &trust_));
  Party r(Role::kResponder, ConfigFor(a_, &trust_));
  RunHandshake(&i, &r, 3);
  EXPECT_TRUE(r.status.IsRefused());
  EXPECT_EQ(r.status.message(), "peer is this node");
  EXPECT_EQ(i.status.message(), "refused by peer: peer is this node");

  // The initiator checks too: a responder proof naming our own key.
  Handshake lone(Role::kInitiator, ConfigFor(a_, &trust_));
  std::string out;
  ASSERT_TRUE(lone.Start(&out).ok());
  std::string body;
  body.append("\0\0\0\1", 4);
  body.append(reinterpret_cast<const char*>(a_.public_key.data()), a_.public_key.size());
  body.append(32 + 64, '\x5a');
  out.clear();
  size_t consumed = 0;
  const Status s = lone.Feed(internal::EncodeHandshakeMessage(HandshakeType::kResponderProof, body),
                             &out, &consumed);
  EXPECT_EQ(s.message(), "peer is this node");
  EXPECT_EQ(Types(out), std::vector<uint8_t>{T(HandshakeType::kRefuse)});
}

TEST_F(HandshakeTest, VersionMismatchIsAClearError) {
  Party i(Role::kInitiator, ConfigFor(a_, &trust_));
  Party r(Role::kResponder, ConfigFor(b_, &trust_));
  HandshakeTestAccess::SetProtocolVersion(&i.hs, 7);
  RunHandshake(&i, &r, 1);
  EXPECT_TRUE(r.status.IsRefused());
  EXPECT_EQ(r.status.message(), "protocol version 7, we speak 1");
  EXPECT_TRUE(i.status.IsRefused());
  EXPECT_EQ(i.status.message(), "protocol version 1, we speak 7 (refused by peer)");
  EXPECT_EQ(Types(r.sent), std::vector<uint8_t>{T(HandshakeType::kRefuse)});

  // An initiator checks the responder's version as well.
  Party i2(Role::kInitiator, ConfigFor(a_, &trust_));
  Party r2(Role::kResponder, ConfigFor(b_, &trust_));
  HandshakeTestAccess::SetProtocolVersion(&i2.hs, 3);
  HandshakeTestAccess::SetProtocolVersion(&r2.hs, 3);
  std::string hello, proof, unused;
  size_t consumed = 0;
  ASSERT_TRUE(i2.hs.Start(&hello).ok());
  ASSERT_TRUE(r2.hs.Start(&unused).ok());
  ASSERT_TRUE(r2.hs.Feed(hello, &proof, &consumed).ok());
  Party i3(Role::kInitiator, ConfigFor(a_, &trust_));
  ASSERT_TRUE(i3.hs.Start(&unused).ok());
  unused.clear();
  const Status s = i3.hs.Feed(proof, &unused, &consumed);
  EXPECT_EQ(s.message(), "protocol version 3, we speak 1");
}

TEST_F(HandshakeTest, ReplayedInitiatorMessagesFailAgainstAFreshResponder) {
  Party i(Role::kInitiator, ConfigFor(a_, &trust_));
  Party r(Role::kResponder, ConfigFor(b_, &trust_));
  RunHandshake(&i, &r, 4096);
  ASSERT_TRUE(i.hs.done() && r.hs.done());
  auto old_ic = i.hs.TakeChannel(1024);
  ASSERT_TRUE(old_ic.ok());
  std::string old_frames;
  ASSERT_TRUE((*old_ic)->Seal("put x=1", &old_frames).ok());

  // An attacker replays the recorded initiator bytes, then its recorded frame.
  Party replay_r(Role::kResponder, ConfigFor(b_, &trust_));
  std::string unused;
  ASSERT_TRUE(replay_r.hs.Start(&unused).ok());
  replay_r.inbox = i.sent + old_frames;
  Party attacker(Role::kInitiator, ConfigFor(a_, &trust_));  // only collects the replies
  while (FeedOnce(&replay_r, &attacker, 1)) {
  }
  EXPECT_TRUE(replay_r.status.IsRefused());
  EXPECT_EQ(replay_r.status.message(),
            "bad signature from peer " + crypto::PublicKeyToText(a_.public_key));
  EXPECT_FALSE(replay_r.hs.done());
  EXPECT_EQ(Types(replay_r.sent),
            (std::vector<uint8_t>{T(HandshakeType::kResponderProof), T(HandshakeType::kRefuse)}));

  // The same against a fresh initiator: the recorded responder proof signs an old ephemeral.
  Party replay_i(Role::kInitiator, ConfigFor(a_, &trust_));
  std::string hello;
  ASSERT_TRUE(replay_i.hs.Start(&hello).ok());
  replay_i.inbox = r.sent;
  Party sink(Role::kResponder, ConfigFor(b_, &trust_));
  while (FeedOnce(&replay_i, &sink, 1)) {
  }
  EXPECT_EQ(replay_i.status.message(),
            "bad signature from peer " + crypto::PublicKeyToText(b_.public_key));
  EXPECT_FALSE(replay_i.hs.done());
}

TEST_F(HandshakeTest, TwoSessionsBetweenTheSamePairUseDifferentKeys) {
  std::vector<std::unique_ptr<SecureChannel>> initiators, responders;
  for (int n = 0; n < 2; ++n) {
    Party i(Role::kInitiator, ConfigFor(a_, &trust_));
    Party r(Role::kResponder, ConfigFor(b_, &trust_));
    RunHandshake(&i, &r, 4096);
    ASSERT_TRUE(i.hs.done() && r.hs.done());
    auto ic = i.hs.TakeChannel(1024);
    auto rc = r.hs.TakeChannel(1024);
    ASSERT_TRUE(ic.ok() && rc.ok());
    initiators.push_back(std::move(ic).value());
    responders.push_back(std::move(rc).value());
  }
  std::string f0, f1;
  ASSERT_TRUE(initiators[0]->Seal("same plaintext", &f0).ok());
  ASSERT_TRUE(initiators[1]->Seal("same plaintext", &f1).ok());
  ASSERT_EQ(f0.size(), f1.size());
  EXPECT_NE(f0, f1);
  // Each session's frame opens only in its own session.
  EXPECT_TRUE(responders[1]->Feed(f0).IsCorruption());
  ASSERT_TRUE(responders[0]->Feed(f0).ok());
  auto m = responders[0]->Next();
  ASSERT_TRUE(m.ok() && m->has_value());
  EXPECT_EQ(**m, "same plaintext");
}

// With both ephemerals seeded the exchange is reproducible, so a recorded
// message can be tampered with and fed to a fresh, identical peer.
struct Recording {
  std::string initiator_sent, responder_sent;
};
Recording RecordSeeded(const HandshakeConfig& ic, const HandshakeConfig& rc) {
  Party i(Role::kInitiator, ic);
  Party r(Role::kResponder, rc);
  HandshakeTestAccess::SetEphemeralSeed(&i.hs, crypto::SymmetricKey::FromBytesForTesting("i"));
  HandshakeTestAccess::SetEphemeralSeed(&r.hs, crypto::SymmetricKey::FromBytesForTesting("r"));
  RunHandshake(&i, &r, 4096);
  EXPECT_TRUE(i.hs.done() && r.hs.done());
  return {i.sent, r.sent};
}

TEST_F(HandshakeTest, EveryFlippedBitOfTheResponderProofFails) {
  const Recording rec = RecordSeeded(ConfigFor(a_, &trust_), ConfigFor(b_, &trust_));
  std::string_view rest;
  const auto r_msgs = internal::SplitHandshakeMessages(rec.responder_sent, &rest);
  ASSERT_EQ(r_msgs.size(), 2u);
  const std::string proof_r =
      internal::EncodeHandshakeMessage(HandshakeType::kResponderProof, r_msgs[0].body);
  const auto i_seed = crypto::SymmetricKey::FromBytesForTesting("i");
  {  // Untouched, the recording replays against the same seeded initiator.
    Handshake i(Role::kInitiator, ConfigFor(a_, &trust_));
    HandshakeTestAccess::SetEphemeralSeed(&i, i_seed);
    std::string out;
    size_t consumed = 0;
    ASSERT_TRUE(i.Start(&out).ok());
    ASSERT_TRUE(i.Feed(proof_r, &out, &consumed).ok());
    EXPECT_EQ(consumed, proof_r.size());
  }
  for (size_t bit = 0; bit < proof_r.size() * 8; ++bit) {
    std::string tampered = proof_r;
    tampered[bit / 8] = static_cast<char>(tampered[bit / 8] ^ (1 << (bit % 8)));
    Handshake i(Role::kInitiator, ConfigFor(a_, &trust_));
    HandshakeTestAccess::SetEphemeralSeed(&i, i_seed);
    std::string out;
    size_t consumed = 0;
    ASSERT_TRUE(i.Start(&out).ok());
    out.clear();
    const Status s = i.Feed(tampered, &out, &consumed);
    // Either refused outright, or (a longer length field) still waiting for bytes;
    // never a proof of our own sent back.
    EXPECT_FALSE(i.done()) << "bit " << bit;
    EXPECT_TRUE(!s.ok() || consumed == tampered.size()) << "bit " << bit;
    for (uint8_t t : Types(out)) EXPECT_EQ(t, T(HandshakeType::kRefuse)) << "bit " << bit;
  }
}

TEST_F(HandshakeTest, TamperedInitiatorSignatureFails) {
  const Recording rec = RecordSeeded(ConfigFor(a_, &trust_), ConfigFor(b_, &trust_));
  std::string_view rest;
  const auto i_msgs = internal::SplitHandshakeMessages(rec.initiator_sent, &rest);
  ASSERT_EQ(i_msgs.size(), 2u);
  const std::string hello = internal::EncodeHandshakeMessage(HandshakeType::kHello, i_msgs[0].body);
  for (size_t bit = 0; bit < crypto::kSignatureBytes * 8; bit += 7) {
    std::string body = i_msgs[1].body;
    body[bit / 8] = static_cast<char>(body[bit / 8] ^ (1 << (bit % 8)));
    Handshake r(Role::kResponder, ConfigFor(b_, &trust_));
    HandshakeTestAccess::SetEphemeralSeed(&r, crypto::SymmetricKey::FromBytesForTesting("r"));
    std::string out;
    size_t consumed = 0;
    ASSERT_TRUE(r.Start(&out).ok());
    EXPECT_FALSE(r.first_message_received());
    ASSERT_TRUE(r.Feed(std::string_view(hello).substr(0, 10), &out, &consumed).ok());
    EXPECT_FALSE(r.first_message_received());  // a partial hello is no message yet
    ASSERT_TRUE(r.Feed(std::string_view(hello).substr(10), &out, &consumed).ok());
    EXPECT_TRUE(r.first_message_received());
    const Status s = r.Feed(internal::EncodeHandshakeMessage(HandshakeType::kInitiatorProof, body),
                            &out, &consumed);
    EXPECT_TRUE(s.IsRefused()) << "bit " << bit;
    EXPECT_NE(s.message().find("bad signature"), std::string::npos);
    EXPECT_EQ(r.refusal(), RefusalReason::kBadSignature);  // not kUntrusted: the key is trusted
  }
}

TEST_F(HandshakeTest, MalformedAndOversizedMessagesAreRefusedFromTheHeader) {
  {  // Not a tidemap peer at all.
    Handshake r(Role::kResponder, ConfigFor(b_, &trust_));
    std::string out;
    size_t consumed = 0;
    ASSERT_TRUE(r.Start(&out).ok());
    const Status s = r.Feed("GET / HTTP/1.1\r\n\r\n", &out, &consumed);
    EXPECT_TRUE(s.IsCorruption());
    EXPECT_EQ(s.message(), "malformed handshake: bad magic (not a tidemap peer?)");
    EXPECT_EQ(consumed, 1u) << "through the first byte that breaks the magic";
    EXPECT_EQ(Types(out), std::vector<uint8_t>{T(HandshakeType::kRefuse)});
  }
  {  // One wrong byte is enough: no waiting for a whole header (and the
     // handshake timeout) to find out.
    Handshake r(Role::kResponder, ConfigFor(b_, &trust_));
    std::string out;
    size_t consumed = 0;
    ASSERT_TRUE(r.Start(&out).ok());
    ASSERT_TRUE(r.Feed("tm", &out, &consumed).ok());  // a prefix of the magic: wait
    EXPECT_EQ(consumed, 2u);
    const Status s = r.Feed("x", &out, &consumed);
    EXPECT_TRUE(s.IsCorruption()) << s.ToString();
    EXPECT_EQ(s.message(), "malformed handshake: bad magic (not a tidemap peer?)");
    EXPECT_EQ(Types(out), std::vector<uint8_t>{T(HandshakeType::kRefuse)});
  }
  {  // A 2 GiB length: refused after its 9-byte header, nothing buffered for it.
    Handshake r(Role::kResponder, ConfigFor(b_, &trust_));
    std::string out;
    size_t consumed = 0;
    ASSERT_TRUE(r.Start(&out).ok());
    const std::string header = std::string("tmhs\x01\x80\x00\x00\x00", 9) + "trailing";
    const Status s = r.Feed(header, &out, &consumed);
    EXPECT_TRUE(s.IsRefused());
    EXPECT_EQ(s.message(),
              "handshake message of 2147483657 bytes exceeds handshake_bytes_max 4096");
    EXPECT_EQ(consumed, 9u);
  }
  {  // Just over the configured limit.
    HandshakeConfig c = ConfigFor(b_, &trust_);
    c.handshake_bytes_max = 300;
    Handshake r(Role::kResponder, std::move(c));
    std::string out;
    size_t consumed = 0;
    ASSERT_TRUE(r.Start(&out).ok());
    const Status s =
        r.Feed(internal::EncodeHandshakeMessage(HandshakeType::kHello, std::string(292, 'x')), &out,
               &consumed);
    EXPECT_EQ(s.message(), "handshake message of 301 bytes exceeds handshake_bytes_max 300");
  }
  {  // The right type in the wrong place, and a hello of the wrong size.
    Handshake r(Role::kResponder, ConfigFor(b_, &trust_));
    std::string out;
    size_t consumed = 0;
    ASSERT_TRUE(r.Start(&out).ok());
    const Status s =
        r.Feed(internal::EncodeHandshakeMessage(HandshakeType::kAccept, std::string(24, 'x')), &out,
               &consumed);
    EXPECT_EQ(s.message(), "malformed handshake: expected hello, got message type 4");

    Handshake r2(Role::kResponder, ConfigFor(b_, &trust_));
    ASSERT_TRUE(r2.Start(&out).ok());
    const Status s2 = r2.Feed(
        internal::EncodeHandshakeMessage(HandshakeType::kHello, std::string("\0\0\0\1xyz", 7)),
        &out, &consumed);
    EXPECT_EQ(s2.message(), "malformed handshake: hello of 7 bytes, expected 68");
  }
  {  // A low-order ephemeral key from a (claimed) trusted peer.
    Handshake r(Role::kResponder, ConfigFor(b_, &trust_));
    std::string out;
    size_t consumed = 0;
    ASSERT_TRUE(r.Start(&out).ok());
    std::string body("\0\0\0\1", 4);
    body.append(reinterpret_cast<const char*>(a_.public_key.data()), 32);
    body.append(32, '\0');
    const Status s =
        r.Feed(internal::EncodeHandshakeMessage(HandshakeType::kHello, body), &out, &consumed);
    EXPECT_EQ(s.message(), "malformed handshake: unacceptable ephemeral key");
    EXPECT_EQ(Types(out), std::vector<uint8_t>{T(HandshakeType::kRefuse)});
  }
}

TEST_F(HandshakeTest, BadConfigIsReportedByStart) {
  HandshakeConfig wrong_pair = ConfigFor(a_, &trust_);
  wrong_pair.public_key = b_.public_key;
  std::string out;
  Handshake h1(Role::kInitiator, std::move(wrong_pair));
  EXPECT_EQ(h1.Start(&out).message(), "handshake config: public key does not match the secret key");
  HandshakeConfig short_key = ConfigFor(a_, &trust_);
  short_key.secret_key.resize(10);
  Handshake h2(Role::kResponder, std::move(short_key));
  EXPECT_TRUE(h2.Start(&out).IsInvalidArgument());
  HandshakeConfig tiny = ConfigFor(a_, &trust_);
  tiny.handshake_bytes_max = 100;
  Handshake h3(Role::kResponder, std::move(tiny));
  EXPECT_TRUE(h3.Start(&out).IsInvalidArgument());
  EXPECT_TRUE(out.empty());
}

// ---- SecureChannel ----

constexpr size_t kFrameMax = 1024;

internal::ChannelPair Pair(size_t frame_bytes_max = kFrameMax) {
  return internal::MakeChannelPair(crypto::SymmetricKey::FromBytesForTesting("a->b"),
                                   crypto::SymmetricKey::FromBytesForTesting("b->a"),
                                   frame_bytes_max);
}

// Everything Next returns until it has nothing or fails.
std::vector<std::string> Drain(SecureChannel* c, Status* status) {
  std::vector<std::string> out;
  for (;;) {
    auto m = c->Next();
    if (!m.ok()) {
      *status = m.status();
      return out;
    }
    if (!m->has_value()) return out;
    out.push_back(std::move(**m));
  }
}

TEST(SecureChannelTest, RoundTripsAnySplitUpToTheLimit) {
  auto pair = Pair();
  const std::vector<std::string> sent = {"", "a", std::string(100, 'x'),
                                         std::string(pair.a->plaintext_bytes_max(), 'y')};
  std::string wire;
  for (const auto& m : sent) ASSERT_TRUE(pair.a->Seal(m, &wire).ok());
  ASSERT_TRUE(pair.a->SealFinal(&wire).ok());
  EXPECT_EQ(wire.size(), 100 + 1 + kFrameMax + 5 * SecureChannel::kFrameOverheadBytes -
                             crypto::kStreamOverheadBytes);
  // Over the limit: refused, nothing appended.
  std::string extra;
  auto other = Pair();
  EXPECT_TRUE(other.a->Seal(std::string(other.a->plaintext_bytes_max() + 1, 'z'), &extra)
                  .IsInvalidArgument());
  EXPECT_TRUE(extra.empty());

  // One byte at a time.
  Status status;
  std::vector<std::string> got;
  for (char c : wire) {
    ASSERT_TRUE(pair.b->Feed(std::string_view(&c, 1)).ok());
    for (auto& m : Drain(pair.b.get(), &status)) got.push_back(std::move(m));
  }
  EXPECT_TRUE(status.ok());
  EXPECT_EQ(got, sent);
  EXPECT_TRUE(pair.b->peer_closed());
  EXPECT_EQ(pair.b->BytesWanted(), 0u);
  EXPECT_EQ(pair.b->buffered_bytes(), 0u);
  // Nothing may follow the closing frame, either way.
  EXPECT_TRUE(pair.a->Seal("late", &extra).IsInvalidArgument());
  EXPECT_TRUE(pair.a->SealFinal(&extra).IsInvalidArgument());
  EXPECT_TRUE(pair.b->Feed("x").IsCorruption());
}

TEST(SecureChannelTest, ReadingBytesWantedBuffersAtMostOneFrame) {
  auto pair = Pair();
  std::string wire;
  for (int n = 0; n < 5; ++n) ASSERT_TRUE(pair.a->Seal(std::string(200 * n, 'm'), &wire).ok());
  std::string_view rest = wire;
  size_t messages = 0;
  while (!rest.empty()) {
    const size_t want = pair.b->BytesWanted();
    ASSERT_GT(want, 0u);
    ASSERT_LE(want, kFrameMax);
    ASSERT_TRUE(pair.b->Feed(rest.substr(0, want)).ok());
    rest.remove_prefix(std::min(want, rest.size()));
    EXPECT_LE(pair.b->buffered_bytes(), SecureChannel::kFrameHeaderBytes + kFrameMax);
    Status status;
    messages += Drain(pair.b.get(), &status).size();
  }
  EXPECT_EQ(messages, 5u);
  EXPECT_EQ(pair.b->BytesWanted(), SecureChannel::kFrameHeaderBytes);
}

TEST(SecureChannelTest, EveryFlippedBitFails) {
  const std::vector<std::string> sent = {"first", "second message", ""};
  std::string clean;
  {
    auto pair = Pair();
    for (const auto& m : sent) ASSERT_TRUE(pair.a->Seal(m, &clean).ok());
    ASSERT_TRUE(pair.a->SealFinal(&clean).ok());
  }
  for (size_t bit = 0; bit < clean.size() * 8; ++bit) {
    // Same keys, fresh stream header: reseal, then flip.
    auto pair = Pair();
    std::string wire;
    for (const auto& m : sent) ASSERT_TRUE(pair.a->Seal(m, &wire).ok());
    ASSERT_TRUE(pair.a->SealFinal(&wire).ok());
    ASSERT_EQ(wire.size(), clean.size());
    wire[bit / 8] = static_cast<char>(wire[bit / 8] ^ (1 << (bit % 8)));
    const Status fed = pair.b->Feed(wire);
    Status status;
    const std::vector<std::string> got = Drain(pair.b.get(), &status);
    if (fed.ok()) {
      // Only a length prefix grown within the limit can leave the channel waiting for
      // bytes that never come: then what arrived is an intact prefix, and unclosed
      // (even when the grown prefix is the closing frame's, after every message).
      EXPECT_TRUE(status.ok());
      EXPECT_FALSE(pair.b->peer_closed()) << "bit " << bit;
      EXPECT_GT(pair.b->BytesWanted(), 0u) << "bit " << bit;
      ASSERT_LE(got.size(), sent.size()) << "bit " << bit;
      for (size_t k = 0; k < got.size(); ++k) EXPECT_EQ(got[k], sent[k]);
    } else {
      EXPECT_FALSE(status.ok()) << "bit " << bit;  // dead, after any intact messages
      EXPECT_FALSE(pair.b->peer_closed()) << "bit " << bit;
      ASSERT_LE(got.size(), sent.size()) << "bit " << bit;
      for (size_t k = 0; k < got.size(); ++k) EXPECT_EQ(got[k], sent[k]);
    }
  }
}

TEST(SecureChannelTest, ReorderedReplayedAndDroppedFramesFail) {
  auto seal3 = [](SecureChannel* c) {
    std::vector<std::string> frames(3);
    for (int n = 0; n < 3; ++n) EXPECT_TRUE(c->Seal("m" + std::to_string(n), &frames[n]).ok());
    return frames;
  };
  {
    auto pair = Pair();
    auto f = seal3(pair.a.get());
    const Status s = pair.b->Feed(f[1] + f[0]);
    EXPECT_TRUE(s.IsCorruption());
    EXPECT_NE(s.message().find("frame 1 of 19 bytes: failed authentication"), std::string::npos)
        << s.message();
  }
  {
    auto pair = Pair();
    auto f = seal3(pair.a.get());
    ASSERT_TRUE(pair.b->Feed(f[0]).ok());
    EXPECT_TRUE(pair.b->Feed(f[0]).IsCorruption());  // replayed
    EXPECT_TRUE(pair.b->Feed(f[1]).IsCorruption());  // dead for good
    // What was authentic before the error is still handed out, then the error.
    Status status;
    EXPECT_EQ(Drain(pair.b.get(), &status), std::vector<std::string>{"m0"});
    EXPECT_TRUE(status.IsCorruption());
    EXPECT_TRUE(pair.b->Next().status().IsCorruption());
  }
  {
    auto pair = Pair();
    auto f = seal3(pair.a.get());
    ASSERT_TRUE(pair.b->Feed(f[0]).ok());
    EXPECT_TRUE(pair.b->Feed(f[2]).IsCorruption());  // f[1] dropped
  }
}

TEST(SecureChannelTest, TruncatedStreamIsNotAClose) {
  auto pair = Pair();
  std::string wire;
  ASSERT_TRUE(pair.a->Seal("one", &wire).ok());
  ASSERT_TRUE(pair.a->Seal("two", &wire).ok());
  const size_t two_frames = wire.size();
  ASSERT_TRUE(pair.a->SealFinal(&wire).ok());
  // The connection drops after two frames and part of the closing one.
  ASSERT_TRUE(pair.b->Feed(std::string_view(wire).substr(0, two_frames + 10)).ok());
  Status status;
  EXPECT_EQ(Drain(pair.b.get(), &status), (std::vector<std::string>{"one", "two"}));
  EXPECT_FALSE(pair.b->peer_closed());
  EXPECT_GT(pair.b->BytesWanted(), 0u);
  ASSERT_TRUE(pair.b->Feed(std::string_view(wire).substr(two_frames + 10)).ok());
  EXPECT_TRUE(pair.b->peer_closed());
}

TEST(SecureChannelTest, ClosingFrameWithAPayloadIsRefused) {
  const auto key = crypto::SymmetricKey::FromBytesForTesting("fixed");
  std::string header;
  crypto::SecretStreamPush push(key, &header);
  const std::string prefix("\x00\x00\x00\x12", 4);  // 1 + 17
  std::string frame = prefix;
  push.Push("x", prefix, crypto::StreamTag::kFinal, &frame);
  auto c = internal::MakeReceivingChannel(key, header, 64);
  ASSERT_TRUE(c.ok());
  const Status s = (*c)->Feed(frame);
  EXPECT_TRUE(s.IsCorruption());
  EXPECT_EQ(s.message(), "closing frame carries 1 bytes, expected none");
  EXPECT_FALSE((*c)->peer_closed());
}

TEST(SecureChannelTest, OversizedLengthPrefixIsRefusedBeforeBuffering) {
  {
    auto pair = Pair();
    const Status s = pair.b->Feed(std::string("\x7f\xff\xff\xff", 4) + std::string(100, 'x'));
    EXPECT_TRUE(s.IsRefused());
    EXPECT_EQ(s.message(), "frame of 2147483647 bytes exceeds frame_bytes_max 1024");
    EXPECT_EQ(pair.b->buffered_bytes(), 4u);  // the prefix, nothing behind it
    EXPECT_EQ(pair.b->BytesWanted(), 0u);
    EXPECT_TRUE(pair.b->Next().status().IsRefused());
  }
  {  // One over the limit, byte by byte.
    auto pair = Pair();
    const std::string prefix("\x00\x00\x04\x01", 4);
    for (size_t k = 0; k < 3; ++k) ASSERT_TRUE(pair.b->Feed(prefix.substr(k, 1)).ok());
    EXPECT_TRUE(pair.b->Feed(prefix.substr(3, 1)).IsRefused());
  }
  {  // Exactly the limit is fine: the channel then wants the whole body.
    auto pair = Pair();
    ASSERT_TRUE(pair.b->Feed(std::string("\x00\x00\x04\x00", 4)).ok());
    EXPECT_EQ(pair.b->BytesWanted(), kFrameMax);
  }
  {  // Shorter than the tag cannot be a frame.
    auto pair = Pair();
    EXPECT_TRUE(pair.b->Feed(std::string("\x00\x00\x00\x10", 4)).IsCorruption());
  }
}

TEST(SecureChannelTest, ReceivingChannelOpensARecordedStream) {
  const auto key = crypto::SymmetricKey::FromBytesForTesting("fixed");
  std::string header;
  crypto::SecretStreamPush push(key, &header);
  std::string ct;
  std::string prefix("\x00\x00\x00\x14", 4);  // 3 + 17
  push.Push("abc", prefix, crypto::StreamTag::kMessage, &ct);
  auto c = internal::MakeReceivingChannel(key, header, 64);
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE((*c)->Feed(prefix + ct).ok());
  auto m = (*c)->Next();
  ASSERT_TRUE(m.ok() && m->has_value());
  EXPECT_EQ(**m, "abc");
  EXPECT_TRUE(internal::MakeReceivingChannel(key, "short", 64).status().IsInvalidArgument());
}

}  // namespace
}  // namespace tidemap::net
