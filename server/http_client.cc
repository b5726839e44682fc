#include <tidemap/server/http_client.h>

// Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility>.
#include <utility>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <cctype>
#include <chrono>
#include <exception>
#include <optional>
#include <vector>

#include <nlohmann/json.hpp>

#include <tidemap/server/http_stream_internal.h>
#include <tidemap/server/url.h>

namespace tidemap {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

// Starts one asynchronous operation through `start(handler)` and runs the
// context until it completes; the stream's expiry bounds the wait.
template <typename Start>
beast::error_code RunOne(asio::io_context& ioc, Start start) {
  beast::error_code result = asio::error::would_block;
  start([&result](beast::error_code ec, auto&&...) { result = ec; });
  ioc.restart();
  ioc.run();
  return result;
}

template <typename Parser>
HttpReply ToReply(Parser& parser) {
  HttpReply reply;
  auto& res = parser.get();
  reply.status = static_cast<int>(res.result_int());
  for (const auto& field : res) {
    std::string name(field.name_string().data(), field.name_string().size());
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    reply.headers[name] = std::string(field.value().data(), field.value().size());
  }
  return reply;
}

// The node's address without its scheme, and whether it speaks TLS.
struct Endpoint {
  std::string address;  // HOST:PORT
  bool tls = false;
};

Endpoint SplitScheme(const HttpClientOptions& options) {
  constexpr std::string_view kHttps = "https://", kHttp = "http://";
  std::string_view a = options.address;
  bool tls = !options.ca_file.empty();
  if (a.starts_with(kHttps)) {
    a.remove_prefix(kHttps.size());
    tls = true;
  } else if (a.starts_with(kHttp)) {
    a.remove_prefix(kHttp.size());
  }
  if (a.ends_with('/')) a.remove_suffix(1);
  return Endpoint{std::string(a), tls};
}

// A client TLS context that verifies the node against options.ca_file (or
// the system's CAs).
Result<std::unique_ptr<asio::ssl::context>> ClientTls(const HttpClientOptions& options) {
  auto tls = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
  beast::error_code ec;
  if (options.ca_file.empty()) {
    tls->set_default_verify_paths(ec);
  } else {
    tls->load_verify_file(options.ca_file, ec);
  }
  if (ec) {
    return Status::Unavailable("cannot reach " + options.address + ": CA file " +
                               (options.ca_file.empty() ? "(system)" : options.ca_file) + ": " +
                               ec.message());
  }
  tls->set_verify_mode(asio::ssl::verify_peer);
  return tls;
}

// One request over one connection: `unreachable` turns a failed step into
// the Status HttpCall returns.
class Exchange {
 public:
  // `tls` (borrowed, outlives the exchange) when the node speaks HTTPS.
  Exchange(const HttpClientOptions& options, asio::io_context* ioc, asio::ssl::context* tls)
      : options_(options),
        ioc_(*ioc),
        stream_(tls ? HttpStream(tcp::socket(ioc_), *tls) : HttpStream(tcp::socket(ioc_))),
        timeout_(options.timeout_ms) {}

  Status Unreachable(const std::string& why) const {
    return Status::Unavailable("cannot reach " + options_.address + ": " + why);
  }

  Status Connect(const HostPort& hp) {
    beast::error_code ec;
    tcp::resolver resolver(ioc_);
    const auto endpoints = resolver.resolve(hp.host.empty() ? std::string("127.0.0.1") : hp.host,
                                            std::to_string(hp.port), ec);
    if (ec) return Unreachable("cannot resolve '" + hp.host + "': " + ec.message());
    stream_.expires_after(timeout_);
    ec = RunOne(ioc_,
                [&](auto handler) { stream_.tcp().async_connect(endpoints, std::move(handler)); });
    if (ec) return Unreachable(ec.message());
    return stream_.tls() ? Handshake(hp.host) : Status::Ok();
  }

