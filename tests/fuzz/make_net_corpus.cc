// Writes the seed corpora of frame_fuzz and handshake_fuzz: real frames under
// the fuzz frame key, and recorded handshakes between the fuzz nodes (their
// ephemeral keys seeded as the targets seed them, so the recordings replay),
// plus a few refusals and broken inputs. Usage: make_net_corpus FRAME_DIR
// HANDSHAKE_DIR. Run once by hand; the output is checked in under
// tests/fuzz/corpus/frame/ and tests/fuzz/corpus/handshake/.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tests/fuzz/net_fuzz_keys.h"
#include <tidemap/base/coding.h>
#include <tidemap/base/crypto.h>
#include <tidemap/net/frame.h>
#include <tidemap/net/handshake.h>
#include <tidemap/net/handshake_internal.h>

namespace {

namespace net = tidemap::net;
namespace fuzz = tidemap::fuzz;
namespace crypto = tidemap::crypto;
using net::internal::EncodeHandshakeMessage;
using net::internal::HandshakeType;
using Role = net::Handshake::Role;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "make_net_corpus: %s\n", what.c_str());
  std::exit(1);
}

void Check(const tidemap::Status& s, const char* what) {
  if (!s.ok()) Die(std::string(what) + ": " + s.ToString());
}

void WriteSeed(const std::string& dir, const std::string& name, const std::string& bytes) {
  const std::string path = dir + "/" + name;
  std::ofstream(path, std::ios::binary) << bytes;
  std::printf("%s: %zu bytes\n", path.c_str(), bytes.size());
}

std::string Mode(uint8_t mode) { return std::string(1, static_cast<char>(mode)); }

// A sending channel under the frame fuzz key; *header receives its stream header.
std::unique_ptr<net::SecureChannel> FrameSender(std::string* header) {
  crypto::SecretStreamPush push(fuzz::FrameKey(), header);
  auto pull = crypto::SecretStreamPull::Start(crypto::SymmetricKey(), std::string(24, '\0'));
  if (!pull.ok()) Die("pull");
  return std::make_unique<net::SecureChannel>(std::move(push), std::move(pull).value(),
                                              fuzz::kFrameFuzzBytesMax);
}

std::string Sealed(net::SecureChannel* c, const std::vector<std::string>& messages, bool final) {
  std::string out;
  for (const auto& m : messages) Check(c->Seal(m, &out), "Seal");
  if (final) Check(c->SealFinal(&out), "SealFinal");
  return out;
}

void WriteFrameCorpus(const std::string& dir) {
  const std::vector<std::string> three = {"put users alice {\"age\":3}", "", "x"};
  {
    std::string header;
    auto c = FrameSender(&header);
    const std::string stream = Sealed(c.get(), three, true);
    WriteSeed(dir, "messages_bytewise", Mode(0) + header + stream);
    WriteSeed(dir, "messages_split", Mode(13) + header + stream);
    WriteSeed(dir, "messages_whole", Mode(255) + header + stream);
    WriteSeed(dir, "after_final", Mode(255) + header + stream + "junk");
    WriteSeed(dir, "truncated", Mode(5) + header + stream.substr(0, stream.size() - 30));
  }
  {
    std::string header;
    auto c = FrameSender(&header);
    WriteSeed(dir, "large",
              Mode(200) + header +
                  Sealed(c.get(), {std::string(fuzz::kFrameFuzzBytesMax - 17, 'v')}, true));
  }
  {
    std::string header;
    auto c = FrameSender(&header);
    WriteSeed(dir, "final_only", Mode(3) + header + Sealed(c.get(), {}, true));
  }
  const std::string any_header(24, '\x42');
  WriteSeed(dir, "oversized_prefix", Mode(255) + any_header + std::string("\xff\xff\xff\xff", 4));
  WriteSeed(dir, "short_frame", Mode(255) + any_header + std::string("\x00\x00\x00\x10", 4));
}

struct Session {
  std::string hello, proof_i, proof_r, accept;
  std::string from_initiator, from_responder;  // frames sent after the handshake
};

