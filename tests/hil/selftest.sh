#!/usr/bin/env bash
# Checks the HIL scripts without a board: flash.sh and cut.sh in dry-run mode (every step is
# printed, none skipped), then, as root, cut.sh for real against a network namespace that
# stands in for a board (veth pair, default route, a broker port on the host side): each
# mode must block the board's connection to the port while the cut lasts and the scheduled
# restore must bring it back.
#
# usage: tests/hil/selftest.sh [DEB]   (DEB: a package for the dry-run flash; default: any
#                                       in target/debian/; with none the flash checks skip)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

checks=0
failures=0
ok() { checks=$((checks + 1)); printf '  ok    %s\n' "$*"; }
bad() { checks=$((checks + 1)); failures=$((failures + 1)); printf '  FAIL  %s\n' "$*"; }
has() { # has DESCRIPTION TEXT REGEX
    if grep -Eq -- "$3" <<<"$2"; then ok "$1"; else bad "$1 (no /$3/)"; fi
}

WORK="$(mktemp -d -t tether-hil.XXXXXX)"
NS=
cleanup() {
    if [ -n "$NS" ]; then
        ip netns pids "$NS" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
        ip netns del "$NS" 2>/dev/null || true
        ip link del "$NS-h" 2>/dev/null || true
        command -v nft >/dev/null && nft delete table inet tether_cut 2>/dev/null || true
    fi
    [ -n "${LISTENER:-}" ] && kill "$LISTENER" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "flash.sh --dry-run"
deb="${1:-$(ls "${CARGO_TARGET_DIR:-$root/target}"/debian/*/tether-agent_*.deb 2>/dev/null | head -n1 || true)}"
printf 'id = "hil-1"\nbrokers = ["10.0.0.2:1883"]\n' >"$WORK/hil-1.toml"
if [ -z "$deb" ]; then
    printf '  skip  no package in target/debian (scripts/pi/deb.sh); flash dry run not checked\n'
else
    out="$(bash "$here/flash.sh" --dry-run --broker 10.0.0.2:1883 pi@board.invalid "$deb" "$WORK/hil-1.toml" 2>&1)" \
        && ok "flash.sh --dry-run exits 0" || bad "flash.sh --dry-run failed: $out"
    has "asks the board's architecture" "$out" 'ssh .*pi@board.invalid dpkg\\? --print-architecture'
    has "copies package and config" "$out" "scp .*$(basename "$deb") .*hil-1.toml pi@board.invalid:"
    has "installs the package" "$out" '^dpkg -i .*\.deb'
    has "installs the config as root:tether 0640" "$out" '^install -m 0640 -o root -g tether .* /etc/tether/agent.toml$'
    has "checks the config with the installed agent" "$out" '^/usr/bin/tether-agent check-config --config /etc/tether/agent.toml'
    has "enables the service" "$out" '^systemctl enable tether-agent.service$'
    has "restarts it" "$out" '^systemctl restart tether-agent.service$'
    has "waits until it is active" "$out" 'systemctl is-active --quiet tether-agent.service'
    has "waits for the board's presence" "$out" 'mosquitto_sub .*tether/agent/hil-1/presence'
    printf 'id = "x"\n' >"$WORK/none.toml"
    out="$(bash "$here/flash.sh" --dry-run pi@board.invalid "$WORK/missing.deb" "$WORK/none.toml" 2>&1 || true)"
    if grep -q 'no package' <<<"$out"; then
        ok "flash.sh refuses a missing package"
    else
        bad "flash.sh accepts a missing package"
    fi
    : >"$WORK/noid.toml"
    out="$(bash "$here/flash.sh" --dry-run pi@board.invalid "$deb" "$WORK/noid.toml" 2>&1 || true)"
    if grep -q 'has no id' <<<"$out"; then
        ok "flash.sh refuses a config without an id"
    else
        bad "flash.sh accepts a config without an id"
    fi
fi

echo "cut.sh --dry-run"
for mode in host-firewall device-firewall device-link; do
    out="$(bash "$here/cut.sh" --dry-run "$mode" 30 pi@127.0.0.1 2>&1)" \
        && ok "$mode: exits 0" || bad "$mode: failed: $out"
    case "$mode" in
        host-firewall)
            has "$mode: drops the board's packets to the port" "$out" 'ip saddr 127.0.0.1 tcp dport 1883 drop'
            has "$mode: restores" "$out" 'nft delete table inet tether_cut' ;;
        device-firewall)
            first_cut=$(grep -n 'add rule\|iptables -I' <<<"$out" | head -n1 | cut -d: -f1)
            sched=$(grep -n 'on-active=30s\|sleep 30' <<<"$out" | head -n1 | cut -d: -f1)
            if [ -n "$sched" ] && [ -n "$first_cut" ] && [ "$sched" -lt "$first_cut" ]; then
                ok "$mode: the restore is scheduled before the cut"
            else
                bad "$mode: the restore is not scheduled before the cut"
            fi ;;
        device-link)
            has "$mode: takes the default-route interface down, detached" "$out" 'nohup sh -c "sleep 1; ip link set \$ifc down"' ;;
    esac
