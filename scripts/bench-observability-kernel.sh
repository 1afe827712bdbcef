#!/usr/bin/env bash
# What the kernel does per warm call of the router and the cell, by setting (docs/BENCHMARKS.md,
# "What metrics and tracing cost"):
#
#   cargo build --release --bins && scripts/bench-observability-kernel.sh
#
# Per setting (metrics off, metrics with tracing off, 1 % sampled, then metrics off and 1 %
# again), a fresh `baton up --cells 1` under the warm sweep of bench-observability-cost.sh
# (1,000 calls/s, 4 functions × 2 sandboxes, 1 ms sleep) for 25 s; over 10 s of it, per
# call: minor page faults (/proc/PID/stat), write-family system calls (/proc/PID/io
# syscw; its read count misses the sockets' reads, so it is left out) and voluntary and involuntary context switches (summed over threads), for the
# router (r) and the cell (c). Counts, not times: what CPU time alone cannot separate.
# Files in $OUT (default a temporary folder).
set -uo pipefail
bin="$(cd "$(dirname "$0")/.." && pwd)/target/release"
out="${OUT:-$(mktemp -d)}"
mkdir -p "$out"
stats() { # pid -> "minflt syscw vcs ivcs"
  local p=$1 m w v i
  m=$(awk '{print $10}' /proc/$p/stat)
  w=$(awk '/^syscw/{print $2}' /proc/$p/io)
  v=$(cat /proc/$p/task/*/status | awk '/^voluntary_ctxt/{s+=$2} END{print s}')
  i=$(cat /proc/$p/task/*/status | awk '/^nonvoluntary_ctxt/{s+=$2} END{print s}')
  echo "$m $w $v $i"
}
sink_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
$bin/baton-otlp-sink 127.0.0.1:$sink_port > $out/spans 2>/dev/null & sink=$!
up=
trap 'kill $sink 2>/dev/null; [[ -n $up ]] && kill -INT $up 2>/dev/null; wait' EXIT
for setting in metrics-off tracing-off sampled-1 metrics-off2 sampled-1b; do
  case $setting in
    metrics-off*) flags=(--no-metrics);;
    tracing-off) flags=();;
    sampled-1*) flags=(--otlp-endpoint http://127.0.0.1:$sink_port --trace-sample-ratio 0.01);;
  esac
  export BATON_HOME=$out/$setting/home; mkdir -p $out/$setting
  $bin/baton up --cells 1 --port 0 --shard-manager-port 0 --registry-port 0 --sandbox-ports 42000 "${flags[@]}" > $out/$setting/up.log 2>&1 & up=$!
  for _ in $(seq 600); do [[ -f $BATON_HOME/env ]] && break; sleep 0.1; done
  source $BATON_HOME/env
  r=$(pgrep -P $up -x baton-router); c=$(pgrep -P $up -x baton-cell)
  $bin/baton-loadtest warm-sweep --rates 1000 --step 25s --functions 4 --execution sleep --runtime-ms 1 \
     --name-prefix se --cpu-millis 250 --warmup 5s --quiet --target router --url "$BATON_URL" --sandboxes 2 --out $out/$setting > /dev/null 2>&1 & lt=$!
  sleep 15
  a_r=$(stats $r); a_c=$(stats $c); sleep 10; b_r=$(stats $r); b_c=$(stats $c)
  wait $lt
  python3 - "$setting" "$a_r" "$b_r" "$a_c" "$b_c" <<'PY'
import sys
s, ar, br, ac, bc = sys.argv[1], *[list(map(int, x.split())) for x in sys.argv[2:]]
names = ["page faults", "writes", "voluntary switches", "involuntary switches"]
calls = 10000  # 10 s at 1,000 calls/s (the sweep's rate; none fails)
row = " ".join(f"{n} r {(b-a)/calls:.2f} c {(d-cc)/calls:.2f}" for n, a, b, cc, d in zip(names, ar, br, ac, bc))
print(f"{s}: per call: {row}")
PY
  kill -INT $up; wait $up; up=
done
