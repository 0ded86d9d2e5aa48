# shellcheck shell=bash
# Named steps for scripts/test.sh and .ci/run (sourced): each step is timed and its output
# kept in $TETHER_REPORT_DIR (NN.log, and NN-junit.xml for a nextest run); the first failing
# step stops the run. The outermost script owns the report: it calls `steps_summary` from its
# EXIT trap, which prints every step's wall time and, for a failure, which step, which test
# and why as the run's last lines (scripts/lib/summary.py).

STEPS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export TETHER_REPORT_DIR="${TETHER_REPORT_DIR:-$STEPS_ROOT/test-report}"

# Whether this script started the report (and so prints its summary); the first caller does.
steps_init() {
    if [ -n "${TETHER_STEPS_OWNER:-}" ]; then
        return 1
    fi
    export TETHER_STEPS_OWNER=$$
    export TETHER_STEPS_START=$SECONDS
    rm -rf "$TETHER_REPORT_DIR"
    mkdir -p "$TETHER_REPORT_DIR"
    : >"$TETHER_REPORT_DIR/steps.tsv"
    return 0
}

# Where nextest writes the JUnit report of its `ci` profile (.config/nextest.toml).
steps_junit() { printf '%s/nextest/ci/junit.xml' "${CARGO_TARGET_DIR:-$STEPS_ROOT/target}"; }

# step NAME COMMAND...: runs COMMAND, output to the terminal and to the step's log.
# COMMAND is a program or a function that fails by `exit`/`return` non-zero (errexit does
# not hold inside it).
step() {
    local name=$1 n log rc start junit
    shift
    n=$(($(wc -l <"$TETHER_REPORT_DIR/steps.tsv") + 1))
    log="$TETHER_REPORT_DIR/$(printf '%02d' "$n").log"
    junit="$(steps_junit)"
    rm -f "$junit"
    printf '\n==> %s\n' "$name"
    start=$SECONDS
    set +e
    "$@" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    set -e
    if [ -f "$junit" ]; then
        mv "$junit" "$TETHER_REPORT_DIR/$(printf '%02d' "$n")-junit.xml"
    fi
    printf '%02d\t%s\t%s\t%s\n' "$n" "$rc" "$((SECONDS - start))" "$name" >>"$TETHER_REPORT_DIR/steps.tsv"
    if [ "$rc" -ne 0 ]; then
        exit "$rc"
    fi
}

# The closing summary (of exit code $1, or of the last command's); its last lines say what broke. Needs python3 to read the JUnit
# reports; without it the failed step's log tail stands in.
steps_summary() {
    local rc=${1:-$?}
    if command -v python3 >/dev/null 2>&1; then
        python3 "$STEPS_ROOT/scripts/lib/summary.py" "$TETHER_REPORT_DIR" "$rc" \
            "$((SECONDS - ${TETHER_STEPS_START:-0}))" || true
    else
        printf '\n==> summary (no python3: the last step log'"'"'s tail)\n'
        tail -n 40 "$(ls "$TETHER_REPORT_DIR"/*.log 2>/dev/null | tail -n 1)" 2>/dev/null || true
    fi
    return "$rc"
}
