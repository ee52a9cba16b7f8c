#!/usr/bin/env bash
# A `gka local` cluster keeps handing off when a network interface it does not need goes away
# (the drain bug in tests/RELIABILITY.md). Each worker's UCX advertises the interfaces up when it
# starts, and UCX 1.13 runs all traffic between two workers over the one it scores best, by link
# speed: a veth (10 Gb/s) of another test's namespace outranks a VM's eth0 of unknown speed.
# When that veth was deleted, every hand-off to or from the workers failed ("Destination is
# unreachable", or a BEGIN never answered). `gka local` now keeps UCX on loopback.
#
# In private network namespaces, so that nothing here touches the host's interfaces: X is shaped
# like the dev VM (an uplink with the default route, through namespace G) and also holds one end
# of a veth pair whose other end is in namespace Z, as chaos_test.sh's partition scenario leaves
# on the host while it runs. The cluster (1 prefill, 1 decode worker) starts in X, serves 4
# requests, the veth is deleted, and 8 more requests must all end OK.
#   transient_iface_test.sh BIN_DIR          (exit 77: namespaces cannot be made here: skipped)
set -uo pipefail
BIN=$(cd "$1" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)

if [[ -z ${TRANSIENT_IFACE_NS:-} ]]; then
  X=gkati$$x G=gkati$$g Z=gkati$$z
  teardown() { for n in $X $G $Z; do ip netns del "$n" 2>/dev/null; done; }
  trap teardown EXIT
  ip netns add "$X" 2>/dev/null || { echo "transient_iface_test: no network namespaces here: skipped"; exit 77; }
  build() {
    set -e
    ip netns add "$G"
    ip netns add "$Z"
    for n in $X $G $Z; do ip -n "$n" link set lo up; done
    ip -n "$X" link add up0 type veth peer name gw0 netns "$G"
    ip -n "$X" addr add 192.0.99.2/24 dev up0
    ip -n "$G" addr add 192.0.99.1/24 dev gw0
    ip -n "$X" link set up0 up
    ip -n "$G" link set gw0 up
    ip -n "$X" route add default via 192.0.99.1
    ip -n "$X" link add vt0 type veth peer name vz0 netns "$Z"
    ip -n "$X" addr add 10.213.251.1/30 dev vt0
    ip -n "$Z" addr add 10.213.251.2/30 dev vz0
    ip -n "$X" link set vt0 up
    ip -n "$Z" link set vz0 up
  }
  (build) || { echo "transient_iface_test: could not build the namespaces"; exit 1; }
  TRANSIENT_IFACE_NS=$X ip netns exec "$X" "$0" "$@"
  exit $?
fi

# Inside namespace X from here on.
source "$HERE/cluster.sh"
cluster_test_setup "$BIN"
PREFILL_WORKERS=1 DECODE_WORKERS=1 start_cluster "$TMP" --port 0 || fail "no cluster"
wait_router
wait_healthy decode 1 && wait_healthy prefill 1 || fail "the workers did not register"

serve() {  # NAME N: N requests, all must end OK
  "$GKA" bench serve --addr "$ADDR" --concurrency 2 --num-requests "$2" --input-len 8:48 \
    --output-len 8:24 --ignore-eos --timeout 30 --request-id-prefix "$1" --save-requests \
    --out "$TMP/$1.json" --plot "$TMP/$1.svg" >/dev/null 2>"$TMP/$1.err"
  read -r sent ok _ < <(node "$HERE/classify.js" "$TMP/$1.json" 30)
  echo "   $1: $ok of $sent requests ok"
  [[ $ok == "$2" && $sent == "$2" ]] || fail "$1: $ok of $2 requests ok"
}

serve before 4
ip link del vt0 || fail "could not delete the veth"
echo "   the veth is gone"
serve after 8
used=$(wait_pages_free)
[[ $used == 0 ]] || fail "$used pages/slots still in use"
echo "transient_iface_test: ok"
