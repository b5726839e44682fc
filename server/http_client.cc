#include "server/http_client.h"

// Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility>.
#include <utility>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <cctype>
#include <chrono>
#include <exception>
#include <optional>

#include <nlohmann/json.hpp>

#include "server/url.h"

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

}  // namespace

std::string HttpReply::Header(const std::string& name) const {
  auto it = headers.find(name);
  return it == headers.end() ? std::string() : it->second;
}

Result<HttpReply> HttpCall(const HttpClientOptions& options, std::string_view method,
                           std::string_view target, std::string_view body) {
  TIDEMAP_ASSIGN_OR_RETURN(HostPort hp, ParseHostPort(options.address));
  const auto unreachable = [&](const std::string& why) {
    return Status::Unavailable("cannot reach " + options.address + ": " + why);
  };
  try {
    asio::io_context ioc;
    beast::error_code ec;
    tcp::resolver resolver(ioc);
    const auto endpoints = resolver.resolve(hp.host.empty() ? std::string("127.0.0.1") : hp.host,
                                            std::to_string(hp.port), ec);
    if (ec) return unreachable("cannot resolve '" + hp.host + "': " + ec.message());

    const auto timeout = std::chrono::milliseconds(options.timeout_ms);
    beast::tcp_stream stream(ioc);
    stream.expires_after(timeout);
    ec = RunOne(ioc, [&](auto handler) { stream.async_connect(endpoints, std::move(handler)); });
    if (ec) return unreachable(ec.message());

    http::request<http::string_body> req;
    req.method(http::string_to_verb(beast::string_view(method.data(), method.size())));
    req.target(beast::string_view(target.data(), target.size()));
    req.version(11);
    req.set(http::field::host, options.address);
    req.set(http::field::user_agent, "tidemap-cli");
    if (!options.bearer_token.empty()) {
      req.set(http::field::authorization, "Bearer " + options.bearer_token);
    }
    req.keep_alive(false);
    req.body() = std::string(body);
    req.prepare_payload();
    const bool expect_continue = !body.empty();
    if (expect_continue) req.set(http::field::expect, "100-continue");

    beast::flat_buffer buffer;
    http::request_serializer<http::string_body> serializer(req);
    stream.expires_after(timeout);
    ec = RunOne(ioc, [&](auto handler) {
      http::async_write_header(stream, serializer, std::move(handler));
    });
    if (ec) return unreachable("sending the request: " + ec.message());

    // The node answers "100 Continue" or, having refused the request from
    // its headers, the final response at once.
    http::response_parser<http::empty_body> head;
    head.body_limit(options.response_bytes_max);
    bool continued = false;
    if (expect_continue) {
      stream.expires_after(timeout);
      ec = RunOne(ioc, [&](auto handler) {
        http::async_read_header(stream, buffer, head, std::move(handler));
      });
      if (ec) return unreachable("reading the response: " + ec.message());
      continued = head.get().result() == http::status::continue_;
      if (!continued) {
        http::response_parser<http::string_body> parser(std::move(head));
        stream.expires_after(timeout);
        ec = RunOne(ioc, [&](auto handler) {
          http::async_read(stream, buffer, parser, std::move(handler));
        });
        if (ec) return unreachable("reading the response: " + ec.message());
        HttpReply reply = ToReply(parser);
        reply.body = parser.release().body();
        return reply;
      }
    }
    if (!serializer.is_done()) {
      stream.expires_after(timeout);
      ec = RunOne(ioc,
                  [&](auto handler) { http::async_write(stream, serializer, std::move(handler)); });
      if (ec) return unreachable("sending the request: " + ec.message());
    }
    http::response_parser<http::string_body> parser;
    parser.body_limit(options.response_bytes_max);
    stream.expires_after(timeout);
    ec = RunOne(
        ioc, [&](auto handler) { http::async_read(stream, buffer, parser, std::move(handler)); });
    if (ec) return unreachable("reading the response: " + ec.message());
    HttpReply reply = ToReply(parser);
    reply.body = parser.release().body();
    return reply;
  } catch (const std::exception& e) {
    return unreachable(e.what());
  }
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
    default:
      return Status::Unavailable(message);
  }
}

}  // namespace tidemap
