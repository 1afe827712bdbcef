#!/usr/bin/env bash
# What metrics and tracing cost on the warm path, in one run (docs/BENCHMARKS.md):
#
#   cargo build --release --bins && [ROUNDS=4] scripts/bench-observability-cost.sh RATES [STEP]
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
    # A second try when the first does not start (once, one pass in 16 died on a port
    # taken between baton up's choice and its bind; baton up has chosen its ports below
    # the ephemeral range since, cli/src/ports.rs, and the retry stays as a guard).
    for try in 1 2; do
        rm -rf "$BATON_HOME"
        "$bin/baton" up --cells 1 --port 0 --shard-manager-port 0 --registry-port 0 --sandbox-ports 42000 "$@" \
            >"$out/$run/up.log" 2>&1 &
        up_pid=$!
        for _ in $(seq 600); do
            [[ -f "$BATON_HOME/env" ]] && break
            kill -0 "$up_pid" 2>/dev/null || break
            sleep 0.1
        done
        [[ -f "$BATON_HOME/env" ]] && break
        echo "baton up did not start (try $try):" >&2
        cat "$out/$run/up.log" >&2
        kill -INT "$up_pid" 2>/dev/null || true
        wait "$up_pid" || true
        up_pid=
        [[ $try == 2 ]] && exit 1
    done
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

# setting RUN NAME: one pass of setting NAME (a span sink for those that send spans).
setting() {
    local run="$1-$2"
    case "$1" in
        metrics-off) pass "$run" --no-metrics ;;
        tracing-off) pass "$run" ;;
        sampled-*)
            mkdir -p "$out/$run"
            start_sink "$run"
            pass "$run" --otlp-endpoint "$endpoint" --trace-sample-ratio "$(python3 -c "print(${1#sampled-} / 100)")"
            stop_sink
            ;;
    esac
    runs+=("$run")
}

# ROUNDS (default 2) rounds of the four settings, one after another, so that the spread
# between two passes of one setting shows beside the differences between settings; every
# other round runs them in reverse, so that a drift along a round (a machine warming up)
# does not read as a cost.
settings=(metrics-off tracing-off sampled-1 sampled-100)
runs=()
for round in $(seq "${ROUNDS:-2}"); do
    if ((round % 2)); then order=("${settings[@]}"); else order=(sampled-100 sampled-1 tracing-off metrics-off); fi
    for name in "${order[@]}"; do setting "$name" "$round"; done
done

python3 "$root/scripts/sweep-table.py" "$out" "${runs[@]}"
echo
for run in "${runs[@]}"; do
    if [[ -f "$out/$run/spans" ]]; then echo "spans received, $run: $(cat "$out/$run/spans")"; fi
done
echo
# Per setting: each round's CPU per call (user + system, warm-up calls counted), the
# mean, and the mean against metrics-off.
python3 - "$out" "${runs[@]}" <<'PY'
import json, sys
out, runs = sys.argv[1], sys.argv[2:]
per = {}
for run in runs:
    name = run.rsplit("-", 1)[0]
    summary = json.load(open(f"{out}/{run}/summary.json"))
    calls = sum(p["calls"] for p in summary["phases"]) + summary["settings"]["warmup_s"] * summary["settings"]["rates"][0]
    per.setdefault(name, []).append(float(open(f"{out}/{run}/proxy_cpu_s").read()) * 1e6 / calls)
base = sum(per["metrics-off"]) / len(per["metrics-off"])
print("| setting | CPU per call by round, µs | mean | against metrics-off |")
print("|---|---|---|---|")
for name, values in per.items():
    mean = sum(values) / len(values)
    print(f"| {name} | {', '.join(f'{v:.0f}' for v in values)} | {mean:.0f} | {100 * (mean / base - 1):+.1f} % |")
PY
