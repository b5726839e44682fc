// libFuzzer target for SecureChannel's receiving side. Input: mode:u8,
// a 24-byte secretstream header, then the stream (see net_fuzz_keys.h). The
// stream is fed twice to fresh channels under the fixed key: once in chunks
// whose sizes follow from `mode`, once reading exactly BytesWanted() at a time.
// Both runs must deliver the same messages, end in the same state and status
// (the split must not matter), never buffer more than one frame in the second
// run, and never return a message over the frame limit.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tests/fuzz/net_fuzz_keys.h"
#include <tidemap/base/crypto.h>
#include <tidemap/net/frame.h>
#include <tidemap/net/frame_internal.h>

namespace {

using tidemap::net::SecureChannel;

struct Outcome {
  std::vector<std::string> messages;
  std::string status;
  bool peer_closed = false;
};

[[noreturn]] void Die(const char* what) {
  std::fprintf(stderr, "frame_fuzz: %s\n", what);
  std::abort();
}

void Drain(SecureChannel* c, Outcome* o) {
  for (;;) {
    auto m = c->Next();
    if (!m.ok()) {
      o->status = m.status().ToString();
      return;
    }
    if (!m->has_value()) return;
    if ((*m)->size() > c->plaintext_bytes_max()) Die("message over the frame limit");
    o->messages.push_back(std::move(**m));
  }
}

std::unique_ptr<SecureChannel> NewChannel(std::string_view header) {
  auto c = tidemap::net::internal::MakeReceivingChannel(tidemap::fuzz::FrameKey(), header,
                                                        tidemap::fuzz::kFrameFuzzBytesMax);
  if (!c.ok()) Die("MakeReceivingChannel failed on a 24-byte header");
  return std::move(c).value();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using tidemap::crypto::kStreamHeaderBytes;
  if (size < 1 + kStreamHeaderBytes) return 0;
  const uint8_t mode = data[0];
  const std::string_view header(reinterpret_cast<const char*>(data) + 1, kStreamHeaderBytes);
  const std::string_view stream(reinterpret_cast<const char*>(data) + 1 + kStreamHeaderBytes,
                                size - 1 - kStreamHeaderBytes);

  // Run 1: chunks of 1..(mode + 1) bytes, varying (mode 255: everything at once).
  Outcome chunked;
  {
    auto c = NewChannel(header);
    std::string_view rest = stream;
    uint32_t x = mode;
    while (!rest.empty()) {
      x = x * 1103515245u + 12345u;
      const size_t n = mode == 255 ? rest.size() : 1 + (x >> 16) % (size_t{mode} + 1);
      (void)c->Feed(rest.substr(0, n));  // its error reappears from Next
      rest.remove_prefix(std::min(n, rest.size()));
      Drain(c.get(), &chunked);
      if (!chunked.status.empty()) break;
    }
    chunked.peer_closed = c->peer_closed();
  }

  // Run 2: exactly what the channel asks for, as the transport reads.
  Outcome wanted;
  {
    auto c = NewChannel(header);
    std::string_view rest = stream;
    while (!rest.empty()) {
      const size_t want = c->BytesWanted();
      // Once it wants nothing (closed or dead), the rest goes in at once.
      const size_t n = want == 0 ? rest.size() : want;
      if (want > tidemap::fuzz::kFrameFuzzBytesMax) Die("wants more than one frame body");
      (void)c->Feed(rest.substr(0, n));
      rest.remove_prefix(std::min(n, rest.size()));
      if (c->buffered_bytes() >
          SecureChannel::kFrameHeaderBytes + tidemap::fuzz::kFrameFuzzBytesMax) {
        Die("buffered more than one frame");
      }
      Drain(c.get(), &wanted);
      if (!wanted.status.empty()) break;
    }
    wanted.peer_closed = c->peer_closed();
  }

  if (chunked.messages != wanted.messages) Die("messages depend on the split");
  if (chunked.status != wanted.status) {
    std::fprintf(stderr, "'%s' vs '%s'\n", chunked.status.c_str(), wanted.status.c_str());
    Die("status depends on the split");
  }
  if (chunked.peer_closed != wanted.peer_closed) Die("peer_closed depends on the split");
  if (chunked.peer_closed && !chunked.status.empty() &&
      chunked.status.find("after the peer's closing frame") == std::string::npos) {
    Die("closed and failed for another reason");
  }
  return 0;
}
