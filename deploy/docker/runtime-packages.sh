#!/usr/bin/env bash
# Prints the Debian packages that provide the shared libraries BINARY... load (ldd), as
# `name=version` lines, sorted. The Dockerfile's runtime stage installs exactly these, so the
# image carries the binaries' libraries, at the versions they were built against, and nothing
# of the build toolchain.
# Fails, naming them, when a library is missing or belongs to no package (it could not be
# installed in the runtime image). Needs ldd and dpkg (Debian).
set -euo pipefail
(($#)) || { echo "usage: $0 BINARY..." >&2; exit 2; }

missing=$(ldd "$@" 2>&1 | grep 'not found' || true)
if [[ -n $missing ]]; then
  echo "runtime-packages: unresolved libraries:" >&2
  echo "$missing" >&2
  exit 1
fi

mapfile -t libs < <(ldd "$@" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u)
# Merged /usr: dpkg may have recorded the /lib or the /usr/lib spelling of a file, and ldd
# may print a symlink; ask for every spelling at once (one dpkg-query call is fast, one per
# library is not).
declare -A spelling_of=()
for lib in "${libs[@]}"; do
  real=$(realpath "$lib")
  for s in "$lib" "$real" "/usr${lib#/usr}" "${lib#/usr}" "/usr${real#/usr}" "${real#/usr}"; do
    spelling_of[$s]=$lib
  done
done
declare -A owner_of=()
while IFS= read -r line; do
  # "libfoo1:amd64: /usr/lib/x86_64-linux-gnu/libfoo.so.1" (diversions have other shapes)
  [[ $line =~ ^([^:,[:space:]]+)(:[a-z0-9]+)?:\ (/.*)$ ]] || continue
  lib=${spelling_of[${BASH_REMATCH[3]}]:-}
  [[ -n $lib ]] && owner_of[$lib]=${BASH_REMATCH[1]}
done < <(dpkg-query -S "${!spelling_of[@]}" 2>/dev/null || true)

unowned=()
declare -A packages=()
for lib in "${libs[@]}"; do
  if [[ -n ${owner_of[$lib]:-} ]]; then
    packages[${owner_of[$lib]}]=1
  else
    unowned+=("$lib")
  fi
done
if ((${#unowned[@]})); then
  echo "runtime-packages: no Debian package owns: ${unowned[*]}" >&2
  exit 1
fi
for p in "${!packages[@]}"; do
  printf '%s=%s\n' "$p" "$(dpkg-query -W -f='${Version}' "$p")"
done | sort
