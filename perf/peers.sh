#!/usr/bin/env bash
# Peers side by side (issue 3): the same RPC load, in one sitting, against
#   1. ringgate            in front of the built-in HTTP echo backend  (rpc --mode bannou)
#   2. ringgate-link       a second ringgate in front of the same echo over the backend
#                          link (docs/LINK.md: one WebSocket per shard) (rpc --mode bannou)
#   3. nginx               as a WebSocket reverse proxy in front of ws-echo (rpc --mode echo)
#   4. ws-echo             the plain WebSocket echo server, no proxy     (rpc --mode echo)
#   5. the limit probe     raw TCP ping-pong over io_uring, same message sizes (probe)
#   and, for the load generator's own cost (issue 3: >= 80 % of the raw probe):
#   6. harness             rpc --mode echo against the probe server's WebSocket mode
#                          (the least a WebSocket echo can do, on the probe's own I/O)
#   7. probe-ws            the probe's minimal client speaking WebSocket to the same
#                          server: what framing costs, without the harness's client.
# For each: max throughput (--rate max), then p50/p99/p99.9 at a fixed rate of half of
# nginx's max. Prints one table with ratios to nginx and to the probe.
#
# Placement: everything on the server side (the server under test AND its backend) runs
# on core SERVER_CORE, the load generator on core CLIENT_CORE (taskset). All servers are
# started once, up front, and stay idle when not under test (the ringgate-link gateway
# only when ringgate-link is one of the TARGETS: it needs a ringgate that knows `link`).
# The echo backend is one process serving HTTP and the link (echo-backend --link-listen).
#
#   perf/peers.sh                                   # defaults below, ~9 minutes + build
#   REPEAT=1 DURATION=5 WARMUP=1 perf/peers.sh      # quicker (~2 minutes), noisier
#   CONNS=200 PAYLOAD=256 WINDOW=8 perf/peers.sh    # another load shape
#   FIXED_RATE=20000 perf/peers.sh                  # fixed-rate phase at this rate instead
#   BUILD=0 perf/peers.sh                           # use the binaries already in target/release
#
# PROFILE=1 also samples the server core with `perf record -a` during the first max run
# of ringgate, ringgate-link and nginx: the top of the server's own `perf report` goes to
# <target>.perf.txt, and where the core's time went per request (each process, user and
# kernel, in ns) to <target>.core.txt, printed too.
#
# Environment: DURATION (measured seconds per run, 10), WARMUP (unmeasured seconds before
# each run, 2), CONNS (100), PAYLOAD (request payload bytes, 64), WINDOW (requests in
# flight per connection at --rate max, 16), SERVER_CORE (0), CLIENT_CORE (1),
# FIXED_RATE (default: half of nginx's max), BUILD (1), BACKEND_CONNS (ringgate's
# backend.max_conns_per_shard, 32), PIPELINE (its backend.pipeline_depth, 64),
# BACKEND_IDLE (its backend.max_idle_per_shard, 512), RG_DEFAULT_POOL (1: keep the shipped
# values of those three instead; the link has no pool), TARGETS (which targets to run,
# default all seven: "ringgate ringgate-link nginx ws-echo probe harness probe-ws"; without nginx,
# set FIXED_RATE), REPEAT (rounds per phase, 3: the table gives each target's median
# round and lists every round; the machine is shared and single runs swing by 25 %),
# READ_BATCH (both gateways' server.read_batch_tick_us; default: the shipped 500; 0
# turns read batching off, for an A/B in one sitting use GATEWAY= or two runs).
#
# Outputs in perf/out/peers-<timestamp>/: one rpc-format JSON per run
# (<target>-max.rN.json, <target>-fixed.rN.json; the median round copied to
# <target>-max.json, <target>-fixed.json), summary.json, table.txt, the fixed-rate
# latency chart fixed.svg, and every server's log. Every process it starts is stopped
# by pid on exit, also on failure or Ctrl-C.
set -euo pipefail
source "$(dirname "$0")/lib.sh"  # free_port, wait_listen, stop_pid
WAIT_LISTEN_SECS=5

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-100}
PAYLOAD=${PAYLOAD:-64}
WINDOW=${WINDOW:-16}
SERVER_CORE=${SERVER_CORE:-0}
CLIENT_CORE=${CLIENT_CORE:-1}
FIXED_RATE=${FIXED_RATE:-}
BUILD=${BUILD:-1}
REPEAT=${REPEAT:-3}
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || { echo "REPEAT must be a positive integer" >&2; exit 1; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=$ROOT/perf/out/peers-$(date +%Y%m%d-%H%M%S)
GATEWAY=${GATEWAY:-$ROOT/target/release/ringgate}
BENCH=$ROOT/target/release/ringgate-bench

for tool in taskset python3 curl ss; do
    command -v "$tool" >/dev/null || { echo "peers.sh needs $tool" >&2; exit 1; }
done
ncpu=$(nproc --all)
if (( SERVER_CORE >= ncpu || CLIENT_CORE >= ncpu || SERVER_CORE == CLIENT_CORE )); then
    echo "SERVER_CORE=$SERVER_CORE and CLIENT_CORE=$CLIENT_CORE must be two different cores of $ncpu" >&2
    exit 1
fi

if [[ $BUILD == 1 ]]; then
    echo "== building release (ringgate, ringgate-bench)"
    cargo build --release -p ringgate -p ringgate-bench
fi
[[ -x $GATEWAY && -x $BENCH ]] || { echo "missing $GATEWAY or $BENCH (run with BUILD=1)" >&2; exit 1; }
mkdir -p "$OUT"

NGINX=$(command -v nginx || true)
[[ -z $NGINX && -x /usr/sbin/nginx ]] && NGINX=/usr/sbin/nginx
if [[ -z $NGINX ]]; then
    echo "== nginx not found: installing nginx-light (Debian package)"
    SUDO=""; [[ $(id -u) != 0 ]] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx-light >/dev/null
    NGINX=/usr/sbin/nginx
fi

# ---------------------------------------------------------------------------------
# Processes: every pid we start is recorded and stopped on exit.
PIDS=()
TMP=$(mktemp -d)
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    local i
    for (( i=${#PIDS[@]}-1; i>=0; i-- )); do stop_pid "${PIDS[$i]}"; done
    rm -rf "$TMP"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Servers are started as `taskset -c CORE cmd ... &` (a simple command: bash execs it and
# taskset execs the server, so $! is the server's own pid). Never wrap them in a shell
# function: $! would be a subshell, and stopping it would orphan the server.
# The load generator also leaves its CPU time (its own and its worker processes', from
# the subshell's `times`) in $CLIENT_TIMES.
CLIENT_TIMES=/dev/null
on_client() { ( taskset -c "$CLIENT_CORE" "$@"; rc=$?; times > "$CLIENT_TIMES"; exit $rc ); }

ECHO_PORT=$(free_port); LINK_PORT=$(free_port); WSECHO_PORT=$(free_port); PROBE_PORT=$(free_port)
GW_PORT=$(free_port); ADMIN_PORT=$(free_port); NGINX_PORT=$(free_port)
GWL_PORT=$(free_port); ADMINL_PORT=$(free_port)
read -ra TARGETS <<< "${TARGETS:-ringgate ringgate-link nginx ws-echo probe harness probe-ws}"
WANT_LINK=0
for t in "${TARGETS[@]}"; do
    case $t in
        ringgate-link) WANT_LINK=1 ;;
        ringgate|nginx|ws-echo|probe|harness|probe-ws) ;;
        *) echo "unknown target $t (known: ringgate ringgate-link nginx ws-echo probe harness probe-ws)" >&2; exit 1 ;;
    esac
done

echo "== starting servers on core $SERVER_CORE (load generator on core $CLIENT_CORE); out: $OUT"
taskset -c "$SERVER_CORE" "$BENCH" echo-backend --listen "127.0.0.1:$ECHO_PORT" \
    --link-listen "127.0.0.1:$LINK_PORT" --threads 1 > "$OUT/echo-backend.log" 2>&1 &
ECHO_PID=$!; PIDS+=("$ECHO_PID")
taskset -c "$SERVER_CORE" "$BENCH" ws-echo --listen "127.0.0.1:$WSECHO_PORT" --threads 1 > "$OUT/ws-echo.log" 2>&1 &
WSECHO_PID=$!; PIDS+=("$WSECHO_PID")
taskset -c "$SERVER_CORE" "$BENCH" probe-server --listen "127.0.0.1:$PROBE_PORT" --threads 1 > "$OUT/probe-server.log" 2>&1 &
PROBE_PID=$!; PIDS+=("$PROBE_PID")
wait_listen "$ECHO_PORT" echo-backend "$ECHO_PID"
wait_listen "$LINK_PORT" "echo-backend (link)" "$ECHO_PID"
wait_listen "$WSECHO_PORT" ws-echo "$WSECHO_PID"
wait_listen "$PROBE_PORT" probe-server "$PROBE_PID"

# ringgate: one shard, the echo service behind it, no per-connection rate limit (the
# load is far above its default 1000/s per connection), no pings during a run, and a
# backend pool of BACKEND_CONNS connections with HTTP/1.1 pipelining PIPELINE deep
# (the echo service answers pipelined requests in order, one write per batch; the
# shipped default, pipeline_depth = 1, sends one request per connection at a time:
# RG_DEFAULT_POOL=1 measures that).
CFG=$OUT/ringgate.toml
BACKEND_IDLE=${BACKEND_IDLE:-512}
BACKEND_CONNS=${BACKEND_CONNS:-32}
PIPELINE=${PIPELINE:-64}
shipped() { sed -n "s/^$1 = \([0-9]*\).*/\1/p" configs/default.toml; }
READ_BATCH=${READ_BATCH:-$(shipped read_batch_tick_us)}
if [[ ${RG_DEFAULT_POOL:-0} == 1 ]]; then
    BACKEND_IDLE=$(shipped max_idle_per_shard)
    BACKEND_CONNS=$(shipped max_conns_per_shard)
    PIPELINE=$(shipped pipeline_depth)
fi
sed -e "s|^listen = .*|listen = \"127.0.0.1:$GW_PORT\"|" \
    -e "s|^max_idle_per_shard = .*|max_idle_per_shard = $BACKEND_IDLE|" \
    -e "s|^max_conns_per_shard = .*|max_conns_per_shard = $BACKEND_CONNS|" \
    -e "s|^pipeline_depth = .*|pipeline_depth = $PIPELINE|" \
    -e "s|^read_batch_tick_us = .*|read_batch_tick_us = $READ_BATCH|" \
    -e "s|^admin_listen = .*|admin_listen = \"127.0.0.1:$ADMIN_PORT\"|" \
    -e "s|^shards = .*|shards = 1|" \
    -e "s|^rate_limit_per_sec = .*|rate_limit_per_sec = 0|" \
    -e "s|^idle_ping_secs = .*|idle_ping_secs = 300|" \
    -e "s|^idle_timeout_secs = .*|idle_timeout_secs = 0|" \
    -e "s|^url = \"http://127.0.0.1:5001\"|url = \"http://127.0.0.1:$ECHO_PORT\"|" \
    configs/default.toml > "$CFG"
for key in "listen = \"127.0.0.1:$GW_PORT\"" "shards = 1" "rate_limit_per_sec = 0" \
           "idle_ping_secs = 300" "idle_timeout_secs = 0" \
           "max_idle_per_shard = $BACKEND_IDLE" "max_conns_per_shard = $BACKEND_CONNS" \
           "pipeline_depth = $PIPELINE" \
           "read_batch_tick_us = $READ_BATCH" \
           "url = \"http://127.0.0.1:$ECHO_PORT\""; do
    grep -qxF "$key" <(sed 's/ *#.*//; s/ *$//' "$CFG") || { echo "config edit failed: $key" >&2; exit 1; }
done
"$GATEWAY" --check-config "$CFG" >/dev/null
wait_ready() { # admin-port name pid
    local i
    for i in $(seq 1 100); do
        curl -fsS "http://127.0.0.1:$1/readyz" >/dev/null 2>&1 && return 0
        kill -0 "$3" 2>/dev/null || { echo "$2 exited during startup:" >&2; cat "$OUT/$2.log" >&2; return 1; }
        sleep 0.05
    done
    curl -fsS "http://127.0.0.1:$1/readyz" >/dev/null || { echo "$2 not ready" >&2; return 1; }
}
RUST_LOG=warn taskset -c "$SERVER_CORE" "$GATEWAY" --config "$CFG" > "$OUT/ringgate.log" 2>&1 &
GW_PID=$!; PIDS+=("$GW_PID")
wait_ready "$ADMIN_PORT" ringgate "$GW_PID"

# ringgate-link: the same config on its own ports, the echo service reached over the
# backend link (`link = "ws://…"` instead of `url`; one WebSocket per shard to the echo
# backend's link listener). Started only when it is a target.
CFG_LINK=$OUT/ringgate-link.toml
GWL_PID=""
if [[ $WANT_LINK == 1 ]]; then
    sed -e "s|^listen = \"127.0.0.1:$GW_PORT\"|listen = \"127.0.0.1:$GWL_PORT\"|" \
        -e "s|^admin_listen = .*|admin_listen = \"127.0.0.1:$ADMINL_PORT\"|" \
        -e "s|^url = \"http://127.0.0.1:$ECHO_PORT\"|link = \"ws://127.0.0.1:$LINK_PORT/link\"|" \
        "$CFG" > "$CFG_LINK"
    for key in "listen = \"127.0.0.1:$GWL_PORT\"" "admin_listen = \"127.0.0.1:$ADMINL_PORT\"" \
               "link = \"ws://127.0.0.1:$LINK_PORT/link\""; do
        grep -qxF "$key" <(sed 's/ *#.*//; s/ *$//' "$CFG_LINK") || { echo "link config edit failed: $key" >&2; exit 1; }
    done
    if grep -q '^url = ' "$CFG_LINK"; then echo "link config still has a url" >&2; exit 1; fi
    "$GATEWAY" --check-config "$CFG_LINK" >/dev/null \
        || { echo "$GATEWAY rejects $CFG_LINK (does it know services.link?)" >&2; exit 1; }
    RUST_LOG=warn taskset -c "$SERVER_CORE" "$GATEWAY" --config "$CFG_LINK" > "$OUT/ringgate-link.log" 2>&1 &
    GWL_PID=$!; PIDS+=("$GWL_PID")
    wait_ready "$ADMINL_PORT" ringgate-link "$GWL_PID"
fi

# nginx: unprivileged-style private prefix (PEERS.md), one worker, in the foreground so
# that its master is our child; its worker inherits the core.
NGX=$OUT/nginx
mkdir -p "$NGX/tmp"
cat > "$NGX/nginx.conf" <<EOF
daemon off;
worker_processes 1;
worker_rlimit_nofile 40000;
pid $NGX/nginx.pid;
error_log $NGX/error.log warn;
events { worker_connections 19000; use epoll; multi_accept on; }
http {
  access_log off;
  client_body_temp_path $NGX/tmp/body;
  proxy_temp_path $NGX/tmp/proxy;
  fastcgi_temp_path $NGX/tmp/fastcgi;
  uwsgi_temp_path $NGX/tmp/uwsgi;
  scgi_temp_path $NGX/tmp/scgi;
  map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }
  upstream echo { server 127.0.0.1:$WSECHO_PORT; }
  server {
    listen 127.0.0.1:$NGINX_PORT reuseport backlog=4096;
    location / {
      proxy_pass http://echo;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection \$connection_upgrade;
      proxy_read_timeout 3600s;
      proxy_buffering off;
    }
  }
}
EOF
taskset -c "$SERVER_CORE" "$NGINX" -c "$NGX/nginx.conf" -p "$NGX/" > "$OUT/nginx.log" 2>&1 &
NGINX_PID=$!; PIDS+=("$NGINX_PID")
wait_listen "$NGINX_PORT" nginx "$NGINX_PID"
NGINX_WORKER=""
for i in $(seq 1 40); do
    NGINX_WORKER=$(ps -o pid= --ppid "$NGINX_PID" | head -n 1 | tr -d ' ')
    [[ -n $NGINX_WORKER ]] && break
    sleep 0.05
done
SERVER_PIDS=("$ECHO_PID" "$WSECHO_PID" "$PROBE_PID" "$GW_PID" "$NGINX_PID" ${GWL_PID:+"$GWL_PID"})
for pid in "${SERVER_PIDS[@]}"; do
    case $(readlink "/proc/$pid/exe") in
        */bash|*/sh|*/dash|*/taskset) echo "internal error: pid $pid is not the server itself" >&2; exit 1 ;;
    esac
