#!/usr/bin/env bash
# Soak (issue 17; a benchmark, not a test): MINUTES of mixed load against ONE ringgate
# process, then a per-minute table and the targets.
#
#   NPC observers  `ringgate-bench observers` (OBSERVERS x WATCH of NPCS NPCs) against a
#                  running `npc-world` (its own process, reached over the backend link)
#   RPC            `ringgate-bench rpc` at RPC_RATE requests/s over RPC_CONNS connections
#                  against the built-in echo backend, over HTTP (RPC_VIA=http) or the
#                  backend link (RPC_VIA=link)
#   churn          `ringgate-bench connect --conns CHURN_BATCH --rate CHURN_RATE` in a
#                  loop: clients connect, get their manifest, stay until the batch is
#                  over (CHURN_BATCH / CHURN_RATE s) and leave; the next batch starts
#   reloads        the config file rewritten (the echo service's endpoint /echo/extra
#                  added, then removed, ...) and SIGHUP to the gateway every
#                  RELOAD_EVERY seconds: a new registry, and a new manifest to every
#                  connected session
#
# Observers and RPC run once each for the whole soak (their connections live
# throughout) and write one JSON line a second (`--progress-json`: counters and that
# second's latency histogram); the churn batches each leave a `connect` report. Every
# RSS_EVERY seconds the gateway's /proc/PID/status (VmRSS, VmHWM, threads), its open
# descriptors, its CPU time, a few /metrics gauges and the machine's CPU (all of it, and
# what the soak's own processes took) go to rss.csv.
#
# At the end perf/soak_report.py prints the per-minute table (RSS, gateway CPU, RPC
# rate/p50/p99/errors, observers' deliveries/p50/p99/disconnects, churn, reloads,
# gateway WARN/ERROR lines) and checks the targets:
#   - RSS flat: after the first WARMUP_MIN minutes, max/min of the samples <= 1 + RSS_TOL %
#   - zero unexpected errors: no failed connect, error answer, timeout, lost request,
#     drop or disconnect in any scenario, every scenario exiting 0, no WARN/ERROR line
#     in the gateway's log, every SIGHUP followed by its "config reloaded" line
#   - p99 steady: after warm-up, the largest per-minute p99 <= P99_SPREAD_MAX x their
#     median (RPC and observers apart; the spread max/min is printed too)
#
#   perf/soak.sh                           # 30 minutes, defaults below (+ build)
#   MINUTES=4 perf/soak.sh                 # a short validation run
#   RPC_VIA=link RPC_RATE=5000 BUILD=0 perf/soak.sh
#
# Environment (defaults): MINUTES (30; at most 55: the harness's tokens live an hour),
# WARMUP_MIN (3), OBSERVERS (2000), WATCH (5), NPCS (1000), RPC_RATE (3000), RPC_CONNS
# (100), RPC_VIA (http), CHURN_RATE (20 connects/s), CHURN_BATCH (200), RELOAD_EVERY
# (180 s), RSS_EVERY (10 s), SHARDS (0: one per core), RSS_TOL (5 %), P99_SPREAD_MAX (2),
# BUILD (1; 0 uses the binaries in target/release), GATEWAY (the ringgate binary).
# The gateway runs on the shipped defaults otherwise (idle pings, rate limit, reconnect
# window: a client that leaves is parked for reconnect_window_secs, 300 s).
#
# Outputs in perf/out/soak-<YYYYmmdd-HHMMSS>/: ringgate.toml (as last loaded),
# params.json, rss.csv, reloads.csv, churn.csv and churn/NNNN.{json,txt},
# observers.progress.jsonl, observers.json, observers.txt, rpc.progress.jsonl,
# rpc.json, rpc.txt, gateway.log, npc-world.log, echo-backend.log, metrics-end.txt,
# loadavg.csv, summary.json and table.txt. Exit status 0 when every target held.
# Every process it starts is stopped by pid on exit, also on failure or Ctrl-C.
set -euo pipefail
source "$(dirname "$0")/lib.sh"  # free_port, wait_listen, stop_pid
# The gateway drains for up to drain_window_ms (10 s) before it exits.
STOP_SECS=20

