#!/usr/bin/env bash
# Measures the release tether-agent against the goals of the agent issue:
#   - stripped binary size;
#   - idle VmRSS / VmHWM after MEASURE_SECONDS connected (default 60), next to a
#     `mosquitto_sub` connected to the same broker in the same run (goal: agent <= 0.7x);
#   - wake-ups per minute while idle (goal: at most one per heartbeat period), counted as the
#     context switches (voluntary + nonvoluntary, summed over all threads) in
#     /proc/PID/task/*/status over the window: each one is the process going to sleep or
#     being preempted, an upper bound on wake-ups;
#   - bytes per heartbeat: the MQTT frame (computed from the measured payload and topic) and
#     what really crossed the agent's TCP connection per heartbeat over the window (`ss -ti`
#     counters of its socket: MQTT bytes and segments both ways, so keepalive pings, the
#     master's heartbeats and TCP ACKs are in it; IPv4+TCP headers are 52 B per segment on
#     loopback, with timestamps).
#
# The agent runs as in production: signed, with its key provisioned through a real
# tether-master (connected to the same mosquitto) whose heartbeats it answers; MEASURE_MASTER=0
# stops the master once the agent is connected (an agent alone). Needs mosquitto (broker,
# mosquitto_sub) and python3 (the API call, the table). MEASURE_TLS=1 puts every connection on
# TLS (a CA and server certificate made with openssl; mqtts://). MEASURE_SMOKE=1 is what CI
# runs: the debug binaries, a 1 s period and a 5 s window, failing unless every figure was
# produced (their values are not judged). Usage: scripts/measure-agent.sh
# (MEASURE_SECONDS=10 for a quick look)
set -euo pipefail

SMOKE=${MEASURE_SMOKE:-0}
MASTER=${MEASURE_MASTER:-1}
TLS=${MEASURE_TLS:-0}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
ID=measure-1
PREFIX=tether
if [ "$SMOKE" = 1 ]; then
    PERIOD_S=1 SECONDS_WANTED=${MEASURE_SECONDS:-5} PROFILE=debug BUILD=()
else
    PERIOD_S=10 SECONDS_WANTED=${MEASURE_SECONDS:-60} PROFILE=release BUILD=(--release)
fi

for tool in /usr/sbin/mosquitto mosquitto_sub python3; do
    command -v "$tool" >/dev/null || { echo "measure-agent: $tool is missing" >&2; exit 1; }
done

echo "building the $PROFILE agent and master..." >&2
(cd "$ROOT" && timeout 3600 cargo build "${BUILD[@]}" --quiet -p tether-agent -p tether-master --bins)
BIN=$TARGET/$PROFILE/tether-agent
MASTER_BIN=$TARGET/$PROFILE/tether-master

