#!/usr/bin/env bash
# Instructions per request (repeatable, unlike wall-clock numbers on a shared machine):
# runs the gateway under `valgrind --tool=callgrind` (legacy epoll driver: valgrind does
# not know io_uring), one shard, in front of the built-in echo backend over HTTP or the
# backend link, drives `ringgate-bench rpc --rate max` at it, and prints the gateway's
# instructions divided by the requests answered. For an A/B, give several gateways:
#
#   perf/callgrind_rpc.sh                                  # target/release/ringgate, HTTP
#   MODE=link perf/callgrind_rpc.sh                        # over the backend link
#   perf/callgrind_rpc.sh OLD/ringgate target/release/ringgate   # one line per binary
#
# Environment: MODE (http | link), DURATION (measured seconds, 10), CONNS (100),
# WINDOW (16); instructions and requests are counted over DURATION - 2 seconds in the
# middle of the load (callgrind_control zeroes, then dumps). Uses the binaries already built (cargo build --release). Every process
# it starts is stopped by pid. KEEP=DIR keeps each gateway's callgrind output there
# (DIR/<n>.callgrind, for callgrind_annotate).
set -euo pipefail
MODE=${MODE:-http}
DURATION=${DURATION:-10}
CONNS=${CONNS:-100}
WINDOW=${WINDOW:-16}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=$ROOT/target/release/ringgate-bench
[[ $# -gt 0 ]] || set -- "$ROOT/target/release/ringgate"
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
[[ -x $BENCH ]] || { echo "missing $BENCH: cargo build --release -p ringgate-bench" >&2; exit 1; }
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

ECHO_PORT=$(port); LINK_PORT=$(port)
"$BENCH" echo-backend --listen "127.0.0.1:$ECHO_PORT" --link-listen "127.0.0.1:$LINK_PORT" \
    --threads 1 > "$WORK/echo.log" 2>&1 &
PIDS+=($!)
sleep 0.5

for GATEWAY in "$@"; do
    GW_PORT=$(port); ADMIN_PORT=$(port)
    backend="url = \"http://127.0.0.1:$ECHO_PORT\""
    [[ $MODE == link ]] && backend="link = \"ws://127.0.0.1:$LINK_PORT/link\""
    cat > "$WORK/gw.toml" <<EOF
[server]
listen = "127.0.0.1:$GW_PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"
shards = 1
force_legacy_driver = true
rate_limit_per_sec = 0
read_batch_tick_us = 0
[auth]
hs256_secret = "ringgate-dev-secret-change-me-0123456789"
[backend]
request_timeout_ms = 30000
[[services]]
name = "echo"
$backend
endpoints = [{ path = "/echo", roles = ["user"] }]
EOF
    rm -f "$WORK"/callgrind.out.*
    valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out.%p" \
        "$GATEWAY" --config "$WORK/gw.toml" > "$WORK/gw.log" 2>&1 &
    GW_PID=$!
    PIDS+=("$GW_PID")
    for _ in $(seq 1 300); do
        curl -fsS "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    "$BENCH" rpc --gateway "ws://127.0.0.1:$GW_PORT/connect" --gateway-config "$WORK/gw.toml" \
        --mode bannou --rate max --conns "$CONNS" --window "$WINDOW" --duration "$DURATION" \
        --warmup 2 --json "$WORK/rpc.json" > "$WORK/rpc.txt" 2>&1 &
    RPC_PID=$!
    PIDS+=("$RPC_PID")
    # Count from the middle of the load only: start-up, connects and warm-up excluded.
    sleep 3
    count() {
        curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics" \
            | awk '/^ringgate_requests_total/ {s += $NF} END {printf "%d", s}'
    }
    callgrind_control -z "$GW_PID" >/dev/null 2>&1
    reqs0=$(count)
    sleep $(( DURATION - 2 ))
    callgrind_control -d "$GW_PID" >/dev/null 2>&1
    reqs1=$(count)
    wait "$RPC_PID" || true
    kill -TERM "$GW_PID"
    wait "$GW_PID" 2>/dev/null || true
    out=$(ls "$WORK"/callgrind.out.*.* | head -1)
    if [[ -n ${KEEP:-} ]]; then
        mkdir -p "$KEEP"; n=$(( ${n:-0} + 1 )); cp "$out" "$KEEP/$n.callgrind"
    fi
    ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$out")
    reqs=$(( reqs1 - reqs0 ))
    echo "$GATEWAY ($MODE): $ir instructions for $reqs requests: $(( ir / (reqs > 0 ? reqs : 1) )) per request"
done
