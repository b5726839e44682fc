// The connection handshake: mutual Ed25519 authentication against a trust
// list over a fresh X25519 exchange, ending in a SecureChannel. Sans-I/O: the
// caller moves the bytes (Start, then Feed until done() or an error) and owns
// the socket and the timeouts.
//
// Wire format. Every handshake message is framed the same way, and a message
// whose 9 + length exceeds handshake_bytes_max is refused from its header, before
// anything is allocated for its body:
//
//   message := magic:"tmhs" type:u8 length:u32be body:length
//
//   type 1 hello     I -> R   version:u32be  static_pk:32  ephemeral_pk:32          (68 B)
//   type 2 proof_r   R -> I   version:u32be  static_pk:32  ephemeral_pk:32  sig:64  (132 B)
//   type 3 proof_i   I -> R   sig:64  stream_header:24                              (88 B)
//   type 4 accept    R -> I   stream_header:24                                      (24 B)
//   type 5 refuse    either   reason:u8  version:u32be  text                        (<= 205 B)
//
// I is the initiator (the side that dialed), R the responder; static_pk is the
// sender's Ed25519 identity key, ephemeral_pk a fresh X25519 key made for this
// connection. A refuse carries a reason code (RefusalReason), the refuser's own
// protocol version and a short ASCII text for the peer's log; it is the last
// message of a failed handshake, after which the refuser closes.
//
//   1. I sends hello.
//   2. R checks the version, that I's claimed key is not its own and is trusted;
//      then sends proof_r, else refuse.
//   3. I checks the version, R's key (not ours, trusted) and R's signature; then
//      sends proof_i, else refuse.
//   4. R checks I's signature; then sends accept and is done, else refuse.
//   5. I is done on accept (or fails on refuse; it sends nothing back at this point).
//
// R's replies before proof_i depend only on the key I claims, which is public:
// a stranger naming a trusted key gets proof_r, one naming its own gets a
// refusal, and nobody gets anything but handshake messages before proving
// possession of a trusted key. I sends its proof only to an R that proved a
// trusted key.
//
// Cryptography (S = static Ed25519 key, E = ephemeral X25519 key, "v1" labels):
//
//   th     = BLAKE2b-256("tidemap handshake v1" || version:u32be || S_I || S_R || E_I || E_R)
//   sig_R  = Ed25519(S_R, "tidemap handshake v1 responder" || th)
//   sig_I  = Ed25519(S_I, "tidemap handshake v1 initiator" || th)
//   (rx, tx) = crypto_kx_client_session_keys (I) / crypto_kx_server_session_keys (R) over E_I, E_R
//   k_i2r  = BLAKE2b-256(key = I.tx = R.rx, "tidemap handshake v1 initiator->responder" || th)
//   k_r2i  = BLAKE2b-256(key = I.rx = R.tx, "tidemap handshake v1 responder->initiator" || th)
//
// Each direction is one crypto_secretstream_xchacha20poly1305 stream (see
// net/frame.h): I's stream under k_i2r starts with the header in proof_i, R's
// under k_r2i with the header in accept. Both ephemeral keys are fresh, so a
// recorded proof_i fails against any new proof_r (bad signature), no two
// connections share keys, and recorded frames open under no other session. The
// ephemeral secrets are wiped as soon as the session keys are derived.
//
// After done(), bytes that followed the last handshake message (R may send
// frames right behind accept) are left unconsumed: they belong to the channel.
#ifndef TIDEMAP_NET_HANDSHAKE_H_
#define TIDEMAP_NET_HANDSHAKE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <tidemap/base/crypto.h>
#include <tidemap/base/status.h>
#include <tidemap/net/frame.h>
#include <tidemap/net/trust.h>

namespace tidemap::net {

// The handshake's version (its hello and refuse messages); the sync
// protocol has its own (kSyncProtocolVersion, schemas/messages.h).
inline constexpr uint32_t kHandshakeVersion = 1;

// The smallest handshake_bytes_max that fits every handshake message.
inline constexpr size_t kHandshakeBytesMaxMin = 256;

struct HandshakeConfig {
  // Our Ed25519 secret key (crypto::kSecretKeyBytes); copied, wiped on destruction.
  std::string secret_key;
  crypto::PublicKey public_key{};  // ours; must match secret_key
  // Borrowed; must outlive the Handshake. Peers not in it are refused.
  const TrustList* trust = nullptr;
  // A handshake message over this (header included) is refused. At least kHandshakeBytesMaxMin.
  size_t handshake_bytes_max = 4096;

  ~HandshakeConfig();
};

// Why a handshake was refused, as sent in a refuse message.
enum class RefusalReason : uint8_t {
  kMalformed = 1,
  kVersion = 2,
  kUntrusted = 3,
  kSelf = 4,
  kBadSignature = 5,
  kTooLarge = 6,
};

class Handshake;
namespace internal {
struct HandshakeTestAccess;  // net/handshake_internal.h
}  // namespace internal

// One side of one connection's handshake. Not thread-safe; one owner.
class Handshake {
 public:
  enum class Role { kInitiator, kResponder };

  Handshake(Role role, HandshakeConfig config);
  Handshake(const Handshake&) = delete;
  Handshake& operator=(const Handshake&) = delete;
  ~Handshake();

  // Call once, first. Initiator: appends its hello to *out. Responder: appends
  // nothing. InvalidArgument when the config is unusable (a secret key of the
  // wrong size or not matching public_key, handshake_bytes_max too small).
  // REQUIRES: config.trust != nullptr.
  Status Start(std::string* out);

