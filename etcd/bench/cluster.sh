#!/usr/bin/env bash
# A 3-member cluster on 127.0.0.1 (BENCHMARKS.md): v2 write, linearizable-read and plain-read throughput and
# v3 Put and (linearizable) Range throughput, with etcd-bench spreading its connections over the three
# members; then leader-kill recovery: kill -9 the leader and PUT through a surviving member in a loop
# (curl -m 1) until one is acknowledged; the time from the kill
# to that acknowledgement is printed. The killed member is restarted between rounds.
#
#   etcd/bench/cluster.sh BIN [ROUNDS]     BIN: `etcd` (Debian's etcd 3.4) or the path of our etcd
# PORT= the first client port (default 24370; peers at PORT+10); BENCH= the etcd-bench binary (default
# target/release/etcd-bench); LOAD=0 skips the throughput part, LOAD=put runs writes only.
set -euo pipefail
BIN=$1
ROUNDS=${2:-5}
BENCH=${BENCH:-$(dirname "$0")/../../target/release/etcd-bench}
P=${PORT:-24370}
D=$(mktemp -d)
EXTRA=""
[ "$BIN" = etcd ] && EXTRA="--enable-v2=true"
IC="b1=http://127.0.0.1:$((P + 10)),b2=http://127.0.0.1:$((P + 11)),b3=http://127.0.0.1:$((P + 12))"
start() {
    i=$1
    # shellcheck disable=SC2086
    $BIN --name b$((i + 1)) --data-dir "$D/b$i" $EXTRA --initial-cluster "$IC" --initial-cluster-token bench \
        --listen-peer-urls "http://127.0.0.1:$((P + 10 + i))" --initial-advertise-peer-urls "http://127.0.0.1:$((P + 10 + i))" \
        --listen-client-urls "http://127.0.0.1:$((P + i))" --advertise-client-urls "http://127.0.0.1:$((P + i))" \
        >"$D/b$i.log" 2>&1 &
    echo $! >"$D/b$i.pid"
    disown
}
healthy() { curl -sf -m 1 "http://127.0.0.1:$((P + $1))/health" | grep -q true; }
wait_healthy() { for _ in $(seq 300); do healthy "$1" && return; sleep 0.1; done; echo "member $1 not healthy" >&2; exit 1; }
cleanup() {
    for i in 0 1 2; do kill -9 "$(cat "$D/b$i.pid")" 2>/dev/null || true; done
    # The next run reuses the ports: wait until the members are gone.
    for i in 0 1 2; do while kill -0 "$(cat "$D/b$i.pid")" 2>/dev/null; do sleep 0.05; done; done
    rm -rf "$D"
}
trap cleanup EXIT
for i in 0 1 2; do start $i; done
for i in 0 1 2; do wait_healthy $i; done
if [ "${LOAD:-1}" != 0 ]; then
    A=127.0.0.1:$P,127.0.0.1:$((P + 1)),127.0.0.1:$((P + 2))
    echo "put:  $("$BENCH" --addr "$A" --workload put --conns 64 --requests 60000)"
    if [ "${LOAD:-1}" != put ]; then
        echo "qget: $("$BENCH" --addr "$A" --workload qget --conns 64 --requests 60000)"
        echo "get:  $("$BENCH" --addr "$A" --workload get --conns 64 --requests 200000)"
        echo "v3 put:   $("$BENCH" --addr "$A" --workload v3-put --conns 64 --requests 60000)"
        echo "v3 range: $("$BENCH" --addr "$A" --workload v3-range --conns 64 --requests 60000)"
    fi
fi
for r in $(seq "$ROUNDS"); do
    name=""
    for _ in $(seq 100); do
        name=$(curl -sf -m 1 "http://127.0.0.1:$P/v2/members/leader" | sed -n 's/.*"name":"\(b[0-9]\)".*/\1/p') && [ -n "$name" ] && break
        sleep 0.1
    done
    L=$((${name#b} - 1))
    F=$(((L + 1) % 3))
    curl -sf -m 2 -XPUT "http://127.0.0.1:$((P + F))/v2/keys/failover" -d value=warm >/dev/null
    T0=$(date +%s%N)
    kill -9 "$(cat "$D/b$L.pid")"
    until curl -sf -m 1 -XPUT "http://127.0.0.1:$((P + F))/v2/keys/failover" -d value=$r >/dev/null; do :; done
    T1=$(date +%s%N)
    echo "round $r: leader b$((L + 1)) killed, write acknowledged by b$((F + 1)) after $(((T1 - T0) / 1000000)) ms"
    start "$L"
    wait_healthy "$L"
    # Let the restarted member catch up and the cluster settle before the next kill.
    sleep 2
done
