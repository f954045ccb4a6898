#!/usr/bin/env bash
# The #15 benchmark's direct check, beside bench/run.py's: the gateway's CPU time per request
# (user + system, from /proc) and oha's throughput, with traces at 1 % sampling, the access
# log and analytics all off, then all on, in turn, ROUNDS times. One gateway of one worker on
# bench/callgrind/cg.yaml (S1: /pass/; `key`: /key/ with its one consumer's key; `keys`: /key/
# with 10,000 consumers and their keys drawn at random, as bench/run.py's S2), 30,000 requests
# to warm up and 200,000 counted, 32 connections; as bench/run.py places them, the gateway on
# core 0, the backend, the load and the spans' receiver (the backend again, on 18095: it
# answers every export 200) on core 1. Needs `python3 bench/run.py --prepare --only portico`
# (oha). Environment: COUNT, the requests counted a turn (200,000); PARTS, what the on gateway
# turns on ("log traces analytics"; "none" checks the method: both gateways alike); QUEUE, its
# `access_log.queue`; TOGETHER, run off and on at once instead of in turn (below); RATE, with
# TOGETHER, each gateway's fixed offered rate in requests a second (oha `-q`, latency
# corrected), for CPU per request at a fixed rate, the method's primary figure (then both
# throughputs are the rate, and only CPU per request says anything). Each
# round's off ÷ on is worked out within the round, and the last line gives their medians
# (with a 95 % interval of each median; rounds short of RATE are named above it).
# usage: bench/observability/ab.sh target/release/portico target/release/bench-backend ROUNDS [key|keys]
set -euo pipefail
portico=$(realpath "$1"); backend=$(realpath "$2"); rounds=$3
count=${COUNT:-200000}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
oha="$root/target/bench-tools/bin/oha"
work=$(mktemp -d /tmp/portico-ab-XXXXXX)
url=http://127.0.0.1:18083/pass/x
load=()
base="$work/off.yaml"
cp "$root/bench/callgrind/cg.yaml" "$base"
case "${4:-}" in
    "") ;;
    key) url=http://127.0.0.1:18083/key/x; load=(-H "apikey: bench-app-key") ;;
    keys)
        url='http://127.0.0.1:18083/key/\?apikey=bench-key-0[0-9]{4}'; load=(--rand-regex-url)
        python3 - "$base" <<'PY'
import sys
consumers = ", ".join(f'{{name: app-{i:05d}, api_keys: ["bench-key-{i:05d}"]}}' for i in range(10_000))
with open(sys.argv[1]) as f:
    lines = [f"consumers: [{consumers}]" if line.startswith("consumers:") else line.rstrip("\n") for line in f]
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
PY
        ;;
    *) echo "the fourth argument is key, keys or nothing" >&2; exit 2 ;;
esac
parts=" ${PARTS:-log traces analytics} "
for part in $parts; do
    case "$part" in log | traces | analytics | none) ;; *) echo "PARTS: unknown part '$part' (log, traces, analytics; none for an A/A check)" >&2; exit 2 ;; esac