MINUTES=${MINUTES:-30}
WARMUP_MIN=${WARMUP_MIN:-3}
OBSERVERS=${OBSERVERS:-2000}
WATCH=${WATCH:-5}
NPCS=${NPCS:-1000}
RPC_RATE=${RPC_RATE:-3000}
RPC_CONNS=${RPC_CONNS:-100}
RPC_VIA=${RPC_VIA:-http}
CHURN_RATE=${CHURN_RATE:-20}
CHURN_BATCH=${CHURN_BATCH:-200}
RELOAD_EVERY=${RELOAD_EVERY:-180}
RSS_EVERY=${RSS_EVERY:-10}
SHARDS=${SHARDS:-0}
RSS_TOL=${RSS_TOL:-5}
P99_SPREAD_MAX=${P99_SPREAD_MAX:-2}
BUILD=${BUILD:-1}

for v in MINUTES OBSERVERS WATCH NPCS RPC_CONNS CHURN_BATCH RELOAD_EVERY RSS_EVERY; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "$v must be a positive integer" >&2; exit 1; }
done
[[ $WARMUP_MIN =~ ^[0-9]+$ && $SHARDS =~ ^[0-9]+$ ]] || { echo "WARMUP_MIN and SHARDS must be integers" >&2; exit 1; }
(( MINUTES <= 55 )) || { echo "MINUTES must be <= 55: the harness's tokens expire after an hour (4001)" >&2; exit 1; }
(( WARMUP_MIN < MINUTES )) || { echo "WARMUP_MIN must be below MINUTES" >&2; exit 1; }
case $RPC_VIA in http|link) ;; *) echo "RPC_VIA must be http or link" >&2; exit 1 ;; esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
STAMP=$(date +%Y%m%d-%H%M%S)
OUT=$ROOT/perf/out/soak-$STAMP
GATEWAY=${GATEWAY:-$ROOT/target/release/ringgate}
BENCH=$ROOT/target/release/ringgate-bench

for tool in python3 curl ss awk; do
    command -v "$tool" >/dev/null || { echo "soak.sh needs $tool" >&2; exit 1; }
done
if [[ $BUILD == 1 ]]; then
    echo "== building release (ringgate, ringgate-bench)"
    cargo build --release -p ringgate -p ringgate-bench
fi
[[ -x $GATEWAY && -x $BENCH ]] || { echo "missing $GATEWAY or $BENCH (run with BUILD=1)" >&2; exit 1; }
mkdir -p "$OUT/churn"

