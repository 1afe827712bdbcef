#!/usr/bin/env bash
# Warm-call overhead of the router against HAProxy in front of the same cell data plane, in
# one run (docs/BENCHMARKS.md):
#
#   cargo build --release --bins && scripts/bench-router-vs-haproxy.sh RATES [STEP]
#
# 1. `baton up --cells 1` (release binaries, its own BATON_HOME, free ports);
# 2. baton-loadtest warm-sweep through the router registers 4 functions with 2 warm
#    sandboxes each and keeps them; 3. HAProxy (installed with apt-get when missing) in
#    front of the cell's data plane, calling the same functions by their cell names
#    (`dev.NAME`) over mutual TLS with the router's certificate (the data plane serves
#    routers only); 4. the same sweep through HAProxy; 5. through the router again (so
#    drift over the run shows). Prints one table, then the CPU the router and HAProxy spent per
#    call (the router's does not include the data plane's); results in $OUT.
#
# Every pass has the same unmeasured warm-up (5 s at the first rate), and each of the 8
# sandboxes gets a quarter core, all the worker of `baton up` offers (2 cores): far more
# than a call needs, so no CFS quota throttles them (0.01 core did, and set the p99 of
# both sides alike, hiding any difference between the proxies).
set -euo pipefail
rates="${1:?usage: bench-router-vs-haproxy.sh RATES [STEP], e.g. 1000,2000,4000 10s}"
step="${2:-10s}"
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/target/release"
lt="$bin/baton-loadtest"
out="${OUT:-loadtest-results/router-vs-haproxy-$(date +%s)}"
haproxy_port="${HAPROXY_PORT:-8091}"
command -v haproxy >/dev/null || apt-get install -y -q haproxy >/dev/null
mkdir -p "$out"
export BATON_HOME="$out/baton-home"
"$bin/baton" up --cells 1 --port 0 --shard-manager-port 0 --sandbox-ports 41000 >"$out/up.log" 2>&1 &
up_pid=$!
haproxy_pid=
cleanup() {
    [[ -n "$haproxy_pid" ]] && kill "$haproxy_pid" 2>/dev/null || true
    kill -INT "$up_pid" 2>/dev/null || true
    wait "$up_pid" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 600); do [[ -f "$BATON_HOME/env" ]] && break; sleep 0.1; done
[[ -f "$BATON_HOME/env" ]] || { echo "baton up did not start:" >&2; cat "$out/up.log" >&2; exit 1; }
# shellcheck disable=SC1091
source "$BATON_HOME/env"
data_plane=$("$bin/baton" cells list -o json |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["cells"][0]["data_planes"][0])' | sed 's|^https*://||')
# The data plane serves routers only, over mutual TLS: HAProxy presents the router's
# certificate (certificate and key in one file), so both proxies pay for the same TLS hop.
tls_dir=$(dirname "$BATON_CA")
cat "$tls_dir/router.pem" "$tls_dir/router.key" >"$out/router.pem"
chmod 600 "$out/router.pem"
router_pid=$(pgrep -P "$up_pid" -x baton-router) || { echo "no baton-router under baton up" >&2; exit 1; }
# shellcheck source=scripts/proxy-cpu.sh
source "$root/scripts/proxy-cpu.sh"

common=(warm-sweep --rates "$rates" --step "$step" --functions 4 --execution sleep --runtime-ms 1
    --name-prefix rh --cpu-millis 250 --warmup 5s --quiet)
pass "$router_pid" router --target router --url "$BATON_URL" --sandboxes 2 --keep-functions

cfg="$out/haproxy.cfg"
{
    printf 'global\n    maxconn 5000\ndefaults\n    mode http\n    timeout connect 5s\n'
    printf '    timeout client 60s\n    timeout server 60s\n    http-reuse always\n'
    printf 'frontend fe\n    bind 127.0.0.1:%s\n    default_backend be\n' "$haproxy_port"
    printf 'backend be\n    server dp %s ssl verify required ca-file %s crt %s\n' \
        "$data_plane" "$BATON_CA" "$out/router.pem"
} >"$cfg"
haproxy -f "$cfg" -db >"$out/haproxy.log" 2>&1 &
haproxy_pid=$!
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$haproxy_port") 2>/dev/null && break; sleep 0.1; done
kill -0 "$haproxy_pid" 2>/dev/null || { echo "haproxy did not start:" >&2; cat "$out/haproxy.log" >&2; exit 1; }

pass "$haproxy_pid" haproxy --target http --url "http://127.0.0.1:$haproxy_port/function/dev.{function}"
pass "$router_pid" router-again --target router --url "$BATON_URL" --sandboxes 2

python3 "$root/scripts/sweep-table.py" "$out" router haproxy router-again
