#!/usr/bin/env bash
# Tether's whole test suite: set-up, formatting, lints, the no_std proof, every test and every
# benchmark's smoke run. Each step is timed and logged under test-report/; a failure ends the
# run with a summary that names the step, the test and its message (scripts/lib/steps.sh).
#
# scripts/setup.sh installs what the real-process tests need when it can (root on Debian), or
# says in one line what is missing and how to install it; those tests then skip with a reason.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/steps.sh
source scripts/lib/steps.sh
if steps_init; then
    trap steps_summary EXIT
fi

step "set-up: rustup target, Debian packages, OpenAPI validator, cargo-nextest" \
    bash scripts/setup.sh

step "cargo fmt --check" cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)" \
    cargo clippy --workspace --all-targets --locked -- -D warnings

no_std_core() {
    cargo build -p tether-core --no-default-features --target thumbv7em-none-eabihf --locked \
        || return 1
    if cargo tree -p tether-core --no-default-features -e features --target thumbv7em-none-eabihf \
        | grep -E '"(std|alloc|use-std|mock-driver)"'; then
        echo "tether-core's dependency tree enables std, alloc or mock-driver"
        return 1
    fi
}
step "tether-core: no_std, no alloc, for a Cortex-M4F" no_std_core

# The core decides and the model describes; only master/src/store/ knows a database.
core_imports_no_store() {
    if grep -rnE '(rusqlite|postgres|tokio_postgres|sqlx)|crate::store\b|crate::persist\b' \
        master/src/core master/src/model; then
        echo "master/src/core or master/src/model imports a storage crate or the store"
        return 1
    fi
}
step "the master's core and model import no storage crate" core_imports_no_store

if [ -x target/openapi-venv/bin/openapi-spec-validator ]; then
    export TETHER_OPENAPI_VALIDATOR="$PWD/target/openapi-venv/bin/openapi-spec-validator"
fi

# The binaries the end-to-end tests run, built once with the workspace's features (what the
# test build uses too, so nothing is built twice); each test process is pointed at them
# instead of asking cargo again.
step "build the binaries" cargo build --workspace --bins --locked
bin_dir="${CARGO_TARGET_DIR:-$PWD/target}/debug"
export TETHER_AGENT_BIN="$bin_dir/tether-agent" TETHER_MASTER_BIN="$bin_dir/tether-master" \
    TETHER_TETHERCTL_BIN="$bin_dir/tetherctl"

seeds="TETHER_SIM_SEEDS=${TETHER_SIM_SEEDS:-default}"
if cargo nextest --version >/dev/null 2>&1; then
    nextest() { cargo nextest run --workspace --locked --profile ci --no-tests=warn "$@"; }
    # Three steps, so the timed silences of the cut suite never share the cores with the
    # simulation's seed sweep (.config/nextest.toml: which suites retry once).
    step "tests: unit, property, master, agent and end-to-end" \
        nextest -E 'not (binary(cut) | binary(sim))'
    step "tests: network cuts" nextest -E 'binary(cut)'
    step "tests: the simulation ($seeds)" nextest -E 'binary(sim)'
    step "doc tests" cargo test --workspace --doc --locked
else
    step "tests, under cargo test (no cargo-nextest: no retries) ($seeds)" \
        cargo test --workspace --locked
fi

# Every benchmark, short, so none rots unseen: each figure must be produced, its value is not
# judged (scripts/bench-master.sh and scripts/measure-agent.sh run them in full, in release).
step "benchmark smoke: the master's measurements (brokers, tasks/s, fail-over, RSS, stores)" \
    cargo test -p tether-master --bench measure --locked -- --smoke
step "benchmark smoke: the idle agent (RSS, wake-ups, bytes per heartbeat) next to mosquitto_sub" \
    env MEASURE_SMOKE=1 bash scripts/measure-agent.sh

# Only with its feature: the agent's own build links no clap (binary size on a Pi Zero).
agent_links_no_clap() {
    if cargo tree -p tether-agent -e normal --prefix none --locked | grep -E '^(clap|roff) '; then
        echo "tether-agent's default build depends on clap or roff"
        return 1
    fi
    cargo clippy -p tether-agent --all-targets --features cli-docs --locked -- -D warnings \
        && cargo test -p tether-agent --features cli-docs --locked --test cli_docs
}
step "tether-agent's man page and completions agree with its parser (feature cli-docs)" \
    agent_links_no_clap