# ---------------------------------------------------------------------------------
# Processes: every pid we start is recorded and stopped on exit (reverse order).
PIDS=()
CHURN_PID=""
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    local i
    [[ -n $CHURN_PID ]] && stop_pid "$CHURN_PID"
    for (( i=${#PIDS[@]}-1; i>=0; i-- )); do stop_pid "${PIDS[$i]}"; done
    exit "$status"
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT
trap 'exit 143' TERM

now_ms() { date +%s%3N; }

ECHO_PORT=$(free_port); LINK_PORT=$(free_port); WORLD_PORT=$(free_port)
GW_PORT=$(free_port); ADMIN_PORT=$(free_port)

echo "== soak: $MINUTES min against one gateway; out: $OUT"
# Servers are started as `cmd ... &` (a simple command: $! is the server's own pid).
"$BENCH" echo-backend --listen "127.0.0.1:$ECHO_PORT" --link-listen "127.0.0.1:$LINK_PORT" \
    --threads 1 > "$OUT/echo-backend.log" 2>&1 &
ECHO_PID=$!; PIDS+=("$ECHO_PID")
"$BENCH" npc-world --listen "127.0.0.1:$WORLD_PORT" --npcs "$NPCS" > "$OUT/npc-world.log" 2>&1 &
WORLD_PID=$!; PIDS+=("$WORLD_PID")
wait_listen "$ECHO_PORT" echo-backend "$ECHO_PID"
wait_listen "$LINK_PORT" "echo-backend (link)" "$ECHO_PID"
wait_listen "$WORLD_PORT" npc-world "$WORLD_PID"

# The gateway's config: the shipped defaults but for the ports, shards, secret and the
# two services. EXTRA=1 adds /echo/extra (what the reloads toggle). Written to a
# temporary file and renamed, so a SIGHUP never reads half a file.
CFG=$OUT/ringgate.toml
SECRET="soak-secret-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
GUID_SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')  # as a deployment sets it
if [[ $RPC_VIA == link ]]; then ECHO_TARGET="link = \"ws://127.0.0.1:$LINK_PORT/link\""
else ECHO_TARGET="url = \"http://127.0.0.1:$ECHO_PORT\""; fi
write_config() { # extra(0|1)
    local extra=""
    [[ $1 == 1 ]] && extra=', { path = "/echo/extra", roles = ["user"] }'
    cat > "$CFG.tmp" <<EOF
# Written by perf/soak.sh (reload variant: extra endpoint $1).
[server]
listen = "127.0.0.1:$GW_PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"
shards = $SHARDS
guid_secret = "$GUID_SECRET"

[auth]
hs256_secret = "$SECRET"

[[services]]
name = "echo"
$ECHO_TARGET
endpoints = [ { path = "/echo", roles = ["user"] }$extra ]

[[services]]
name = "npc"
link = "ws://127.0.0.1:$WORLD_PORT/"
endpoints = [ { path = "/npc/watch", roles = ["user"] } ]
EOF
    mv "$CFG.tmp" "$CFG"
}
write_config 0
"$GATEWAY" --check-config "$CFG" >/dev/null

"$GATEWAY" --config "$CFG" > "$OUT/gateway.log" 2>&1 &
GW_PID=$!; PIDS+=("$GW_PID")
ready=0
for _ in $(seq 1 200); do
    if curl -fsS -m 2 "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null 2>&1; then ready=1; break; fi
    kill -0 "$GW_PID" 2>/dev/null || break
    sleep 0.1
done
[[ $ready == 1 ]] || { echo "gateway did not become ready; its log:" >&2; cat "$OUT/gateway.log" >&2; exit 1; }
metric_sum() { # name: the sum of a gauge/counter over its label sets, from $METRICS
    awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $NF } END { printf "%d", s }' <<< "$METRICS"
}
# Every link service (the world; the echo too with RPC_VIA=link) up on every shard
# (ringgate_link_up{service=...} counts the shards whose link is up).
n_shards=$(sed -n 's/.*ringgate listening.* shards=\([0-9]*\).*/\1/p' "$OUT/gateway.log" | head -n 1)
want_links=1; [[ $RPC_VIA == link ]] && want_links=2
links_ok=0
for _ in $(seq 1 100); do
    METRICS=$(curl -fsS -m 2 "http://127.0.0.1:$ADMIN_PORT/metrics" 2>/dev/null || true)
    up=$(awk -v n="${n_shards:-0}" '/^ringgate_link_up\{/ && $NF == n { k++ } END { print k + 0 }' <<< "$METRICS")
    if (( up == want_links )); then links_ok=1; break; fi
    sleep 0.1
done
[[ $links_ok == 1 ]] || echo "   warning: backend links not all up on all ${n_shards:-?} shards after 10 s" >&2
echo "   gateway pid $GW_PID on 127.0.0.1:$GW_PORT (admin $ADMIN_PORT), rpc via $RPC_VIA; \
fd limit $(awk '/Max open files/ {print $4"/"$5}' "/proc/$GW_PID/limits")"

CLK_TCK=$(getconf CLK_TCK)
RSS_CSV=$OUT/rss.csv
echo "t_secs,unix_ms,rss_kib,hwm_kib,threads,fds,cpu_ticks,connections_open,sessions_parked,subscriptions,host_busy_ticks,host_total_ticks,soak_ticks,host_irq_ticks,host_steal_ticks" > "$RSS_CSV"
echo "t_secs,unix_ms,extra_endpoint" > "$OUT/reloads.csv"
echo "batch,start_unix_ms,end_unix_ms,exit" > "$OUT/churn.csv"
echo "t_secs,load1,load5,load15" > "$OUT/loadavg.csv"
T0=$(now_ms)
# CPU ticks of this script and every process under it (gateway, backends, load
# generators and their workers; a churn batch that already exited is not counted).
soak_ticks() {
    local queue=("$$") all=() p
    while (( ${#queue[@]} )); do
        p=${queue[0]}; queue=("${queue[@]:1}"); all+=("$p")
        # shellcheck disable=SC2207
        queue+=($(cat /proc/"$p"/task/*/children 2>/dev/null))
    done
    for p in "${all[@]}"; do sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null; done | awk '{ s += $12 + $13 } END { printf "%d", s }'
}
sample_gateway() {
    local now t rss hwm thr fds ticks host irq_steal
    now=$(now_ms); t=$(( (now - T0) / 1000 ))
    [[ -r /proc/$GW_PID/status ]] || return 1
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$GW_PID/status")
    hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$GW_PID/status")
    thr=$(awk '/^Threads:/ {print $2}' "/proc/$GW_PID/status")
    fds=$(find "/proc/$GW_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    # utime + stime: fields 14 and 15 of /proc/PID/stat (after the parenthesised name).
    ticks=$(sed 's/^.*) //' "/proc/$GW_PID/stat" | awk '{print $12 + $13}')
    METRICS=$(curl -fsS -m 2 "http://127.0.0.1:$ADMIN_PORT/metrics" 2>/dev/null || true)
    # The whole machine (first line of /proc/stat): busy = all but idle and iowait; of
    # it, interrupts (irq + softirq: loopback's packets, mostly, charged to no process)
    # and steal (the hypervisor ran someone else on our vCPUs).
    # One read: busy,total and irq,steal of the same instant.
    read -r host irq_steal < <(awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6 "," t, $7 + $8 "," $9 }' /proc/stat)
    echo "$t,$now,$rss,$hwm,$thr,$fds,$ticks,$(metric_sum ringgate_connections_open),$(metric_sum ringgate_sessions_parked),$(metric_sum ringgate_subscriptions),$host,$(soak_ticks),$irq_steal" >> "$RSS_CSV"
    echo "$t,$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' ',')" >> "$OUT/loadavg.csv"
}

DURATION=$(( MINUTES * 60 ))
RECONNECT_WINDOW=$(sed -n 's/^reconnect_window_secs = \([0-9]*\).*/\1/p' configs/default.toml)
cat > "$OUT/params.json" <<EOF
{"minutes": $MINUTES, "warmup_min": $WARMUP_MIN, "observers": $OBSERVERS, "watch": $WATCH,
 "npcs": $NPCS, "rpc_rate": $RPC_RATE, "rpc_conns": $RPC_CONNS, "rpc_via": "$RPC_VIA",
 "churn_rate": $CHURN_RATE, "churn_batch": $CHURN_BATCH, "reload_every_secs": $RELOAD_EVERY,
 "rss_every_secs": $RSS_EVERY, "shards": $SHARDS, "rss_tol_percent": $RSS_TOL,
 "p99_spread_max": $P99_SPREAD_MAX, "t0_unix_ms": $T0, "clk_tck": $CLK_TCK,
 "started": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "commit": "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo +dirty)",
 "host_cpus": $(nproc), "gateway_pid": $GW_PID, "reconnect_window_secs": ${RECONNECT_WINDOW:-null}}
EOF
sample_gateway

# ---------------------------------------------------------------------------------
# The long-lived loads: observers and RPC for the whole soak (no extra warm-up: the
# per-minute table is where warm-up is judged).
echo "== load for $MINUTES min: $OBSERVERS observers x $WATCH of $NPCS NPCs; rpc $RPC_RATE/s over \
$RPC_CONNS conns ($RPC_VIA); churn $CHURN_RATE connects/s in batches of $CHURN_BATCH; SIGHUP every ${RELOAD_EVERY}s"
"$BENCH" observers --world "127.0.0.1:$WORLD_PORT" --gateway-config "$CFG" --gateway-pid "$GW_PID" \
    --observers "$OBSERVERS" --watch "$WATCH" --npcs "$NPCS" --duration "$DURATION" --warmup 0 \
    --label soak --json "$OUT/observers.json" --progress-json "$OUT/observers.progress.jsonl" \
    > "$OUT/observers.txt" 2>&1 &
OBS_PID=$!; PIDS+=("$OBS_PID")
"$BENCH" rpc --gateway-config "$CFG" --gateway-pid "$GW_PID" --conns "$RPC_CONNS" --rate "$RPC_RATE" \
    --duration "$DURATION" --warmup 0 --label "soak rpc ($RPC_VIA)" --json "$OUT/rpc.json" \
    --progress-json "$OUT/rpc.progress.jsonl" > "$OUT/rpc.txt" 2>&1 &
RPC_PID=$!; PIDS+=("$RPC_PID")

END_MS=$(( T0 + DURATION * 1000 ))
CHURN_SECS=$(( (CHURN_BATCH + CHURN_RATE - 1) / CHURN_RATE ))
next_rss=$(( T0 + RSS_EVERY * 1000 ))
next_reload=$(( T0 + RELOAD_EVERY * 1000 ))
extra=0
batch=0
churn_start=0
OBS_RC=""; RPC_RC=""
last_print=$T0
while :; do
    now=$(now_ms)
    if ! kill -0 "$GW_PID" 2>/dev/null; then
        echo "gateway pid $GW_PID died at t=$(( (now - T0) / 1000 )) s; last log lines:" >&2
        tail -n 30 "$OUT/gateway.log" >&2
        exit 1
    fi
    # The churn: one batch at a time, until the next would not end in time.
    if [[ -n $CHURN_PID ]] && ! kill -0 "$CHURN_PID" 2>/dev/null; then
        rc=0; wait "$CHURN_PID" || rc=$?
        echo "$batch,$churn_start,$now,$rc" >> "$OUT/churn.csv"
        CHURN_PID=""
    fi
    if [[ -z $CHURN_PID ]] && (( now + CHURN_SECS * 1000 <= END_MS )); then
        batch=$(( batch + 1 )); churn_start=$now
        f=$(printf '%s/churn/%04d' "$OUT" "$batch")
        "$BENCH" connect --gateway-config "$CFG" --conns "$CHURN_BATCH" --rate "$CHURN_RATE" \
            --json "$f.json" > "$f.txt" 2>&1 &
        CHURN_PID=$!
    fi
    if (( now >= next_rss )); then
        sample_gateway || true
        next_rss=$(( next_rss + RSS_EVERY * 1000 ))
    fi
    if (( now >= next_reload && now < END_MS )); then
        extra=$(( 1 - extra ))
        write_config "$extra"
        kill -HUP "$GW_PID"
        echo "$(( (now - T0) / 1000 )),$now,$extra" >> "$OUT/reloads.csv"
        next_reload=$(( next_reload + RELOAD_EVERY * 1000 ))
    fi
    if [[ -z $OBS_RC ]] && ! kill -0 "$OBS_PID" 2>/dev/null; then
        OBS_RC=0; wait "$OBS_PID" || OBS_RC=$?
        (( now < END_MS - 5000 )) && echo "   observers ended early (exit $OBS_RC) at t=$(( (now - T0) / 1000 )) s" >&2
    fi
    if [[ -z $RPC_RC ]] && ! kill -0 "$RPC_PID" 2>/dev/null; then
        RPC_RC=0; wait "$RPC_PID" || RPC_RC=$?
        (( now < END_MS - 5000 )) && echo "   rpc ended early (exit $RPC_RC) at t=$(( (now - T0) / 1000 )) s" >&2
    fi
    if (( now - last_print >= 60000 )); then
        last_print=$now
        echo "   [$(( (now - T0) / 60000 )) min] rss $(awk '/^VmRSS:/ {printf "%.1f MiB", $2/1024}' "/proc/$GW_PID/status"), \
churn batches $batch, reloads $(( $(wc -l < "$OUT/reloads.csv") - 1 )), \
$(tail -n 1 "$OUT/rpc.txt" 2>/dev/null | sed 's/^ *//' | cut -c1-90)"
    fi
    if [[ -n $OBS_RC && -n $RPC_RC ]]; then
        [[ -z $CHURN_PID ]] && (( now >= END_MS )) && break
        if (( now < END_MS - 5000 )); then echo "   observers and rpc both ended early; stopping" >&2; break; fi
    fi
    if (( now > END_MS + 120000 )); then
        echo "   loads still running 2 min after the end; stopping them" >&2
        stop_pid "$OBS_PID"; stop_pid "$RPC_PID"
        OBS_RC=${OBS_RC:-124}; RPC_RC=${RPC_RC:-124}
        break
    fi
    sleep 1
done
if [[ -n $CHURN_PID ]]; then
    stop_pid "$CHURN_PID"
    echo "$batch,$churn_start,$(now_ms),stopped" >> "$OUT/churn.csv"
    CHURN_PID=""
fi
sample_gateway || true
curl -fsS -m 5 "http://127.0.0.1:$ADMIN_PORT/metrics" > "$OUT/metrics-end.txt" 2>/dev/null || true
cp "$CFG" "$OUT/ringgate.last.toml" 2>/dev/null || true

echo "== stopping the gateway (SIGTERM to pid $GW_PID) and the backends"
kill -TERM "$GW_PID" 2>/dev/null || true
GW_RC=0
for _ in $(seq 1 600); do kill -0 "$GW_PID" 2>/dev/null || break; sleep 0.05; done
if kill -0 "$GW_PID" 2>/dev/null; then echo "   gateway still running 30 s after SIGTERM" >&2; GW_RC=124; else wait "$GW_PID" || GW_RC=$?; fi
for pid in "$WORLD_PID" "$ECHO_PID"; do stop_pid "$pid"; done
echo "{\"observers\": ${OBS_RC:-null}, \"rpc\": ${RPC_RC:-null}, \"gateway\": $GW_RC}" > "$OUT/exit_codes.json"

echo "== report"
status=0
python3 "$ROOT/perf/soak_report.py" "$OUT" || status=$?
echo "== outputs in $OUT"
exit "$status"
