#!/usr/bin/env bash
# The ARM agents, run for real under qemu-user on this x86 machine against x86 brokers on
# loopback.
#
# usage: scripts/pi/qemu-smoke.sh [--no-build] [--no-scenarios] [TARGET...|all]
#   default targets: aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf
#                    arm-unknown-linux-musleabihf (ARMv6, under -cpu arm1176; skipped when
#                    build.sh could not build it); `all` adds aarch64-unknown-linux-musl and
#                    armv7-unknown-linux-musleabihf
#
# 1. Smoke, per target: a real mosquitto on free ports, the ARM agent under qemu connected to
#    it over TLS (server verified against a CA made here with openssl), its retained
#    presence `online <inc>` seen by mosquitto_sub, then SIGTERM and `offline <inc> stopped`
#    with the same incarnation, exit status 0. Prints the idle RSS of the qemu process
#    (guest plus emulator, informative only).
# 2. Scenarios, per target, the ARMv6 one included (skip with --no-scenarios): the agent
#    end-to-end tests (tests/tests/e2e/agent_faults.rs and agent_tasks.rs) run against
#    the ARM agent, over rumqttd and mosquitto: TETHER_AGENT_BIN points the harness at a wrapper that execs qemu.
#    Among them kill_on_loss_and_continue_and_reconcile (the `kill` task is killed, the
#    `continue` task runs on while the master is silent and reports its result when it is
#    back), kill9_restart_no_double_start (exactly-once start across a crash) and
#    replay_after_acks_resume (journal replay); tests/README.md lists them by behaviour. The test binaries are host (x86) code; the
#    tasks the ARM agent starts are host programs (/bin/sh), which qemu-user execs natively.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
cd "$PI_ROOT"

# The end-to-end test modules (tests/tests/e2e/*.rs) that run against the ARM agents.
E2E_TESTS=(agent_faults agent_tasks)

build=1
scenarios=1
targets=()
for arg in "$@"; do
    case "$arg" in
        --no-build) build=0 ;;
        --no-scenarios) scenarios=0 ;;
        -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
        -*) pi_die "unknown option $arg" ;;
        *) targets+=("$arg") ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${PI_DEFAULT_TARGETS[@]}")
mapfile -t targets < <(pi_expand_targets "${targets[@]}")

pi_apt qemu-user mosquitto mosquitto-clients openssl || pi_die "cannot install qemu-user, mosquitto and openssl"
MOSQUITTO="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
[ -x "$MOSQUITTO" ] || pi_die "no mosquitto"

if [ "$build" = 1 ]; then
    # Skips (not fails) the ARMv6 target when its toolchain cannot be had.
    bash scripts/pi/build.sh "${targets[@]}"
fi

