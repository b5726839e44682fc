// The fixed keys frame_fuzz and handshake_fuzz run with, shared with
// make_net_corpus so its seeds are valid input: real frames under the frame
// key, real handshakes between node A (initiator) and node B (responder) with
// seeded ephemeral keys.
#ifndef TIDEMAP_TESTS_FUZZ_NET_FUZZ_KEYS_H_
#define TIDEMAP_TESTS_FUZZ_NET_FUZZ_KEYS_H_

#include <cstddef>
#include <string>

#include <tidemap/base/crypto.h>
#include <tidemap/net/handshake.h>
#include <tidemap/net/handshake_internal.h>
#include <tidemap/net/trust.h>

namespace tidemap::fuzz {

// frame_fuzz: input := mode:u8 stream_header:24 stream; the stream is keyed by FrameKey().
inline constexpr size_t kFrameFuzzBytesMax = 4096;
inline crypto::SymmetricKey FrameKey() {
  return crypto::SymmetricKey::FromBytesForTesting("tidemap frame_fuzz key");
}

// handshake_fuzz: input := mode:u8 bytes; mode bit 0 picks the side that is fed
// (0 responder B, 1 initiator A), the other bits the split.
inline constexpr size_t kHandshakeFuzzFrameBytesMax = 4096;

struct FuzzNode {
  crypto::PublicKey public_key{};
  std::string secret_key;
};
inline FuzzNode NodeFromSeed(const char* seed) {
  FuzzNode n;
  crypto::SigningKeyPairFromSeedForTesting(crypto::SymmetricKey::FromBytesForTesting(seed),
                                           &n.public_key, &n.secret_key);
  return n;
}
inline FuzzNode NodeA() { return NodeFromSeed("tidemap fuzz node a"); }
inline FuzzNode NodeB() { return NodeFromSeed("tidemap fuzz node b"); }
inline FuzzNode NodeC() { return NodeFromSeed("tidemap fuzz node c"); }  // trusted by nobody

// A and B trust each other.
inline net::TrustList FuzzTrust() {
  net::TrustList trust;
  trust.Add(NodeA().public_key);
  trust.Add(NodeB().public_key);
  return trust;
}

inline net::HandshakeConfig FuzzConfig(const FuzzNode& node, const net::TrustList* trust) {
  net::HandshakeConfig c;
  c.secret_key = node.secret_key;
  c.public_key = node.public_key;
  c.trust = trust;
  return c;
}

// A's handshakes use one ephemeral seed, B's another, so a recorded exchange replays.
inline void SeedEphemeral(net::Handshake* h) {
  net::internal::HandshakeTestAccess::SetEphemeralSeed(
      h, crypto::SymmetricKey::FromBytesForTesting(h->role() == net::Handshake::Role::kInitiator
                                                       ? "tidemap fuzz ephemeral a"
                                                       : "tidemap fuzz ephemeral b"));
}

}  // namespace tidemap::fuzz

#endif  // TIDEMAP_TESTS_FUZZ_NET_FUZZ_KEYS_H_
