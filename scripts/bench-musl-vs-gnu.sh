#!/usr/bin/env bash
# Warm calls through the router with the release tarball's static (musl) binaries against
# the glibc build of the same tree, alternating, in one run (docs/BENCHMARKS.md, "Static
# binaries"): does a host installed from the tarball serve as fast as one built here?
#
#   scripts/package.sh && cargo build --release --bins && \
#     scripts/bench-musl-vs-gnu.sh dist/baton-VERSION-x86_64-linux.tar.gz [ROUNDS]   # default 3
#
# Each pass: `baton up --cells 1` from one build, the sample `echo` warmed by calls until
# it answers, then `wrk -t1 -c32 -d8s` POSTs through the router; prints calls/s and p50/p99.
set -euo pipefail
tarball=${1:?usage: bench-musl-vs-gnu.sh TARBALL [ROUNDS]}
rounds=${2:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
up=
cleanup() {
  [ -n "$up" ] && { kill -INT "$up" 2>/dev/null || true; wait "$up" 2>/dev/null || true; }
  rm -rf "$work"
}
trap cleanup EXIT
tar -xzf "$tarball" -C "$work"
musl=$(echo "$work"/baton-*/bin)
gnu=$root/target/release
printf 'wrk.method = "POST"\nwrk.body = "hello"\n' > "$work/post.lua"

pass() { # BIN_DIR LABEL ROUND
  export BATON_HOME=$work/home-$2-$3
  "$1/baton" up --cells 1 --port 0 --shard-manager-port 0 --sandbox-ports 41000 >"$work/up.log" 2>&1 &
  up=$!
  for _ in $(seq 600); do [ -f "$BATON_HOME/env" ] && break; sleep 0.1; done
  # shellcheck disable=SC1091
  . "$BATON_HOME/env"
  until [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $BATON_API_KEY" -d x "$BATON_URL/function/echo")" = 200 ]; do
    sleep 0.05
  done
  wrk -t1 -c32 -d2s -s "$work/post.lua" -H "Authorization: Bearer $BATON_API_KEY" "$BATON_URL/function/echo" >/dev/null
  result=$(wrk -t1 -c32 -d8s --latency -s "$work/post.lua" -H "Authorization: Bearer $BATON_API_KEY" "$BATON_URL/function/echo")
  rps=$(echo "$result" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$result" | awk '$1 == "50%" {print $2}')
  p99=$(echo "$result" | awk '$1 == "99%" {print $2}')
  echo "$2,$3,$rps,$p50,$p99"
  kill -INT "$up"
  wait "$up" 2>/dev/null || true
  up=
}

echo "build,round,calls_per_s,p50,p99"
for round in $(seq "$rounds"); do
  pass "$gnu" glibc "$round"
  pass "$musl" musl "$round"
done
