#!/usr/bin/env bash
# Runs baton's whole test suite on a fresh machine, the way CI does.
#
# It installs what the tests need and is missing (cargo-nextest, Redis, which it starts on a
# private port), builds every binary once, checks formatting and lints, runs the whole
# suite, and stops whatever it started, also on failure. The suite creates real sandboxes
# (namespaces and cgroups), so it runs as root, as CI does.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

started_pids=()
cleanup() {
  [ -d target ] && log "disk at the end: $(df -h --output=avail . | tail -1 | tr -d ' ') free, target/ $(du -sh target | cut -f1)"
  for pid in "${started_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${redis_dir:-}" ] && rm -rf "$redis_dir"
}
trap cleanup EXIT

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh: the suite creates sandboxes in namespaces and cgroups and needs root" >&2
  exit 1
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

# Redis: the cell's store tests run against a real server, private to this run. curl:
# the `baton up` test calls the router the way the README does. nft: a root worker filters
# its sandboxes' connections with nftables. docker-registry: the image tests push to and
# resolve from a real OCI registry (each test starts its own, on a free port). runc and
# busybox-static: containers run by the real runc, from a rootfs holding a static busybox.
# iproute2 (`ip`): each container's network namespace is wired with it. prometheus:
# `promtool` checks the shipped rules and runs their unit tests. protobuf-compiler: the
# Terraform provider's plugin protocol is compiled with the system's `protoc`.
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v runc >/dev/null 2>&1 || missing+=(runc)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
[ -x /bin/busybox ] || missing+=(busybox-static)
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Installed without starting their services (redis, prometheus, docker-registry): the
  # tests start their own, on private ports, and nothing is left running.
  policy=/usr/sbin/policy-rc.d
  own_policy=false
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && own_policy=true
  fi
  apt-get install -y -qq "${missing[@]}" >/dev/null
  if $own_policy; then rm -f "$policy"; fi
fi
redis_dir=$(mktemp -d)
redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
log "starting redis on 127.0.0.1:$redis_port"
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$redis_dir" --save '' --appendonly no \
  --daemonize no --logfile "$redis_dir/redis.log" &
started_pids+=("$!")
for _ in $(seq 100); do
  redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
  sleep 0.1
done
redis-cli -p "$redis_port" ping >/dev/null || { echo "redis did not start; see $redis_dir/redis.log" >&2; exit 1; }
export BATON_TEST_REDIS_URL="redis://127.0.0.1:$redis_port"

# PyPI clients the tests use, in a virtualenv of their own (kept between runs under
# target/): Grafana's Foundation SDK checks the dashboards against Grafana's model.
venv=target/test-venv
if ! "$venv/bin/python" -c 'import grafana_foundation_sdk' >/dev/null 2>&1; then
  log "making $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'grafana-foundation-sdk==1769699379!11.6.0'
fi
export BATON_TEST_PYTHON="$PWD/$venv/bin/python"

# CI machines have little disk to spare. One build from scratch keeps no incremental state,
# and no debug info: a failing assertion names its file and line without it. (A full-debug,
# incremental build of the suite took 11 GB; this one about 2 GB.)
export CARGO_INCREMENTAL=0 CARGO_PROFILE_DEV_DEBUG=false
log "disk before the build: $(df -h --output=avail . | tail -1 | tr -d ' ') free"

log "formatting"
cargo fmt --all -- --check

log "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

# One build for the tests and the binaries they start: every package with a binary has
# integration tests, so cargo builds each binary with the tests' features (a separate
# `cargo build --bins` would build the workspace a second time with other features).
log "tests"
cargo nextest run --workspace --locked --no-fail-fast
