#!/usr/bin/env bash
# Instructions per request, counted by callgrind, of S1 (passthrough, /pass/) and S2 (key-auth
# + throttle, /key/) on one worker: 300 requests of each to warm up, then 2,000 of each on one
# keep-alive connection, a dump after each. Counts do not depend on the machine's load. Logs at
# `warn`, as bench/run.py runs it: the access log (an INFO line per request) is off.
# usage: bench/callgrind/run.sh target/release/portico target/release/bench-backend OUT_PREFIX
# Prints each dump's total and the instructions per request (total / 2000).
set -euo pipefail
portico=$(realpath "$1"); backend=$(realpath "$2"); out=$(realpath -m "$3")
cd "$(dirname "$0")"

$backend --listen 127.0.0.1:18081 >/dev/null 2>&1 &
backend_pid=$!
valgrind --tool=callgrind --callgrind-out-file="$out.%p" "$portico" --workers 1 --log warn serve --config cg.yaml >"$out.log" 2>&1 &
vg=$!
for i in $(seq 600); do python3 -c "import socket; socket.create_connection(('127.0.0.1',18083),0.2)" 2>/dev/null && break; sleep 0.5; done
python3 load.py /pass/x 300; python3 load.py /key/x 300
callgrind_control -z "$vg" >/dev/null
python3 load.py /pass/x 2000; callgrind_control -d pass "$vg" >/dev/null
python3 load.py /key/x 2000; callgrind_control -d key "$vg" >/dev/null
kill "$vg" "$backend_pid"; wait "$vg" 2>/dev/null || true
for f in "$out".*.*; do
  total=$(grep -E "^(summary|totals):" "$f" | head -1 | awk '{print $2}')
  echo "$f $total $((total / 2000))"
done
