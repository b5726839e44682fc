// Test and fuzz access to SecureChannel without a handshake: channels over
// fixed keys. Not for production code, whose channels come from the handshake.
#ifndef TIDEMAP_NET_FRAME_INTERNAL_H_
#define TIDEMAP_NET_FRAME_INTERNAL_H_

#include <memory>
#include <string_view>

#include <tidemap/base/crypto.h>
#include <tidemap/base/status.h>
#include <tidemap/net/frame.h>

namespace tidemap::net::internal {

// Two connected channels: what `a` seals, `b` opens (under `a_to_b`), and back
// (under `b_to_a`). REQUIRES: frame_bytes_max within SecureChannel's bounds.
struct ChannelPair {
  std::unique_ptr<SecureChannel> a;
  std::unique_ptr<SecureChannel> b;
};
ChannelPair MakeChannelPair(const crypto::SymmetricKey& a_to_b, const crypto::SymmetricKey& b_to_a,
                            size_t frame_bytes_max);

// A channel whose incoming stream is keyed by `key` and begins with the
// secretstream `header` (InvalidArgument unless it has kStreamHeaderBytes);
// its outgoing side uses a throwaway key.
Result<std::unique_ptr<SecureChannel>> MakeReceivingChannel(const crypto::SymmetricKey& key,
                                                            std::string_view header,
                                                            size_t frame_bytes_max);

}  // namespace tidemap::net::internal

#endif  // TIDEMAP_NET_FRAME_INTERNAL_H_
