#!/usr/bin/env bash
# Our transfer engine vs ucx_perftest on the same transports and sizes (issue 3's benchmark).
#   tests/perf/transfer_bench.sh [build dir]
set -uo pipefail
B=${1:-build}
BYTES=$((64 << 20))
echo "machine: $(nproc) cores, $(uname -m); UCX $(ucx_info -v | sed -n "s/# Version //p")"
for tls in tcp "sm,self"; do
  for seg in 65536 1048576; do
    "$B/bench/transfer_bench" --tls "$tls" --bytes $BYTES --segment $seg --iters 8
  done
  # ucx_perftest: a server and a client process on loopback, one 64 MiB message per iteration.
  port=$((13000 + RANDOM % 2000))
  for test in ucp_put_bw tag_bw; do
    UCX_TLS=$tls ucx_perftest -p $port >/dev/null 2>&1 &
    srv=$!; sleep 1
    bw=$(UCX_TLS=$tls ucx_perftest 127.0.0.1 -p $port -t $test -s $BYTES -n 10 2>/dev/null |
         awk '/Final:/ {print $(NF-2)}')
    wait $srv 2>/dev/null
    printf "ucx_perftest  tls=%-10s test=%-7s size=%d  %s MB/s\n" "$tls" "$test" $BYTES "${bw:-n/a}"
    port=$((port + 1))
  done
done
