#!/usr/bin/env python3
"""Instructions the router spends per warm call with metrics off, metrics on (tracing
off), and 1% of calls traced: counts from valgrind's callgrind, which do not drift with
the machine's load as CPU time does (docs/BENCHMARKS.md, "What metrics and tracing cost").

    cargo build --release --bins
    BATON_HOME=/tmp/cg target/release/baton up --cells 1 --port 0 --shard-manager-port 0 --registry-port 0 &
    scripts/callgrind-router-cost.py /tmp/cg [CALLS]

Registers one function (`baton-fn-spin`, 1 ms calls) through the federation's router,
then per setting starts a second router under callgrind beside it (same shard manager,
the router's TLS files from the run folder), calls the function 300 and 300 + CALLS
(default 5,000) times one after another, and stops it; the difference of the two totals
over CALLS is the instructions per call, start and stop cancelled out. Traced calls go
to a baton-otlp-sink this script starts. Needs valgrind."""
import http.client
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    home = pathlib.Path(sys.argv[1])
    calls = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    env_file = dict(re.findall(r"export (\w+)=(\S+)", (home / "env").read_text()))
    key, shard_manager = env_file["BATON_API_KEY"], env_file["BATON_SHARD_MANAGER"]
    tls = home / "run" / "tls"
    out = home / "callgrind"
    out.mkdir(exist_ok=True)
    headers = {"Authorization": f"Bearer {key}", "X-Duration-Ms": "1", "X-Duration-Mode": "sleep"}

    def call(conn: http.client.HTTPConnection) -> int:
        conn.request("POST", "/function/cg", body=b"x", headers=headers)
        answer = conn.getresponse()
        answer.read()
        return answer.status

    host, port = env_file["BATON_URL"].removeprefix("http://").split(":")
    main_router = http.client.HTTPConnection(host, int(port), timeout=30)
    spec = {"name": "cg", "executable": str(BIN / "baton-fn-spin"), "resources": {"cpu_millis": 250, "memory_mib": 64}}
    main_router.request("POST", "/v1/functions", body=json.dumps(spec),
                        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    main_router.getresponse().read()
    sink_port = free_port()
    sink = subprocess.Popen([BIN / "baton-otlp-sink", f"127.0.0.1:{sink_port}"], stdout=subprocess.DEVNULL)
    settings = {
        "metrics-off": {"BATON_METRICS__ENABLED": "false"},
        "tracing-off": {},
        "sampled-1": {"BATON_TRACES__OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}", "BATON_TRACES__SAMPLE_RATIO": "0.01"},
    }
    totals = {}
    try:
        for setting, extra in settings.items():
            for n in (300, 300 + calls):
                listen, admin = free_port(), free_port()
                env = dict(os.environ, BATON_TLS__CA=str(tls / "ca.pem"), BATON_TLS__CERT=str(tls / "router.pem"),
                           BATON_TLS__KEY=str(tls / "router.key"), **extra)
                profile = out / f"{setting}.{n}.out"
                router = subprocess.Popen(
                    ["valgrind", "--tool=callgrind", f"--callgrind-out-file={profile}", BIN / "baton-router",
                     "--listen", f"127.0.0.1:{listen}", "--admin-listen", f"127.0.0.1:{admin}", "--shard-managers", shard_manager],
                    env=env, stdout=open(out / f"{setting}.{n}.log", "w"), stderr=subprocess.STDOUT)
                conn = http.client.HTTPConnection("127.0.0.1", listen, timeout=30)
                for _ in range(600):  # until it routes the function (its first call may be cold)
                    try:
                        if call(conn) == 200:
                            break
                    except OSError:
                        conn = http.client.HTTPConnection("127.0.0.1", listen, timeout=30)
                    time.sleep(0.2)
                failed = sum(call(conn) != 200 for _ in range(n))
                router.send_signal(2)
                router.wait()
                totals[(setting, n)] = int(re.search(r"summary: (\d+)", profile.read_text()).group(1))
                print(f"{setting}, {n} calls ({failed} failed): {totals[(setting, n)]:,} instructions", flush=True)
    finally:
        sink.terminate()
        sink.wait()
    base = None
    for setting in settings:
        per = (totals[(setting, 300 + calls)] - totals[(setting, 300)]) / calls
        base = base or per
        print(f"{setting}: {per:,.0f} instructions per call ({100 * (per / base - 1):+.1f} %)")


if __name__ == "__main__":
    main()
