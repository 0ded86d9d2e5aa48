#!/usr/bin/env bash
# Measures how long after an outage the agent's result reaches the master (the agent's
# reconnect, see agent/linux/src/probe.rs): a network namespace's cable pulled for each
# outage, a task finishing meanwhile, then the time from the cable plugged back to the result
# stored, next to a plain TCP client's first connect from the same namespace in the same run.
# Both brokers (embedded rumqttd, mosquitto). Needs root (network namespaces) and mosquitto.
# CI runs the smoke instead (one short outage, rumqttd): the same test with the variable unset.
# Usage: scripts/bench-reconnect.sh [SECONDS,SECONDS,...]   (default 10,60,300: ~7 min)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
cargo build --quiet -p tether-agent -p tether-master -p tether-cli --bins
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug
export TETHER_AGENT_BIN=${TETHER_AGENT_BIN:-$BIN/tether-agent}
export TETHER_MASTER_BIN=${TETHER_MASTER_BIN:-$BIN/tether-master}
export TETHER_TETHERCTL_BIN=${TETHER_TETHERCTL_BIN:-$BIN/tetherctl}
TETHER_BENCH_RECONNECT=${1:-10,60,300} timeout 3600 \
    cargo test --quiet -p tether-tests --test cut -- reconnect_bench --nocapture 2>&1 \
    | grep -E '^(timeline|  |bench reconnect|test result|SKIPPED)'
