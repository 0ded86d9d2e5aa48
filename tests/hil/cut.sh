#!/usr/bin/env bash
# Cuts a real board's network for a while, the way the field does, and restores it on a
# schedule: run it while the board's tasks run and watch what the master and the board do.
#
# usage: tests/hil/cut.sh [--dry-run] [--reset] [--port PORT] MODE SECONDS DEVICE
#   MODE
#     host-firewall    on this machine (where the broker runs; needs root here): drop the
#                      board's packets to and from the broker port. SSH to the board stays up.
#     device-firewall  on the board (over SSH, sudo): drop its traffic to the broker port.
#     device-link      on the board: take its default-route interface down (a pulled cable,
#                      Wi-Fi gone). The SSH session dies with the link.
#   SECONDS  how long the cut lasts; the restore is scheduled before the cut is made, on the
#            machine that made it (on the board for the device modes, so it happens even when
#            SSH cannot reach the board any more), and also happens if this script is
#            interrupted
#   DEVICE   user@host of the board (the host is resolved here for host-firewall)
#   --port PORT  the broker port (default 1883)
#   --reset      refuse with a TCP reset instead of dropping silently (a black hole is the
#                default: no FIN, no RST, as on a dead link)
#   --dry-run    print every command instead of running it
# Uses nft where it exists, else iptables. Environment: TETHER_SSH_OPTS as for flash.sh;
# TETHER_BOARD_SHELL runs the board's side with that command instead of ssh (e.g.
# "ip netns exec board": a network namespace standing in for a board, as selftest.sh does).
set -euo pipefail

usage() { sed -n '2,26p' "$0"; exit "${1:-0}"; }

dry=0
reset=0
port=1883
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry=1 ;;
        --reset) reset=1 ;;
        --port) port="${2:?--port needs a number}"; shift ;;
        -h | --help) usage 0 ;;
        -*) echo "unknown option $1" >&2; usage 2 ;;
        *) args+=("$1") ;;
    esac
    shift
done
[ ${#args[@]} -eq 3 ] || usage 2
mode="${args[0]}"
secs="${args[1]}"
device="${args[2]}"
case "$secs" in '' | *[!0-9]*) echo "SECONDS must be a whole number" >&2; exit 2 ;; esac
case "$port" in '' | *[!0-9]*) echo "--port must be a number" >&2; exit 2 ;; esac
[ "$secs" -gt 0 ] || { echo "SECONDS must be positive" >&2; exit 2; }

# shellcheck disable=SC2206
ssh_opts=(-o BatchMode=yes -o ConnectTimeout=10 ${TETHER_SSH_OPTS:-})
die() { echo "cut: $*" >&2; exit 1; }

# A script for the machine that cuts: $1 = nft|iptables, $2 = cut|restore, $3 = match
# (nft expression or iptables arguments for each direction, `ADDR` filled in by the caller).
firewall_script() {
    local tool="$1" action="$2" in_match="$3" out_match="$4" verdict
    if [ "$tool" = nft ]; then
        [ "$reset" = 1 ] && verdict="reject with tcp reset" || verdict=drop
        if [ "$action" = cut ]; then
            # Its own table: the restore deletes it whole and touches no other rule.
            printf '%s\n' \
                "nft add table inet tether_cut" \
                "nft add chain inet tether_cut in '{ type filter hook input priority -10 ; }'" \
                "nft add chain inet tether_cut out '{ type filter hook output priority -10 ; }'" \
                "nft add rule inet tether_cut in $in_match $verdict" \
                "nft add rule inet tether_cut out $out_match $verdict"
        else
            echo "nft delete table inet tether_cut 2>/dev/null || true"
        fi
    else
        [ "$reset" = 1 ] && verdict="REJECT --reject-with tcp-reset" || verdict=DROP
        if [ "$action" = cut ]; then
            printf '%s\n' "iptables -I INPUT $in_match -j $verdict" \
                "iptables -I OUTPUT $out_match -j $verdict"
        else
            # Every copy, should a cut have been made twice.
            printf '%s\n' \
                "while iptables -D INPUT $in_match -j $verdict 2>/dev/null; do :; done" \
                "while iptables -D OUTPUT $out_match -j $verdict 2>/dev/null; do :; done"
        fi
    fi
}

