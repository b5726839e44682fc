// TLS for the HTTP API: the server's context (certificate chain and private
// key, loaded once at start) and each connection's start, which tells a TLS
// client from a plaintext one by its first byte.
// Asio's awaitable.hpp (Boost 1.74) uses std::exchange without <utility>.
#include <utility>

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>

#include <fcntl.h>
#include <openssl/ssl.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>

#include <tidemap/base/private_file.h>
#include <tidemap/server/http_internal.h>

namespace tidemap {

namespace {

// A PEM private key is a few KiB; a larger file is not one.
constexpr size_t kKeyFileBytesMax = 1 << 20;
// The first byte of a TLS record carrying a handshake (a ClientHello).
constexpr unsigned char kTlsHandshakeRecord = 0x16;
// After the 400 to a plaintext request, its unread bytes are drained for up to
// this long before the close, so the close does not reset the connection
// (and lose the answer).
constexpr auto kPlaintextLingerTime = std::chrono::seconds(1);

// The key file's bytes, after the private-file check.
Result<std::string> ReadKeyFile(const std::string& path) {
  const std::string what = "HTTP TLS key file " + path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::Unavailable(what + ": " + std::strerror(errno));
  const Status mode = CheckPrivateFile(fd, what, path);
  std::string text(kKeyFileBytesMax, '\0');
  const ssize_t n = mode.ok() ? ::read(fd, text.data(), text.size()) : 0;
  const int read_errno = errno;
  ::close(fd);
  TIDEMAP_RETURN_IF_ERROR(mode);
  if (n < 0) return Status::Unavailable(what + ": " + std::strerror(read_errno));
  text.resize(static_cast<size_t>(n));
  return text;
}

}  // namespace

Result<std::unique_ptr<asio::ssl::context>> LoadServerTls(const std::string& cert_file,
                                                          const std::string& key_file) {
  TIDEMAP_ASSIGN_OR_RETURN(std::string key, ReadKeyFile(key_file));
  auto tls = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
  tls->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                   asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                   asio::ssl::context::no_tlsv1_1 | asio::ssl::context::single_dh_use);
  beast::error_code ec;
  tls->use_certificate_chain_file(cert_file, ec);
  if (ec) {
    return Status::Unavailable("HTTP TLS certificate file " + cert_file +
                               ": not a usable PEM certificate: " + ec.message());
  }
  tls->use_private_key(asio::buffer(key), asio::ssl::context::pem, ec);
  if (ec) {
    // OpenSSL says "key values mismatch" for a valid key of another certificate.
    return Status::Unavailable("HTTP TLS key file " + key_file +
                               ": not a usable PEM private key for the certificate in " +
                               cert_file + ": " + ec.message());
  }
  if (SSL_CTX_check_private_key(tls->native_handle()) != 1) {
    return Status::Unavailable("HTTP TLS key file " + key_file +
                               ": does not match the certificate in " + cert_file);
  }
  return tls;
}

asio::awaitable<bool> HttpServer::Impl::StartTls(Conn& conn, beast::flat_buffer& buffer) {
  conn.stream.expires_after(std::chrono::milliseconds(options.request_timeout_ms));
  beast::error_code ec;
  const size_t n = co_await conn.stream.tcp().async_read_some(
      buffer.prepare(1024), asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return false;
  buffer.commit(n);
  const auto* first = static_cast<const unsigned char*>(buffer.data().data());
  if (n == 0 || *first != kTlsHandshakeRecord) {
    if (n > 0 && std::isalpha(*first)) co_await RefusePlaintext(conn);
    co_return false;
  }
  const size_t used = co_await conn.stream.tls()->async_handshake(
      asio::ssl::stream_base::server, buffer.data(), asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return false;
  buffer.consume(used);
  co_return true;
}

asio::awaitable<void> HttpServer::Impl::RefusePlaintext(Conn& conn) {
  {
    MutexLock l(&counters_mu);
    ++counters.refused_connections["http_plaintext_on_tls"];
  }
  const std::string body =
      Dump({{"error", "this port speaks HTTPS: use https:// (a plain HTTP request was sent)"},
            {"code", "invalid_argument"}});
  const std::string text =
      "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: " +
      std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
  auto& tcp_stream = conn.stream.tcp();
  beast::error_code ec;
  co_await asio::async_write(tcp_stream, asio::buffer(text),
                             asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return;
  tcp_stream.socket().shutdown(tcp::socket::shutdown_send, ec);
  tcp_stream.expires_after(kPlaintextLingerTime);
  char sink[4096];
  for (;;) {
    co_await tcp_stream.async_read_some(asio::buffer(sink),
                                        asio::redirect_error(asio::use_awaitable, ec));
    if (ec) break;
  }
}

}  // namespace tidemap
