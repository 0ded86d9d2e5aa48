# shellcheck shell=bash
# .ci/run's housekeeping (sourced): the room check before anything is built, the removal of
# what a run leaves outside its clone (at the start, for a run killed half-way, and at the
# end), and the disk figures of the summary. CI runs as root on a machine that keeps what
# earlier runs left, so every run must leave it as it found it.

# Measured on a machine that already had the registry, the toolchains and the packages: the
# disk in use peaks 4.6 GB over the start (target/ with the test, release, fuzz and Pi builds),
# 22 MB after the clean-up. A fresh machine downloads those first (crates, the nightly std, the
# Debian packages and the Pi stage's cross linkers); with room to spare:
CI_NEED_DISK_GB=11
# The largest link (the release master under LTO) and the tests beside it: about 2 GB.
CI_NEED_MEM_GB=4

ci_say() { printf 'ci: %s\n' "$*"; }

ci_room_check() {
    local free_kb mem_kb
    free_kb=$(df -Pk . | awk 'NR == 2 { print $4 }')
    mem_kb=$(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo)
    ci_say "disk: $((free_kb / 1048576)) GB free here; memory: $((mem_kb / 1048576)) GB available; $(nproc) cores"
    if [ "$free_kb" -lt $((CI_NEED_DISK_GB * 1048576)) ]; then
        ci_say "not enough disk for a cold build: $((free_kb / 1048576)) GB free, $CI_NEED_DISK_GB GB needed (the build, its release and Pi stages). Free some and run again."
        exit 2
    fi
    if [ "$mem_kb" -lt $((CI_NEED_MEM_GB * 1048576)) ]; then
        ci_say "not enough memory: $((mem_kb / 1048576)) GB available, $CI_NEED_MEM_GB GB needed (the release master's link)."
        exit 2
    fi
}

# What the tests and the Pi stage make outside the clone, made by this project only: network
# namespaces (tether-<pid>-<n> from the cut tests, thil<pid> from the HIL self-test), the
# PostgreSQL clusters of the store tests (servers running as nobody from a /tmp data dir),
# the packages check-deb.sh installs (their purge removes users, /etc/tether and state), and
# the scratch directories under /tmp.
ci_remove_leftovers() {
    local ns p n=0
    if command -v ip >/dev/null 2>&1; then
        for ns in $(ip netns list 2>/dev/null | awk '{ print $1 }' | grep -E '^(tether-[0-9]+-[0-9]+|thil[0-9]+|tether-hil-probe-[0-9]+)$'); do
            ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
            ip netns delete "$ns" 2>/dev/null && n=$((n + 1))
        done
    fi
    [ "$n" -eq 0 ] || ci_say "removed $n network namespaces left by an earlier run"
    if pkill -KILL -u nobody -x postgres 2>/dev/null; then
        ci_say "stopped PostgreSQL servers left by an earlier run"
    fi
    if command -v dpkg-query >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
        for p in tether-agent tether-master tether-cli; do
            if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -qv 'not-installed'; then
                dpkg -P "$p" >/dev/null 2>&1 && ci_say "purged package $p left by an earlier run"
            fi
        done
    fi
    # Scratch directories: the scripts' (tether-*) and the tests' tempfile dirs (.tmpXXXXXX).
    find /tmp -mindepth 1 -maxdepth 1 \( -name 'tether-*' -o -name '.tmp??????' \) \
        -exec rm -rf {} + 2>/dev/null || true
}

# Samples the disk in use every 5 s in the background, for the summary's peak.
ci_disk_watch_start() {
    CI_DISK_START=$(df -Pk . | awk 'NR == 2 { print $3 }')
    (while :; do df -Pk . | awk 'NR == 2 { print $3 }'; sleep 5; done) >"$TETHER_REPORT_DIR/disk.kb" &
    CI_DISK_WATCH=$!
}

ci_disk_report() {
    local peak now
    kill "$CI_DISK_WATCH" 2>/dev/null || true
    peak=$(sort -n "$TETHER_REPORT_DIR/disk.kb" | tail -n 1)
    now=$(df -Pk . | awk 'NR == 2 { print $3 }')
    printf 'disk in use: peak %s MB over the start, %s MB over it after the clean-up\n' \
        "$(((peak - CI_DISK_START) / 1024))" "$(((now - CI_DISK_START) / 1024))" \
        | tee -a "$TETHER_REPORT_DIR/disk.txt"
}

# The build output's size just before it goes: target/ only grows during a run, so this is
# its peak, whatever else the machine's disk was doing meanwhile (df's figures include it).
ci_build_size() {
    printf 'build output at the end of the run (its peak): %s MB under target/\n' \
        "$(($(du -sk target 2>/dev/null | cut -f1) / 1024))" >>"$TETHER_REPORT_DIR/disk.txt"
}

# At exit, pass or fail: the build output goes (kept: test-report/ with each step's log, the
# JUnit reports and flaky.txt; fuzz crash inputs under fuzz/artifacts/), then the leftovers.
ci_clean_up() {
    rm -rf target fuzz/target
    ci_remove_leftovers
}
