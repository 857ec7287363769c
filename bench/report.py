#!/usr/bin/env python3
"""Parses wrk/h2load output for bench/run.sh and prints the results table.

  report.py wrk FILE               -> one JSON object: rps, p50_ms, p99_ms, ...
  report.py h2load FILE LOGFILE    -> the same, percentiles from h2load's log
  report.py line JSON SCENARIO FRONT ROUND
                                   -> one progress line
  report.py table RESULTS.jsonl MEMORY.jsonl
                                   -> the markdown tables (medians over rounds)
"""

import json
import re
import statistics
import sys

UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def to_ms(text):
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        return None
    return float(match.group(1)) * UNITS[match.group(2)]


def parse_wrk(path):
    text = open(path, encoding="utf-8", errors="replace").read()
    out = {"rps": None, "p50_ms": None, "p99_ms": None, "requests": 0, "non2xx": 0, "socket_errors": 0}
    if m := re.search(r"Requests/sec:\s+([\d.]+)", text):
        out["rps"] = float(m.group(1))
    if m := re.search(r"^\s+50%\s+(\S+)", text, re.M):
        out["p50_ms"] = to_ms(m.group(1))
    if m := re.search(r"^\s+99%\s+(\S+)", text, re.M):
        out["p99_ms"] = to_ms(m.group(1))
    if m := re.search(r"(\d+) requests in", text):
        out["requests"] = int(m.group(1))
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text):
        out["non2xx"] = int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text):
        out["socket_errors"] = sum(int(g) for g in m.groups())
    return out


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def parse_h2load(path, log_path):
    text = open(path, encoding="utf-8", errors="replace").read()
    out = {"rps": None, "p50_ms": None, "p99_ms": None, "requests": 0, "non2xx": 0, "socket_errors": 0}
    if m := re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", text):
        out["rps"] = float(m.group(1))
    if m := re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", text):
        out["requests"] = int(m.group(2))
        out["socket_errors"] = int(m.group(5)) + int(m.group(6))
    if m := re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text):
        out["non2xx"] = int(m.group(3)) + int(m.group(4))
    # h2load's log: start (µs since epoch), status, µs until the response ended.
    durations = []
    try:
        with open(log_path, encoding="utf-8", errors="replace") as log:
            for line in log:
                parts = line.split("\t")
                if len(parts) >= 3:
                    durations.append(int(parts[2]))
    except FileNotFoundError:
        pass
    durations.sort()
    if durations:
        out["p50_ms"] = percentile(durations, 0.50) / 1000.0
        out["p99_ms"] = percentile(durations, 0.99) / 1000.0
    return out


SCENARIOS = [
    ("h1", "HTTP/1.1 keep-alive, 64 conns"),
    ("h2", "HTTP/2, 64 conns x 10 streams"),
    ("two", "HTTP/1.1, 64 conns, two targets (round robin)"),
    ("newconn", "new TLS connection per request, 64 conns"),
    ("body1m", "1 MiB response, 16 conns"),
    ("badtoken", "forged token (401), 64 conns"),
    ("c8", "8 conns, closed loop (as fast as answered)"),
    ("rate8", "moderate load: 8 conns at a fixed rate"),
    ("rate1", "moderate load: 1 conn at the same total rate"),
]
FRONTS = ["direct", "nginx", "authgate"]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=0, suffix=""):
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{suffix}"


def fmt_ms(value):
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} µs"
    return f"{value:.2f} ms"


def ratio(a, b):
    if a is None or not b:
        return None
    return a / b


def summarize(rows):
    """Medians over rounds per (scenario, front)."""
    groups = {}
    for row in rows:
        groups.setdefault((row["scenario"], row["front"]), []).append(row)
    summary = {}
    for key, runs in groups.items():
        cpu_per_req = [
            r["cpu_s"] / r["requests"] * 1e6 if r.get("cpu_s") is not None and r["requests"] else None
            for r in runs
        ]
        up_cpu_per_req = [
            r["up_cpu_s"] / r["requests"] * 1e6 if r.get("up_cpu_s") is not None and r["requests"] else None
            for r in runs
        ]
        # Of the front's CPU per request, the part spent in the kernel
        # (system calls, loopback TCP); older result files lack it.
        sys_per_req = [
            r["sys_cpu_s"] / r["requests"] * 1e6 if r.get("sys_cpu_s") is not None and r["requests"] else None
            for r in runs
        ]
        busy = [r["cpu_s"] / r["duration"] * 100 if r.get("cpu_s") is not None else None for r in runs]
        summary[key] = {
            "rounds": len(runs),
            "rps": median([r["rps"] for r in runs]),
            "p50_ms": median([r["p50_ms"] for r in runs]),
            "p99_ms": median([r["p99_ms"] for r in runs]),
            "cpu_us": median(cpu_per_req),
            "sys_us": median(sys_per_req),
            "up_cpu_us": median(up_cpu_per_req),
            "up_conns": median([r.get("up_conns") for r in runs]),
            "foreign": max((r.get("foreign_cpu_pct") or 0 for r in runs), default=0),
            "busy": median(busy),
            "non2xx": sum(r["non2xx"] for r in runs),
            "requests": sum(r["requests"] for r in runs),
            "socket_errors": sum(r["socket_errors"] for r in runs),
        }
    return summary


