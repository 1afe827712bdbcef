#!/usr/bin/env bash
# Runs baton's whole test suite on a fresh machine, the way CI does.
#
# It installs what the tests need and is missing (cargo-nextest; later issues add Redis on a
# private port here), builds every binary once, checks formatting and lints, runs the whole
# suite, and stops whatever it started, also on failure. The suite creates real sandboxes
# (namespaces and cgroups), so it runs as root, as CI does.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

started_pids=()
cleanup() {
  for pid in "${started_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
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

log "formatting"
cargo fmt --all -- --check

log "building every binary once (tests start the real processes)"
cargo build --workspace --bins --locked

log "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "tests"
cargo nextest run --workspace --locked --no-fail-fast
