#!/usr/bin/env bash
# The installed C++ SDK works for a user: `cmake --install --component sdk` into a scratch
# prefix, then examples/cpp is built against it twice — with find_package(gkaserve) and with
# pkg-config — and both builds of hello run against the fake router.
#   install_test.sh BUILD_DIR SCRATCH_DIR       (from the repository root)
set -euo pipefail
build=$(realpath "$1")
scratch=$2
rm -rf "$scratch" && mkdir -p "$scratch" && scratch=$(realpath "$scratch")
prefix=$scratch/prefix

cmake --install "$build" --component sdk --prefix "$prefix" >"$scratch/install.log"
for f in include/gka/sdk/client.h include/gka/sdk/types.h; do
  [[ -f $prefix/$f ]] || { echo "FAIL: $f not installed"; exit 1; }
done
config=$(find "$prefix" -name gkaserveConfig.cmake)
pc=$(find "$prefix" -name gkaserve.pc)
[[ -n $config && -n $pc ]] || { echo "FAIL: package files missing"; exit 1; }
# Only the SDK headers: nothing of the repository's internals leaks into the install.
if find "$prefix/include" -type f | grep -v '/gka/sdk/' ; then
  echo "FAIL: unexpected installed headers"; exit 1
fi

# 1. CMake package.
cmake -S examples/cpp -B "$scratch/cmake" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" \
  >"$scratch/configure.log"
cmake --build "$scratch/cmake" --target hello >"$scratch/build.log"

# 2. pkg-config (rpath so the scratch prefix needs no LD_LIBRARY_PATH).
libdir=$(dirname "$(dirname "$pc")")
export PKG_CONFIG_PATH=$(dirname "$pc")
[[ $(pkg-config --modversion gkaserve) == 0.1.0 ]] || { echo "FAIL: pc version"; exit 1; }
# shellcheck disable=SC2046
g++ -std=c++20 -o "$scratch/hello_pc" examples/cpp/hello.cc \
  $(pkg-config --cflags --libs gkaserve) -Wl,-rpath,"$libdir"

# 3. Run both against the fake router.
coproc FAKE { exec "$build/bin/gka-sdk-fake-router"; }
trap 'kill "$FAKE_PID" 2>/dev/null || true' EXIT
read -r -t 10 address <&"${FAKE[0]}"
for exe in "$scratch/cmake/hello" "$scratch/hello_pc"; do
  out=$("$exe" "$address")
  if [[ $out != "you said: What is linear attention?" ]]; then
    echo "FAIL: $exe printed: $out"; exit 1
  fi
done
echo "PASS: installed SDK built with CMake and pkg-config; hello ran against $address"