WORK=$(mktemp -d /tmp/tether-measure.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# The release profile strips already; strip a copy anyway so the figure does not depend on it.
cp "$BIN" "$WORK/tether-agent"
strip "$WORK/tether-agent" 2>/dev/null || true
SIZE=$(stat -c %s "$WORK/tether-agent")

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$PORT" > "$WORK/mosquitto.conf"
CLIENT_TLS=()
SCHEME=
if [ "$TLS" = 1 ]; then
    (
        cd "$WORK"
        openssl req -x509 -nodes -days 30 -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
            -keyout ca.key -out ca.pem -subj "/CN=measure CA"
        openssl req -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
            -keyout server.key -out server.csr -subj "/CN=localhost"
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
            -out server.pem -days 30 -extfile server.ext
    ) >/dev/null 2>&1
    # mosquitto started as root reads the key after dropping to its own user.
    chmod 755 "$WORK"; chmod 644 "$WORK/server.key"
    printf 'cafile %s\ncertfile %s\nkeyfile %s\n' "$WORK/ca.pem" "$WORK/server.pem" \
        "$WORK/server.key" >> "$WORK/mosquitto.conf"
    CLIENT_TLS=(--cafile "$WORK/ca.pem")
    SCHEME=mqtts://
fi
/usr/sbin/mosquitto -c "$WORK/mosquitto.conf" 2>"$WORK/mosquitto.log" &
PIDS+=($!)
for _ in $(seq 100); do
    (echo > "/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.05
done

mosquitto_sub -h localhost -p "$PORT" "${CLIENT_TLS[@]}" -i measure-sub -t "$PREFIX/#" -F '%t %l' > "$WORK/sub.out" &
SUB=$!
PIDS+=($SUB)

# The master on the same broker: its key signs the heartbeats, its API hands out the agent's.
MASTER_TLS=()
[ "$TLS" = 1 ] && MASTER_TLS=(--broker-ca "$WORK/ca.pem")
RUST_LOG=warn "$MASTER_BIN" run --config /dev/null --data-dir "$WORK/master" \
    --broker "${SCHEME:-mqtt://}127.0.0.1:$PORT" "${MASTER_TLS[@]}" --http 127.0.0.1:0 \
    --heartbeat-period-ms "$((PERIOD_S * 1000))" >"$WORK/master.ready" 2>"$WORK/master.log" &
MASTER_PID=$!
PIDS+=($MASTER_PID)
for _ in $(seq 600); do
    [ -s "$WORK/master.ready" ] && break
    sleep 0.1
done
READY=$(head -n 1 "$WORK/master.ready")
field() { tr ' ' '\n' <<<"$READY" | sed -n "s/^$1=//p"; }
MASTER_KEY=$(field key) HTTP=$(field http)
[ -n "$MASTER_KEY" ] && [ -n "$HTTP" ] || {
    echo "measure-agent: the master did not start:" >&2
    cat "$WORK/master.log" >&2
    exit 1
}
AGENT_KEY=$(python3 - "$HTTP" "$ID" "$(cat "$WORK/master/admin.token")" <<'EOF'
import json, sys, urllib.request
http, agent, token = sys.argv[1:]
req = urllib.request.Request(f"http://{http}/api/agents/{agent}/key", data=b"{}", method="POST",
                             headers={"Authorization": f"Bearer {token}",
                                      "Content-Type": "application/json"})
print(json.load(urllib.request.urlopen(req, timeout=30))["agent_key"])
EOF
)

mkdir -p "$WORK/state" "$WORK/work"
AGENT_TLS=()
[ "$TLS" = 1 ] && AGENT_TLS=(--tls-ca-file "$WORK/ca.pem")
RUST_LOG=warn "$WORK/tether-agent" --id "$ID" --broker "${SCHEME}127.0.0.1:$PORT" \
    --config /dev/null --master-key "$MASTER_KEY" --agent-key "$AGENT_KEY" \
    "${AGENT_TLS[@]}" --state-dir "$WORK/state" --work-dir "$WORK/work" 2>"$WORK/agent.log" &
AGENT=$!
PIDS+=($AGENT)

# Connected = its retained presence reached the broker.
for _ in $(seq 200); do
    grep -q "^$PREFIX/agent/$ID/presence" "$WORK/sub.out" 2>/dev/null && break
    sleep 0.05
done
grep -q "^$PREFIX/agent/$ID/presence" "$WORK/sub.out" || {
    echo "measure-agent: the agent did not connect:" >&2
    cat "$WORK/agent.log" >&2
    exit 1
}

ctx() { # voluntary + nonvoluntary context switches of every thread of $1
    awk '/^(voluntary|nonvoluntary)_ctxt_switches/ { n += $2 } END { print n + 0 }' \
        /proc/"$1"/task/*/status
}
# bytes_sent bytes_received segs_out segs_in of the agent's connection to the broker
sock() {
    ss -tinpH "dport = :$PORT" | awk -v pid="pid=$1," '
        index($0, pid) { mine = 1; next }
        mine {
            for (i = 1; i <= NF; i++) { split($i, kv, ":"); v[kv[1]] = kv[2] }
            print v["bytes_sent"] + 0, v["bytes_received"] + 0, v["segs_out"] + 0, v["segs_in"] + 0
            exit
        }'
}
hb_count() { grep -c "^$PREFIX/agent/$ID/heartbeat " "$WORK/sub.out" || true; }
status() { awk -v k="$2" '$1 == k":" { print $2 }' /proc/"$1"/status; }

# Let start-up settle (connect, subscribe, first heartbeats) before the window opens.
sleep 2
if [ "$MASTER" != 1 ]; then
    kill "$MASTER_PID"
    wait "$MASTER_PID" 2>/dev/null || true
fi
CTX0=$(ctx "$AGENT"); read -r W0 R0 SO0 SI0 < <(sock "$AGENT"); HB0=$(hb_count)
SUBCTX0=$(ctx "$SUB")
echo "measuring for ${SECONDS_WANTED}s..." >&2
sleep "$SECONDS_WANTED"
CTX1=$(ctx "$AGENT"); read -r W1 R1 SO1 SI1 < <(sock "$AGENT"); HB1=$(hb_count)
SUBCTX1=$(ctx "$SUB")

kill -0 "$AGENT" 2>/dev/null || { echo "measure-agent: the agent died:" >&2; cat "$WORK/agent.log" >&2; exit 1; }
A_RSS=$(status "$AGENT" VmRSS); A_HWM=$(status "$AGENT" VmHWM)
S_RSS=$(status "$SUB" VmRSS); S_HWM=$(status "$SUB" VmHWM)
THREADS=$(ls /proc/"$AGENT"/task | wc -l)

HBS=$((HB1 - HB0))
TOPIC="$PREFIX/agent/$ID/heartbeat"
PAYLOAD=$(awk -v t="$TOPIC" '$1 == t { l = $2 } END { print l + 0 }' "$WORK/sub.out")
python3 - "$SIZE" "$A_RSS" "$A_HWM" "$S_RSS" "$S_HWM" "$((CTX1 - CTX0))" "$((SUBCTX1 - SUBCTX0))" \
    "$SECONDS_WANTED" "$HBS" "${#TOPIC}" "$PAYLOAD" "$((W1 - W0))" "$((R1 - R0))" "$THREADS" \
    "$MASTER" "$PERIOD_S" "$((SO1 - SO0))" "$((SI1 - SI0))" "$SMOKE" <<'EOF'
import sys
(size, a_rss, a_hwm, s_rss, s_hwm, ctx, sub_ctx, secs, hbs, topic_len, payload, wbytes, rbytes,
 threads, master, period, segs_out, segs_in, smoke) = map(int, sys.argv[1:])
def varint_len(n):
    k = 1
    while n >= 128:
        n >>= 7
        k += 1
    return k
# PUBLISH, QoS 0: fixed header byte, remaining length, topic length (2), topic, payload.
remaining = 2 + topic_len + payload
frame = 1 + varint_len(remaining) + remaining
per_min = ctx * 60 / secs
hb_per_min = 60 / period
rows = [
    ("stripped binary", f"{size} B ({size / 1024:.0f} KiB)"),
    ("agent VmRSS / VmHWM", f"{a_rss} / {a_hwm} kB  ({threads} threads)"),
    ("mosquitto_sub VmRSS / VmHWM", f"{s_rss} / {s_hwm} kB"),
    ("ratio agent / mosquitto_sub", f"RSS {a_rss / s_rss:.2f}x, HWM {a_hwm / s_hwm:.2f}x  (goal <= 0.7x)"),
    ("idle window", f"{secs} s, master heartbeats {'every %d s' % period if master else 'off'}"),
    ("agent wake-ups / min", f"{per_min:.1f}  (context switches, all threads; goal <= {hb_per_min:.0f}/min)"),
    ("mosquitto_sub wake-ups / min", f"{sub_ctx * 60 / secs:.1f}"),
    ("agent heartbeats in window", f"{hbs}"),
    ("heartbeat payload", f"{payload} B (envelope + postcard)"),
    ("heartbeat MQTT frame", f"{frame} B (QoS 0 PUBLISH, topic {topic_len} B) + TCP/IP 40-52 B"),
    ("TCP payload / heartbeat", (f"out {wbytes / hbs:.0f} B, in {rbytes / hbs:.0f} B  (pings, master heartbeats included)"
                                 if hbs else "n/a (no heartbeat in the window)")),
    ("segments / heartbeat", (f"out {segs_out / hbs:.1f}, in {segs_in / hbs:.1f}  -> on the wire out "
                              f"{(wbytes + 52 * segs_out) / hbs:.0f} B, in {(rbytes + 52 * segs_in) / hbs:.0f} B"
                              if hbs else "n/a")),
]
w = max(len(k) for k, _ in rows)
print(f"{'tether-agent, idle':<{w}}  value")
print("-" * (w + 50))
for k, v in rows:
    print(f"{k:<{w}}  {v}")
# The smoke judges that every figure was produced, not its value.
missing = [k for k, v in rows if v.startswith("n/a")]
missing += [k for k, n in (("agent VmRSS", a_rss), ("mosquitto_sub VmRSS", s_rss),
                           ("heartbeat payload", payload)) if n == 0]
if smoke and missing:
    sys.exit(f"measure-agent smoke: no figure for {', '.join(missing)}")
EOF