  // The TLS handshake; the node's certificate must be valid for `host`.
  Status Handshake(const std::string& host) {
    HttpStream::TlsStream& tls = *stream_.tls();
    beast::error_code ec;
    asio::ip::make_address(host, ec);
    // Server Name Indication is for names only, never addresses.
    // (SSL_set_tlsext_host_name, without the macro's old-style cast.)
    if (ec && SSL_ctrl(tls.native_handle(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                       const_cast<char*>(host.c_str())) != 1) {
      return Unreachable("TLS: cannot set the server name " + host);
    }
    tls.set_verify_callback(asio::ssl::host_name_verification(host));
    stream_.expires_after(timeout_);
    ec = RunOne(ioc_, [&](auto handler) {
      tls.async_handshake(asio::ssl::stream_base::client, std::move(handler));
    });
    if (ec) return Unreachable("TLS handshake: " + ec.message());
    return Status::Ok();
  }

  // Sends the request; a request with a body waits for the node's
  // "100 Continue" first, or takes its early final response.
  Result<std::optional<HttpReply>> Send(http::request<http::string_body>& req,
                                        bool expect_continue) {
    http::request_serializer<http::string_body> serializer(req);
    stream_.expires_after(timeout_);
    beast::error_code ec = RunOne(ioc_, [&](auto handler) {
      http::async_write_header(stream_, serializer, std::move(handler));
    });
    if (ec) return Unreachable("sending the request: " + ec.message());
    if (expect_continue) {
      // The node answers "100 Continue" or, having refused the request from
      // its headers, the final response at once.
      http::response_parser<http::empty_body> head;
      head.body_limit(options_.response_bytes_max);
      stream_.expires_after(timeout_);
      ec = RunOne(ioc_, [&](auto handler) {
        http::async_read_header(stream_, buffer_, head, std::move(handler));
      });
      if (ec) return Unreachable("reading the response: " + ec.message());
      if (head.get().result() != http::status::continue_) {
        http::response_parser<http::string_body> parser(std::move(head));
        TIDEMAP_ASSIGN_OR_RETURN(HttpReply reply, Read(parser));
        return std::optional<HttpReply>(std::move(reply));
      }
    }
    if (!serializer.is_done()) {
      stream_.expires_after(timeout_);
      ec = RunOne(
          ioc_, [&](auto handler) { http::async_write(stream_, serializer, std::move(handler)); });
      if (ec) return Unreachable("sending the request: " + ec.message());
    }
    return std::optional<HttpReply>();
  }

  // Reads the reply's head; a 200's body goes to `sink` as it arrives.
  Result<HttpReply> ReadStreamed(const std::function<Status(std::string_view)>& sink) {
    http::response_parser<http::empty_body> head;
    head.body_limit(options_.response_bytes_max);
    stream_.expires_after(timeout_);
    beast::error_code ec = RunOne(ioc_, [&](auto handler) {
      http::async_read_header(stream_, buffer_, head, std::move(handler));
    });
    if (ec) return Unreachable("reading the response: " + ec.message());
    if (head.get().result() != http::status::ok) {
      http::response_parser<http::string_body> parser(std::move(head));
      return Read(parser);
    }
    http::response_parser<http::buffer_body> parser(std::move(head));
    parser.body_limit(boost::none);
    HttpReply reply = ToReply(parser);
    std::vector<char> piece(size_t{1} << 20);
    while (!parser.is_done()) {
      parser.get().body().data = piece.data();
      parser.get().body().size = piece.size();
      stream_.expires_after(timeout_);
      ec = RunOne(ioc_, [&](auto handler) {
        http::async_read(stream_, buffer_, parser, std::move(handler));
      });
      if (ec == http::error::need_buffer) ec = {};
      if (ec) return Unreachable("reading the response: " + ec.message());
      const size_t got = piece.size() - parser.get().body().size;
      if (got > 0) TIDEMAP_RETURN_IF_ERROR(sink(std::string_view(piece.data(), got)));
    }
    return reply;
  }

  Result<HttpReply> ReadReply() {
    http::response_parser<http::string_body> parser;
    parser.body_limit(options_.response_bytes_max);
    return Read(parser);
  }

 private:
  Result<HttpReply> Read(http::response_parser<http::string_body>& parser) {
    stream_.expires_after(timeout_);
    beast::error_code ec = RunOne(ioc_, [&](auto handler) {
      http::async_read(stream_, buffer_, parser, std::move(handler));
    });
    if (ec) return Unreachable("reading the response: " + ec.message());
    HttpReply reply = ToReply(parser);
    reply.body = parser.release().body();
    return reply;
  }

  const HttpClientOptions& options_;
  asio::io_context& ioc_;
  HttpStream stream_;
  beast::flat_buffer buffer_;
  const std::chrono::milliseconds timeout_;
};

http::request<http::string_body> MakeRequest(const HttpClientOptions& options,
                                             const Endpoint& endpoint, std::string_view method,
                                             std::string_view target, std::string_view body,
                                             std::string_view content_type) {
  http::request<http::string_body> req;
  req.method(http::string_to_verb(beast::string_view(method.data(), method.size())));
  req.target(beast::string_view(target.data(), target.size()));
  req.version(11);
  req.set(http::field::host, endpoint.address);
  req.set(http::field::user_agent, "tidemap-cli");
  if (!options.bearer_token.empty()) {
    req.set(http::field::authorization, "Bearer " + options.bearer_token);
  }
  req.keep_alive(false);
  if (!content_type.empty()) {
    req.set(http::field::content_type,
            beast::string_view(content_type.data(), content_type.size()));
  }
  req.body() = std::string(body);
  req.prepare_payload();
  if (!body.empty()) req.set(http::field::expect, "100-continue");
  return req;
}

}  // namespace

std::string HttpReply::Header(const std::string& name) const {
  auto it = headers.find(name);
  return it == headers.end() ? std::string() : it->second;
}

namespace {

// Connects to the node of `options` (TLS when its scheme says so) and runs
// `exchange(Exchange&, const Endpoint&)` on the connection; any exception
// of the network layer becomes Unavailable naming the address.
template <typename Fn>
Result<HttpReply> OverConnection(const HttpClientOptions& options, Fn&& exchange_fn) {
  const Endpoint endpoint = SplitScheme(options);
  TIDEMAP_ASSIGN_OR_RETURN(HostPort hp, ParseHostPort(endpoint.address));
  try {
    std::unique_ptr<asio::ssl::context> tls;
    if (endpoint.tls) {
      TIDEMAP_ASSIGN_OR_RETURN(tls, ClientTls(options));
    }
    asio::io_context ioc;
    Exchange exchange(options, &ioc, tls.get());
    TIDEMAP_RETURN_IF_ERROR(exchange.Connect(hp));
    return exchange_fn(exchange, endpoint);
  } catch (const std::exception& e) {
    return Status::Unavailable("cannot reach " + options.address + ": " + e.what());
  }
}

}  // namespace

Result<HttpReply> HttpCall(const HttpClientOptions& options, std::string_view method,
                           std::string_view target, std::string_view body,
                           std::string_view content_type) {
  return OverConnection(
      options, [&](Exchange& exchange, const Endpoint& endpoint) -> Result<HttpReply> {
        http::request<http::string_body> req =
            MakeRequest(options, endpoint, method, target, body, content_type);
        TIDEMAP_ASSIGN_OR_RETURN(std::optional<HttpReply> early, exchange.Send(req, !body.empty()));
        if (early.has_value()) return std::move(*early);
        return exchange.ReadReply();
      });
}

Result<HttpReply> HttpGetStreamed(const HttpClientOptions& options, std::string_view target,
                                  const std::function<Status(std::string_view)>& sink) {
  return OverConnection(options,
                        [&](Exchange& exchange, const Endpoint& endpoint) -> Result<HttpReply> {
                          http::request<http::string_body> req =
                              MakeRequest(options, endpoint, "GET", target, {}, {});
                          TIDEMAP_RETURN_IF_ERROR(exchange.Send(req, false).status());
                          return exchange.ReadStreamed(sink);
                        });
}

Status ReplyStatus(const HttpReply& reply) {
  if (reply.status >= 200 && reply.status < 300) return Status::Ok();
  std::string message;
  const auto j = nlohmann::json::parse(reply.body, nullptr, /*allow_exceptions=*/false);
  if (j.is_object() && j.contains("error") && j["error"].is_string()) {
    message = j["error"].get<std::string>();
  } else {
    message = "HTTP " + std::to_string(reply.status) +
              (reply.body.empty() ? std::string() : ": " + reply.body.substr(0, 200));
  }
  switch (reply.status) {
    case 404:
      return Status::NotFound(message);
    case 400:
      return Status::InvalidArgument(message);
    case 401:
    case 403:
    case 410:
    case 413:
    case 414:
    case 431:
      return Status::Refused(message);
    case 507:
      return Status::QuotaExceeded(message);
    default:
      return Status::Unavailable(message);
  }
}

}  // namespace tidemap