# Runs a script here (as root), or prints it.
local_sh() {
    if [ "$dry" = 1 ]; then printf "+ sh -s <<'EOF'\n%s\nEOF\n" "$1" >&2; else sh -s <<<"$1"; fi
}
# Runs a script on the board as root, or prints it.
remote_sh() {
    if [ "$dry" = 1 ]; then
        { printf '+'; printf ' %q' ssh "${ssh_opts[@]}" "$device" sudo sh -s; printf " <<'EOF'\n%s\nEOF\n" "$1"; } >&2
    elif [ -n "${TETHER_BOARD_SHELL:-}" ]; then
        # shellcheck disable=SC2086
        $TETHER_BOARD_SHELL sh -s <<<"$1"
    else
        ssh "${ssh_opts[@]}" "$device" sudo sh -s <<<"$1"
    fi
}

# The board schedules its own restore (the script in $RESTORE_FILE), detached from the SSH
# session that may die: systemd-run when the board runs systemd, else a nohup'd shell.
RESTORE_FILE=/run/tether-cut-restore.sh
device_schedule() {
    printf '%s\n' \
        "if command -v systemd-run >/dev/null 2>&1 && [ -d /run/systemd/system ]; then" \
        "    systemd-run --quiet --collect --unit=tether-cut-restore-\$\$ --on-active=${secs}s /bin/sh $RESTORE_FILE" \
        "else" \
        "    nohup sh -c 'sleep $secs; sh $RESTORE_FILE' >/dev/null 2>&1 &" \
        "fi"
}

pick_tool() { # $1: a command that answers `nft` or `iptables` for the machine in question
    printf 'if command -v nft >/dev/null 2>&1; then echo nft; elif command -v iptables >/dev/null 2>&1; then echo iptables; else exit 1; fi'
}

case "$mode" in
host-firewall)
    host="${device#*@}"
    addr="$(getent ahostsv4 "$host" | awk 'NR==1 {print $1}')" || true
    [ -n "$addr" ] || die "cannot resolve $host"
    if [ "$dry" = 1 ]; then tool=nft; else tool="$(sh -c "$(pick_tool)")" || die "neither nft nor iptables here"; fi
    if [ "$tool" = nft ]; then
        in_match="ip saddr $addr tcp dport $port"
        out_match="ip daddr $addr tcp sport $port"
    else
        in_match="-s $addr -p tcp --dport $port"
        out_match="-d $addr -p tcp --sport $port"
    fi
    restore="$(firewall_script "$tool" restore "$in_match" "$out_match")"
    # The restore runs when the time is up, and on any exit before that.
    if [ "$dry" = 0 ]; then
        trap 'sh -s <<<"$restore"' EXIT
        trap 'exit 130' INT TERM
    fi
    echo "cut: $addr from this host's port $port for ${secs}s ($tool)" >&2
    local_sh "$(firewall_script "$tool" cut "$in_match" "$out_match")"
    if [ "$dry" = 1 ]; then echo "+ sleep $secs" >&2; else sleep "$secs"; fi
    local_sh "$restore"
    [ "$dry" = 1 ] || trap - EXIT
    ;;
device-firewall)
    # Matches by port only: the board may reach the broker by several addresses.
    nft_in="tcp sport $port" nft_out="tcp dport $port"
    ipt_in="-p tcp --sport $port" ipt_out="-p tcp --dport $port"
    script="set -e
tool=\$($(pick_tool)) || { echo 'neither nft nor iptables on the board' >&2; exit 1; }
if [ \"\$tool\" = nft ]; then
cat >$RESTORE_FILE <<'RESTORE'
$(firewall_script nft restore "$nft_in" "$nft_out")
RESTORE
else
cat >$RESTORE_FILE <<'RESTORE'
$(firewall_script iptables restore "$ipt_in" "$ipt_out")
RESTORE
fi
$(device_schedule)
if [ \"\$tool\" = nft ]; then
$(firewall_script nft cut "$nft_in" "$nft_out")
else
$(firewall_script iptables cut "$ipt_in" "$ipt_out")
fi"
    echo "cut: $device's traffic to port $port for ${secs}s (restore scheduled on the board)" >&2
    remote_sh "$script"
    ;;
device-link)
    script="set -e
ifc=\$(ip route show default | awk '{for (i = 1; i < NF; i++) if (\$i == \"dev\") {print \$(i+1); exit}}')
[ -n \"\$ifc\" ] || { echo 'no default route on the board' >&2; exit 1; }
echo \"cut: taking \$ifc down\" >&2
printf 'ip link set %s up\\n' \"\$ifc\" >$RESTORE_FILE
$(device_schedule)
# Detached too: the SSH session carrying this script goes down with the link.
nohup sh -c \"sleep 1; ip link set \$ifc down\" >/dev/null 2>&1 &"
    echo "cut: $device's link for ${secs}s (restore scheduled on the board)" >&2
    remote_sh "$script"
    ;;
*) echo "unknown MODE $mode" >&2; usage 2 ;;
esac
echo "cut: done" >&2
