// SecureChannel: the encrypted, authenticated frame stream a connection carries
// after its handshake. Sans-I/O: bytes in, messages out, frames out; the caller
// owns the socket.
//
// Wire format, one direction (grammar):
//
//   stream  := frame* [final]             ; the stream's secretstream header went
//                                         ; in the handshake (see net/handshake.h)
//   frame   := length:u32be body:length   ; body = secretstream ciphertext of one
//                                         ; message, TAG_MESSAGE
//   final   := length:u32be body:length   ; an empty message with TAG_FINAL: the
//                                         ; sender closed the stream cleanly
//   body    := crypto_secretstream_xchacha20poly1305_push(plaintext, ad = the
//              frame's 4 length bytes)    ; plaintext.size() + 17 bytes
//
// Every frame is chained to the ones before it, so a tampered, dropped,
// reordered or replayed frame fails authentication, and a stream cut short is
// recognisable by its missing final frame (peer_closed() stays false).
// `length` is at most frame_bytes_max and at least 17 (the secretstream overhead).
#ifndef TIDEMAP_NET_FRAME_H_
#define TIDEMAP_NET_FRAME_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>

#include <tidemap/base/crypto.h>
#include <tidemap/base/status.h>

namespace tidemap::net {

// One connection's encrypted channel, both directions. Made by
// Handshake::TakeChannel (or, in tests, net/frame_internal.h). Not thread-safe:
// one owner (the connection's strand) calls everything.
class SecureChannel {
 public:
  // The big-endian length prefix in front of every frame body.
  static constexpr size_t kFrameHeaderBytes = 4;
  // What a frame adds to its plaintext: the length prefix and the secretstream overhead.
  static constexpr size_t kFrameOverheadBytes = kFrameHeaderBytes + crypto::kStreamOverheadBytes;
  // The smallest and largest frame_bytes_max a channel accepts.
  static constexpr size_t kFrameBytesMaxMin = crypto::kStreamOverheadBytes;
  static constexpr size_t kFrameBytesMaxMax = UINT32_MAX;

  // `push` encrypts what we send, `pull` decrypts what the peer sends (both
  // already started, their headers exchanged). `frame_bytes_max` bounds the
  // body of every frame, either direction (the length prefix's value), and must be
  // within [kFrameBytesMaxMin, kFrameBytesMaxMax].
  SecureChannel(crypto::SecretStreamPush push, crypto::SecretStreamPull pull,
                size_t frame_bytes_max);
  SecureChannel(const SecureChannel&) = delete;
  SecureChannel& operator=(const SecureChannel&) = delete;

  size_t frame_bytes_max() const { return frame_bytes_max_; }
  // The largest plaintext one frame carries: frame_bytes_max - 17.
  size_t plaintext_bytes_max() const { return frame_bytes_max_ - crypto::kStreamOverheadBytes; }

  // ---- Outgoing ----

  // Appends one frame carrying `plaintext` to *out (plaintext.size() +
  // kFrameOverheadBytes bytes). InvalidArgument, with nothing appended, when the
  // body would exceed frame_bytes_max or after SealFinal. `plaintext` must not
  // point into *out.
  Status Seal(std::string_view plaintext, std::string* out);
  // Appends the closing frame (empty, TAG_FINAL). Nothing may be sealed after it
  // (InvalidArgument, as is a second SealFinal).
  Status SealFinal(std::string* out);
  bool sealed_final() const { return sealed_final_; }

  // ---- Incoming ----

  // Takes bytes received from the peer, any split. Complete frames are decrypted
  // at once and queued for Next; at most one partial frame is held. A length
  // prefix over frame_bytes_max is refused (Refused) as soon as its 4 bytes are
  // in, before anything is allocated for its body; a failed authentication is
  // Corruption; bytes after the peer's closing frame are Corruption. Any error
  // kills the channel: this and every later Feed returns it, and Next returns it
  // once the messages decrypted before it are taken.
  // To keep the buffer within one frame, read BytesWanted() bytes at a time.
  Status Feed(std::string_view bytes);

  // The next decrypted message, in order, or nullopt when more bytes are needed
  // (or the peer closed and everything was delivered). Once the channel is dead
  // and its queue empty: its error. Messages are the same however the input was
  // split across Feed calls, and so is the error.
  Result<std::optional<std::string>> Next();

  // How many more bytes complete the length prefix or body being received:
  // between 1 and frame_bytes_max, or 0 when nothing more is expected (the peer
  // closed, or the channel is dead). Reading exactly this many bytes and feeding
  // them never buffers more than one frame.
  size_t BytesWanted() const;

  // True once the peer's closing (TAG_FINAL) frame arrived intact. A stream that
  // just stops (a cut connection, a truncating attacker) never sets it.
  bool peer_closed() const { return peer_closed_; }
  // Bytes held: the partial frame being received plus decrypted messages Next has
  // not returned yet.
  size_t buffered_bytes() const;
  // OK, or the error that killed the channel.
  const Status& status() const { return status_; }

 private:
  Status Fail(Status status);
  Status OpenFrame();

  crypto::SecretStreamPush push_;
  crypto::SecretStreamPull pull_;
  const size_t frame_bytes_max_;
  bool sealed_final_ = false;

  Status status_;
  bool peer_closed_ = false;
  // The frame being received: its length prefix (complete when header_size_ == 4),
  // then its body.
  char header_[kFrameHeaderBytes] = {};
  size_t header_size_ = 0;
  size_t body_bytes_ = 0;   // the length prefix's value, once header_size_ == 4
  uint64_t frames_in_ = 0;  // frames opened (or tried), for error messages
  std::string body_;
  std::deque<std::string> ready_;  // decrypted, not yet returned by Next
  size_t ready_bytes_ = 0;
};

}  // namespace tidemap::net

#endif  // TIDEMAP_NET_FRAME_H_
