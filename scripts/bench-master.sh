#!/usr/bin/env bash
# Measures the release master against the goals of the master issue, each figure printed
# next to its reference from the same run (see master/benches/measure.rs):
#   - QoS 1, 1 KiB messages per second and latency through the embedded broker vs mosquitto;
#   - tasks per second end to end with `true` vs the raw fork/exec rate of `true`;
#   - kill -9 of a cluster's active member to the next task started on the next member;
#   - the master's idle VmRSS/VmHWM with one agent.
#   - tasks per second and master RSS on SQLite and on PostgreSQL, side by side (stores).
#   - an order of 10 same-agent steps of `true` vs 10 single tasks one after the other and
#     10 at once (orders).
# Usage: scripts/bench-master.sh [SECTION...]   (sections: rss broker tasks failover stores
# fleet orders;
# --smoke: every section short, failing unless each figure is produced)
# Needs /usr/sbin/mosquitto for the broker reference. BENCH_LOGS=1 prints the process logs.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
echo "building the release agent and master..." >&2
timeout 3600 cargo build --release --quiet -p tether-agent -p tether-master --bins
TETHER_AGENT_BIN=${TETHER_AGENT_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/tether-agent} \
    timeout 3600 cargo bench --quiet -p tether-master --bench measure -- "$@"
