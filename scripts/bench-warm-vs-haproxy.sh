#!/usr/bin/env bash
# Warm sweep through a cell's data plane and through HAProxy in front of the very same
# sandboxes, in one run (docs/BENCHMARKS.md). Run it inside scripts/with-cell.sh:
#
#   scripts/with-cell.sh -- scripts/bench-warm-vs-haproxy.sh RATES [STEP]
#
# 1. baton-loadtest warm-sweep registers 4 functions with 8 warm sandboxes each and keeps
#    them; 2. HAProxy (installed with apt-get when missing) gets those 32 sandboxes as
#    servers, one connection each (the data plane's container_concurrency 1); 3. the same
#    sweep through HAProxy; 4. the same sweep through the data plane again (so drift over
#    the run shows). Prints one table, then the CPU each proxy spent per call (user +
#    system time of the baton-cell or haproxy process over the pass, warm-up included,
#    divided by the pass's calls); results in $OUT (default loadtest-results/…).
set -euo pipefail
rates="${1:?usage: bench-warm-vs-haproxy.sh RATES [STEP], e.g. 1000,2000,4000 10s}"
step="${2:-10s}"
: "${BATON_CELL_URL:?run this inside scripts/with-cell.sh}"
root="$(cd "$(dirname "$0")/.." && pwd)"
lt="$root/target/release/baton-loadtest"
out="${OUT:-loadtest-results/warm-vs-haproxy-$(date +%s)}"
haproxy_port="${HAPROXY_PORT:-8090}"
command -v haproxy >/dev/null || apt-get install -y -q haproxy >/dev/null
# Every pass has the same unmeasured warm-up, and each sandbox may use a whole core (a
# small CFS quota throttles the sandboxes and sets both sides' p99 alike).
common=(warm-sweep --rates "$rates" --step "$step" --functions 4 --execution sleep --runtime-ms 1
    --name-prefix hw --cpu-millis 1000 --warmup 5s --quiet)

# shellcheck source=scripts/proxy-cpu.sh
source "$root/scripts/proxy-cpu.sh"

pass "$BATON_CELL_PID" baton --sandboxes 8 --keep-functions

ports=$(ss -ltnpH | awk '/"baton-fn-spin"/ { n = split($4, a, ":"); print a[n] }' | sort -n)
[[ $(wc -w <<<"$ports") -eq 32 ]] || { echo "expected 32 sandboxes, found: $ports" >&2; exit 1; }
cfg="$out/haproxy.cfg"
{
    printf 'global\n    maxconn 5000\ndefaults\n    mode http\n    timeout connect 5s\n'
    printf '    timeout client 60s\n    timeout server 60s\n    http-reuse always\n'
    printf 'frontend fe\n    bind 127.0.0.1:%s\n    default_backend be\n' "$haproxy_port"
    printf 'backend be\n    balance leastconn\n'
    for p in $ports; do printf '    server s%s 127.0.0.1:%s maxconn 1\n' "$p" "$p"; done
} >"$cfg"
haproxy -f "$cfg" -db >"$out/haproxy.log" 2>&1 &
haproxy_pid=$!
trap 'kill $haproxy_pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$haproxy_port") 2>/dev/null && break; sleep 0.1; done
kill -0 "$haproxy_pid" 2>/dev/null || { echo "haproxy did not start:" >&2; cat "$out/haproxy.log" >&2; exit 1; }

pass "$haproxy_pid" haproxy --target http --url "http://127.0.0.1:$haproxy_port/"
pass "$BATON_CELL_PID" baton-again --target http --url "$BATON_CELL_URL/function/{function}"

python3 "$root/scripts/sweep-table.py" "$out" baton haproxy baton-again
