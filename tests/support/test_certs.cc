#include "tests/support/test_certs.h"

#include <sys/stat.h>

#include <gtest/gtest.h>

#include <fstream>
#include <vector>

#include "tests/support/process.h"

namespace tidemap::testing {

namespace {

constexpr const char* kOpenssl = "/usr/bin/openssl";

void Openssl(const std::vector<std::string>& args) {
  const RunResult r = RunProgram(kOpenssl, args);
  EXPECT_EQ(r.exit_code, 0) << "openssl " << args[0] << ": " << r;
}

}  // namespace

TestCerts MakeTestCerts(const std::string& dir) {
  TestCerts c{dir + "/ca.pem", dir + "/server.pem", dir + "/server.key"};
  const std::string ca_key = dir + "/ca.key", csr = dir + "/server.csr", ext = dir + "/server.ext";
  const std::vector<std::string> ec_key = {"-newkey", "ec", "-pkeyopt",
                                           "ec_paramgen_curve:prime256v1", "-nodes"};
  std::vector<std::string> ca_args = {"req", "-x509"};
  ca_args.insert(ca_args.end(), ec_key.begin(), ec_key.end());
  ca_args.insert(ca_args.end(),
                 {"-keyout", ca_key, "-out", c.ca, "-days", "1", "-subj", "/CN=tidemap test CA"});
  Openssl(ca_args);
  std::vector<std::string> csr_args = {"req"};
  csr_args.insert(csr_args.end(), ec_key.begin(), ec_key.end());
  csr_args.insert(csr_args.end(), {"-keyout", c.server_key, "-out", csr, "-subj", "/CN=127.0.0.1"});
  Openssl(csr_args);
  std::ofstream(ext) << "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                        "basicConstraints=CA:FALSE\n"
                        "keyUsage=digitalSignature\n"
                        "extendedKeyUsage=serverAuth\n";
  Openssl({"x509", "-req", "-in", csr, "-CA", c.ca, "-CAkey", ca_key, "-CAcreateserial", "-out",
           c.server_cert, "-days", "1", "-extfile", ext});
  EXPECT_EQ(chmod(c.server_key.c_str(), 0600), 0);
  return c;
}

}  // namespace tidemap::testing