done
echo "   ringgate pid $GW_PID (:$GW_PORT), echo-backend $ECHO_PID (:$ECHO_PORT, link :$LINK_PORT), nginx $NGINX_PID/worker ${NGINX_WORKER:-?} (:$NGINX_PORT),"
echo "   ws-echo $WSECHO_PID (:$WSECHO_PORT), probe-server $PROBE_PID (:$PROBE_PORT)${GWL_PID:+, ringgate-link $GWL_PID (:$GWL_PORT)}"

# ---------------------------------------------------------------------------------
# Runs. Each writes $OUT/<name>.json; a failed run is reported, not fatal.
COMMON=(--conns "$CONNS" --duration "$DURATION" --warmup "$WARMUP" --payload "$PAYLOAD" --window "$WINDOW")
# How busy both cores are in the middle of the measured window (from /proc/stat: all
# of a core's non-idle time, whoever used it): the load generator's core tells whether
# the harness itself was the limit, the server core whether the server side was.
core_busy() { # out-file
    local skip=$((WARMUP + 1)) span=$((DURATION > 3 ? DURATION - 2 : 1))
    sleep "$skip"
    local a b
    a=$(grep -E "^cpu($CLIENT_CORE|$SERVER_CORE) " /proc/stat)
    sleep "$span"
    b=$(grep -E "^cpu($CLIENT_CORE|$SERVER_CORE) " /proc/stat)
    python3 - "$a" "$b" "$CLIENT_CORE" "$SERVER_CORE" > "$1" <<'PY'
import sys, json
a, b, client, server = sys.argv[1:5]
def parse(text):
    out = {}
    for line in text.splitlines():
        f = line.split()
        v = list(map(int, f[1:9]))  # user nice system idle iowait irq softirq steal
        out[f[0][3:]] = (sum(v) - v[3] - v[4], sum(v))
    return out
pa, pb = parse(a), parse(b)
def busy(core):
    (b0, t0), (b1, t1) = pa[core], pb[core]
    return round(100.0 * (b1 - b0) / max(1, t1 - t0), 1)
json.dump({"client_core_busy": busy(client), "server_core_busy": busy(server)}, sys.stdout)
PY
}
# CPU time (ms) used so far by the kernel's DAMON threads (kdamond.N). Where DAMON
# reclaim is on (as on the VMs this was written on: `pageout` of cold page cache, every
# 5 s) it runs ~90 ms at a time on one of the two cores, which stalls whichever server
# shares it for that long: at a fixed rate close to a server's capacity, one such burst
# can set a 10 s run's p99. Recorded per run so a noisy round can be told apart.
kdamond_ms() {
    local total=0 f pid
    for f in $(grep -ls '^kdamond' /proc/[0-9]*/comm 2>/dev/null); do
        pid=${f#/proc/}; pid=${pid%/comm}
        total=$(( total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0) ))
    done
    echo $(( total * 1000 / $(getconf CLK_TCK) ))
}
run_target() { # target rate name
    local target=$1 rate=$2 name=$3 status=0
    local json=$OUT/$name.json
    CLIENT_TIMES=$OUT/$name.times
    echo "== $name: $target, rate $rate"
    local kd0; kd0=$(kdamond_ms)
    local perf_pid="" perf_target="" busy_pid=""
    if [[ $name == *-max.r* ]]; then
        core_busy "$OUT/$name.cores.json" & busy_pid=$!; PIDS+=("$busy_pid")
    fi
    # Profiled: the first round's max run.
    case $name in
        ringgate-max.r1) perf_target=$GW_PID ;;
        ringgate-link-max.r1) perf_target=$GWL_PID ;;
        nginx-max.r1) perf_target=${NGINX_WORKER:-$NGINX_PID} ;;
    esac
    if [[ ${PROFILE:-0} == 1 && -n $perf_target ]]; then
        # Sample the whole server core (the server, its backend, the kernel's work for
        # both) for the measured part of the run (cpu-clock: no hardware counters here).
        ( sleep "$WARMUP"; exec perf record -q -e cpu-clock -g -a -C "$SERVER_CORE" \
              -o "$OUT/$target.perf.data" -- sleep "$DURATION" ) > "$OUT/perf-record-$target.log" 2>&1 &
        perf_pid=$!; PIDS+=("$perf_pid")
    fi
    case $target in
        ringgate)
            on_client "$BENCH" rpc "${COMMON[@]}" --rate "$rate" --mode bannou \
                --gateway-config "$CFG" --gateway-pid "$GW_PID" --label "ringgate" \
                --json "$json" > "$OUT/$name.txt" 2>&1 || status=$? ;;
        ringgate-link)
            on_client "$BENCH" rpc "${COMMON[@]}" --rate "$rate" --mode bannou \
                --gateway-config "$CFG_LINK" --gateway-pid "$GWL_PID" --label "ringgate-link" \
                --json "$json" > "$OUT/$name.txt" 2>&1 || status=$? ;;
        nginx)
            on_client "$BENCH" rpc "${COMMON[@]}" --rate "$rate" --mode echo \
                --gateway "ws://127.0.0.1:$NGINX_PORT/" ${NGINX_WORKER:+--gateway-pid "$NGINX_WORKER"} \
                --label "nginx + ws-echo" --json "$json" > "$OUT/$name.txt" 2>&1 || status=$? ;;
        ws-echo)
            on_client "$BENCH" rpc "${COMMON[@]}" --rate "$rate" --mode echo \
                --gateway "ws://127.0.0.1:$WSECHO_PORT/" --gateway-pid "$WSECHO_PID" \
                --label "ws-echo" --json "$json" > "$OUT/$name.txt" 2>&1 || status=$? ;;
        probe)
            on_client "$BENCH" probe "${COMMON[@]}" --rate "$rate" \
                --server "127.0.0.1:$PROBE_PORT" --json "$json" > "$OUT/$name.txt" 2>&1 || status=$? ;;
        harness)
            on_client "$BENCH" rpc "${COMMON[@]}" --rate "$rate" --mode echo \
                --gateway "ws://127.0.0.1:$PROBE_PORT/" --gateway-pid "$PROBE_PID" \
                --label "harness (rpc -> probe-server)" --json "$json" > "$OUT/$name.txt" 2>&1 || status=$? ;;
        probe-ws)
            on_client "$BENCH" probe "${COMMON[@]}" --rate "$rate" --ws \
                --server "127.0.0.1:$PROBE_PORT" --json "$json" > "$OUT/$name.txt" 2>&1 || status=$? ;;
    esac
    [[ -n $busy_pid ]] && { wait "$busy_pid" 2>/dev/null || true; }
    echo $(( $(kdamond_ms) - kd0 )) > "$OUT/$name.kdamond"
    if [[ -n $perf_pid ]]; then
        wait "$perf_pid" 2>/dev/null || true
        perf report -i "$OUT/$target.perf.data" --pid "$perf_target" --no-children \
            --sort dso,symbol -g none --stdio 2>/dev/null \
            | grep -v '^$' | grep -E '^ +[0-9]' | head -n 60 > "$OUT/$target.perf.txt" || true
        perf report -i "$OUT/$target.perf.data" --no-children --sort comm,dso -g none \
            --field-separator=, --stdio 2>/dev/null | grep -v '^#' \
            | python3 "$ROOT/perf/core_split.py" "$json" "$SERVER_CORE" > "$OUT/$target.core.txt" || true
        cat "$OUT/$target.core.txt"
        echo "   profile: $OUT/$target.perf.txt, $OUT/$target.core.txt (perf report -i $OUT/$target.perf.data)"
    fi
    if [[ -f $json ]]; then
        python3 - "$json" "$status" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1])); q = r["requests"]; l = r["latency_us"]
