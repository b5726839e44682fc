// One HTTP connection's byte stream, plain TCP or TLS over TCP, behind one
// type (not installed). It models Asio's AsyncReadStream and AsyncWriteStream,
// so Beast's http::async_read/async_write and asio::async_write take it as
// they take a beast::tcp_stream; the server (server/http.cc) and the client
// (server/http_client.cc) use it alike.
//
// Timeouts are the TCP layer's (beast::tcp_stream's expires_after), which
// bound the TLS records read and written through it as well.
//
// Threading and lifetime: like beast::tcp_stream, one thread (or strand) at a
// time, with at most one read and one write outstanding. The ssl::context a
// TLS stream is made with must outlive the stream.
#ifndef TIDEMAP_SERVER_HTTP_STREAM_INTERNAL_H_
#define TIDEMAP_SERVER_HTTP_STREAM_INTERNAL_H_

// Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility>.
#include <utility>

#include <boost/asio/async_result.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <cstddef>
#include <optional>

namespace tidemap {

class HttpStream {
 public:
  using TcpStream = boost::beast::tcp_stream;
  using TlsStream = boost::beast::ssl_stream<TcpStream>;
  using executor_type = TcpStream::executor_type;

  // A plain stream over `socket` (open or not yet connected).
  explicit HttpStream(boost::asio::ip::tcp::socket socket) { plain_.emplace(std::move(socket)); }
  // A TLS stream over `socket`; the handshake is the caller's (tls()). `tls`
  // is borrowed and must outlive the stream.
  HttpStream(boost::asio::ip::tcp::socket socket, boost::asio::ssl::context& tls) {
    tls_.emplace(std::move(socket), tls);
  }

  // The TCP layer: connect, timeouts, and bytes read before TLS starts.
  TcpStream& tcp() { return tls_ ? boost::beast::get_lowest_layer(*tls_) : *plain_; }
  // The TLS layer, or nullptr for a plain stream.
  TlsStream* tls() { return tls_ ? &*tls_ : nullptr; }

  executor_type get_executor() { return tcp().get_executor(); }
  template <typename Duration>
  void expires_after(Duration d) {
    tcp().expires_after(d);
  }
  void expires_never() { tcp().expires_never(); }
  boost::asio::ip::tcp::socket& socket() { return tcp().socket(); }
  // Closes the socket at once (no TLS close_notify): pending operations fail.
  void close() { tcp().close(); }

  template <typename MutableBuffers, typename Token>
  auto async_read_some(const MutableBuffers& buffers, Token&& token) {
    return boost::asio::async_initiate<Token, void(boost::beast::error_code, std::size_t)>(
        [this](auto handler, const MutableBuffers& b) {
          if (tls_) {
            tls_->async_read_some(b, std::move(handler));
          } else {
            plain_->async_read_some(b, std::move(handler));
          }
        },
        token, buffers);
  }

  template <typename ConstBuffers, typename Token>
  auto async_write_some(const ConstBuffers& buffers, Token&& token) {
    return boost::asio::async_initiate<Token, void(boost::beast::error_code, std::size_t)>(
        [this](auto handler, const ConstBuffers& b) {
          if (tls_) {
            tls_->async_write_some(b, std::move(handler));
          } else {
            plain_->async_write_some(b, std::move(handler));
          }
        },
        token, buffers);
  }

 private:
  std::optional<TcpStream> plain_;  // exactly one of the two is set
  std::optional<TlsStream> tls_;
};

}  // namespace tidemap

#endif  // TIDEMAP_SERVER_HTTP_STREAM_INTERNAL_H_
