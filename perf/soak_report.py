#!/usr/bin/env python3
"""The report of a perf/soak.sh run: python3 perf/soak_report.py perf/out/soak-<stamp>/

Reads what soak.sh left in the directory (params.json, rss.csv, reloads.csv, churn.csv
and churn/*.json, observers.progress.jsonl, rpc.progress.jsonl, observers.json,
rpc.json, gateway.log, exit_codes.json, loadavg.csv), prints the per-minute table and
the targets, writes table.txt and summary.json beside them, and exits 0 when every
target held (1 otherwise). Re-running it on a directory gives the same report.

Minute m covers [t0 + 60 (m-1), t0 + 60 m) s, t0 being when soak.sh started the
loads. A latency histogram line of the progress logs covers the second before its
`unix_ms`; counters are cumulative, so a minute's count is the difference between its
last line and the last line before it.
"""

import csv
import json
import math
import re
import statistics
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path


def load_json(p):
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def read_jsonl(p):
    out = []
    try:
        for line in p.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass  # a line cut by a kill
    except OSError:
        pass
    return out


def read_csv(p):
    try:
        with p.open() as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


def percentile(counts, q):
    """q-quantile of [(value, count), ...] (HdrHistogram-style: the value at or above
    which the rank ceil(q * total) falls)."""
    total = sum(c for _, c in counts)
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    cum = 0
    for v, c in sorted(counts):
        cum += c
        if cum >= rank:
            return v
    return sorted(counts)[-1][0]


def fmt_us(us):
    if us is None:
        return "-"
    if us >= 1_000_000:
        return f"{us / 1e6:.2f}s"
    if us >= 1000:
        return f"{us / 1000:.1f}ms"
    return f"{us}us"


