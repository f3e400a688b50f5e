#!/usr/bin/env python3
"""Where a core's time went per request, by process and by user/kernel side.

Used by peers.sh (PROFILE=1). Reads `perf report --sort comm,dso -g none
--field-separator=, --stdio` of a `perf record -a -C CORE` that spanned a run's measured
window, and the run's report JSON for its throughput. Every sample is a slice of the
core's wall time (idle included, as "swapper"), so a process's share of the samples
over the throughput is its core time per request.

usage: perf report ... | core_split.py RUN.json CORE
"""
import json
import sys


def main():
    tp = json.load(open(sys.argv[1]))["throughput_per_sec"]
    per = {}
    for line in sys.stdin:
        f = [x.strip() for x in line.split(",")]
        if len(f) < 3 or not f[0].endswith("%"):
            continue
        share = float(f[0].rstrip("%")) / 100
        side = "kernel" if f[2] == "[kernel.kallsyms]" else "user"
        per.setdefault(f[1], {"user": 0.0, "kernel": 0.0})[side] += share * 1e9 / tp
    print(f"   server core {sys.argv[2]} per request at max, ns "
          f"({tp:.0f}/s: {1e9 / tp:.0f} ns of the core each)")
    for comm, v in sorted(per.items(), key=lambda kv: -(kv[1]["user"] + kv[1]["kernel"])):
        if v["user"] + v["kernel"] >= 1:
            print(f"     {comm:<18} user {v['user']:6.0f}  kernel {v['kernel']:6.0f}")


if __name__ == "__main__":
    main()
