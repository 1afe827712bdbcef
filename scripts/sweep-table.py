#!/usr/bin/env python3
"""One Markdown table from several baton-loadtest sweeps of the same rates, run by run:

    scripts/sweep-table.py OUT RUN [RUN ...]

reads OUT/RUN/summary.json for each RUN and prints, per offered rate, each run's answered
calls per second, p50 / p99 latency (ms) and failed calls. The first run's phases set
the rows. Where OUT/RUN/proxy_cpu_s holds the CPU seconds a proxy spent on the run, a
last line gives its CPU per call (warm-up calls counted), and its user CPU per call where
OUT/RUN/proxy_user_s holds that."""
import json
import sys


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out, runs = sys.argv[1], sys.argv[2:]
    data = {r: json.load(open(f"{out}/{r}/summary.json")) for r in runs}
    print("| rate/s | " + " | ".join(f"{r} ok/s, p50 / p99 ms, failed" for r in runs) + " |")
    print("|---" * (len(runs) + 1) + "|")
    fmt = lambda v: "-" if v is None else f"{v:.2f}"
    for i, phase in enumerate(data[runs[0]]["phases"]):
        cells = []
        for r in runs:
            p = data[r]["phases"][i]
            failed = sum(p["failures"].values())
            lat = p["latency_ms"]
            cells.append(f"{p['throughput']:.0f}, {fmt(lat['p50'])} / {fmt(lat['p99'])}, {failed}")
        print(f"| {phase['offered_rate']:.0f} | " + " | ".join(cells) + " |")
    per_call = []
    for r in runs:
        try:
            cpu_s = float(open(f"{out}/{r}/proxy_cpu_s").read())
        except FileNotFoundError:
            continue
        settings = data[r]["settings"]
        calls = sum(p["calls"] for p in data[r]["phases"]) + settings["warmup_s"] * settings["rates"][0]
        user = ""
        try:
            user_s = float(open(f"{out}/{r}/proxy_user_s").read())
            user = f", user {user_s * 1e6 / calls:.0f} µs"
        except FileNotFoundError:
            pass
        per_call.append(f"{r} {cpu_s * 1e6 / calls:.0f} µs{user} ({cpu_s:.2f} s for {calls:.0f} calls)")
    if per_call:
        print("\nproxy CPU per call (user + system): " + "; ".join(per_call))


if __name__ == "__main__":
    main()
