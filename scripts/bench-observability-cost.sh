#!/usr/bin/env bash
# What metrics and tracing cost on the warm path, in one run (docs/BENCHMARKS.md):
#
#   cargo build --release --bins && [ROUNDS=2] scripts/bench-observability-cost.sh RATES [STEP]
#
# Four passes, each on a fresh `baton up --cells 1` (release binaries, own BATON_HOME, free
# ports) with the same warm sweep through the router (4 functions, 2 warm sandboxes each,
# 1 ms calls): `metrics-off` (--no-metrics: the router and cell record no metrics and no
# spans), `tracing-off` (the default: metrics, no spans), `sampled-1` and `sampled-100`
# (spans of 1% and of every call, sent over OTLP/gRPC to baton-otlp-sink, a real receiver
# that counts them). Prints one table, the CPU the router and the cell (its data plane)
# spent per call in each pass (user and system, and user alone: what metrics and spans add
# is user time, and the kernel's share varies more between passes), and the spans each
# sink received; results in $OUT.
set -euo pipefail
rates="${1:?usage: bench-observability-cost.sh RATES [STEP], e.g. 1000 30s}"
step="${2:-10s}"
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/target/release"
lt="$bin/baton-loadtest"
out="${OUT:-loadtest-results/observability-cost-$(date +%s)}"
mkdir -p "$out"
up_pid=
sink_pid=
cleanup() {
    [[ -n "$sink_pid" ]] && kill "$sink_pid" 2>/dev/null || true
    [[ -n "$up_pid" ]] && kill -INT "$up_pid" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap cleanup EXIT
# CPU seconds of process $1: user and system (`cpu_s`), user alone (`user_s`).
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"; }
user_s() { awk -v hz="$(getconf CLK_TCK)" '{ print $14 / hz }' "/proc/$1/stat"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# pass RUN [BATON-UP FLAGS...]
pass() {
    local run="$1" router_pid cell_pid before after
    shift
    export BATON_HOME="$out/$run/baton-home"
    mkdir -p "$out/$run"
    "$bin/baton" up --cells 1 --port 0 --shard-manager-port 0 --registry-port 0 --sandbox-ports 42000 "$@" \
        >"$out/$run/up.log" 2>&1 &
    up_pid=$!
    for _ in $(seq 600); do [[ -f "$BATON_HOME/env" ]] && break; sleep 0.1; done
    [[ -f "$BATON_HOME/env" ]] || { echo "baton up did not start:" >&2; cat "$out/$run/up.log" >&2; exit 1; }
    # shellcheck disable=SC1091
    source "$BATON_HOME/env"
    router_pid=$(pgrep -P "$up_pid" -x baton-router)
    cell_pid=$(pgrep -P "$up_pid" -x baton-cell)
    before=$(python3 -c "print($(cpu_s "$router_pid") + $(cpu_s "$cell_pid"))")
    user_before=$(python3 -c "print($(user_s "$router_pid") + $(user_s "$cell_pid"))")
    "$lt" warm-sweep --rates "$rates" --step "$step" --functions 4 --execution sleep --runtime-ms 1 \
        --name-prefix oc --cpu-millis 250 --warmup 5s --quiet --target router --url "$BATON_URL" --sandboxes 2 \
        --out "$out/$run"
    after=$(python3 -c "print($(cpu_s "$router_pid") + $(cpu_s "$cell_pid"))")
    user_after=$(python3 -c "print($(user_s "$router_pid") + $(user_s "$cell_pid"))")
    python3 -c "print($after - $before)" >"$out/$run/proxy_cpu_s"
    python3 -c "print($user_after - $user_before)" >"$out/$run/proxy_user_s"
    kill -INT "$up_pid"
    wait "$up_pid" || true
    up_pid=
}

# start_sink RUN: a span receiver for RUN's pass, its URL in $endpoint.
start_sink() {
    local port
    port=$(free_port)
    "$bin/baton-otlp-sink" "127.0.0.1:$port" >"$out/$1/spans" 2>"$out/$1/sink.log" &
    sink_pid=$!
    for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    endpoint="http://127.0.0.1:$port"
}

stop_sink() {
    kill -TERM "$sink_pid"
    wait "$sink_pid" || true
    sink_pid=
}

# ROUNDS (default 2) rounds of the four passes, one after another, so that the spread
# between two passes of one setting shows beside the differences between settings.
runs=()
for round in $(seq "${ROUNDS:-2}"); do
    pass "metrics-off-$round" --no-metrics
    pass "tracing-off-$round"
    mkdir -p "$out/sampled-1-$round" "$out/sampled-100-$round"
    start_sink "sampled-1-$round"
    pass "sampled-1-$round" --otlp-endpoint "$endpoint" --trace-sample-ratio 0.01
    stop_sink
    start_sink "sampled-100-$round"
    pass "sampled-100-$round" --otlp-endpoint "$endpoint" --trace-sample-ratio 1
    stop_sink
    runs+=("metrics-off-$round" "tracing-off-$round" "sampled-1-$round" "sampled-100-$round")
done

python3 "$root/scripts/sweep-table.py" "$out" "${runs[@]}"
echo
for run in "${runs[@]}"; do
    if [[ -f "$out/$run/spans" ]]; then echo "spans received, $run: $(cat "$out/$run/spans")"; fi
done
