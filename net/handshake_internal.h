// Test and fuzz access to the handshake: its wire constants, a message encoder
// and splitter, and hooks that make a handshake reproducible. Not for
// production code: a fixed ephemeral key voids the handshake's replay protection.
#ifndef TIDEMAP_NET_HANDSHAKE_INTERNAL_H_
#define TIDEMAP_NET_HANDSHAKE_INTERNAL_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <tidemap/base/crypto.h>
#include <tidemap/net/handshake.h>

namespace tidemap::net::internal {

inline constexpr std::string_view kHandshakeMagic = "tmhs";
inline constexpr size_t kHandshakeHeaderBytes = 9;  // magic, type, length

enum class HandshakeType : uint8_t {
  kHello = 1,
  kResponderProof = 2,
  kInitiatorProof = 3,
  kAccept = 4,
  kRefuse = 5,
};

// One framed handshake message.
std::string EncodeHandshakeMessage(HandshakeType type, std::string_view body);

struct HandshakeMessage {
  uint8_t type = 0;
  std::string body;
};
// Splits `bytes` into complete framed messages (magic unchecked) and returns
// them; *rest receives the bytes after the last complete message.
std::vector<HandshakeMessage> SplitHandshakeMessages(std::string_view bytes,
                                                     std::string_view* rest);

struct HandshakeTestAccess {
  // Makes the handshake derive its ephemeral key from `seed`. Call before Start.
  static void SetEphemeralSeed(Handshake* handshake, const crypto::SymmetricKey& seed);
  // Makes the handshake speak another protocol version. Call before Start.
  static void SetProtocolVersion(Handshake* handshake, uint32_t version);
};

}  // namespace tidemap::net::internal

#endif  // TIDEMAP_NET_HANDSHAKE_INTERNAL_H_
