#!/usr/bin/env bash
# Runs etcd-bench workloads against several servers, one after the other on the same ports, each with a
# fresh data dir, in the same session (BENCHMARKS.md).
#
#   etcd/bench/compare.sh SERVER... -- "BENCH ARGS" ["BENCH ARGS"...]
#
# SERVER is `etcd` (Debian's etcd 3.4, v2 enabled) or the path of one of our etcd binaries.
# BENCH= names the etcd-bench binary (default target/release/etcd-bench), PORT= the client port (42379).
# Example: etcd/bench/compare.sh target/release/etcd etcd -- "--workload v3-put --conns 16 --requests 60000"
set -euo pipefail
P=${PORT:-42379}
PP=$((P + 1))
BENCH=${BENCH:-$(dirname "$0")/../../target/release/etcd-bench}
servers=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do servers+=("$1"); shift; done
shift || true
start() {
    d=$(mktemp -d)
    if [ "$1" = etcd ]; then
        etcd --name n1 --data-dir "$d/d" --enable-v2=true \
            --listen-client-urls "http://127.0.0.1:$P" --advertise-client-urls "http://127.0.0.1:$P" \
            --listen-peer-urls "http://127.0.0.1:$PP" --initial-advertise-peer-urls "http://127.0.0.1:$PP" \
            --initial-cluster "n1=http://127.0.0.1:$PP" >/dev/null 2>&1 &
    else
        "$1" --name n1 --data-dir "$d/d" \
            --listen-client-urls "http://127.0.0.1:$P" --advertise-client-urls "http://127.0.0.1:$P" \
            --listen-peer-urls "http://127.0.0.1:$PP" --initial-advertise-peer-urls "http://127.0.0.1:$PP" \
            --initial-cluster "n1=http://127.0.0.1:$PP" >/dev/null 2>&1 &
    fi
    pid=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$P/health" >/dev/null && return; sleep 0.1; done
    echo "server $1 did not become healthy" >&2
    exit 1
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; sleep 0.5; }
for args in "$@"; do
    for s in "${servers[@]}"; do
        start "$s"
        # shellcheck disable=SC2086
        echo "$s: $("$BENCH" --addr "127.0.0.1:$P" $args)"
        stop
    done
done
