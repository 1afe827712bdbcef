#!/usr/bin/env python3
"""Instructions the router and the cell spend per warm call with metrics off, metrics on
(tracing off), 1% and 100% of calls traced: counts from valgrind's callgrind, which do not
drift with the machine's load as CPU time does (docs/BENCHMARKS.md, "What metrics and
tracing cost").

    cargo build --release --bins
    scripts/callgrind-warm-cost.py [CALLS] [WINDOWS]

Per setting, starts `baton up --cells 1` (release) with its router and cell under
callgrind: a folder of its own holds `baton` and the other binaries (hard links), and
two small scripts named `baton-router` and `baton-cell` that run the real ones under
valgrind, so that `baton up` starts them like any other. It registers one function
(`baton-fn-spin`, 1 ms sleep), warms it with 300 calls, then WINDOWS times (default 3):
zeroes both processes' counters (`callgrind_control -z`), makes CALLS calls (default
5,000) one after another on one keep-alive connection, and dumps the counters
(`callgrind_control -d`). A window's instructions over CALLS is that process's cost per
call; what runs by the clock (the recorder's upkeep, the top-N ranking, span batches,
heartbeats) is in it at the pace valgrind leaves, so it is an upper bound. Spans go to a
baton-otlp-sink this script starts. Needs valgrind. Prints one table; files in $OUT
(default a temporary folder).

With CACHE_SIM=1, callgrind also simulates the caches (`--cache-sim=yes`: first-level and
last-level misses, one cache for all threads, no coherence between cores), and the table
is of estimated cycles per call, Ir + 10 × first-level misses + 100 × last-level misses
(the weights valgrind's documentation uses for its cycle estimate): what extra memory
traffic costs, which instruction counts alone do not show."""
import http.client
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release"
TRACED = ("baton-router", "baton-cell")
CACHE_SIM = os.environ.get("CACHE_SIM") == "1"
CACHE_FLAG = "--cache-sim=yes" if CACHE_SIM else ""
PLAIN = ("baton", "baton-shard-manager", "baton-worker", "baton-fn-echo", "baton-fn-spin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bin_folder(out: pathlib.Path) -> pathlib.Path:
    """`baton` finds its processes beside itself: the traced ones are wrappers."""
    folder = out / "bin"
    folder.mkdir(parents=True, exist_ok=True)
    for name in PLAIN:
        target = folder / name
        if not target.exists():
            try:
                os.link(BIN / name, target)
            except OSError:
                shutil.copy2(BIN / name, target)
    for name in TRACED:
        wrapper = folder / name
        wrapper.write_text(
            "#!/bin/sh\n"
            f'echo $$ > "$CG_DIR/{name}.pid"\n'
            f'exec valgrind --tool=callgrind {CACHE_FLAG} --callgrind-out-file="$CG_DIR/{name}.%p.out" {BIN / name} "$@"\n'
        )
        wrapper.chmod(0o755)
    return folder


def callgrind_control(flag: str, pid: int) -> None:
    subprocess.run(["callgrind_control", flag, str(pid)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def newest_dump(folder: pathlib.Path, name: str, pid: int) -> float:
    """What the newest dump of process `pid` (files `name.pid.out.N`) counts: its
    instructions, or with CACHE_SIM its estimated cycles."""
    dumps = sorted(folder.glob(f"{name}.{pid}.out.*"), key=lambda p: int(p.suffix[1:]))
    text = dumps[-1].read_text(errors="replace")
    events = re.search(r"^events: (.+)$", text, re.M).group(1).split()
    totals = map(int, re.search(r"^(?:summary|totals): ([\d ]+)$", text, re.M).group(1).split())
    count = dict(zip(events, totals))
    if not CACHE_SIM:
        return count["Ir"]
    first = sum(count.get(e, 0) for e in ("I1mr", "D1mr", "D1mw"))
    last = sum(count.get(e, 0) for e in ("ILmr", "DLmr", "DLmw"))
    return count["Ir"] + 10 * first + 100 * last


def run_setting(out: pathlib.Path, setting: str, flags: list[str], calls: int, windows: int) -> list[dict]:
    home = out / setting
    shutil.rmtree(home, ignore_errors=True)
    (home / "cg").mkdir(parents=True)
    env = dict(os.environ, BATON_HOME=str(home / "home"), CG_DIR=str(home / "cg"))
    up = subprocess.Popen(
        [bin_folder(out) / "baton", "up", "--cells", "1", "--port", "0", "--shard-manager-port", "0",
         "--registry-port", "0", *flags],
        env=env, stdout=open(home / "up.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for _ in range(1800):
            if (home / "home" / "env").exists() or up.poll() is not None:
                break
            time.sleep(0.1)
        if not (home / "home" / "env").exists():
            sys.exit(f"baton up did not start:\n{(home / 'up.log').read_text()}")
        env_file = dict(re.findall(r"export (\w+)=(\S+)", (home / "home" / "env").read_text()))
        key = env_file["BATON_API_KEY"]
        host, port = env_file["BATON_URL"].removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        spec = {"name": "cg", "executable": str(BIN / "baton-fn-spin"),
                "resources": {"cpu_millis": 250, "memory_mib": 64}}
        conn.request("POST", "/v1/functions", body=json.dumps(spec),
                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        answer = conn.getresponse()
        answer.read()
        if answer.status // 100 != 2:
            sys.exit(f"registering the function: {answer.status}")
        headers = {"Authorization": f"Bearer {key}", "X-Duration-Ms": "1", "X-Duration-Mode": "sleep"}

        def call() -> int:
            conn.request("POST", "/function/cg", body=b"x", headers=headers)
            answer = conn.getresponse()
            answer.read()
            return answer.status

        failed = sum(call() != 200 for _ in range(300))
        pids = {name: int((home / "cg" / f"{name}.pid").read_text()) for name in TRACED}
        rows = []
        for window in range(1, windows + 1):
            for pid in pids.values():
                callgrind_control("-z", pid)
            started = time.monotonic()
            failed = sum(call() != 200 for _ in range(calls))
            seconds = time.monotonic() - started
            for pid in pids.values():
                callgrind_control("-d", pid)
            row = {"setting": setting, "window": window, "failed": failed, "seconds": seconds}
            for name, pid in pids.items():
                row[name] = newest_dump(home / "cg", name, pid) / calls
            rows.append(row)
            print(f"{setting} window {window}: router {row['baton-router']:,.0f}, cell {row['baton-cell']:,.0f}"
                  f" {'estimated cycles' if CACHE_SIM else 'instructions'} per call ({failed} failed, {seconds:.0f} s)", flush=True)
        return rows
    finally:
        os.killpg(up.pid, signal.SIGINT)
        try:
            up.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()


def main() -> None:
    for program in ("valgrind", "callgrind_control"):
        if shutil.which(program) is None:
            sys.exit(f"{program} is not installed (apt-get install valgrind)")
    for name in (*TRACED, *PLAIN, "baton-otlp-sink"):
        if not (BIN / name).exists():
            sys.exit(f"{BIN / name} is missing: build every binary first (cargo build --release --bins)")
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    windows = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    out = pathlib.Path(os.environ.get("OUT") or tempfile.mkdtemp(prefix="callgrind-warm-"))
    out.mkdir(parents=True, exist_ok=True)
    sink_port = free_port()
    sink = subprocess.Popen([BIN / "baton-otlp-sink", f"127.0.0.1:{sink_port}"], stdout=open(out / "spans", "w"))
    endpoint = ["--otlp-endpoint", f"http://127.0.0.1:{sink_port}"]
    settings = {
        "metrics-off": ["--no-metrics"],
        "tracing-off": [],
        "sampled-1": [*endpoint, "--trace-sample-ratio", "0.01"],
        "sampled-100": [*endpoint, "--trace-sample-ratio", "1"],
    }
    rows = []
    try:
        for setting, flags in settings.items():
            rows += run_setting(out, setting, flags, calls, windows)
    finally:
        sink.terminate()
        sink.wait()
    (out / "rows.json").write_text(json.dumps(rows, indent=1))
    mean = {}
    for setting in settings:
        mine = [r for r in rows if r["setting"] == setting]
        mean[setting] = {k: sum(r[k] for r in mine) / len(mine) for k in TRACED}
    base = mean["metrics-off"]
    what = "estimated cycles" if CACHE_SIM else "instructions"
    print(f"\n{calls:,} calls a window, {windows} windows; {what} per call (mean of the windows)")
    print("| setting | router | cell | both | against metrics off |")
    print("|---|---|---|---|---|")
    for setting, m in mean.items():
        both, base_both = sum(m.values()), sum(base.values())
        print(f"| {setting} | {m['baton-router']:,.0f} | {m['baton-cell']:,.0f} | {both:,.0f} |"
              f" {100 * (both / base_both - 1):+.1f} % |")
    print(f"\nspans received: {(out / 'spans').read_text().strip() or 0}; files in {out}")


if __name__ == "__main__":
    main()
