#!/usr/bin/env bash
# Flashes a Raspberry Pi (or any Debian-family board) over SSH: copies the agent's .deb and
# the board's config, installs the package, puts the config in place, checks it, and enables
# and (re)starts the service. Optionally waits until the board's agent says `online` on the
# broker.
#
# usage: tests/hil/flash.sh [--dry-run] [--broker HOST:PORT] DEVICE DEB CONFIG
#   DEVICE   user@host of the board; the user needs passwordless sudo (Pi OS's `pi` has it)
#   DEB      the package for the board's architecture (scripts/pi/deb.sh: arm64 for 64-bit Pi
#            OS, armhf for 32-bit Pi OS on any Pi, Zero/1 included), or `auto` to pick it
#            from target/debian/ by the board's `dpkg --print-architecture`
#   CONFIG   the board's agent.toml: its own `id`, the broker list and its keys
#            (`tetherctl provision` writes it; agent/linux/pkg/agent.toml documents every key)
#   --broker HOST:PORT  after the start, wait (at most 60 s) for the retained
#            `online <incarnation>` on tether/agent/<id>/presence (needs mosquitto_sub here)
#   --dry-run  print every command (local and remote, to stderr) instead of running it
# Environment: TETHER_SSH_OPTS adds ssh/scp options (e.g. "-i ~/.ssh/pi -p 2222").
set -euo pipefail

usage() { sed -n '2,22p' "$0"; exit "${1:-0}"; }

dry=0
broker=
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry=1 ;;
        --broker) broker="${2:?--broker needs HOST:PORT}"; shift ;;
        -h | --help) usage 0 ;;
        -*) echo "unknown option $1" >&2; usage 2 ;;
        *) args+=("$1") ;;
    esac
    shift
done
[ ${#args[@]} -eq 3 ] || usage 2
device="${args[0]}"
deb="${args[1]}"
config="${args[2]}"
root="$(cd "$(dirname "$0")/../.." && pwd)"

# shellcheck disable=SC2206
ssh_opts=(-o BatchMode=yes -o ConnectTimeout=10 ${TETHER_SSH_OPTS:-})

# Runs a local command, or prints it.
run() {
    if [ "$dry" = 1 ]; then
        { printf '+'; printf ' %q' "$@"; printf '\n'; } >&2
    else
        "$@"
    fi
}
# Runs a shell script on the device as root (fed on stdin: no quoting through the remote
# login shell), or prints it.
remote() {
    if [ "$dry" = 1 ]; then
        { printf '+'; printf ' %q' ssh "${ssh_opts[@]}" "$device" sudo sh -s; printf " <<'EOF'\n%s\nEOF\n" "$1"; } >&2
    else
        ssh "${ssh_opts[@]}" "$device" sudo sh -s <<<"$1"
    fi
}
# Runs a shell snippet on the device and captures its output (printed in dry runs, with
# $2 as the stand-in answer).
remote_out() {
    if [ "$dry" = 1 ]; then
        run ssh "${ssh_opts[@]}" "$device" "$1" >&2
        printf '%s\n' "$2"
    else
        ssh "${ssh_opts[@]}" "$device" "$1"
    fi
}
die() { echo "flash: $*" >&2; exit 1; }

[ -f "$config" ] || die "no config file $config"
id="$(sed -n 's/^id *= *"\([^"]*\)".*/\1/p' "$config" | head -n1)"
[ -n "$id" ] || die "$config has no id = \"...\" line"

# 1. The package must match the board.
arch="$(remote_out 'dpkg --print-architecture' "$(dpkg-deb -f "$deb" Architecture 2>/dev/null || echo arm64)")"
if [ "$deb" = auto ]; then
    deb="$(ls "${CARGO_TARGET_DIR:-$root/target}"/debian/*/tether-agent_*_"$arch".deb 2>/dev/null | head -n1)" \
        || true
    [ -n "$deb" ] || die "no package for $arch in target/debian (scripts/pi/deb.sh)"
fi
[ -f "$deb" ] || die "no package $deb"
deb_arch="$(dpkg-deb -f "$deb" Architecture)"
[ "$deb_arch" = "$arch" ] || die "$deb is for $deb_arch, the board is $arch"
echo "flash: $device ($arch) <- $(basename "$deb"), agent id $id" >&2

# 2. Copy both into a private directory on the board (the config may hold a password).
dir="$(remote_out 'mktemp -d /tmp/tether-flash.XXXXXX' /tmp/tether-flash.DRYRUN)"
run scp "${ssh_opts[@]}" -q "$deb" "$config" "$device:$dir/"
debname="$(basename "$deb")"
confname="$(basename "$config")"

# 3. Install (postinst refuses a binary that cannot run on the board's CPU), 4. put the
# config in place, readable by the agent's group only, 5. check it with the installed agent,
# 6. enable and restart: a new config or binary takes effect now, and after every boot.
remote "set -e
dpkg -i $dir/$debname || { apt-get install -f -y; dpkg -i $dir/$debname; }
install -m 0640 -o root -g tether $dir/$confname /etc/tether/agent.toml
/usr/bin/tether-agent check-config --config /etc/tether/agent.toml >/dev/null
systemctl daemon-reload
systemctl enable tether-agent.service
systemctl restart tether-agent.service
rm -rf $dir"

# 7. The service must stay up (a crash loop shows as not active within a few seconds).
remote "for i in \$(seq 20); do
    systemctl is-active --quiet tether-agent.service && exit 0
    sleep 1
done
systemctl status --no-pager tether-agent.service; journalctl -u tether-agent.service -n 30 --no-pager
exit 1"

# 8. Optionally: the board reached the broker.
if [ -n "$broker" ]; then
    host="${broker%:*}"
    port="${broker##*:}"
    topic="tether/agent/$id/presence"
    if [ "$dry" = 1 ]; then
        run mosquitto_sub -h "$host" -p "$port" -t "$topic" -C 1 -W 60
    else
        deadline=$((SECONDS + 60))
        until [ $SECONDS -ge $deadline ]; do
            p="$(mosquitto_sub -h "$host" -p "$port" -t "$topic" -C 1 -W 5 2>/dev/null || true)"
            case "$p" in online\ *) echo "flash: $id is $p" >&2; exit 0 ;; esac
        done
        die "no 'online' on $topic within 60 s (last: ${p:-nothing})"
    fi
fi
echo "flash: done" >&2