Session RecordSession(const net::TrustList& trust) {
  net::Handshake i(Role::kInitiator, fuzz::FuzzConfig(fuzz::NodeA(), &trust));
  net::Handshake r(Role::kResponder, fuzz::FuzzConfig(fuzz::NodeB(), &trust));
  fuzz::SeedEphemeral(&i);
  fuzz::SeedEphemeral(&r);
  Session s;
  std::string unused;
  size_t consumed = 0;
  Check(i.Start(&s.hello), "initiator Start");
  Check(r.Start(&unused), "responder Start");
  Check(r.Feed(s.hello, &s.proof_r, &consumed), "hello");
  Check(i.Feed(s.proof_r, &s.proof_i, &consumed), "proof_r");
  Check(r.Feed(s.proof_i, &s.accept, &consumed), "proof_i");
  Check(i.Feed(s.accept, &unused, &consumed), "accept");
  if (!i.done() || !r.done()) Die("session did not complete");
  auto ic = i.TakeChannel(fuzz::kHandshakeFuzzFrameBytesMax);
  auto rc = r.TakeChannel(fuzz::kHandshakeFuzzFrameBytesMax);
  if (!ic.ok() || !rc.ok()) Die("TakeChannel");
  s.from_initiator = Sealed(ic->get(), {"hello from a", "second"}, true);
  s.from_responder = Sealed(rc->get(), {"hello from b"}, false);
  return s;
}

// The hello a fresh initiator with `node`'s key sends.
std::string HelloOf(const fuzz::FuzzNode& node, const net::TrustList& trust) {
  net::Handshake h(Role::kInitiator, fuzz::FuzzConfig(node, &trust));
  std::string hello;
  Check(h.Start(&hello), "Start");
  return hello;
}

void WriteHandshakeCorpus(const std::string& dir) {
  const net::TrustList trust = fuzz::FuzzTrust();
  const Session s = RecordSession(trust);
  const std::string to_responder = s.hello + s.proof_i + s.from_initiator;
  const std::string to_initiator = s.proof_r + s.accept + s.from_responder;
  // Mode bit 0: 0 feeds the responder, 1 the initiator; bits 1..7: chunk size.
  WriteSeed(dir, "responder_ok", Mode(0) + to_responder);
  WriteSeed(dir, "responder_bytewise", Mode(1 << 1) + to_responder);
  WriteSeed(dir, "responder_chunk7", Mode(7 << 1) + to_responder);
  WriteSeed(dir, "initiator_ok", Mode(1) + to_initiator);
  WriteSeed(dir, "initiator_bytewise", Mode((1 << 1) | 1) + to_initiator);
  WriteSeed(dir, "initiator_chunk30", Mode((30 << 1) | 1) + to_initiator);

  std::string v7 = s.hello;
  v7[9 + 3] = 7;  // the version's low byte, after the 9-byte message header
  WriteSeed(dir, "responder_version7", Mode(0) + v7);
  WriteSeed(dir, "responder_untrusted", Mode(0) + HelloOf(fuzz::NodeC(), trust));
  WriteSeed(dir, "responder_self", Mode(0) + HelloOf(fuzz::NodeB(), trust));
  WriteSeed(dir, "responder_garbage", Mode(0) + "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  WriteSeed(dir, "responder_oversized", Mode(0) + std::string("tmhs\x01\x00\x01\x00\x00", 9));
  std::string bad_proof_i = s.proof_i;
  bad_proof_i[9] = static_cast<char>(bad_proof_i[9] ^ 1);
  WriteSeed(dir, "responder_bad_signature", Mode(0) + s.hello + bad_proof_i);

  std::string refuse_body(1, static_cast<char>(net::RefusalReason::kUntrusted));
  tidemap::PutFixed32BE(&refuse_body, net::kHandshakeVersion);
  refuse_body += "untrusted key " + crypto::PublicKeyToText(fuzz::NodeA().public_key);
  WriteSeed(dir, "initiator_refused",
            Mode(1) + EncodeHandshakeMessage(HandshakeType::kRefuse, refuse_body));
  std::string bad_proof_r = s.proof_r;
  bad_proof_r.back() = static_cast<char>(bad_proof_r.back() ^ 0x80);
  WriteSeed(dir, "initiator_bad_signature", Mode(1) + bad_proof_r);
  WriteSeed(dir, "initiator_refused_after_proof",
            Mode(1) + s.proof_r + EncodeHandshakeMessage(HandshakeType::kRefuse, refuse_body));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s FRAME_DIR HANDSHAKE_DIR\n", argv[0]);
    return 2;
  }
  WriteFrameCorpus(argv[1]);
  WriteHandshakeCorpus(argv[2]);
  return 0;
}
