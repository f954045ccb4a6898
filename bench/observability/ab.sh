#!/usr/bin/env bash
# The #15 benchmark's direct check, beside bench/run.py's: the gateway's CPU time per request
# (user + system, from /proc) and oha's throughput, with traces at 1 % sampling, the access
# log and analytics all off, then all on, in turn, ROUNDS times. One gateway of one worker on
# bench/callgrind/cg.yaml (S1: /pass/, S2: /key/ with its one consumer's key), 30,000 requests
# to warm up and 200,000 counted, 32 connections; as bench/run.py places them, the gateway on
# core 0, the backend, the load and the spans' receiver (the backend again, on 18095: it
# answers every export 200) on core 1. Needs `python3 bench/run.py --prepare --only portico`
# (oha). QUEUE sets the on gateway's `access_log.queue`.
# usage: bench/observability/ab.sh target/release/portico target/release/bench-backend ROUNDS [key]
set -euo pipefail
portico=$(realpath "$1"); backend=$(realpath "$2"); rounds=$3
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
oha="$root/target/bench-tools/bin/oha"
work=$(mktemp -d /tmp/portico-ab-XXXXXX)
url=http://127.0.0.1:18083/pass/x
headers=()
if [ "${4:-}" = key ]; then url=http://127.0.0.1:18083/key/x; headers=(-H "apikey: bench-app-key"); fi
{
    cat "$root/bench/callgrind/cg.yaml"
    echo 'traces: {endpoint: "http://127.0.0.1:18095/v1/traces", sampling_ratio: 0.01}'
    echo 'analytics: {report_every: 10s}'
    if [ -n "${QUEUE:-}" ]; then echo "access_log: {queue: $QUEUE}"; fi
} >"$work/on.yaml"
taskset -c 1 "$backend" --listen 127.0.0.1:18081 >/dev/null 2>&1 &
backend_pid=$!
taskset -c 1 "$backend" --listen 127.0.0.1:18095 >/dev/null 2>&1 &
receiver_pid=$!
trap 'kill $backend_pid $receiver_pid 2>/dev/null' EXIT
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() {
    if [ "$1" = on ]; then
        taskset -c 0 "$portico" --workers 1 --log warn --access-log "$work/access.log" serve --config "$work/on.yaml" >"$work/gateway.log" 2>&1 &
    else
        taskset -c 0 "$portico" --workers 1 --log warn --access-log off serve --config "$root/bench/callgrind/cg.yaml" >"$work/gateway.log" 2>&1 &
    fi
    local gateway=$!
    for _ in $(seq 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1',18083),0.2)" 2>/dev/null && break; sleep 0.1; done
    taskset -c 1 "$oha" "${headers[@]}" -n 30000 -c 32 --no-tui "$url" >/dev/null 2>&1
    local before rps after
    before=$(cpu_ticks $gateway)
    rps=$(taskset -c 1 "$oha" "${headers[@]}" -n 200000 -c 32 --no-tui "$url" 2>&1 | awk '/Requests\/sec/ {print $2}')
    after=$(cpu_ticks $gateway)
    kill $gateway; wait $gateway 2>/dev/null || true
    echo "$1 req/s=$rps cpu_us_per_req=$(python3 -c "print(round(($after - $before) * 1e6 / $(getconf CLK_TCK) / 200000, 2))")"
}
for _ in $(seq "$rounds"); do run off; run on; done