WORK="$(mktemp -d -t tether-pi-smoke.XXXXXX)"
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# Waits (at most $2 seconds) until file $1 has a line matching regex $3.
wait_line() {
    local file="$1" bound="$2" re="$3" deadline
    deadline=$((SECONDS + bound))
    while [ $SECONDS -lt $deadline ]; do
        grep -Eq "$re" "$file" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# A CA and a server certificate for 127.0.0.1, for the TLS listener (the agent's TLS, ring
# included, runs under each CPU). World-readable: as root mosquitto reads them after
# dropping to its own user; the key protects nothing but this run.
make_tls() {
    local d="$WORK/tls" ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
    mkdir -p "$d"
    openssl req -x509 "${ec[@]}" -days 2 -keyout "$d/ca.key" -out "$d/ca.pem" \
        -subj "/CN=Tether smoke CA" 2>/dev/null
    openssl req "${ec[@]}" -keyout "$d/server.key" -out "$d/server.csr" -subj /CN=localhost 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$d/server.ext"
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
        -days 2 -extfile "$d/server.ext" -out "$d/server.pem" 2>/dev/null
    chmod 755 "$WORK" "$d"
    chmod 644 "$d"/*
    TLS_CA="$d/ca.pem"
}

# Starts a private mosquitto on two free loopback ports, plain MQTT for the test's own
# clients and TLS for the agent; sets BROKER_PORT, TLS_PORT and BROKER_PID.
start_mosquitto() {
    local dir="$1" port tls_port tries=0
    while :; do
        port="$(pi_free_port)"
        tls_port="$(pi_free_port)"
        cat >"$dir/mosquitto.conf" <<CONF
per_listener_settings false
allow_anonymous true
persistence false
log_dest stderr
listener $port 127.0.0.1
listener $tls_port 127.0.0.1
certfile $WORK/tls/server.pem
keyfile $WORK/tls/server.key
CONF
        # stderr, not `log_dest file`: as root mosquitto drops to its own user, which may
        # not write in our private temp dir.
        "$MOSQUITTO" -c "$dir/mosquitto.conf" 2>"$dir/mosquitto.log" &
        BROKER_PID=$!
        PIDS+=("$BROKER_PID")
        if wait_line "$dir/mosquitto.log" 10 "listen socket on port $tls_port"; then
            BROKER_PORT="$port"
            TLS_PORT="$tls_port"
            return 0
        fi
        # The port was taken between choosing and binding: choose again (bounded).
        tries=$((tries + 1))
        [ $tries -lt 3 ] || { cat "$dir/mosquitto.log" >&2; pi_die "mosquitto did not start"; }
    done
}

fail() {
    local dir="$1"
    shift
    printf 'FAIL: %s\n' "$*" >&2
    for f in "$dir"/agent.log "$dir"/presence.log "$dir"/mosquitto.log; do
        [ -f "$f" ] && { printf -- '---- %s ----\n' "$f" >&2; tail -n 40 "$f" >&2; }
    done
    return 1
}

# One target's smoke run; appends its result line to `results`.
smoke() {
    local t="$1" bin runner dir id topic sub agent inc rss status retained
    bin="$(pi_agent_path "$t")"
    runner="$(pi_runner "$t")"
    dir="$WORK/$t"
    mkdir -p "$dir/state" "$dir/work"
    id="smoke-${t%%-*}"
    topic="tether/agent/$id/presence"
    start_mosquitto "$dir"

    mosquitto_sub -h 127.0.0.1 -p "$BROKER_PORT" -q 1 -t "$topic" >"$dir/presence.log" 2>&1 &
    sub=$!
    PIDS+=("$sub")
    # Keys as a provisioned board has them (no master here: any valid public key will do), so
    # the ARM build computes its MACs: presence carries one as a hex tag.
    # shellcheck disable=SC2086
    RUST_LOG=info $runner "$bin" run --id "$id" --broker "mqtts://127.0.0.1:$TLS_PORT" \
        --tls-ca-file "$TLS_CA" \
        --master-key 5866666666666666666666666666666666666666666666666666666666666666 \
        --agent-key 2222222222222222222222222222222222222222222222222222222222222222 \
        --state-dir "$dir/state" --work-dir "$dir/work" --drain-seconds 2 \
        </dev/null >"$dir/agent.log" 2>&1 &
    agent=$!
    PIDS+=("$agent")

    wait_line "$dir/presence.log" 60 '^online [0-9a-f]{8} [0-9a-f]{32}$' \
        || { fail "$dir" "$t: no retained 'online <inc> <mac>' within 60 s"; return 1; }
    inc="$(grep -Eo '^online [0-9a-f]{8} [0-9a-f]{32}$' "$dir/presence.log" | tail -n1 | cut -d' ' -f2)"
    # A fresh subscriber gets the retained value: the presence outlives the publish.
    retained="$(mosquitto_sub -h 127.0.0.1 -p "$BROKER_PORT" -t "$topic" -C 1 -W 10 2>/dev/null || true)"
    [ "${retained% *}" = "online $inc" ] \
        || { fail "$dir" "$t: retained presence is '$retained', not 'online $inc <mac>'"; return 1; }
    # Idle for a moment, then the qemu process's resident set (guest + emulator).
    sleep 2
    rss="$(awk '/^VmRSS/ {print $2}' "/proc/$agent/status" 2>/dev/null || echo '?')"

    kill -TERM "$agent"
    wait_line "$dir/presence.log" 30 "^offline $inc stopped [0-9a-f]{32}\$" \
        || { fail "$dir" "$t: no 'offline $inc stopped' within 30 s of SIGTERM"; return 1; }
    # Bounded: the agent drains (nothing runs) and exits; killed after 30 s.
    local deadline=$((SECONDS + 30))
    while kill -0 "$agent" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    kill -KILL "$agent" 2>/dev/null || true
    status=0
    wait "$agent" || status=$?
    [ "$status" -eq 0 ] || { fail "$dir" "$t: agent exited with status $status after SIGTERM"; return 1; }
    if grep -Eq '^offline [0-9a-f]{8} lost' "$dir/presence.log"; then
        fail "$dir" "$t: a will ('lost') was published on a normal stop"
        return 1
    fi
    kill "$sub" "$BROKER_PID" 2>/dev/null || true
    results+=("$(printf '%-34s PASS  over TLS: online %s -> offline %s stopped, exit 0, idle RSS (qemu+guest) %s KiB' \
        "$t" "$inc" "$inc" "$rss")")
}

# The end-to-end fault scenarios against one target's agent under qemu.
scenarios() {
    local t="$1" bin runner wrapper
    bin="$(pi_agent_path "$t")"
    runner="$(pi_runner "$t")"
    wrapper="$WORK/tether-agent-$t"
    # exec: the harness signals and reaps the process it started, so qemu must be that
    # process (qemu-user passes SIGTERM on to the guest; SIGKILL ends both).
    # Each start is counted: the run must not pass on a host agent the harness found itself.
    printf '#!/bin/sh\necho "$$" >>%q\nexec %s %q "$@"\n' "$WORK/starts-$t" "$runner" "$bin" >"$wrapper"
    chmod +x "$wrapper"
    local filters=() m
    for m in "${E2E_TESTS[@]}"; do filters+=("$m::"); done
    TETHER_AGENT_BIN="$wrapper" cargo test -p tether-tests --locked --test e2e -- "${filters[@]}" \
        || return 1
    local starts
    starts=$(wc -l <"$WORK/starts-$t" 2>/dev/null || echo 0)
    [ "$starts" -ge 6 ] || { printf 'FAIL: %s: the tests started the ARM agent %s times\n' "$t" "$starts" >&2; return 1; }
}

make_tls
results=()
failed=0
for t in "${targets[@]}"; do
    bin="$(pi_agent_path "$t")"
    if [ ! -x "$bin" ]; then
        if pi_is_build_std "$t"; then
            results+=("$(printf '%-34s SKIPPED: not built (no -Zbuild-std toolchain here)' "$t")")
            continue
        fi
        pi_die "$bin is missing: run scripts/pi/build.sh $t"
    fi
    pi_say "smoke: $t under $(pi_runner "$t" | cut -d' ' -f1-3)"
    smoke "$t" || { results+=("$(printf '%-34s FAIL (smoke)' "$t")"); failed=1; }
done

if [ "$scenarios" = 1 ]; then
    for t in "${targets[@]}"; do
        [ -x "$(pi_agent_path "$t")" ] || continue
        pi_say "scenarios: $t under qemu"
        if scenarios "$t"; then
            results+=("$(printf '%-34s PASS  end-to-end: %s (rumqttd, mosquitto)' "$t" "${E2E_TESTS[*]}")")
        else
            results+=("$(printf '%-34s FAIL (scenarios)' "$t")")
            failed=1
        fi
    done
fi

printf '\n'
printf '%s\n' "${results[@]}"
exit "$failed"
