# Shell helpers the perf scripts share (sourced, not run): one copy of how they pick
# ports, wait for a server to listen and stop what they started, by process id.
#
#   source "$(dirname "$0")/lib.sh"
#
# wait_listen names $OUT (the calling script's output directory) in its error.

# A free TCP port outside the ephemeral range (so client sockets never take it), never
# one this script was already given.
USED_PORTS=" "
free_port() {
    local p
    for p in $(shuf -i 20000-32000 -n 300); do
        [[ $USED_PORTS == *" $p "* ]] && continue
        if ! ss -Htln "sport = :$p" | grep -q .; then USED_PORTS+="$p "; echo "$p"; return 0; fi
    done
    echo "no free port found" >&2
    return 1
}

# wait_listen PORT WHAT PID: until something listens on PORT (at most WAIT_LISTEN_SECS,
# 10 by default); fails at once if PID has exited.
wait_listen() {
    local secs=${WAIT_LISTEN_SECS:-10} i
    for i in $(seq 1 $(( secs * 20 ))); do
        ss -Htln "sport = :$1" | grep -q . && return 0
        kill -0 "$3" 2>/dev/null || { echo "$2 exited during startup; see $OUT" >&2; return 1; }
        sleep 0.05
    done
    echo "$2 is not listening on port $1 after $secs s" >&2
    return 1
}

# stop_pid PID: SIGTERM, then SIGKILL if it is still there after STOP_SECS (5 by
# default); reaps it either way.
stop_pid() {
    local pid=$1 secs=${STOP_SECS:-5} i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 $(( secs * 20 ))); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "   pid $pid ignored SIGTERM for $secs s; SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}