done
access_log=off
if [[ $parts == *" log "* ]]; then access_log="$work/access.log"; fi
{
    cat "$base"
    if [[ $parts == *" traces "* ]]; then echo 'traces: {endpoint: "http://127.0.0.1:18095/v1/traces", sampling_ratio: 0.01}'; fi
    if [[ $parts == *" analytics "* ]]; then echo 'analytics: {report_every: 10s}'; fi
    if [ -n "${QUEUE:-}" ]; then echo "access_log: {queue: $QUEUE}"; fi
} >"$work/on.yaml"
taskset -c 1 "$backend" --listen 127.0.0.1:18081 >/dev/null 2>&1 &
backend_pid=$!
taskset -c 1 "$backend" --listen 127.0.0.1:18095 >/dev/null 2>&1 &
receiver_pid=$!
trap 'kill $backend_pid $receiver_pid 2>/dev/null' EXIT
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Start the SIDE (off or on) gateway listening on PORT; its pid is left in `started`.
start() {
    local side=$1 port=$2 config=$base log=off
    if [ "$side" = on ]; then config="$work/on.yaml"; log=$access_log; fi
    sed "s/127.0.0.1:18083/127.0.0.1:$port/" "$config" >"$work/$side-port.yaml"
    taskset -c 0 "$portico" --workers 1 --log warn --access-log "$log" serve --config "$work/$side-port.yaml" >"$work/$side.log" 2>&1 &
    started=$!
}
# Wait until the SIDE gateway takes connections on PORT, then warm it up.
warm() {
    local side=$1 port=$2
    for _ in $(seq 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null && break; sleep 0.1; done
    if ! python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null; then
        echo "the $side gateway does not listen on $port: see $work/$side.log" >&2
        exit 1
    fi
    taskset -c 1 "$oha" "${load[@]}" -n 30000 -c 32 --no-tui "${url/18083/$port}" >/dev/null 2>&1
}
# One turn's line: SIDE, its rate, and its CPU TICKS over ANSWERED requests.
report() {
    local side=$1 rate=$2 ticks=$3 answered=$4
    if [ -z "$rate" ] || [ -z "$answered" ] || [ "$answered" = 0 ]; then
        echo "the $side gateway answered no request with 200: see $work/$side.log" >&2
        exit 1
    fi
    echo "$side req/s=$rate answered=$answered cpu_us_per_req=$(python3 -c "print(round($ticks * 1e6 / $(getconf CLK_TCK) / $answered, 2))")"
}
run() {
    local gateway before rps after
    start "$1" 18083; gateway=$started
    warm "$1" 18083
    before=$(cpu_ticks $gateway)
    rps=$(taskset -c 1 "$oha" "${load[@]}" -n "$count" -c 32 --no-tui "$url" 2>&1 | awk '/Requests\/sec/ {print $2}')
    after=$(cpu_ticks $gateway)
    kill $gateway; wait $gateway 2>/dev/null || true
    report "$1" "$rps" $((after - before)) "$count"
}
# Both at once (TOGETHER=1): an off and an on gateway, both on core 0, on 18083 and 18084
# (swapped, and started in the other order, every other round), each loaded by its own oha
# for the same SECONDS_A_ROUND (default 10); the machine's slow spells, which come and go
# within seconds here, then fall on both alike. Each one's CPU time per request is its /proc
# time over the requests oha saw answered 200.
together() {
    local -A port pid ticks loads
    local sides=(off on)
    port[off]=18083; port[on]=18084
    if [ $(($1 % 2)) = 0 ]; then sides=(on off); port[off]=18084; port[on]=18083; fi
    for side in "${sides[@]}"; do start "$side" "${port[$side]}"; pid[$side]=$started; done
    for side in "${sides[@]}"; do warm "$side" "${port[$side]}"; done
    for side in off on; do ticks[$side]=$(cpu_ticks ${pid[$side]}); done
    local rate=()
    if [ -n "${RATE:-}" ]; then rate=(-q "$RATE" --latency-correction); fi
    for side in off on; do
        taskset -c 1 "$oha" "${load[@]}" "${rate[@]}" -z "${SECONDS_A_ROUND:-10}s" -c 32 --no-tui "${url/18083/${port[$side]}}" >"$work/$side.oha" 2>&1 &
        loads[$side]=$!
    done
    wait ${loads[off]} ${loads[on]}
    for side in off on; do ticks[$side]=$(( $(cpu_ticks ${pid[$side]}) - ticks[$side] )); done
    kill ${pid[off]} ${pid[on]}; wait ${pid[off]} ${pid[on]} 2>/dev/null || true
    for side in off on; do
        report "$side" "$(awk '/Requests\/sec/ {print $2}' "$work/$side.oha")" "${ticks[$side]}" \
            "$(awk '$1 == "[200]" && $3 == "responses" {print $2}' "$work/$side.oha")"
    done
}
if [ -n "${RATE:-}" ] && [ -z "${TOGETHER:-}" ]; then echo "RATE needs TOGETHER=1" >&2; exit 2; fi
for round in $(seq "$rounds"); do
    if [ -n "${TOGETHER:-}" ]; then together "$round"; else run off; run on; fi
done | tee "$work/turns"
# Per round, throughput on ÷ off and CPU per request off ÷ on: the figures the target (0.95) is
# for, below 1 when on costs more; their medians, with the range and a 95 % interval of the
# median (bootstrap, resampling the rounds; seeded, so the same turns give the same
# interval). With RATE, a side that answered less than 97 % of it is named: that round was
# not at the fixed rate.
python3 - "$work/turns" "${RATE:-}" <<'PY'
import random, re, statistics, sys
turns = [dict(re.findall(r"(\S+)=(\S+)", line), side=line.split()[0]) for line in open(sys.argv[1])]
pairs = list(zip(turns[0::2], turns[1::2]))
rate = [float(on["req/s"]) / float(off["req/s"]) for off, on in pairs]
cpu = [float(off["cpu_us_per_req"]) / float(on["cpu_us_per_req"]) for off, on in pairs]
if sys.argv[2]:
    for round, pair in enumerate(pairs, 1):
        for side in pair:
            if float(side["req/s"]) < 0.97 * float(sys.argv[2]):
                print(f"round {round}: the {side['side']} gateway answered {float(side['req/s']):.0f} req/s, short of RATE={sys.argv[2]}")
def interval(xs):
    draw = random.Random(15)
    medians = sorted(statistics.median(draw.choices(xs, k=len(xs))) for _ in range(2000))
    return medians[50], medians[1949]
def show(xs):
    low, high = interval(xs)
    return f"{statistics.median(xs):.3f} ({min(xs):.3f}-{max(xs):.3f}; 95 % interval {low:.3f}-{high:.3f})"
print(f"median of {len(pairs)} rounds (range; interval of the median): throughput on/off {show(rate)}, CPU per request off/on {show(cpu)}")
PY