def status_note(scenario, s):
    if scenario == "badtoken" and s["requests"]:
        return "all 401" if s["non2xx"] == s["requests"] else f"{s['requests'] - s['non2xx']} not 401!"
    notes = []
    if not s["requests"]:
        notes.append("NO REQUESTS: see raw/")
    if s["non2xx"]:
        notes.append(f"{s['non2xx']} non-2xx!")
    if s["socket_errors"]:
        notes.append(f"{s['socket_errors']} socket errors")
    return ", ".join(notes) or "ok"


def table(results_path, memory_path):
    rows = [json.loads(line) for line in open(results_path, encoding="utf-8") if line.strip()]
    try:
        memory = [json.loads(line) for line in open(memory_path, encoding="utf-8") if line.strip()]
    except FileNotFoundError:
        memory = []
    summary = summarize(rows)
    lines = []
    out = lines.append
    out("### Throughput and latency (medians over rounds)")
    out("")
    out("| scenario | front | rounds | req/s | p50 | p99 | front CPU µs/req | of it kernel | front CPU busy | upstream CPU µs/req | upstream conns | other procs CPU (max) | responses |")
    out("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for scenario, title in SCENARIOS:
        for front in FRONTS:
            s = summary.get((scenario, front))
            if not s:
                continue
            out(
                f"| {title} | {front} | {s['rounds']} | {fmt(s['rps'])} | {fmt_ms(s['p50_ms'])} | "
                f"{fmt_ms(s['p99_ms'])} | {fmt(s['cpu_us'], 1)} | {fmt(s['sys_us'], 1)} | {fmt(s['busy'], 0, '%')} | "
                f"{fmt(s['up_cpu_us'], 1)} | {fmt(s['up_conns'])} | {fmt(s['foreign'], 0, '%')} | "
                f"{status_note(scenario, s)} |"
            )
    out("")
    out("### Ratios (authgate against the references, same run)")
    out("")
    out("| scenario | authgate/nginx req/s | authgate/nginx p99 | authgate/nginx CPU per req | authgate/direct req/s | added p50 vs direct: nginx | added p50 vs direct: authgate |")
    out("|---|---:|---:|---:|---:|---:|---:|")
    for scenario, title in SCENARIOS:
        ag = summary.get((scenario, "authgate"))
        ng = summary.get((scenario, "nginx"))
        di = summary.get((scenario, "direct"))
        if not ag:
            continue
        if scenario == "badtoken":
            valid = summary.get(("h1", "authgate"))
            if valid:
                out(
                    f"| {title}: against authgate's own valid-token h1 | "
                    f"{fmt(ratio(ag['rps'], valid['rps']), 2)}× | {fmt(ratio(ag['p99_ms'], valid['p99_ms']), 2)}× | "
                    f"{fmt(ratio(ag['cpu_us'], valid['cpu_us']), 2)}× | - | - | - |"
                )
            continue
        added = lambda front: (
            fmt_ms(front["p50_ms"] - di["p50_ms"])
            if front and di and front["p50_ms"] is not None and di["p50_ms"] is not None
            else "-"
        )
        out(
            f"| {title} | {fmt(ratio(ag['rps'], ng and ng['rps']), 2)}× | "
            f"{fmt(ratio(ag['p99_ms'], ng and ng['p99_ms']), 2)}× | "
            f"{fmt(ratio(ag['cpu_us'], ng and ng['cpu_us']), 2)}× | "
            f"{fmt(ratio(ag['rps'], di and di['rps']), 2)}× | {added(ng)} | {added(ag)} |"
        )
    if memory:
        out("")
        out("### Memory and login")
        out("")
        out("| measure | authgate | nginx (master + worker) | note |")
        out("|---|---:|---:|---|")
        for row in memory:
            out(f"| {row['measure']} | {row.get('authgate', '-')} | {row.get('nginx', '-')} | {row.get('note', '')} |")
    print("\n".join(lines))


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "wrk":
        print(json.dumps(parse_wrk(sys.argv[2])))
    elif len(sys.argv) >= 4 and sys.argv[1] == "h2load":
        print(json.dumps(parse_h2load(sys.argv[2], sys.argv[3])))
    elif len(sys.argv) >= 6 and sys.argv[1] == "line":
        r = json.loads(sys.argv[2])
        ms = lambda v: "-" if v is None else f"{v:.3f} ms"
        print(
            f"  {sys.argv[3]:9} {sys.argv[4]:9} round {sys.argv[5]}: {r['rps'] or 0:>10,.0f} req/s"
            f"  p50 {ms(r['p50_ms'])}  p99 {ms(r['p99_ms'])}  non-2xx {r['non2xx']}"
            f"  front CPU {r.get('cpu_s', 0):.2f}s  other processes {r.get('foreign_cpu_pct', 0):.0f}% of a core"
        )
    elif len(sys.argv) >= 4 and sys.argv[1] == "table":
        table(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
