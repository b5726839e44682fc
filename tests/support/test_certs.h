// A test certificate authority and a server certificate signed by it, made
// with the openssl command-line tool (Debian package openssl), for the tests
// of the HTTP API over TLS.
#ifndef TIDEMAP_TESTS_SUPPORT_TEST_CERTS_H_
#define TIDEMAP_TESTS_SUPPORT_TEST_CERTS_H_

#include <string>

namespace tidemap::testing {

struct TestCerts {
  std::string ca;           // the CA's certificate (PEM): what clients verify against
  std::string server_cert;  // for 127.0.0.1 and localhost, signed by the CA (PEM)
  std::string server_key;   // its private key (PEM), mode 0600
};

// Makes the CA and the server's certificate and key in `dir` (which must
// exist), valid for a day. Reports a test failure (with openssl's output)
// and returns paths to missing files when openssl fails.
TestCerts MakeTestCerts(const std::string& dir);

}  // namespace tidemap::testing

#endif  // TIDEMAP_TESTS_SUPPORT_TEST_CERTS_H_
