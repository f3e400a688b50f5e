#!/usr/bin/env bash
# Benchmark (issue 2, "Benchmark to report"): the gateway's RSS per idle authenticated
# connection. Builds release, starts ringgate on a private config (free ports,
# idle_ping_secs = 300 so no pings during the hold, idle_timeout_secs = 0 so silent
# clients are not closed), holds CONNS connections for HOLD
# seconds with `ringgate-bench idle` (split over worker processes and source addresses
# 127.0.0.x as RLIMIT_NOFILE requires), prints the report, stops the gateway.
#
#   CONNS=15000 HOLD=10 perf/idle_rss.sh        # defaults shown
#   SHARDS=1 perf/idle_rss.sh                   # server.shards (default 0 = one per core)
#   BENCH_ARGS="--concurrency 16" perf/idle_rss.sh   # extra `ringgate-bench idle` flags
#   TLS=1 perf/idle_rss.sh                      # wss://: a CA and certificate made with
#                                               # openssl, clients verify against the CA
#   BUILD=0 GATEWAY=old/ringgate perf/idle_rss.sh    # no build; another gateway binary
#                                  (A/B runs back to back: the same load generator for both)
#
# Outputs in perf/out/ (idle_rss_tls.* with TLS=1): idle_rss.json (report), idle_rss.gateway.log, idle_rss.metrics.txt
# (the gateway's /metrics at the end of the hold). Exits non-zero if the gateway fails
# to start, a connection fails or drops, or the gateway dies.
set -euo pipefail

CONNS=${CONNS:-15000}
HOLD=${HOLD:-10}
SHARDS=${SHARDS:-0}
TLS=${TLS:-0}
NAME=idle_rss
[[ "$TLS" == 1 ]] && NAME=idle_rss_tls
BUILD=${BUILD:-1}
read -r -a EXTRA <<< "${BENCH_ARGS:-}"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/perf/out
mkdir -p "$OUT"
cd "$ROOT"

if [[ $BUILD == 1 ]]; then
    echo "== building release (ringgate, ringgate-bench)"
    t0=$(date +%s)
    cargo build --release -p ringgate -p ringgate-bench
    echo "   build took $(( $(date +%s) - t0 )) s"
fi
# (Cargo builds into $CARGO_TARGET_DIR when set.)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
GATEWAY=${GATEWAY:-$TARGET/release/ringgate}
BENCH=$TARGET/release/ringgate-bench
[[ -x $GATEWAY && -x $BENCH ]] || { echo "missing $GATEWAY or $BENCH (run with BUILD=1)" >&2; exit 1; }
echo "   gateway binary: $GATEWAY"

# A free TCP port outside the ephemeral range (so client sockets never take it).
free_port() {
    local p
    for p in $(shuf -i 20000-32000 -n 200); do
        if ! ss -Htln "sport = :$p" | grep -q .; then echo "$p"; return 0; fi
    done
    echo "no free port found" >&2
    return 1
}

