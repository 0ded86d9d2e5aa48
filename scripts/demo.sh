#!/usr/bin/env bash
# Runs Tether on this machine: the master with its embedded broker, one local agent, and a few
# tasks, including a `kill` and a `continue` task carried through a connection loss.
#
#   scripts/demo.sh              # runs until Ctrl-C
#   DEMO_EXIT=1 scripts/demo.sh  # runs the tour, then stops everything
#
# The connection loss: the master (and with it the broker) is frozen with SIGSTOP for longer
# than the tasks' heartbeat timeout. To the agent that is a pulled cable: the TCP connection
# stays open and nothing arrives. The `kill` task is terminated once the master has been
# silent for its 6 s timeout; the `continue` task runs on, and its result reaches the master
# after it thaws.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "building tether-master, tetherctl and tether-agent"
cargo build --bins -p tether-master -p tether-agent -p tether-cli
bin=target/debug
ctl() { "$bin/tetherctl" --master "$TETHER_MASTER" "$@"; }

work=$(mktemp -d "${TMPDIR:-/tmp}/tether-demo.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill -TERM "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    echo "logs and state kept in $work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "starting the master (embedded broker, HTTP API) in $work/master"
RUST_LOG=${RUST_LOG:-info} "$bin/tether-master" run --data-dir "$work/master" \
    --listen 127.0.0.1:0 --http 127.0.0.1:0 >"$work/master.out" 2>"$work/master.log" &
master_pid=$!
pids+=("$master_pid")
ready=""
for _ in $(seq 100); do
    ready=$(grep -m1 '^tether-master ready' "$work/master.out" || true)
    [ -n "$ready" ] && break
    kill -0 "$master_pid" 2>/dev/null || { cat "$work/master.log"; exit 1; }
    sleep 0.1
done
[ -n "$ready" ] || { echo "the master did not start; see $work/master.log"; exit 1; }
mqtt=$(sed -E 's/.*mqtt=([^ ]+).*/\1/' <<<"$ready")
http=$(sed -E 's/.*http=([^ ]+).*/\1/' <<<"$ready")
export TETHER_MASTER="http://$http"
# The admin token the master wrote on its first start (0600); tetherctl reads the file.
export TETHER_TOKEN_FILE="$work/master/admin.token"
echo "$ready"

say "provisioning pi-1: its keys from the master, written to $work/pi-1"
ctl provision pi-1 --broker "$mqtt" --out "$work/pi-1"

say "starting agent pi-1 against $mqtt (obeys only commands the master signed)"
RUST_LOG=${RUST_LOG:-info} "$bin/tether-agent" --config "$work/pi-1/etc/tether/agent.toml" \
    --state-dir "$work/agent/state" --work-dir "$work/agent/work" --drain-seconds 5 \
    2>"$work/agent.log" &
pids+=("$!")
for _ in $(seq 100); do
    ctl agents 2>/dev/null | grep -q 'pi-1.*online' && break
    sleep 0.1
done
ctl agents

say "sample tasks"
ctl submit --agent pi-1 -- /bin/echo "hello from pi-1"
ctl submit --agent pi-1 -- /bin/sh -c 'echo computing; exit 3'
ctl submit --agent pi-1 --start-at +3s -- /bin/sh -c 'echo "an order given in advance ran at $(date +%T)"'
kill_task=$(ctl submit --agent pi-1 --on-disconnect kill --heartbeat-period 2s --heartbeat-timeout 6s \
    -- /bin/sh -c 'echo kill-policy task running; exec sleep 40')
cont_task=$(ctl submit --agent pi-1 --on-disconnect continue --heartbeat-period 2s --heartbeat-timeout 6s \
    -- /bin/sh -c 'echo continue-policy task running; sleep 15; echo finished while the master was away')
echo "kill task: $kill_task"
echo "continue task: $cont_task"
sleep 4
ctl tasks

say "connection loss: freezing the master and its broker for 12 s (SIGSTOP)"
kill -STOP "$master_pid"
sleep 12
kill -CONT "$master_pid"
say "master back: the agent reports what happened meanwhile"
sleep 4
ctl tasks

say "waiting for the continue task to finish"
for _ in $(seq 30); do
    ctl tasks 2>/dev/null | grep -E "^ *${cont_task//[^0-9]/} " | grep -qE 'succeeded|failed' && break
    sleep 1
done
ctl tasks
say "the kill task: terminated after 6 s without the master"
ctl show "$kill_task"
say "the continue task's output, reported after the outage"
ctl logs "$cont_task"

cat <<EOF

Where to look (in another shell):
  export TETHER_MASTER=$TETHER_MASTER TETHER_TOKEN_FILE=$TETHER_TOKEN_FILE
  $bin/tetherctl agents | tasks | show ID | logs ID -f | watch
  mosquitto_sub -h ${mqtt%:*} -p ${mqtt##*:} -v -t 'tether/#'        # presence is text (+ its MAC)
  mosquitto_sub -h ${mqtt%:*} -p ${mqtt##*:} -t 'tether/#' -F '%t %x' | $bin/tetherctl decode
  curl -s -H "Authorization: Bearer \$(cat $TETHER_TOKEN_FILE)" http://$http/api/security
                                       # messages refused as unauthentic, per agent
  dashboard: http://$http/  (sign in with the token in $work/master/admin.token)
  logs: $work/master.log $work/agent.log
EOF

if [ -n "${DEMO_EXIT:-}" ]; then
    exit 0
fi
say "running; Ctrl-C stops the master and the agent"
wait
