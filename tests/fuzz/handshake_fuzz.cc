// libFuzzer target for the handshake. Input: mode:u8, then bytes "from the
// peer" (see net_fuzz_keys.h): mode bit 0 picks the side fed (responder B or
// initiator A, both with seeded ephemeral keys so recorded exchanges in the
// corpus replay), the other bits the chunk size (0: all at once). The bytes are
// fed twice, split and whole; both runs must end alike. Whatever the input, the
// side sends only whole handshake messages of the types its role may send,
// never accepts anyone but the one trusted peer that is not itself, consumes
// every byte while still handshaking, and once done hands the rest of the
// input to its channel.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "tests/fuzz/net_fuzz_keys.h"
#include <tidemap/base/crypto.h>
#include <tidemap/net/frame.h>
#include <tidemap/net/handshake.h>
#include <tidemap/net/handshake_internal.h>

namespace {

namespace net = tidemap::net;
namespace fuzz = tidemap::fuzz;
using Role = net::Handshake::Role;
using net::internal::HandshakeType;

struct Outcome {
  bool done = false;
  std::string status;
  size_t consumed = 0;
  std::vector<uint8_t> sent_types;
  std::vector<std::string> messages;  // from the channel, once done
  std::string channel_status;
};

[[noreturn]] void Die(const char* what) {
  std::fprintf(stderr, "handshake_fuzz: %s\n", what);
  std::abort();
}

Outcome Run(Role role, std::string_view input, size_t chunk, const net::TrustList& trust) {
  const fuzz::FuzzNode self = role == Role::kInitiator ? fuzz::NodeA() : fuzz::NodeB();
  const fuzz::FuzzNode peer = role == Role::kInitiator ? fuzz::NodeB() : fuzz::NodeA();
  net::Handshake h(role, fuzz::FuzzConfig(self, &trust));
  fuzz::SeedEphemeral(&h);
  std::string sent;
  if (!h.Start(&sent).ok()) Die("Start failed");
  sent.clear();  // the initiator's hello is not under test

  Outcome o;
  tidemap::Status status;
  size_t pos = 0;
  while (pos < input.size()) {
    const std::string_view piece = input.substr(pos, chunk == 0 ? input.size() : chunk);
    size_t consumed = 0;
    status = h.Feed(piece, &sent, &consumed);
    if (consumed > piece.size()) Die("consumed more than it was given");
    pos += consumed;
    o.consumed += consumed;
    if (!status.ok() || h.done()) break;
    if (consumed != piece.size()) Die("left input unconsumed while handshaking");
  }
  o.done = h.done();
  o.status = status.ToString();
  if (o.done && !status.ok()) Die("done and failed");

  std::string_view rest;
  for (const auto& m : net::internal::SplitHandshakeMessages(sent, &rest)) {
    o.sent_types.push_back(m.type);
  }
  if (!rest.empty()) Die("sent a partial handshake message");
  const uint8_t proof = static_cast<uint8_t>(
      role == Role::kInitiator ? HandshakeType::kInitiatorProof : HandshakeType::kResponderProof);
  const uint8_t accept = static_cast<uint8_t>(HandshakeType::kAccept);
  const uint8_t refuse = static_cast<uint8_t>(HandshakeType::kRefuse);
  for (size_t i = 0; i < o.sent_types.size(); ++i) {
    const uint8_t t = o.sent_types[i];
    const bool last = i + 1 == o.sent_types.size();
    if (t == proof) continue;
    if (t == accept && role == Role::kResponder && o.done && last) continue;
    if (t == refuse && !status.ok() && last) continue;
    Die("sent a message its role and outcome do not allow");
  }

  if (o.done) {
    if (h.peer_public_key() != peer.public_key) Die("accepted a key other than the trusted peer");
    auto channel = h.TakeChannel(fuzz::kHandshakeFuzzFrameBytesMax);
    if (!channel.ok()) Die("TakeChannel failed after done");
    tidemap::Status fed = (*channel)->Feed(input.substr(pos));
    (void)fed;  // reported again by Next
    for (;;) {
      auto m = (*channel)->Next();
      if (!m.ok()) {
        o.channel_status = m.status().ToString();
        break;
      }
      if (!m->has_value()) break;
      o.messages.push_back(std::move(**m));
    }
  }
  return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static const net::TrustList* const trust = new net::TrustList(fuzz::FuzzTrust());
  const Role role = (data[0] & 1) != 0 ? Role::kInitiator : Role::kResponder;
  const size_t chunk = data[0] >> 1;
  const std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);

  const Outcome split = Run(role, input, chunk, *trust);
  const Outcome whole = Run(role, input, 0, *trust);
  if (split.done != whole.done || split.status != whole.status ||
      split.consumed != whole.consumed || split.sent_types != whole.sent_types ||
      split.messages != whole.messages || split.channel_status != whole.channel_status) {
    std::fprintf(stderr, "split: %s\nwhole: %s\n", split.status.c_str(), whole.status.c_str());
    Die("the outcome depends on the split");
  }
  return 0;
}
