#!/usr/bin/env bash
# Autobahn|Testsuite (fuzzingclient) against ringgate's sans-IO WebSocket codec.
#
# ringgate itself is not an echo server (binary frames are Bannou requests, text frames
# answer code 14), so the suite runs against `ringgate-bench ws-echo`, a plain echo
# server built on exactly the codec the gateway uses (proto/src/{handshake,frame,ws}.rs,
# the same readiness + non-blocking I/O and outbox). Sections 1-7 and 10 take seconds;
# 9 (performance) and 12-13 (compression, not negotiated by ringgate) are left out.
#
#   perf/autobahn.sh            # results: perf/out/autobahn/index.html, summary printed
#
# Needs Python 2.7.18 under pyenv (see ../shared/PEERS.md); makes its own virtualenv.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/perf/out/autobahn
VENV=${AUTOBAHN_VENV:-$ROOT/perf/out/autobahn-venv}
PY27=${PY27:-$(pyenv root 2>/dev/null)/versions/2.7.18/bin/python}
PORT=${PORT:-9001}
mkdir -p "$OUT"

if [[ ! -x "$VENV/bin/wstest" ]]; then
    echo "== installing autobahntestsuite into $VENV"
    "$PY27" -m pip install -q "virtualenv<20.22"
    "$PY27" -m virtualenv -q "$VENV"
    "$VENV/bin/pip" install -q autobahntestsuite
fi

cargo build --release -p ringgate-bench
"$ROOT/target/release/ringgate-bench" ws-echo --listen "127.0.0.1:$PORT" > "$OUT/ws-echo.log" 2>&1 &
ECHO_PID=$!
trap 'kill -TERM $ECHO_PID 2>/dev/null || true; wait $ECHO_PID 2>/dev/null || true' EXIT
sleep 0.5

cat > "$OUT/spec.json" <<JSON
{"outdir": "$OUT", "servers": [{"agent": "ringgate-codec", "url": "ws://127.0.0.1:$PORT/"}],
 "cases": ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "10.*"], "exclude-cases": [], "exclude-agent-cases": {}}
JSON
(cd "$OUT" && "$VENV/bin/wstest" -m fuzzingclient -s spec.json > wstest.log 2>&1)

python3 - "$OUT/index.json" <<'PY'
import collections, json, sys
cases = json.load(open(sys.argv[1]))["ringgate-codec"]
by = collections.Counter(v["behavior"] for v in cases.values())
close = collections.Counter(v["behaviorClose"] for v in cases.values())
print("autobahn: %d cases; behavior %s; close %s" % (len(cases), dict(by), dict(close)))
bad = [k for k, v in cases.items() if v["behavior"] == "FAILED" or v["behaviorClose"] == "FAILED"]
if bad:
    print("FAILED cases: " + ", ".join(sorted(bad)))
    sys.exit(1)
PY
echo "report: $OUT/index.html"
