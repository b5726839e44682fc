// BudgetedBody: a Beast body type for the requests the HTTP server reads (not
// installed). Like http::string_body, but every byte of the string's capacity
// is first taken from a ByteReservation (server/byte_budget_internal.h), so
// request bodies in flight across all connections stay within the server's budget:
// a Content-Length body allocates exactly its length, which the server holds
// before it reads any of it; a chunked body holds each growth of its
// capacity before allocating it. When the reservation cannot grow, reading
// fails (`over_budget` is set) and nothing more is allocated.
//
// Threading and lifetime: used on the I/O thread only; `reservation` is
// borrowed and must outlive the reading (the server keeps it until the
// request is answered, so the body's memory stays counted while it lives).
#ifndef TIDEMAP_SERVER_HTTP_BODY_INTERNAL_H_
#define TIDEMAP_SERVER_HTTP_BODY_INTERNAL_H_

// Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility>.
#include <utility>

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/optional.hpp>
#include <boost/system/error_code.hpp>

#include <algorithm>
#include <cstdint>
#include <string>

#include <tidemap/base/check.h>
#include <tidemap/server/byte_budget_internal.h>

namespace tidemap {

struct BudgetedBody {
  struct value_type {
    std::string bytes;
    ByteReservation* reservation = nullptr;  // required before reading
    uint64_t bytes_max = 0;                  // the body limit; capacity never grows past it
    bool over_budget = false;                // reading failed: the budget had no room
  };

  static uint64_t size(const value_type& body) { return body.bytes.size(); }

  class reader {
   public:
    template <bool isRequest, class Fields>
    reader(boost::beast::http::header<isRequest, Fields>&, value_type& body) : body_(body) {}

    void init(const boost::optional<uint64_t>& length, boost::beast::error_code& ec) {
      TIDEMAP_CHECK(body_.reservation != nullptr);
      ec = {};
      if (length.has_value() && *length > 0) Grow(*length, *length, ec);
    }

    template <class ConstBufferSequence>
    size_t put(const ConstBufferSequence& buffers, boost::beast::error_code& ec) {
      ec = {};
      const size_t extra = boost::beast::buffer_bytes(buffers);
      const size_t need = body_.bytes.size() + extra;
      if (need > body_.bytes.capacity()) {
        // Doubling keeps a chunked body's appends linear; the limit caps it.
        const uint64_t doubled = std::max<uint64_t>(need, uint64_t{2} * body_.bytes.capacity());
        Grow(need, std::max<uint64_t>(need, std::min(doubled, body_.bytes_max)), ec);
        if (ec) return 0;
      }
      for (const auto b : boost::beast::buffers_range_ref(buffers)) {
        body_.bytes.append(static_cast<const char*>(b.data()), b.size());
      }
      return extra;
    }

    void finish(boost::beast::error_code& ec) { ec = {}; }

   private:
    // Moves the bytes to a string of capacity `want` (or `need` when the
    // budget cannot spare `want`), held first; a fresh string allocates just
    // what it is asked for.
    void Grow(uint64_t need, uint64_t want, boost::beast::error_code& ec) {
      if (!body_.reservation->GrowTo(want)) {
        want = need;
        if (!body_.reservation->GrowTo(want)) {
          body_.over_budget = true;
          ec = boost::system::errc::make_error_code(boost::system::errc::not_enough_memory);
          return;
        }
      }
      std::string grown;
      grown.reserve(static_cast<size_t>(want));
      grown.append(body_.bytes);
      body_.bytes.swap(grown);
    }

    value_type& body_;
  };
};

}  // namespace tidemap

#endif  // TIDEMAP_SERVER_HTTP_BODY_INTERNAL_H_
