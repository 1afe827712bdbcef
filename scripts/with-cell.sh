#!/usr/bin/env bash
# Runs a command against a local cell: starts baton-cell (control and data plane, embedded
# store) and one worker, waits until they listen, runs the command, and stops everything
# however it ends. Used by the load-test benchmarks in docs/BENCHMARKS.md.
#
#   scripts/with-cell.sh [--emulated NODES] [--release|--debug] -- COMMAND [ARGS...]
#
# --emulated NODES   one worker process registering NODES emulated nodes (40 ms creation)
#                    instead of a process-runtime worker
# The cell listens on the defaults baton-loadtest expects: data plane 127.0.0.1:8080,
# control plane 127.0.0.1:7100 (override with BATON_CELL_HTTP / BATON_CELL_GRPC). The
# command sees BATON_CELL_URL, BATON_CELL_CONTROL, BATON_CELL_PID and BATON_WORKER_PID.
# Workers offer far more CPU and memory than the machine has: load tests ask for sleeping
# functions, and placement should not be what limits them.
set -euo pipefail

emulated=""
profile=release
while [[ $# -gt 0 ]]; do
    case "$1" in
        --emulated) emulated="$2"; shift 2 ;;
        --release) profile=release; shift ;;
        --debug) profile=debug; shift ;;
        --) shift; break ;;
        *) echo "with-cell.sh: unknown option $1 (see the header of this script)" >&2; exit 2 ;;
    esac
done
[[ $# -gt 0 ]] || { echo "with-cell.sh: no command given" >&2; exit 2; }

root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/target/$profile"
for b in baton-cell baton-worker baton-fn-spin; do
    [[ -x "$bin/$b" ]] || { echo "with-cell.sh: $bin/$b is missing: cargo build --$profile --bins" >&2; exit 2; }
done
http="${BATON_CELL_HTTP:-127.0.0.1:8080}"
grpc="${BATON_CELL_GRPC:-127.0.0.1:7100}"
dir="$(mktemp -d)"
pids=()
cleanup() {
    # SIGTERM: the worker deletes its sandboxes, the cell shuts down cleanly.
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM

listening() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }

# Fails with the tail of the process's log (the folder goes with the EXIT trap).
fail() {
    echo "with-cell.sh: $1" >&2
    tail -n 20 "$2" >&2 || true
    exit 1
}

# Waits until $1 listens and process $2 is alive (so a stale process on the port is not
# mistaken for ours).
wait_port() {
    for _ in $(seq 200); do
        kill -0 "$2" 2>/dev/null || fail "the process for $1 exited" "$3"
        listening "$1" && return 0
        sleep 0.05
    done
    fail "nothing listens on $1" "$3"
}

for addr in "$http" "$grpc"; do
    ! listening "$addr" || { echo "with-cell.sh: $addr is taken (another cell?)" >&2; exit 1; }
done

# A development cell on loopback, called by the command in plain HTTP and gRPC: no TLS.
export BATON_TLS__PLAINTEXT=true
BATON_LOG__FILTER="${BATON_LOG__FILTER:-warn}" \
BATON_CONTROL_PLANE__AUTOSCALE_INTERVAL="${BATON_CONTROL_PLANE__AUTOSCALE_INTERVAL:-100ms}" \
    "$bin/baton-cell" --listen "$grpc" --http-listen "$http" --admin-listen 127.0.0.1:0 \
    --store-path "$dir/cell.redb" >"$dir/cell.log" 2>&1 &
pids+=($!)
cell_pid=$!
wait_port "$grpc" "$cell_pid" "$dir/cell.log"
wait_port "$http" "$cell_pid" "$dir/cell.log"

# The sample functions run from the checkout, which the sandbox user may not reach (under
# /root): a development cell runs them as the worker's user rather than refusing them.
worker_args=(--listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --node-id local --state-dir "$dir/worker"
    --control-plane "http://$grpc")
[[ -n "$emulated" ]] && worker_args+=(--emulate-nodes "$emulated")
BATON_LOG__FILTER="${BATON_LOG__FILTER:-warn}" \
BATON_WORKER__MAX_SANDBOXES=100000 BATON_WORKER__CPU_MILLIS=100000000 BATON_WORKER__MEMORY_MIB=100000000 \
BATON_PROCESS__CGROUP_PARENT="baton-with-cell-$$" \
BATON_PROCESS__USER_FALLBACK="${BATON_PROCESS__USER_FALLBACK:-worker}" \
    "$bin/baton-worker" "${worker_args[@]}" >"$dir/worker.log" 2>&1 &
pids+=($!)
worker_pid=$!
# Registration takes a heartbeat or two; the worker must still be alive after it.
sleep 1
kill -0 "$worker_pid" 2>/dev/null || fail "the worker exited" "$dir/worker.log"

BATON_CELL_URL="http://$http" BATON_CELL_CONTROL="http://$grpc" \
BATON_CELL_PID="$cell_pid" BATON_WORKER_PID="$worker_pid" "$@"
