# Sourced by the benchmark scripts: a load-test pass through a proxy, with the CPU the
# proxy spent on it.
#
#   pass PID RUN [BATON-LOADTEST ARGS...]
#
# runs "$lt" "${common[@]}" ARGS --out "$out/RUN" and writes to $out/RUN/proxy_cpu_s the
# CPU seconds (user + system) process PID used meanwhile; scripts/sweep-table.py turns it
# into CPU per call.

# CPU seconds (user + system) process $1 has used so far.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"; }

pass() {
    local pid="$1" run="$2" before after
    shift 2
    before=$(cpu_s "$pid")
    "$lt" "${common[@]}" "$@" --out "$out/$run"
    # Fails (set -e) when the proxy died during the pass.
    after=$(cpu_s "$pid")
    python3 -c "print($after - $before)" >"$out/$run/proxy_cpu_s"
}
