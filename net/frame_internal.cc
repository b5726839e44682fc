#include <tidemap/net/frame_internal.h>

#include <string>
#include <utility>

namespace tidemap::net::internal {

ChannelPair MakeChannelPair(const crypto::SymmetricKey& a_to_b, const crypto::SymmetricKey& b_to_a,
                            size_t frame_bytes_max) {
  std::string a_header, b_header;
  crypto::SecretStreamPush a_push(a_to_b, &a_header);
  crypto::SecretStreamPush b_push(b_to_a, &b_header);
  Result<crypto::SecretStreamPull> a_pull = crypto::SecretStreamPull::Start(b_to_a, b_header);
  Result<crypto::SecretStreamPull> b_pull = crypto::SecretStreamPull::Start(a_to_b, a_header);
  TIDEMAP_CHECK(a_pull.ok() && b_pull.ok());
  ChannelPair pair;
  pair.a = std::make_unique<SecureChannel>(std::move(a_push), std::move(a_pull).value(),
                                           frame_bytes_max);
  pair.b = std::make_unique<SecureChannel>(std::move(b_push), std::move(b_pull).value(),
                                           frame_bytes_max);
  return pair;
}

Result<std::unique_ptr<SecureChannel>> MakeReceivingChannel(const crypto::SymmetricKey& key,
                                                            std::string_view header,
                                                            size_t frame_bytes_max) {
  TIDEMAP_ASSIGN_OR_RETURN(crypto::SecretStreamPull pull,
                           crypto::SecretStreamPull::Start(key, header));
  std::string unused_header;
  crypto::SecretStreamPush push(crypto::SymmetricKey::FromBytesForTesting("throwaway"),
                                &unused_header);
  return std::make_unique<SecureChannel>(std::move(push), std::move(pull), frame_bytes_max);
}

}  // namespace tidemap::net::internal
