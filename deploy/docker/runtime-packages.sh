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

unowned=()
declare -A packages=()
while read -r lib; do
  # Merged /usr: dpkg may record the /lib or the /usr/lib spelling of the same file.
  real=$(realpath "$lib")
  owner=""
  for candidate in "$lib" "$real" "/usr${lib#/usr}" "${real#/usr}"; do
    owner=$(dpkg-query -S "$candidate" 2>/dev/null | head -n1 | cut -d: -f1) && [[ -n $owner ]] && break
  done
  if [[ -z $owner ]]; then
    unowned+=("$lib")
  else
    packages[$owner]=1
  fi
done < <(ldd "$@" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u)

if ((${#unowned[@]})); then
  echo "runtime-packages: no Debian package owns: ${unowned[*]}" >&2
  exit 1
fi
for p in "${!packages[@]}"; do
  # Architecture-qualified names (libfoo:amd64) install fine as name:arch=version.
  printf '%s=%s\n' "$p" "$(dpkg-query -W -f='${Version}' "$p")"
done | sort
