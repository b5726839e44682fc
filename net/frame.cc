#include <tidemap/net/frame.h>

#include <algorithm>
#include <utility>

#include <tidemap/base/check.h>
#include <tidemap/base/coding.h>

namespace tidemap::net {
namespace {

// A body buffer that grew past this is released after its frame, so one large
// frame does not pin its size for the rest of the connection.
constexpr size_t kBodyCapacityKeptMax = 64 * 1024;

}  // namespace

SecureChannel::SecureChannel(crypto::SecretStreamPush push, crypto::SecretStreamPull pull,
                             size_t frame_bytes_max)
    : push_(std::move(push)), pull_(std::move(pull)), frame_bytes_max_(frame_bytes_max) {
  TIDEMAP_CHECK(frame_bytes_max >= kFrameBytesMaxMin && frame_bytes_max <= kFrameBytesMaxMax);
}

Status SecureChannel::Seal(std::string_view plaintext, std::string* out) {
  if (sealed_final_) {
    return Status::InvalidArgument("channel closed: nothing is sealed after the closing frame");
  }
  if (plaintext.size() > plaintext_bytes_max()) {
    return Status::InvalidArgument("message of " + std::to_string(plaintext.size()) +
                                   " bytes does not fit a frame (frame_bytes_max " +
                                   std::to_string(frame_bytes_max_) + ")");
  }
  const size_t start = out->size();
  PutFixed32BE(out, static_cast<uint32_t>(plaintext.size() + crypto::kStreamOverheadBytes));
  // The length prefix is authenticated with the body (a copy: *out may reallocate in Push).
  const std::string prefix = out->substr(start, kFrameHeaderBytes);
  push_.Push(plaintext, prefix, crypto::StreamTag::kMessage, out);
  return Status::Ok();
}

Status SecureChannel::SealFinal(std::string* out) {
  if (sealed_final_) {
    return Status::InvalidArgument("channel closed: the closing frame was sealed already");
  }
  const size_t start = out->size();
  PutFixed32BE(out, static_cast<uint32_t>(crypto::kStreamOverheadBytes));
  const std::string prefix = out->substr(start, kFrameHeaderBytes);
  push_.Push({}, prefix, crypto::StreamTag::kFinal, out);
  sealed_final_ = true;
  return Status::Ok();
}

// Kills the channel. Messages decrypted before the error stay queued: they
// passed authentication in order, and Next hands them out before the error, so
// what a caller sees does not depend on how the bytes were split.
Status SecureChannel::Fail(Status status) {
  status_ = std::move(status);
  body_ = std::string();
  return status_;
}

Status SecureChannel::Feed(std::string_view bytes) {
  if (!status_.ok()) return status_;
  while (!bytes.empty()) {
    if (peer_closed_) {
      return Fail(Status::Corruption("data after the peer's closing frame"));
    }
    if (header_size_ < kFrameHeaderBytes) {
      const size_t n = std::min(kFrameHeaderBytes - header_size_, bytes.size());
      std::copy_n(bytes.data(), n, header_ + header_size_);
      header_size_ += n;
      bytes.remove_prefix(n);
      if (header_size_ < kFrameHeaderBytes) break;
      body_bytes_ = DecodeFixed32BE(header_);
      // Checked here, before the body buffer is sized for it.
      if (body_bytes_ > frame_bytes_max_) {
        return Fail(Status::Refused("frame of " + std::to_string(body_bytes_) +
                                    " bytes exceeds frame_bytes_max " +
                                    std::to_string(frame_bytes_max_)));
      }
      if (body_bytes_ < crypto::kStreamOverheadBytes) {
        return Fail(Status::Corruption(
            "frame of " + std::to_string(body_bytes_) + " bytes is shorter than its " +
            std::to_string(crypto::kStreamOverheadBytes) + "-byte authentication tag"));
      }
      body_.clear();
      body_.reserve(body_bytes_);
      continue;
    }
    const size_t n = std::min(body_bytes_ - body_.size(), bytes.size());
    body_.append(bytes.data(), n);
    bytes.remove_prefix(n);
    if (body_.size() == body_bytes_) TIDEMAP_RETURN_IF_ERROR(OpenFrame());
  }
  return Status::Ok();
}

// Decrypts the complete frame in header_ and body_, queues its message and
// readies the buffers for the next frame.
Status SecureChannel::OpenFrame() {
  std::string plaintext;
  crypto::StreamTag tag = crypto::StreamTag::kMessage;
  const Status pulled =
      pull_.Pull(body_, std::string_view(header_, kFrameHeaderBytes), &plaintext, &tag);
  ++frames_in_;
  if (!pulled.ok()) {
    return Fail(Status::Corruption("frame " + std::to_string(frames_in_) + " of " +
                                   std::to_string(body_bytes_) + " bytes: " + pulled.message()));
  }
  header_size_ = 0;
  body_bytes_ = 0;
  if (body_.capacity() > kBodyCapacityKeptMax) {
    body_ = std::string();
  } else {
    body_.clear();
  }
  if (tag == crypto::StreamTag::kFinal) {
    if (!plaintext.empty()) {
      return Fail(Status::Corruption("closing frame carries " + std::to_string(plaintext.size()) +
                                     " bytes, expected none"));
    }
    peer_closed_ = true;
    return Status::Ok();
  }
  ready_bytes_ += plaintext.size();
  ready_.push_back(std::move(plaintext));
  return Status::Ok();
}

Result<std::optional<std::string>> SecureChannel::Next() {
  if (ready_.empty()) {
    if (!status_.ok()) return status_;
    return std::optional<std::string>();
  }
  std::string message = std::move(ready_.front());
  ready_.pop_front();
  ready_bytes_ -= message.size();
  return std::optional<std::string>(std::move(message));
}

size_t SecureChannel::BytesWanted() const {
  if (!status_.ok() || peer_closed_) return 0;
  if (header_size_ < kFrameHeaderBytes) return kFrameHeaderBytes - header_size_;
  return body_bytes_ - body_.size();
}

size_t SecureChannel::buffered_bytes() const { return header_size_ + body_.size() + ready_bytes_; }

}  // namespace tidemap::net
