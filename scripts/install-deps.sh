#!/usr/bin/env bash
# Installs the Debian 12 packages tidemap builds with, skipping those already present.
# Runs apt-get only when something is missing, so a prepared machine pays nothing.
set -euo pipefail

packages=(
  g++ cmake ninja-build pkg-config make ccache
  libleveldb-dev libsnappy-dev libsodium-dev libxxhash-dev
  libboost-dev capnproto libcapnp-dev libssl-dev zlib1g-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev nlohmann-json3-dev libspdlog-dev libfmt-dev libtomlplusplus-dev
  clang clang-format libclang-rt-14-dev
  prometheus  # promtool, which checks the /metrics exposition in http_test
  openssl curl  # readme_test's blocks call the API with curl; http_tls_test makes a test CA
  chromium nodejs  # console_test drives the web console in headless Chromium from Node
  node-eventsource  # ops_test resumes a watch with a real EventSource client
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
if ! $sudo apt-get install -y --no-install-recommends "${missing[@]}"; then
  $sudo apt-get update
  $sudo apt-get install -y --no-install-recommends "${missing[@]}"
fi