print(f"   {r['throughput_per_sec']:.0f}/s  p50 {l['p50']}us  p99 {l['p99']}us  p99.9 {l['p999']}us"
      f"  (sent {q['sent']}, ok {q['ok']}, errors {sum(q['errors'].values())}, timeouts {q['timeouts']},"
      f" lost {q['lost']}; exit {sys.argv[2]})")
EOF
    else
        echo "   no report (exit $status); output:" >&2
        tail -n 20 "$OUT/$name.txt" >&2
    fi
    for pid in "${SERVER_PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null || { echo "server pid $pid died during $name; logs in $OUT" >&2; exit 1; }
    done
}

# Each phase runs REPEAT rounds, every target once per round (interleaved, so a slow
# spell of the shared machine falls on all targets alike); <target>-<phase>.json is then
# the round with the median value (max: the lower median of throughput; fixed: the upper
# median of p99), and <target>-<phase>.runs.json lists every round's value.
pick_median() { # phase
    python3 - "$OUT" "$1" "$REPEAT" "${TARGETS[@]}" <<'PY'
import json, os, shutil, sys
out, phase, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
for t in sys.argv[4:]:
    runs = []
    for r in range(1, reps + 1):
        try:
            runs.append((r, json.load(open(os.path.join(out, f"{t}-{phase}.r{r}.json")))))
        except Exception:
            pass
    if not runs:
        continue
    key = (lambda j: j["throughput_per_sec"]) if phase == "max" else (lambda j: j["latency_us"]["p99"])
    ranked = sorted(runs, key=lambda rj: key(rj[1]))
    r, _ = ranked[(len(ranked) - 1) // 2 if phase == "max" else len(ranked) // 2]
    base = os.path.join(out, f"{t}-{phase}")
    shutil.copy(f"{base}.r{r}.json", f"{base}.json")
    if os.path.exists(f"{base}.r{r}.cores.json"):
        shutil.copy(f"{base}.r{r}.cores.json", f"{base}.cores.json")
    json.dump([key(j) for _, j in runs], open(f"{base}.runs.json", "w"))
PY
}
for round in $(seq 1 "$REPEAT"); do
    for t in "${TARGETS[@]}"; do run_target "$t" max "$t-max.r$round"; done
done
pick_median max

if [[ -z $FIXED_RATE ]]; then
    FIXED_RATE=$(python3 - "$OUT/nginx-max.json" <<'EOF'
import json, sys
try:
    print(max(1, int(json.load(open(sys.argv[1]))["throughput_per_sec"] / 2)))
except Exception:
    print("")
EOF
)
    [[ -n $FIXED_RATE ]] || { echo "no nginx max throughput to halve; set FIXED_RATE" >&2; exit 1; }
fi
echo "== fixed rate: $FIXED_RATE requests/s (half of nginx's max unless FIXED_RATE was set)"
for round in $(seq 1 "$REPEAT"); do
    for t in "${TARGETS[@]}"; do run_target "$t" "$FIXED_RATE" "$t-fixed.r$round"; done
done
pick_median fixed

fixed_reports=()
for t in "${TARGETS[@]}"; do [[ -f $OUT/$t-fixed.json ]] && fixed_reports+=("$OUT/$t-fixed.json"); done
if (( ${#fixed_reports[@]} > 0 )); then
    "$BENCH" chart "${fixed_reports[@]}" --out "$OUT/fixed.svg" \
        --title "RPC latency at $FIXED_RATE/s ($CONNS conns, $PAYLOAD B)" >/dev/null 2>&1 \
        || echo "   (chart not written)" >&2
fi

# ---------------------------------------------------------------------------------
# The table.
python3 - "$OUT" "$FIXED_RATE" "$CONNS" "$PAYLOAD" "$WINDOW" "$DURATION" "${TARGETS[@]}" <<'EOF' | tee "$OUT/table.txt"
import json, os, sys
out, rate, conns, payload, window, duration = sys.argv[1:7]
targets = sys.argv[7:]
def load(name):
    try:
        return json.load(open(os.path.join(out, name + ".json")))
    except Exception:
        return None
def gen_cost(t):
    """The load generator's CPU (user + system, its workers included) per request over
    the fixed-rate rounds, warm-up and connects included: nanoseconds."""
    cpu = reqs = 0.0
    for r in range(1, 100):
        f = load(f"{t}-fixed.r{r}")
        try:
            times = open(os.path.join(out, f"{t}-fixed.r{r}.times")).read().split()
        except OSError:
            break
        if not f or len(times) < 4:
            continue
        secs = lambda s: float(s[:-1].split("m")[0]) * 60 + float(s[:-1].split("m")[1])
        cpu += secs(times[2]) + secs(times[3])
        reqs += float(rate) * (f["duration_secs"] + f.get("warmup_secs", 0))
    return cpu / reqs * 1e9 if reqs else None
def kdamond(t, phase):
    """kdamond's CPU milliseconds during each round's run (see kdamond_ms)."""
    runs = []
    for r in range(1, 100):
        try:
            runs.append(int(open(os.path.join(out, f"{t}-{phase}.r{r}.kdamond")).read()))
        except (OSError, ValueError):
            break
    return runs
rows = {}
for t in targets:
    m, f = load(t + "-max"), load(t + "-fixed")
    rows[t] = {
        "max": m and m["throughput_per_sec"],
        "max_ok": m and m["ok"],
        "p50": f and f["latency_us"]["p50"], "p99": f and f["latency_us"]["p99"],
        "p999": f and f["latency_us"]["p999"],
        "fixed_ok": f and f["ok"],
        "fixed_failed": f and (sum(f["requests"]["errors"].values()) + f["requests"]["timeouts"] + f["requests"]["lost"]),
        "server_cpu_max": m and (m.get("gateway") or {}).get("cpu_percent_of_core"),
        "cores_max": load(t + "-max.cores") or {},
        "max_runs": load(t + "-max.runs") or [],
        "gen_ns_per_req": gen_cost(t),
        "p99_runs": load(t + "-fixed.runs") or [],
        "kdamond_ms_fixed_runs": kdamond(t, "fixed"),
    }
def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "-"
def us(v):
    return "-" if v is None else (f"{v}µs" if v < 1000 else f"{v / 1000:.2f}ms")
ng, pr = rows.get("nginx", {}), rows.get("probe", {})
print()
reps = max([len(r["max_runs"]) for r in rows.values()] + [1])
print(f"peers: {conns} conns, payload {payload} B, window {window} at max, {duration} s per run; "
      f"fixed rate {rate}/s (half of nginx's max unless FIXED_RATE)"
      + (f"; medians of {reps} interleaved rounds" if reps > 1 else ""))
hdr = f"{'target':<13} {'max req/s':>10} {'x nginx':>8} {'x probe':>8} {'srv CPU':>8} {'cores s/g':>10} | {'p50':>9} {'p99':>9} {'p99.9':>9} {'p99 x nginx':>12} {'p99 x probe':>12}"
print(hdr); print("-" * len(hdr))
for t in targets:
    r = rows[t]
    cpu = r["server_cpu_max"]
    flag = "" if (r["max_ok"] and r["fixed_ok"]) else "  (!)"
    c = r["cores_max"]
    cores = f"{c['server_core_busy']:.0f}/{c['client_core_busy']:.0f}%" if c else "-"
    print(f"{t:<13} {(r['max'] or 0):>10.0f} {ratio(r['max'], ng.get('max')):>8} {ratio(r['max'], pr.get('max')):>8} "
          f"{(f'{cpu:.0f}%' if cpu is not None else '-'):>8} {cores:>10} | {us(r['p50']):>9} {us(r['p99']):>9} {us(r['p999']):>9} "
          f"{ratio(r['p99'], ng.get('p99')):>12} {ratio(r['p99'], pr.get('p99')):>12}{flag}")
print("(!) = that target's report is not ok (errors, timeouts, lost requests or failed connections): see its JSON")
print("srv CPU: the server under test's CPU at max, percent of one core (its backend not included)")
print("cores s/g: how busy the server core / the load generator's core were at max (all users of the core)")
if "ringgate-link" in targets:
    print("ringgate-link: a second ringgate, the same echo backend reached over the backend link (docs/LINK.md)")
print("harness: rpc --mode echo against the probe server's WebSocket mode; probe-ws: the probe's")
print("  minimal client sending the same frames to the same server")
hn, pw = rows.get("harness", {}), rows.get("probe-ws", {})
if hn.get("max") and pr.get("max"):
    share = hn["max"] / pr["max"]
    paired = [h / p for h, p in zip(hn["max_runs"], pr["max_runs"]) if h and p]
    print(f"harness cost: rpc -> probe server at max = {share:.2f} x the raw probe "
          f"(>= 0.80: {'met' if share >= 0.8 else 'NOT met'})"
          + (f", {hn['max'] / pw['max']:.2f} x probe-ws" if pw.get("max") else "")
          + (f"; round by round {' '.join(f'{x:.2f}' for x in paired)}" if len(paired) > 1 else ""))
if hn.get("gen_ns_per_req") and pr.get("gen_ns_per_req"):
    print(f"harness cost at the fixed rate: the load generator's CPU per request {hn['gen_ns_per_req']:.0f} ns"
          f" = {hn['gen_ns_per_req'] / pr['gen_ns_per_req']:.2f} x the raw probe's {pr['gen_ns_per_req']:.0f} ns"
          + (f", {hn['gen_ns_per_req'] / pw['gen_ns_per_req']:.2f} x probe-ws's" if pw.get("gen_ns_per_req") else ""))
rg = rows.get("ringgate", {})
lk = rows.get("ringgate-link", {})
if rg.get("max") and lk.get("max"):
    print(f"link vs HTTP: ringgate-link max = {ratio(lk['max'], rg['max'])} x ringgate"
          + (f", p99 = {ratio(lk['p99'], rg['p99'])} x" if lk.get("p99") and rg.get("p99") else ""))
for name in ("ringgate", "ringgate-link"):
    r = rows.get(name, {})
    if r.get("max") and ng.get("max") and pr.get("max"):
        print(f"targets ({name}): max >= nginx: {'met' if r['max'] >= ng['max'] else 'NOT met'}; "
              f"p99 <= nginx: {'met' if (r.get('p99') or 1e18) <= (ng.get('p99') or 0) else 'NOT met'}; "
              f">= 50% of probe: {'met' if r['max'] >= 0.5 * pr['max'] else 'NOT met'}")
if reps > 1:
    print("every round (max req/s | p99 at the fixed rate):")
    for t in targets:
        r = rows[t]
        print(f"  {t:<13} {' '.join(f'{v:>9.0f}' for v in r['max_runs'])} | {' '.join(us(v) for v in r['p99_runs'])}")
kd = [v for r in rows.values() for v in r["kdamond_ms_fixed_runs"]]
if any(kd):
    print(f"machine noise: kdamond (the kernel's DAMON reclaim) took {min(kd)}-{max(kd)} ms of CPU per fixed-rate run,")
    print("  in bursts of ~90 ms every ~5 s on either core; a burst on the server core stalls the server")
    print("  under test for that long. Per round (ms): "
          + "; ".join(f"{t} {' '.join(map(str, rows[t]['kdamond_ms_fixed_runs']))}" for t in targets))
json.dump({"fixed_rate": float(rate), "conns": int(conns), "payload": int(payload),
           "window": int(window), "duration_secs": float(duration), "rows": rows},
          open(os.path.join(out, "summary.json"), "w"), indent=2)
EOF
echo "== outputs: $OUT"
