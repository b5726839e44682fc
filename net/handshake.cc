#include <tidemap/net/handshake.h>

#include <algorithm>
#include <utility>

#include <tidemap/base/check.h>
#include <tidemap/base/coding.h>
#include <tidemap/net/handshake_internal.h>

namespace tidemap::net {
namespace {

using internal::HandshakeType;
using internal::kHandshakeHeaderBytes;
using internal::kHandshakeMagic;

// Domain separation: the transcript, each side's signature and each
// direction's key get their own label, so no value can stand in for another.
constexpr std::string_view kTranscriptLabel = "tidemap handshake v1";
constexpr std::string_view kResponderSignLabel = "tidemap handshake v1 responder";
constexpr std::string_view kInitiatorSignLabel = "tidemap handshake v1 initiator";
constexpr std::string_view kInitiatorToResponderLabel = "tidemap handshake v1 initiator->responder";
constexpr std::string_view kResponderToInitiatorLabel = "tidemap handshake v1 responder->initiator";

constexpr size_t kVersionBytes = 4;
constexpr size_t kHelloBytes = kVersionBytes + crypto::kPublicKeyBytes + crypto::kKxPublicKeyBytes;
constexpr size_t kResponderProofBytes = kHelloBytes + crypto::kSignatureBytes;
constexpr size_t kInitiatorProofBytes = crypto::kSignatureBytes + crypto::kStreamHeaderBytes;
constexpr size_t kAcceptBytes = crypto::kStreamHeaderBytes;
constexpr size_t kRefuseFixedBytes = 1 + kVersionBytes;
// Our refusal texts are cut to this; a peer's longer text is cut when printed.
constexpr size_t kRefusalTextBytesMax = 200;
static_assert(kHandshakeHeaderBytes + kRefuseFixedBytes + kRefusalTextBytesMax <=
              kHandshakeBytesMaxMin);
static_assert(kHandshakeHeaderBytes + kResponderProofBytes <= kHandshakeBytesMaxMin);

std::string_view AsChars(const uint8_t* p, size_t n) {
  return std::string_view(reinterpret_cast<const char*>(p), n);
}
template <size_t N>
std::string_view AsChars(const std::array<uint8_t, N>& a) {
  return AsChars(a.data(), N);
}
template <size_t N>
void CopyOut(std::string_view* in, std::array<uint8_t, N>* a) {
  TIDEMAP_CHECK(in->size() >= N);
  std::copy_n(in->data(), N, reinterpret_cast<char*>(a->data()));
  in->remove_prefix(N);
}

std::string VersionBytes(uint32_t version) {
  std::string s;
  PutFixed32BE(&s, version);
  return s;
}

const char* TypeName(uint8_t type) {
  switch (static_cast<HandshakeType>(type)) {
    case HandshakeType::kHello:
      return "hello";
    case HandshakeType::kResponderProof:
      return "responder proof";
    case HandshakeType::kInitiatorProof:
      return "initiator proof";
    case HandshakeType::kAccept:
      return "accept";
    case HandshakeType::kRefuse:
      return "refuse";
  }
  return "unknown";
}

std::string VersionMismatch(uint32_t peer, uint32_t ours) {
  return "protocol version " + std::to_string(peer) + ", we speak " + std::to_string(ours);
}

}  // namespace

namespace internal {

std::string EncodeHandshakeMessage(HandshakeType type, std::string_view body) {
  std::string out(kHandshakeMagic);
  out.push_back(static_cast<char>(type));
  PutFixed32BE(&out, static_cast<uint32_t>(body.size()));
  out.append(body);
  return out;
}

std::vector<HandshakeMessage> SplitHandshakeMessages(std::string_view bytes,
                                                     std::string_view* rest) {
  std::vector<HandshakeMessage> messages;
  while (bytes.size() >= kHandshakeHeaderBytes) {
    const size_t body_bytes = DecodeFixed32BE(bytes.data() + 5);
    if (bytes.size() - kHandshakeHeaderBytes < body_bytes) break;
    messages.push_back({static_cast<uint8_t>(bytes[4]),
                        std::string(bytes.substr(kHandshakeHeaderBytes, body_bytes))});
    bytes.remove_prefix(kHandshakeHeaderBytes + body_bytes);
  }
  *rest = bytes;
  return messages;
}

void HandshakeTestAccess::SetEphemeralSeed(Handshake* handshake, const crypto::SymmetricKey& seed) {
  TIDEMAP_CHECK(handshake->state_ == Handshake::State::kNew);
  handshake->ephemeral_seed_ = seed;
}

void HandshakeTestAccess::SetProtocolVersion(Handshake* handshake, uint32_t version) {
  TIDEMAP_CHECK(handshake->state_ == Handshake::State::kNew);
  handshake->version_ = version;
}

}  // namespace internal

HandshakeConfig::~HandshakeConfig() { crypto::Wipe(secret_key.data(), secret_key.size()); }

Handshake::Handshake(Role role, HandshakeConfig config) : role_(role), config_(std::move(config)) {}

Handshake::~Handshake() = default;  // config_, the keys and the stream states wipe themselves

bool Handshake::done() const { return state_ == State::kDone; }

const crypto::PublicKey& Handshake::peer_public_key() const {
  TIDEMAP_CHECK_MSG(done(), "peer_public_key before the handshake is done");
  return peer_static_;
}

uint64_t Handshake::peer_node_id() const { return crypto::NodeIdOf(peer_public_key()); }

Status Handshake::Fail(Status status) {
  TIDEMAP_CHECK(!status.ok());
  state_ = State::kFailed;
  status_ = std::move(status);
  ephemeral_.reset();
  push_.reset();
  pull_.reset();
  send_key_ = crypto::SymmetricKey();
  recv_key_ = crypto::SymmetricKey();
  in_.clear();
  return status_;
}

Status Handshake::Refuse(RefusalReason reason, std::string_view text, Status status,
                         std::string* out) {
  refusal_ = reason;
  // An initiator waiting for accept sends nothing more: an honest responder already
  // counts the connection as up and would read a refusal as a (failing) frame.
  if (state_ == State::kAwaitAccept) return Fail(std::move(status));
  std::string body;
  body.push_back(static_cast<char>(reason));
  PutFixed32BE(&body, version_);
  body.append(text.substr(0, kRefusalTextBytesMax));
  out->append(internal::EncodeHandshakeMessage(HandshakeType::kRefuse, body));
  return Fail(std::move(status));
}

Status Handshake::Malformed(std::string_view what, std::string* out) {
  return Refuse(RefusalReason::kMalformed, "malformed handshake",
                Status::Corruption("malformed handshake: " + std::string(what)), out);
}

Status Handshake::Start(std::string* out) {
  TIDEMAP_CHECK_MSG(state_ == State::kNew, "Handshake::Start called twice");
  TIDEMAP_CHECK_MSG(config_.trust != nullptr, "HandshakeConfig::trust is required");
  crypto::PublicKey derived{};
  Status key_ok = crypto::PublicKeyFromSecret(config_.secret_key, &derived);
  if (!key_ok.ok()) return Fail(key_ok.WithContext("handshake config"));
  if (derived != config_.public_key) {
    return Fail(
        Status::InvalidArgument("handshake config: public key does not match the secret key"));
  }
  if (config_.handshake_bytes_max < kHandshakeBytesMaxMin) {
    return Fail(Status::InvalidArgument(
        "handshake config: handshake_bytes_max " + std::to_string(config_.handshake_bytes_max) +
        " is below the minimum " + std::to_string(kHandshakeBytesMaxMin)));
  }
  if (role_ == Role::kResponder) {
    state_ = State::kAwaitHello;
    return Status::Ok();
  }
  ephemeral_.emplace(NewEphemeral());
  own_ephemeral_public_ = ephemeral_->public_key();
  std::string body = VersionBytes(version_);
  body.append(AsChars(config_.public_key));
  body.append(AsChars(own_ephemeral_public_));
  out->append(internal::EncodeHandshakeMessage(HandshakeType::kHello, body));
  state_ = State::kAwaitResponderProof;
  return Status::Ok();
}

crypto::KxKeyPair Handshake::NewEphemeral() const {
  return ephemeral_seed_ ? crypto::KxKeyPair::FromSeedForTesting(*ephemeral_seed_)
                         : crypto::KxKeyPair::Generate();
}

Status Handshake::Feed(std::string_view in, std::string* out, size_t* consumed) {
  TIDEMAP_CHECK_MSG(state_ != State::kNew, "Handshake::Feed before Start");
  *consumed = 0;
  while (state_ != State::kDone && state_ != State::kFailed) {
    const size_t target =
        header_parsed_ ? kHandshakeHeaderBytes + in_body_bytes_ : kHandshakeHeaderBytes;
    if (in_.size() < target) {
      if (in.empty()) break;
      const size_t n = std::min(target - in_.size(), in.size());
      in_.append(in.data(), n);
      in.remove_prefix(n);
      *consumed += n;
      // The magic is checked as its bytes arrive (ParseHeader checks the
      // rest): bytes that cannot start a header end the handshake at once,
      // not after the handshake timeout while holding a pending slot. The
      // input counts as consumed through the first byte that breaks the
      // magic, however the bytes were split into calls.
      if (!header_parsed_) {
        const std::string_view head =
            std::string_view(in_).substr(0, std::min(in_.size(), kHandshakeMagic.size()));
        const size_t good = static_cast<size_t>(
            std::mismatch(head.begin(), head.end(), kHandshakeMagic.begin()).first - head.begin());
        if (good < head.size()) {
          *consumed -= in_.size() - (good + 1);
          return Malformed("bad magic (not a tidemap peer?)", out);
        }
      }
      if (in_.size() < target) break;
    }
    if (!header_parsed_) {
      TIDEMAP_RETURN_IF_ERROR(ParseHeader(out));
      continue;
    }
    const std::string message = std::move(in_);
    in_.clear();
    header_parsed_ = false;
    ++messages_received_;
    TIDEMAP_RETURN_IF_ERROR(
        HandleMessage(in_type_, std::string_view(message).substr(kHandshakeHeaderBytes), out));
  }
  return status_;
}

// Checks the complete header in in_ against the state (Feed checked the
// magic as it arrived): a type the state expects and a length within the
// limit, before the body is buffered.
Status Handshake::ParseHeader(std::string* out) {
  in_type_ = static_cast<uint8_t>(in_[4]);
  in_body_bytes_ = DecodeFixed32BE(in_.data() + 5);
  const size_t message_bytes = kHandshakeHeaderBytes + in_body_bytes_;
  if (message_bytes > config_.handshake_bytes_max) {
    return Refuse(RefusalReason::kTooLarge, "handshake message too large",
                  Status::Refused("handshake message of " + std::to_string(message_bytes) +
                                  " bytes exceeds handshake_bytes_max " +
                                  std::to_string(config_.handshake_bytes_max)),
                  out);
  }
  HandshakeType expected = HandshakeType::kHello;
  switch (state_) {
    case State::kAwaitHello:
      expected = HandshakeType::kHello;
      break;
    case State::kAwaitResponderProof:
      expected = HandshakeType::kResponderProof;
      break;
    case State::kAwaitInitiatorProof:
      expected = HandshakeType::kInitiatorProof;
      break;
    case State::kAwaitAccept:
      expected = HandshakeType::kAccept;
      break;
    default:
      TIDEMAP_CHECK_MSG(false, "handshake header parsed in a final state");
  }
  const bool refusal_allowed = state_ != State::kAwaitHello;
  if (in_type_ != static_cast<uint8_t>(expected) &&
      !(refusal_allowed && in_type_ == static_cast<uint8_t>(HandshakeType::kRefuse))) {
    return Malformed(std::string("expected ") + TypeName(static_cast<uint8_t>(expected)) +
                         ", got message type " + std::to_string(in_type_),
                     out);
  }
  header_parsed_ = true;
  in_.reserve(message_bytes);
  return Status::Ok();
}

Status Handshake::HandleMessage(uint8_t type, std::string_view body, std::string* out) {
  switch (static_cast<HandshakeType>(type)) {
    case HandshakeType::kHello:
      return OnHello(body, out);
    case HandshakeType::kResponderProof:
      return OnResponderProof(body, out);
    case HandshakeType::kInitiatorProof:
      return OnInitiatorProof(body, out);
    case HandshakeType::kAccept:
      return OnAccept(body, out);
    case HandshakeType::kRefuse:
      return OnRefuse(body);
  }
  TIDEMAP_CHECK_MSG(false, "ParseHeader let an unknown message type through");
  return Status::Internal("unreachable");
}

Status Handshake::CheckPeerKey(std::string* out) {
  if (peer_static_ == config_.public_key) {
    return Refuse(RefusalReason::kSelf, "peer is this node", Status::Refused("peer is this node"),
                  out);
  }
  if (!config_.trust->Contains(peer_static_)) {
    const std::string key = crypto::PublicKeyToText(peer_static_);
    return Refuse(RefusalReason::kUntrusted, "untrusted key " + key,
                  Status::Refused("untrusted peer " + key), out);
  }
  return Status::Ok();
}

void Handshake::SetTranscript(const crypto::KxPublicKey& initiator_ephemeral,
                              const crypto::KxPublicKey& responder_ephemeral) {
  const bool initiator = role_ == Role::kInitiator;
  const crypto::PublicKey& initiator_static = initiator ? config_.public_key : peer_static_;
  const crypto::PublicKey& responder_static = initiator ? peer_static_ : config_.public_key;
  const std::string version = VersionBytes(version_);
  transcript_ = crypto::GenericHash({kTranscriptLabel, version, AsChars(initiator_static),
                                     AsChars(responder_static), AsChars(initiator_ephemeral),
                                     AsChars(responder_ephemeral)});
}

Status Handshake::DeriveKeys(const crypto::KxPublicKey& peer_ephemeral, std::string* out) {
  const bool initiator = role_ == Role::kInitiator;
  crypto::SymmetricKey rx, tx;
  const Status exchanged = initiator ? ephemeral_->ClientSessionKeys(peer_ephemeral, &rx, &tx)
                                     : ephemeral_->ServerSessionKeys(peer_ephemeral, &rx, &tx);
  ephemeral_.reset();  // its secret is not needed again
  if (!exchanged.ok()) return Malformed("unacceptable ephemeral key", out);
  const std::string_view th = AsChars(transcript_);
  // crypto_kx gives the initiator's tx to the responder as rx, so each direction's
  // key comes from the same secret on both sides.
  const crypto::SymmetricKey i2r =
      crypto::DeriveKey(initiator ? tx : rx, {kInitiatorToResponderLabel, th});
  const crypto::SymmetricKey r2i =
      crypto::DeriveKey(initiator ? rx : tx, {kResponderToInitiatorLabel, th});
  send_key_ = initiator ? i2r : r2i;
  recv_key_ = initiator ? r2i : i2r;
  return Status::Ok();
}

Status Handshake::OnHello(std::string_view body, std::string* out) {
  uint32_t version = 0;
  if (!GetFixed32BE(&body, &version)) return Malformed("hello without a version", out);
  if (version != version_) {
    return Refuse(RefusalReason::kVersion, VersionMismatch(version, version_),
                  Status::Refused(VersionMismatch(version, version_)), out);
  }
  if (body.size() != kHelloBytes - kVersionBytes) {
    return Malformed("hello of " + std::to_string(body.size() + kVersionBytes) +
                         " bytes, expected " + std::to_string(kHelloBytes),
                     out);
  }
  crypto::KxPublicKey initiator_ephemeral{};
  CopyOut(&body, &peer_static_);
  CopyOut(&body, &initiator_ephemeral);
  TIDEMAP_RETURN_IF_ERROR(CheckPeerKey(out));

  ephemeral_.emplace(NewEphemeral());
  own_ephemeral_public_ = ephemeral_->public_key();
  SetTranscript(initiator_ephemeral, own_ephemeral_public_);
  TIDEMAP_RETURN_IF_ERROR(DeriveKeys(initiator_ephemeral, out));
  std::string signature;
  TIDEMAP_RETURN_IF_ERROR(Sign(kResponderSignLabel, &signature));
  std::string reply = VersionBytes(version_);
  reply.append(AsChars(config_.public_key));
  reply.append(AsChars(own_ephemeral_public_));
  reply.append(signature);
  out->append(internal::EncodeHandshakeMessage(HandshakeType::kResponderProof, reply));
  state_ = State::kAwaitInitiatorProof;
  return Status::Ok();
}

Status Handshake::Sign(std::string_view label, std::string* signature) {
  std::string message(label);
  message.append(AsChars(transcript_));
  const Status signed_ok = crypto::Sign(config_.secret_key, message, signature);
  if (!signed_ok.ok()) return Fail(signed_ok.WithContext("handshake"));
  return Status::Ok();
}

bool Handshake::VerifyPeer(std::string_view label, std::string_view signature) const {
  std::string message(label);
  message.append(AsChars(transcript_));
  return crypto::Verify(peer_static_, message, signature);
}

Status Handshake::BadSignature(std::string* out) {
  return Refuse(RefusalReason::kBadSignature, "bad signature",
                Status::Refused("bad signature from peer " + crypto::PublicKeyToText(peer_static_)),
                out);
}

Status Handshake::OnResponderProof(std::string_view body, std::string* out) {
  uint32_t version = 0;
  if (!GetFixed32BE(&body, &version)) return Malformed("responder proof without a version", out);
  if (version != version_) {
    return Refuse(RefusalReason::kVersion, VersionMismatch(version, version_),
                  Status::Refused(VersionMismatch(version, version_)), out);
  }
  if (body.size() != kResponderProofBytes - kVersionBytes) {
    return Malformed("responder proof of " + std::to_string(body.size() + kVersionBytes) +
                         " bytes, expected " + std::to_string(kResponderProofBytes),
                     out);
  }
  crypto::KxPublicKey responder_ephemeral{};
  CopyOut(&body, &peer_static_);
  CopyOut(&body, &responder_ephemeral);
  const std::string_view signature = body;
  TIDEMAP_RETURN_IF_ERROR(CheckPeerKey(out));
  // The transcript needs no secret: a forged proof is refused before any key is derived.
  SetTranscript(own_ephemeral_public_, responder_ephemeral);
  if (!VerifyPeer(kResponderSignLabel, signature)) return BadSignature(out);
  TIDEMAP_RETURN_IF_ERROR(DeriveKeys(responder_ephemeral, out));

  std::string reply;
  TIDEMAP_RETURN_IF_ERROR(Sign(kInitiatorSignLabel, &reply));
  push_.emplace(send_key_, &reply);  // appends our stream's header
  out->append(internal::EncodeHandshakeMessage(HandshakeType::kInitiatorProof, reply));
  state_ = State::kAwaitAccept;
  return Status::Ok();
}

Status Handshake::OnInitiatorProof(std::string_view body, std::string* out) {
  if (body.size() != kInitiatorProofBytes) {
    return Malformed("initiator proof of " + std::to_string(body.size()) + " bytes, expected " +
                         std::to_string(kInitiatorProofBytes),
                     out);
  }
  if (!VerifyPeer(kInitiatorSignLabel, body.substr(0, crypto::kSignatureBytes))) {
    return BadSignature(out);
  }
  Result<crypto::SecretStreamPull> pull =
      crypto::SecretStreamPull::Start(recv_key_, body.substr(crypto::kSignatureBytes));
  if (!pull.ok()) return Malformed("bad stream header: " + pull.status().message(), out);
  pull_.emplace(std::move(pull).value());
  std::string reply;
  push_.emplace(send_key_, &reply);
  out->append(internal::EncodeHandshakeMessage(HandshakeType::kAccept, reply));
  state_ = State::kDone;
  return Status::Ok();
}

Status Handshake::OnAccept(std::string_view body, std::string* out) {
  if (body.size() != kAcceptBytes) {
    return Malformed("accept of " + std::to_string(body.size()) + " bytes, expected " +
                         std::to_string(kAcceptBytes),
                     out);
  }
  Result<crypto::SecretStreamPull> pull = crypto::SecretStreamPull::Start(recv_key_, body);
  if (!pull.ok()) return Malformed("bad stream header: " + pull.status().message(), out);
  pull_.emplace(std::move(pull).value());
  state_ = State::kDone;
  return Status::Ok();
}

Status Handshake::OnRefuse(std::string_view body) {
  const size_t body_bytes = body.size();
  uint8_t reason = 0;
  uint32_t version = 0;
  if (!GetByte(&body, &reason) || !GetFixed32BE(&body, &version)) {
    return Fail(Status::Corruption("malformed handshake: refusal of " + std::to_string(body_bytes) +
                                   " bytes"));
  }
  refused_by_peer_ = true;
  if (reason == static_cast<uint8_t>(RefusalReason::kVersion)) {
    return Fail(Status::Refused(VersionMismatch(version, version_) + " (refused by peer)"));
  }
  return Fail(Status::Refused("refused by peer: " + Printable(body, kRefusalTextBytesMax)));
}

Result<std::unique_ptr<SecureChannel>> Handshake::TakeChannel(size_t frame_bytes_max) {
  if (!done()) return Status::InvalidArgument("TakeChannel before the handshake is done");
  if (channel_taken_) return Status::InvalidArgument("TakeChannel called twice");
  if (frame_bytes_max < SecureChannel::kFrameBytesMaxMin ||
      frame_bytes_max > SecureChannel::kFrameBytesMaxMax) {
    return Status::InvalidArgument("frame_bytes_max " + std::to_string(frame_bytes_max) +
                                   " is out of range");
  }
  channel_taken_ = true;
  auto channel =
      std::make_unique<SecureChannel>(std::move(*push_), std::move(*pull_), frame_bytes_max);
  push_.reset();
  pull_.reset();
  send_key_ = crypto::SymmetricKey();
  recv_key_ = crypto::SymmetricKey();
  return channel;
}

}  // namespace tidemap::net
