#!/usr/bin/env bash
# Measures how late an agent starts the occurrences of a schedule it holds while the master is
# away: an every-2-s schedule on one real agent, the master (and its embedded broker) frozen
# with SIGSTOP for the given seconds, then thawed; the lateness of each start after its
# occurrence time (p50, p99, max; by the marks the occurrences write with the real clock, and
# by the agent's own start times), next to the check that every occurrence ran once and is
# stored. CI runs the smoke instead (a 30 s freeze): the same test with the variable unset.
# Usage: scripts/bench-schedules.sh [SECONDS]   (default 60)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
cargo build --quiet -p tether-agent -p tether-master -p tether-cli --bins
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug
export TETHER_AGENT_BIN=${TETHER_AGENT_BIN:-$BIN/tether-agent}
export TETHER_MASTER_BIN=${TETHER_MASTER_BIN:-$BIN/tether-master}
export TETHER_TETHERCTL_BIN=${TETHER_TETHERCTL_BIN:-$BIN/tetherctl}
TETHER_BENCH_SCHEDULE=${1:-60} timeout 900 \
    cargo test --quiet -p tether-tests --test e2e -- \
    schedules::a_schedule_every_two_seconds_through_a_master_outage --exact --nocapture 2>&1 \
    | grep -E '^(bench schedule|two-s|test result)'
