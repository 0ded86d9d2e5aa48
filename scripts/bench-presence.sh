#!/usr/bin/env bash
# Measures when a silenced agent's retained presence reads offline (as mosquitto_sub shows
# it) after a pulled cable (network namespace) and after a frozen process (SIGSTOP), and how
# soon after SIGCONT the master counts the agent available again; next to the agent's
# keepalive x 1.5 and the master's silence rule from the same run. Both brokers (embedded
# rumqttd, mosquitto), a 10 s heartbeat period, a 40 s cut and a 65 s freeze (~5 min). Needs
# root (network namespaces), mosquitto and mosquitto_sub. CI runs the smoke instead (1 s
# period, 8 s each, rumqttd): the same test with the variable unset.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
cargo build --quiet -p tether-agent -p tether-master -p tether-cli --bins
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug
export TETHER_AGENT_BIN=${TETHER_AGENT_BIN:-$BIN/tether-agent}
export TETHER_MASTER_BIN=${TETHER_MASTER_BIN:-$BIN/tether-master}
export TETHER_TETHERCTL_BIN=${TETHER_TETHERCTL_BIN:-$BIN/tetherctl}
TETHER_BENCH_PRESENCE=full timeout 1800 \
    cargo test --quiet -p tether-tests --test cut -- presence_bench --nocapture 2>&1 \
    | grep -E '^(timeline|  |bench presence|test result|SKIPPED)'