done
if bash "$here/cut.sh" --dry-run device-link 0 pi@x >/dev/null 2>&1; then bad "cut.sh accepts 0 s"; else ok "cut.sh refuses 0 s"; fi
if bash "$here/cut.sh" --dry-run sideways 5 pi@x >/dev/null 2>&1; then bad "cut.sh accepts an unknown mode"; else ok "cut.sh refuses an unknown mode"; fi

# --- for real, against a namespace standing in for a board ---
if [ "$(id -u)" -ne 0 ] || ! ip netns add "tether-hil-probe-$$" 2>/dev/null; then
    printf '  skip  cut.sh for real: needs root and network namespaces\n'
else
    ip netns del "tether-hil-probe-$$"
    if ! command -v nft >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nftables >/dev/null 2>&1 \
            || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nftables >/dev/null; }
    fi
    echo "cut.sh against a namespace board"
    NS="thil$$"
    # A /30 from the 10.213.0.0/16 block, chosen by pid so parallel runs differ.
    n=$(($$ % 16000))
    host_ip="10.213.$((n / 64)).$(((n % 64) * 4 + 1))"
    board_ip="10.213.$((n / 64)).$(((n % 64) * 4 + 2))"
    ip netns add "$NS"
    ip link add "$NS-h" type veth peer name eth0 netns "$NS"
    ip addr add "$host_ip/30" dev "$NS-h"
    ip link set "$NS-h" up
    ip -n "$NS" link set lo up
    ip -n "$NS" addr add "$board_ip/30" dev eth0
    ip -n "$NS" link set eth0 up
    ip -n "$NS" route add default via "$host_ip"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    # The "broker": accepts and closes, forever.
    python3 -c "
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('$host_ip', $port)); s.listen(16)
while True:
    c, _ = s.accept(); c.close()
" &
    LISTENER=$!
    reach() { ip netns exec "$NS" python3 -c "
import socket, sys
try:
    socket.create_connection(('$host_ip', $port), timeout=1).close()
except OSError:
    sys.exit(1)
"; }
    # Bounded waits: until reach() answers $1 (0 reachable, 1 not) or $2 seconds pass.
    wait_reach() {
        local want="$1" deadline=$((SECONDS + $2)) got
        while :; do
            reach && got=0 || got=1
            [ "$got" = "$want" ] && return 0
            [ $SECONDS -lt $deadline ] || return 1
            sleep 0.2
        done
    }
    wait_reach 0 10 && ok "board reaches the broker port" || bad "board cannot reach $host_ip:$port before any cut"
    for mode in device-firewall device-link host-firewall; do
        if [ "$mode" = host-firewall ]; then
            # Runs here and blocks for the cut's length: in the background.
            bash "$here/cut.sh" --port "$port" "$mode" 3 "pi@$board_ip" >"$WORK/cut.log" 2>&1 &
            cutter=$!
        else
            TETHER_BOARD_SHELL="ip netns exec $NS" bash "$here/cut.sh" --port "$port" "$mode" 3 "pi@$board_ip" \
                >"$WORK/cut.log" 2>&1 || { bad "$mode: cut.sh failed: $(cat "$WORK/cut.log")"; continue; }
            cutter=
        fi
        wait_reach 1 5 && ok "$mode: the board loses the port" || bad "$mode: the board still reaches the port"
        wait_reach 0 15 && ok "$mode: the scheduled restore brings it back" || bad "$mode: not restored within 15 s"
        [ -z "$cutter" ] || wait "$cutter" || bad "$mode: cut.sh failed: $(cat "$WORK/cut.log")"
    done
fi

printf '%d passed, %d failed\n' $((checks - failures)) "$failures"
[ "$failures" -eq 0 ]