  // Feeds bytes received from the peer, split anyhow (one byte at a time works).
  // Appends what to send to *out and sets *consumed to the input bytes used;
  // bytes after the handshake's last message are not consumed (hand them to the
  // channel). Returns OK while the handshake goes on and once it is done; then
  // done() is true and later calls consume nothing. How the bytes are split
  // never changes the outcome, *out or the total consumed, failures included
  // (bad magic consumes through the first byte that breaks it).
  //
  // A non-OK Status means close the connection; every later call returns it.
  // When the peer should learn why, *out ends with a refuse message (send it,
  // then close); always, except when the peer refused us or an initiator fails
  // after sending its proof. The messages:
  //   Refused     "untrusted peer <64 hex>"        the peer's key is not in the trust list
  //   Refused     "peer is this node"               the peer has our key
  //   Refused     "protocol version 7, we speak 1"  the peer's version differs
  //   Refused     "bad signature from peer <64 hex>"
  //   Refused     "handshake message of N bytes exceeds handshake_bytes_max M"
  //   Refused     "refused by peer: <its reason>"   the peer refused us (nothing sent back);
  //               a version refusal reads "protocol version 1, we speak 7 (refused by peer)"
  //   Corruption  "malformed handshake: <what>"     bad magic, type, length or key
  // REQUIRES: Start was called.
  Status Feed(std::string_view in, std::string* out, size_t* consumed);

  // True once the peer is authenticated and the channel keys are set.
  bool done() const;
  Role role() const { return role_; }

  // True once a whole handshake message from the peer was taken in (for a
  // responder: the hello), whatever the outcome; false while it is partial.
  bool first_message_received() const { return messages_received_ > 0; }
  // Why we refused the peer (the reason our refuse message carries, or would
  // carry where none is sent); nullopt when we did not refuse it.
  std::optional<RefusalReason> refusal() const { return refusal_; }
  // True when the peer refused us (its refuse message ended the handshake).
  bool refused_by_peer() const { return refused_by_peer_; }

  // The authenticated peer. REQUIRES: done().
  const crypto::PublicKey& peer_public_key() const;
  uint64_t peer_node_id() const;  // crypto::NodeIdOf(peer_public_key())

  // The encrypted channel, framing both directions with bodies of at most
  // frame_bytes_max bytes (within SecureChannel's bounds, else InvalidArgument).
  // Call once, after done() (InvalidArgument otherwise).
  Result<std::unique_ptr<SecureChannel>> TakeChannel(size_t frame_bytes_max);

 private:
  friend struct internal::HandshakeTestAccess;
  enum class State {
    kNew,
    kAwaitHello,
    kAwaitResponderProof,
    kAwaitInitiatorProof,
    kAwaitAccept,
    kDone,
    kFailed,
  };

  Status ParseHeader(std::string* out);
  Status HandleMessage(uint8_t type, std::string_view body, std::string* out);
  Status OnHello(std::string_view body, std::string* out);
  Status OnResponderProof(std::string_view body, std::string* out);
  Status OnInitiatorProof(std::string_view body, std::string* out);
  Status OnAccept(std::string_view body, std::string* out);
  Status OnRefuse(std::string_view body);
  // Fails the handshake with `status`, appending a refuse message to *out.
  Status Refuse(RefusalReason reason, std::string_view text, Status status, std::string* out);
  Status Malformed(std::string_view what, std::string* out);
  Status Fail(Status status);
  // Checks a peer's claimed static key: not ours, trusted.
  Status CheckPeerKey(std::string* out);
  crypto::KxKeyPair NewEphemeral() const;
  // Sets transcript_ from both static keys (ours, peer_static_) and both ephemerals.
  void SetTranscript(const crypto::KxPublicKey& initiator_ephemeral,
                     const crypto::KxPublicKey& responder_ephemeral);
  // Sets both channel keys from our ephemeral_ (then dropped), the peer's and transcript_.
  Status DeriveKeys(const crypto::KxPublicKey& peer_ephemeral, std::string* out);
  // Signs `label` || transcript_ with our key.
  Status Sign(std::string_view label, std::string* signature);
  // Checks the peer's signature of `label` || transcript_.
  bool VerifyPeer(std::string_view label, std::string_view signature) const;
  Status BadSignature(std::string* out);

  const Role role_;
  const HandshakeConfig config_;
  uint32_t version_ = kHandshakeVersion;
  State state_ = State::kNew;
  Status status_;

  // The message being received: header, then body.
  std::string in_;
  bool header_parsed_ = false;
  uint8_t in_type_ = 0;
  size_t in_body_bytes_ = 0;

  std::optional<crypto::KxKeyPair> ephemeral_;          // ours, until the session keys exist
  std::optional<crypto::SymmetricKey> ephemeral_seed_;  // tests only
  crypto::KxPublicKey own_ephemeral_public_{};
  crypto::PublicKey peer_static_{};
  crypto::Hash256 transcript_{};
  crypto::SymmetricKey send_key_;
  crypto::SymmetricKey recv_key_;
  std::optional<crypto::SecretStreamPush> push_;
  std::optional<crypto::SecretStreamPull> pull_;
  bool channel_taken_ = false;
  size_t messages_received_ = 0;
  std::optional<RefusalReason> refusal_;
  bool refused_by_peer_ = false;
};

}  // namespace tidemap::net

#endif  // TIDEMAP_NET_HANDSHAKE_H_
