#!/usr/bin/env bash
# Coverage-guided fuzzing of every decoder of untrusted bytes (fuzz/fuzz_targets/*.rs) with
# libFuzzer, on the stable toolchain: the crate is built with the sanitizer-coverage passes
# cargo-fuzz would ask for, so no nightly and no cargo-fuzz install are needed.
#
#   scripts/fuzz.sh                    # every target, FUZZ_SECONDS (20) each
#   FUZZ_SECONDS=600 scripts/fuzz.sh wire journal_file
#
# Targets run side by side, one per core (FUZZ_JOBS sets how many at once).
#
# Inputs start from fuzz/corpus/<target> (committed seeds) in a scratch copy, so a run never
# rewrites the repository. Prints executions, coverage and corpus size per target; a crash
# keeps its input under fuzz/artifacts/<target>/ and makes the script exit non-zero. Replay
# one with: target/fuzz/x86_64-unknown-linux-gnu/release/<target> fuzz/artifacts/<target>/crash-…
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECONDS_EACH=${FUZZ_SECONDS:-20}
HOST=$(rustc -vV | sed -n 's/^host: //p')
TARGET_DIR=$ROOT/target/fuzz

# The flags cargo-fuzz uses, minus the sanitizer (which needs nightly). --target keeps build
# scripts and proc macros uninstrumented.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-sanitizer-coverage-stack-depth \
--cfg fuzzing -Cdebug-assertions -Coverflow-checks"
echo "==> building the fuzz targets" >&2
(cd "$ROOT/fuzz" && cargo build --release --locked --quiet --target "$HOST" --target-dir "$TARGET_DIR")
BIN=$TARGET_DIR/$HOST/release

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=($(sed -n 's/^name = "\(.*\)"$/\1/p' "$ROOT/fuzz/Cargo.toml" | grep -v '^tether-fuzz$'))
fi

scratch=$(mktemp -d "${TMPDIR:-/tmp}/tether-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
# One target per core at a time: each is single-threaded, and CI waits for the slowest batch.
jobs=${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}

# Fuzzes target $1 into $scratch/$1.row (its table row) and $scratch/$1.crash (if it crashed).
fuzz_one() {
    local t=$1 log status execs rate cov corpus
    mkdir -p "$scratch/$t" "$ROOT/fuzz/artifacts/$t"
    cp -r "$ROOT/fuzz/corpus/$t/." "$scratch/$t/" 2>/dev/null || true
    log=$scratch/$t.log
    status=ok
    # -timeout: one input taking a second is a hang worth reporting.
    if ! timeout $((SECONDS_EACH + 60)) "$BIN/$t" -max_total_time="$SECONDS_EACH" -timeout=1 \
        -rss_limit_mb=512 -max_len=4200 -print_final_stats=1 \
        -artifact_prefix="$ROOT/fuzz/artifacts/$t/" "$scratch/$t" >"$log" 2>&1; then
        status=CRASH
        grep -E "panicked|ERROR|SUMMARY|Test unit written" "$log" | head -8 >"$scratch/$t.crash"
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
    corpus=$(ls "$scratch/$t" | wc -l)
    printf '%-16s %12s %8s %8s %8s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "$corpus" \
        "$status" >"$scratch/$t.row"
}

for t in "${targets[@]}"; do
    [ -x "$BIN/$t" ] || { echo "fuzz: no target named $t" >&2; exit 2; }
done
running=0
for t in "${targets[@]}"; do
    if [ "$running" -ge "$jobs" ]; then
        wait -n || true
        running=$((running - 1))
    fi
    fuzz_one "$t" &
    running=$((running + 1))
done
wait || true

failed=0
printf '%-16s %12s %8s %8s %8s  %s\n' target executions exec/s cov corpus result
for t in "${targets[@]}"; do
    if [ -f "$scratch/$t.row" ]; then
        cat "$scratch/$t.row"
    else
        printf '%-16s  the fuzzing job ended without a result\n' "$t"
        failed=1
    fi
    if [ -f "$scratch/$t.crash" ]; then
        failed=1
        cat "$scratch/$t.crash" >&2
    fi
done
exit $failed