TMP=$(mktemp -d)
GW_PID=""
cleanup() {
    if [[ -n "$GW_PID" ]] && kill -0 "$GW_PID" 2>/dev/null; then
        kill -TERM "$GW_PID" 2>/dev/null || true
        wait "$GW_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

LISTEN_PORT=$(free_port)
ADMIN_PORT=$(free_port)
while [[ "$ADMIN_PORT" == "$LISTEN_PORT" ]]; do ADMIN_PORT=$(free_port); done
CFG=$TMP/ringgate.toml
sed -e "s|^listen = .*|listen = \"127.0.0.1:$LISTEN_PORT\"|" \
    -e "s|^admin_listen = .*|admin_listen = \"127.0.0.1:$ADMIN_PORT\"|" \
    -e "s|^idle_ping_secs = .*|idle_ping_secs = 300|" \
    -e "s|^idle_timeout_secs = .*|idle_timeout_secs = 0|" \
    -e "s|^shards = .*|shards = $SHARDS|" \
    configs/default.toml > "$CFG"
if [[ "$TLS" == 1 ]]; then
    # A CA and a leaf for 127.0.0.1 it signs (P-256), valid for two days.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=ringgate idle_rss CA" -keyout "$TMP/ca.key" -out "$TMP/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
        -keyout "$TMP/key.pem" -out "$TMP/leaf.csr" 2>/dev/null
    openssl x509 -req -in "$TMP/leaf.csr" -CA "$TMP/ca.pem" -CAkey "$TMP/ca.key" \
        -CAcreateserial -days 2 -out "$TMP/cert.pem" \
        -extfile <(printf 'subjectAltName=IP:127.0.0.1,DNS:localhost') 2>/dev/null
    sed -i -e "s|^# cert_file = .*|cert_file = \"$TMP/cert.pem\"|" \
        -e "s|^# key_file = .*|key_file = \"$TMP/key.pem\"|" "$CFG"
    grep -q "^cert_file = " "$CFG" || { echo "config edit failed: [tls] cert_file" >&2; exit 1; }
    EXTRA+=(--gateway "wss://127.0.0.1:$LISTEN_PORT/connect" --ca-file "$TMP/ca.pem")
fi
for key in "listen = \"127.0.0.1:$LISTEN_PORT\"" "admin_listen = \"127.0.0.1:$ADMIN_PORT\"" \
           "idle_ping_secs = 300" "idle_timeout_secs = 0" "shards = $SHARDS"; do
    grep -qxF "$key" <(sed 's/ *#.*//; s/ *$//' "$CFG") || { echo "config edit failed: $key" >&2; exit 1; }
done
"$GATEWAY" --check-config "$CFG"

echo "== starting gateway on 127.0.0.1:$LISTEN_PORT (admin $ADMIN_PORT, shards=$SHARDS)"
"$GATEWAY" --config "$CFG" > "$OUT/$NAME.gateway.log" 2>&1 &
GW_PID=$!
ready=0
for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null 2>&1; then ready=1; break; fi
    kill -0 "$GW_PID" 2>/dev/null || break
    sleep 0.1
done
if [[ $ready != 1 ]]; then
    echo "gateway did not become ready; its log:" >&2
    cat "$OUT/$NAME.gateway.log" >&2
    exit 1
fi
echo "   gateway pid $GW_PID ready; fd limit $(awk '/Max open files/ {print $4"/"$5}' /proc/$GW_PID/limits)"

echo "== ringgate-bench idle --conns $CONNS --hold $HOLD"
set +e
"$BENCH" idle --conns "$CONNS" --hold "$HOLD" --procs auto \
    --gateway-pid "$GW_PID" --gateway-config "$CFG" --json "$OUT/$NAME.json" "${EXTRA[@]}"
status=$?
set -e
curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics" > "$OUT/$NAME.metrics.txt" 2>/dev/null || true

if ! kill -0 "$GW_PID" 2>/dev/null; then
    echo "gateway pid $GW_PID died during the run; last log lines:" >&2
    tail -n 30 "$OUT/$NAME.gateway.log" >&2
    wait "$GW_PID" 2>/dev/null; echo "gateway exit status: $?" >&2
    GW_PID=""
    exit 1
fi
echo "== stopping gateway (SIGTERM to pid $GW_PID)"
kill -TERM "$GW_PID"
gw_status=0
wait "$GW_PID" || gw_status=$?
GW_PID=""
echo "   gateway exited with status $gw_status"
if grep -qiE ' (ERROR|WARN) ' "$OUT/$NAME.gateway.log"; then
    echo "   gateway log warnings/errors:"; grep -iE ' (ERROR|WARN) ' "$OUT/$NAME.gateway.log" | head -n 20
fi
echo "== report: $OUT/$NAME.json"
if [[ $status -ne 0 || $gw_status -ne 0 ]]; then
    echo "FAILED (bench status $status, gateway status $gw_status)" >&2
    exit 1
fi