def main():
    d = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    params = load_json(d / "params.json")
    if params is None:
        print(f"{d}: no params.json (not a soak.sh output directory?)", file=sys.stderr)
        return 2
    t0 = params["t0_unix_ms"]
    minutes = params["minutes"]
    warm = params["warmup_min"]
    tck = params.get("clk_tck", 100)

    def minute_of(unix_ms):
        return int((unix_ms - t0) // 60000)

    # --- RSS and CPU samples
    rss = read_csv(d / "rss.csv")
    for r in rss:
        for k in list(r):
            r[k] = int(float(r[k])) if r[k] not in ("", None) else 0

    # --- progress logs (cumulative counters; one histogram per second)
    rpc_lines = [l for l in read_jsonl(d / "rpc.progress.jsonl") if l.get("phase") != "after"]
    obs_lines = [l for l in read_jsonl(d / "observers.progress.jsonl") if l.get("phase") != "after"]

    def per_minute_counter(lines, key):
        """{minute: increase of live[key] during the minute}."""
        out, prev = {}, 0
        last_in = {}
        for l in lines:
            last_in[minute_of(l["unix_ms"])] = l["live"][key]
        for m in range(minutes):
            if m in last_in:
                out[m] = last_in[m] - prev
                prev = last_in[m]
            else:
                out[m] = None
        return out

    def per_minute_hist(lines, key):
        out = {m: [] for m in range(minutes)}
        for l in lines:
            m = minute_of(l["unix_ms"] - 500)
            if m in out:
                out[m].extend(tuple(x) for x in l[key]["counts"])
        return out

    rpc_ok = per_minute_counter(rpc_lines, "ok")
    rpc_err = per_minute_counter(rpc_lines, "errors")
    rpc_cfail = per_minute_counter(rpc_lines, "connect_failed")
    rpc_hist = per_minute_hist(rpc_lines, "latency")
    obs_del = per_minute_counter(obs_lines, "deliveries")
    obs_disc = per_minute_counter(obs_lines, "disconnects")
    obs_gaps = per_minute_counter(obs_lines, "gaps")
    obs_hist = per_minute_hist(obs_lines, "fast")

    def secs_in(lines, m):
        ts = [l["unix_ms"] for l in lines if minute_of(l["unix_ms"]) == m]
        prev = [l["unix_ms"] for l in lines if minute_of(l["unix_ms"]) < m]
        if not ts:
            return None
        start = prev[-1] if prev else ts[0] - 1000
        return max(1e-3, (ts[-1] - start) / 1000)

    # --- churn batches
    churn = read_csv(d / "churn.csv")
    churn_min = {m: Counter() for m in range(minutes)}
    churn_total = Counter()
    churn_failures, churn_drops, churn_errors = Counter(), Counter(), []
    churn_connect_hist = []
    for b in churn:
        rep = load_json(d / "churn" / f"{int(b['batch']):04d}.json")
        m = min(max(minute_of(int(b["end_unix_ms"])), 0), minutes - 1)
        c = churn_min[m]
        c["batches"] += 1
        churn_total["batches"] += 1
        if b["exit"] not in ("0",):
            c["bad_exit"] += 1
            churn_total["bad_exit"] += 1
            churn_errors.append(f"batch {b['batch']}: exit {b['exit']}")
        if rep is None:
            if b["exit"] != "stopped":
                churn_errors.append(f"batch {b['batch']}: no report")
            continue
        conn = rep["connect"]
        c["established"] += conn["established"]
        c["failed"] += sum(conn["failures"].values())
        c["dropped"] += sum(rep["dropped"].values())
        churn_total["established"] += conn["established"]
        churn_total["attempted"] += conn["attempted"]
        churn_failures.update(conn["failures"])
        churn_drops.update(rep["dropped"])
        churn_errors.extend(f"batch {b['batch']}: {e}" for e in rep["worker_errors"])
        churn_connect_hist.extend(tuple(x) for x in conn["connect_us"]["counts"])

    # --- reloads and the gateway log
    reloads = read_csv(d / "reloads.csv")
    reload_min = Counter(minute_of(int(r["unix_ms"])) for r in reloads)
    log_re = re.compile(r"^(\S+)\s+(TRACE|DEBUG|INFO|WARN|ERROR)\s+(.*)$")
    log_min = Counter()
    warn_msgs = Counter()
    reloaded_lines = 0
    try:
        log_text = (d / "gateway.log").read_text(errors="replace").splitlines()
    except OSError:
        log_text = []
    for line in log_text:
        mt = log_re.match(line)
        if not mt:
            continue
        ts, level, msg = mt.groups()
        if "config reloaded" in msg:
            reloaded_lines += 1
        if level in ("WARN", "ERROR"):
            try:
                when = datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000
                log_min[minute_of(when)] += 1
            except ValueError:
                pass
            # Group by the message without the values of its fields.
            key = re.sub(r"=(\"[^\"]*\"|\S+)", "=…", msg)
            warn_msgs[f"{level} {key[:160]}"] += 1

    # --- the table
    rows = []
    hdr = (f"{'min':>3} {'RSS MiB':>8} {'gw CPU':>6} {'fds':>5} {'conns':>6} {'parked':>6} "
           f"{'rpc/s':>6} {'rpc p50':>8} {'rpc p99':>8} {'rpc err':>7} "
           f"{'obs del/s':>9} {'obs p50':>8} {'obs p99':>8} {'gaps':>5} {'disc':>4} "
           f"{'churn ok':>8} {'fail':>4} {'HUP':>3} {'W/E':>3} {'host':>5} {'irq':>4} {'steal':>5} {'other':>5}")
    lines_out = [hdr]
    load = read_csv(d / "loadavg.csv")
    for m in range(minutes):
        in_m = [r for r in rss if minute_of(r["unix_ms"]) == m]
        before = [r for r in rss if minute_of(r["unix_ms"]) < m]
        last = in_m[-1] if in_m else None
        first = before[-1] if before else (in_m[0] if in_m else None)
        cpu = host = other = irq = steal = None
        if last and first and last["unix_ms"] > first["unix_ms"]:
            secs = (last["unix_ms"] - first["unix_ms"]) / 1000
            cpu = 100 * (last["cpu_ticks"] - first["cpu_ticks"]) / tck / secs
            if last.get("host_total_ticks") and first.get("host_total_ticks"):
                # The machine's busy time in percent of one core (all cores: ncpu x 100),
                # and what processes outside the soak took of it.
                span = last["host_total_ticks"] - first["host_total_ticks"]
                busy = last["host_busy_ticks"] - first["host_busy_ticks"]
                ncpu = params.get("host_cpus", 1)
                host = 100 * ncpu * busy / span if span else None
                ours = max(0, last["soak_ticks"] - first["soak_ticks"]) / tck / secs * 100
                outside = 0.0
                if last.get("host_irq_ticks") is not None and first.get("host_irq_ticks") is not None and span:
                    # Steal is charged to no process: apart from "other". (Softirq time is
                    # mostly charged to the process it interrupted, the soak's own: shown,
                    # not subtracted.)
                    irq = 100 * ncpu * (last["host_irq_ticks"] - first["host_irq_ticks"]) / span
                    steal = 100 * ncpu * (last["host_steal_ticks"] - first["host_steal_ticks"]) / span
                    outside = steal
                other = max(0.0, host - ours - outside) if host is not None else None
        rs = secs_in(rpc_lines, m)
        os_ = secs_in(obs_lines, m)
        rh, oh = rpc_hist[m], obs_hist[m]
        la = [float(r["load1"]) for r in load if minute_of(t0 + int(r["t_secs"]) * 1000) == m]
        row = {
            "minute": m + 1,
            "rss_mib": round(last["rss_kib"] / 1024, 1) if last else None,
            "gateway_cpu_percent": round(cpu, 1) if cpu is not None else None,
            "fds": last["fds"] if last else None,
            "connections_open": last["connections_open"] if last else None,
            "sessions_parked": last["sessions_parked"] if last else None,
            "rpc_ok_per_sec": round(rpc_ok[m] / rs) if rpc_ok[m] is not None and rs else None,
            "rpc_p50_us": percentile(rh, 0.5),
            "rpc_p99_us": percentile(rh, 0.99),
            "rpc_errors": (rpc_err[m] or 0) + (rpc_cfail[m] or 0) if rpc_err[m] is not None else None,
            "obs_deliveries_per_sec": round(obs_del[m] / os_) if obs_del[m] is not None and os_ else None,
            "obs_p50_us": percentile(oh, 0.5),
            "obs_p99_us": percentile(oh, 0.99),
            "obs_gaps": obs_gaps[m],
            "obs_disconnects": obs_disc[m],
            "churn_established": churn_min[m]["established"],
            "churn_failed": churn_min[m]["failed"] + churn_min[m]["dropped"] + churn_min[m]["bad_exit"],
            "reloads": reload_min[m],
            "gateway_warn_error_lines": log_min[m],
            "load1": round(max(la), 2) if la else None,
            "host_cpu_percent": round(host) if host is not None else None,
            "irq_cpu_percent": round(irq) if irq is not None else None,
            "steal_cpu_percent": round(steal) if steal is not None else None,
            "other_cpu_percent": round(other) if other is not None else None,
        }
        rows.append(row)

        def n(v, w, f="{}"):
            return f"{'-' if v is None else f.format(v):>{w}}"
        lines_out.append(
            f"{m + 1:>3} {n(row['rss_mib'], 8, '{:.1f}')} {n(row['gateway_cpu_percent'], 6, '{:.0f}%')} "
            f"{n(row['fds'], 5)} {n(row['connections_open'], 6)} {n(row['sessions_parked'], 6)} "
            f"{n(row['rpc_ok_per_sec'], 6)} {fmt_us(row['rpc_p50_us']):>8} {fmt_us(row['rpc_p99_us']):>8} "
            f"{n(row['rpc_errors'], 7)} {n(row['obs_deliveries_per_sec'], 9)} "
            f"{fmt_us(row['obs_p50_us']):>8} {fmt_us(row['obs_p99_us']):>8} {n(row['obs_gaps'], 5)} "
            f"{n(row['obs_disconnects'], 4)} {row['churn_established']:>8} {row['churn_failed']:>4} "
            f"{row['reloads']:>3} {row['gateway_warn_error_lines']:>3} "
            f"{n(row['host_cpu_percent'], 5, '{}%')} {n(row['irq_cpu_percent'], 4, '{}%')} "
            f"{n(row['steal_cpu_percent'], 5, '{}%')} {n(row['other_cpu_percent'], 5, '{}%')}")

    # --- targets
    targets = {}
    warm_ms = warm * 60000
    later = [r for r in rss if r["unix_ms"] - t0 >= warm_ms and r["unix_ms"] - t0 <= minutes * 60000]
    if len(later) >= 2:
        lo = min(r["rss_kib"] for r in later)
        hi = max(r["rss_kib"] for r in later)
        xs = [(r["unix_ms"] - t0) / 60000 for r in later]
        ys = [r["rss_kib"] / 1024 for r in later]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
        ratio = hi / lo
        targets["rss_flat"] = {
            "held": ratio <= 1 + params["rss_tol_percent"] / 100,
            "samples": len(later),
            "min_mib": round(lo / 1024, 1),
            "max_mib": round(hi / 1024, 1),
            "first_mib": round(later[0]["rss_kib"] / 1024, 1),
            "last_mib": round(later[-1]["rss_kib"] / 1024, 1),
            "max_over_min": round(ratio, 4),
            "slope_mib_per_min": round(slope, 3),
            "hwm_mib": round(max(r["hwm_kib"] for r in rss) / 1024, 1),
            "fds_min": min(r["fds"] for r in later),
            "fds_max": max(r["fds"] for r in later),
            "tolerance_percent": params["rss_tol_percent"],
        }
    else:
        targets["rss_flat"] = {"held": False, "why": "fewer than two samples after warm-up"}
    # Not a target: the same once the parked sessions (every client that left is kept for
    # reconnect_window_secs) have reached their steady number.
    window = params.get("reconnect_window_secs") or 0
    settled_from = (window + params["churn_batch"] / params["churn_rate"] + 30) * 1000
    settled = [r for r in rss if r["unix_ms"] - t0 >= max(settled_from, warm_ms)
               and r["unix_ms"] - t0 <= minutes * 60000]
    rss_settled = None
    if window and len(settled) >= 2:
        lo = min(r["rss_kib"] for r in settled)
        hi = max(r["rss_kib"] for r in settled)
        rss_settled = {"from_secs": round(max(settled_from, warm_ms) / 1000), "samples": len(settled),
                       "min_mib": round(lo / 1024, 1), "max_mib": round(hi / 1024, 1),
                       "max_over_min": round(hi / lo, 4)}

    errors = Counter()
    notes = []
    rpc = load_json(d / "rpc.json")
    obs = load_json(d / "observers.json")
    codes = load_json(d / "exit_codes.json") or {}
    if rpc is None:
        errors["rpc: no report (rpc.json)"] += 1
    else:
        for k, v in rpc["connect"]["failures"].items():
            errors[f"rpc connect {k}"] += v
        rq = rpc["requests"]
        for k, v in rq["errors"].items():
            errors[f"rpc answer {k}"] += v
        for k in ("timeouts", "lost"):
            if rq.get(k):
                errors[f"rpc {k}"] += rq[k]
        for k, v in rq.get("conn_drops", {}).items():
            errors[f"rpc connection dropped: {k}"] += v
        for e in rpc["worker_errors"]:
            errors[f"rpc worker: {e}"] += 1
        if rq.get("late"):
            notes.append(f"rpc: {rq['late']} answers arrived after their timeout")
    if obs is None:
        errors["observers: no report (observers.json)"] += 1
    else:
        for k, v in obs["connect"]["failures"].items():
            errors[f"observers connect {k}"] += v
        for k, v in obs["watch"]["errors"].items():
            errors[f"observers watch {k}"] += v
        for k, v in obs["disconnects"].items():
            errors[f"observers disconnected {k}"] += v
        for k in ("stale", "foreign"):
            if obs["fast"].get(k):
                errors[f"observers {k} pushes"] += obs["fast"][k]
        for e in obs["worker_errors"]:
            errors[f"observers worker: {e}"] += 1
        if obs["fast"].get("gaps"):
            notes.append(f"observers: {obs['fast']['gaps']} NPC states skipped (conflated "
                         f"for a reader behind), of {obs['fast']['deliveries']} delivered")
    for k, v in churn_failures.items():
        errors[f"churn connect {k}"] += v
    for k, v in churn_drops.items():
        errors[f"churn dropped {k}"] += v
    for e in churn_errors:
        errors[f"churn {e}"] += 1
    for name in ("observers", "rpc", "gateway"):
        c = codes.get(name)
        if c not in (0, None):
            errors[f"{name} exit status {c}"] += 1
        elif c is None:
            errors[f"{name} exit status unknown"] += 1
    for k, v in warn_msgs.items():
        errors[f"gateway log: {k}"] += v
    if reloaded_lines != len(reloads):
        errors[f"SIGHUPs sent {len(reloads)}, 'config reloaded' lines {reloaded_lines}"] += 1
    total_errors = sum(errors.values())
    targets["zero_errors"] = {"held": total_errors == 0, "count": total_errors,
                              "by_kind": dict(errors.most_common())}

    def spread(key):
        vals = [r[key] for r in rows[warm:] if r[key] is not None]
        if len(vals) < 2:
            return {"held": False, "why": "fewer than two minutes after warm-up"}
        med = statistics.median(vals)
        limit = params["p99_spread_max"] * med
        # The minutes past the limit, with what else took the CPU then (the reader's
        # first question: the gateway, or the machine?).
        over = [{"minute": r["minute"], "p99_us": r[key], "steal_cpu_percent": r["steal_cpu_percent"],
                 "other_cpu_percent": r["other_cpu_percent"]}
                for r in rows[warm:] if r[key] is not None and r[key] > limit]
        return {
            "held": max(vals) <= limit,
            "over": over,
            "minutes": len(vals),
            "min_us": min(vals), "median_us": med, "max_us": max(vals),
            "max_over_median": round(max(vals) / med, 2) if med else None,
            "max_over_min": round(max(vals) / min(vals), 2) if min(vals) else None,
            "limit_max_over_median": params["p99_spread_max"],
        }
    targets["rpc_p99_steady"] = spread("rpc_p99_us")
    targets["observers_p99_steady"] = spread("obs_p99_us")

    totals = {
        "rpc": None if rpc is None else {
            "sent": rpc["requests"]["sent"], "ok": rpc["requests"]["ok"],
            "p50_us": rpc["latency_us"]["p50"], "p99_us": rpc["latency_us"]["p99"],
            "p999_us": rpc["latency_us"]["p999"], "max_us": rpc["latency_us"]["max"],
            "send_lag_p99_us": rpc["send_lag_us"]["p99"]},
        "observers": None if obs is None else {
            "watching": obs["fast"]["observers"], "deliveries": obs["deliveries"],
            "gaps": obs["fast"]["gaps"], "manifests": obs["fast"].get("manifests"),
            "p50_us": obs["fast"]["latency_us"]["p50"], "p99_us": obs["fast"]["latency_us"]["p99"],
            "p999_us": obs["fast"]["latency_us"]["p999"], "max_us": obs["fast"]["latency_us"]["max"]},
        "churn": dict(churn_total) | {
            "connect_p50_us": percentile(churn_connect_hist, 0.5),
            "connect_p99_us": percentile(churn_connect_hist, 0.99)},
        "reloads": len(reloads), "reloaded_lines": reloaded_lines,
        "gateway_log_warn_error": sum(warn_msgs.values()),
    }

    out = []
    out.append(f"soak {d.name}: {minutes} min, commit {params.get('commit')}, started {params.get('started')}")
    out.append(f"  load: {params['observers']} observers x {params['watch']} of {params['npcs']} NPCs; "
               f"rpc {params['rpc_rate']}/s over {params['rpc_conns']} conns via {params['rpc_via']}; "
               f"churn {params['churn_rate']}/s in batches of {params['churn_batch']}; "
               f"SIGHUP every {params['reload_every_secs']} s; shards {params['shards'] or 'one per core'}")
    out.append("")
    out.extend(lines_out)
    out.append("")
    out.append("  (RSS, fds, conns, parked: the minute's last sample (fds: the gateway's open "
               "descriptors, backend connections included); rpc err: error answers, timeouts, lost, "
               "failed connects; obs: fast observers, decision -> receipt; disc: disconnects; "
               "churn ok/fail: connects of the batches ending that minute; HUP: reloads; "
               "W/E: gateway log WARN/ERROR lines; host: the machine's busy CPU; of it irq: interrupts "
               "and softirqs (loopback's packets, mostly charged to the soak's processes), steal: taken "
               "by the hypervisor, other: what neither the soak's processes nor steal account for; all in % of one core, "
               f"{params.get('host_cpus', '?')} cores; summary.json has the 1-min load average too)")
    out.append("")
    if totals["rpc"]:
        t = totals["rpc"]
        out.append(f"  rpc total: {t['ok']}/{t['sent']} ok, p50 {fmt_us(t['p50_us'])} p99 {fmt_us(t['p99_us'])} "
                   f"p99.9 {fmt_us(t['p999_us'])} max {fmt_us(t['max_us'])}; send lag p99 {fmt_us(t['send_lag_p99_us'])}")
    if totals["observers"]:
        t = totals["observers"]
        out.append(f"  observers total: {t['watching']} watching, {t['deliveries']} deliveries, gaps {t['gaps']}, "
                   f"manifests {t['manifests']}; p50 {fmt_us(t['p50_us'])} p99 {fmt_us(t['p99_us'])} "
                   f"p99.9 {fmt_us(t['p999_us'])} max {fmt_us(t['max_us'])}")
    t = totals["churn"]
    out.append(f"  churn total: {t.get('batches', 0)} batches, {t.get('established', 0)}/{t.get('attempted', 0)} "
               f"connected; connect+manifest p50 {fmt_us(t['connect_p50_us'])} p99 {fmt_us(t['connect_p99_us'])}")
    out.append(f"  reloads: {len(reloads)} SIGHUPs, {reloaded_lines} 'config reloaded' lines")
    out.append("")
    r = targets["rss_flat"]
    if "why" in r:
        out.append(f"  RSS flat after {warm} min: NOT MET ({r['why']})")
    else:
        out.append(f"  RSS flat after {warm} min (max/min <= {1 + r['tolerance_percent'] / 100:.2f}): "
                   f"{'met' if r['held'] else 'NOT MET'}: {r['min_mib']}-{r['max_mib']} MiB "
                   f"(max/min {r['max_over_min']:.3f}; first {r['first_mib']}, last {r['last_mib']}, "
                   f"trend {r['slope_mib_per_min']:+.3f} MiB/min; HWM {r['hwm_mib']} MiB; "
                   f"descriptors {r['fds_min']}-{r['fds_max']})")
    if rss_settled:
        r = rss_settled
        out.append(f"      after the parked sessions settled (t >= {r['from_secs']} s: reconnect window "
                   f"{window} s + a churn batch): {r['min_mib']}-{r['max_mib']} MiB, max/min "
                   f"{r['max_over_min']:.3f} (not a target; for reading the one above)")
    z = targets["zero_errors"]
    out.append(f"  zero unexpected errors: {'met' if z['held'] else 'NOT MET'} ({z['count']})")
    for k, v in list(z["by_kind"].items())[:25]:
        out.append(f"      {v:>8}  {k}")
    for name, key in (("RPC", "rpc_p99_steady"), ("observers", "observers_p99_steady")):
        s = targets[key]
        if "why" in s:
            out.append(f"  {name} p99 steady: NOT MET ({s['why']})")
        else:
            out.append(f"  {name} p99 steady (max <= {s['limit_max_over_median']} x median of the per-minute "
                       f"p99 after {warm} min): {'met' if s['held'] else 'NOT MET'}: {fmt_us(s['min_us'])} .. "
                       f"median {fmt_us(s['median_us'])} .. {fmt_us(s['max_us'])} "
                       f"(max/median {s['max_over_median']}, max/min {s['max_over_min']})")
            for o in s["over"]:
                out.append(f"      minute {o['minute']}: {fmt_us(o['p99_us'])}; that minute the hypervisor's steal "
                           f"{n(o['steal_cpu_percent'], 1, '{}%')}, other processes {n(o['other_cpu_percent'], 1, '{}%')} of a core")
    for note in notes:
        out.append(f"  note: {note}")
    text = "\n".join(out)
    print(text)
    (d / "table.txt").write_text(text + "\n")
    summary = {"params": params, "minutes": rows, "totals": totals, "targets": targets,
               "rss_after_parked_settled": rss_settled, "notes": notes}
    (d / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return 0 if all(t["held"] for t in targets.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
