// libFuzzer target for the sync wire codec. Any input: DecodeMessage must
// return (never crash, hang or exceed its limits' memory); whatever it accepts
// must re-encode, and decoding that again must give the same message.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include <tidemap/schemas/codec.h>
#include <tidemap/schemas/messages.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  tidemap::Result<tidemap::msg::Message> m = tidemap::DecodeMessage(bytes);
  if (!m.ok()) return 0;
  tidemap::Result<std::string> again = tidemap::EncodeMessage(*m);
  if (!again.ok()) {
    std::fprintf(stderr, "decoded %s does not re-encode: %s\n", tidemap::msg::BodyName(m->body),
                 again.status().ToString().c_str());
    std::abort();
  }
  tidemap::Result<tidemap::msg::Message> m2 = tidemap::DecodeMessage(*again);
  if (!m2.ok() || !(*m2 == *m)) {
    std::fprintf(stderr, "%s does not survive a re-encode: %s\n", tidemap::msg::BodyName(m->body),
                 m2.ok() ? "different message" : m2.status().ToString().c_str());
    std::abort();
  }
  return 0;
}
