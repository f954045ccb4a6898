#!/usr/bin/env bash
# Instructions per request, counted by callgrind, on one worker: S1 (passthrough, /pass/), S2
# (key-auth + throttle, /key/), and S4 (the JSON transform policy, /transform/, against a
# passthrough POST of the same body, /pass/) at 1 KiB and 10 KiB. Each case is warmed up with
# 300 requests, then 2,000 are counted on one keep-alive connection, with a dump after each.
# Counts do not depend on the machine's load. Logs at `warn` and no access log, as bench/run.py
# runs it. The S4 policy is built with the `portico` given, as bench/run.py builds it.
# usage: bench/callgrind/run.sh target/release/portico target/release/bench-backend OUT_PREFIX
# Prints each dump's total and the instructions per request (total / 2000). Optional
# environment: ACCESS_LOG (a file to write the access log to instead of `off`), EXTRA_CONFIG
# (a YAML file of more top-level keys, e.g. `traces` and `analytics`), CASES (the names of
# the cases to run, e.g. "pass key"; all by default).
set -euo pipefail
portico=$(realpath "$1"); backend=$(realpath "$2"); out=$(realpath -m "$3")
mkdir -p "$(dirname "$out")"
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

CARGO_TARGET_DIR="$root/target/bench-tools/cargo" "$portico" policy build "$root/bench/policies/json-transform" \
  --out "$out.transform.wasm" >"$out.build.log" 2>&1
{
  echo "modules: {json-transform: {path: \"$out.transform.wasm\"}}"
  cat "$here/cg.yaml"
  echo "  - {name: transform, context: /transform, upstream: {endpoints: [\"http://127.0.0.1:18081\"]}," \
       "policies: [{policy: json-transform, config: {remove: [card], rename: {qty: quantity}, add: {channel: portico}," \
       "set_headers: {x-transformed: json}, remove_headers: [x-debug]}}]}"
  if [ -n "${EXTRA_CONFIG:-}" ]; then cat "$EXTRA_CONFIG"; fi
} >"$out.yaml"
cd "$here"

$backend --listen 127.0.0.1:18081 >/dev/null 2>&1 &
backend_pid=$!
valgrind --tool=callgrind --callgrind-out-file="$out.%p" "$portico" --workers 1 --log warn --access-log "${ACCESS_LOG:-off}" serve --config "$out.yaml" >"$out.log" 2>&1 &
vg=$!
for i in $(seq 600); do python3 -c "import socket; socket.create_connection(('127.0.0.1',18083),0.2)" 2>/dev/null && break; sleep 0.5; done
cases=("pass /pass/x" "key /key/x" "post1k /pass/x 1024" "transform1k /transform/x 1024" "post10k /pass/x 10240" "transform10k /transform/x 10240")
for case in "${cases[@]}"; do
  set -- $case; name=$1; shift
  [[ " ${CASES:-$name} " == *" $name "* ]] || continue
  python3 load.py "$1" 300 ${2:-}
  callgrind_control -z "$vg" >/dev/null 2>&1
  python3 load.py "$1" 2000 ${2:-}; callgrind_control -d "$name" "$vg" >/dev/null 2>&1
done
kill "$vg" "$backend_pid"; wait "$vg" 2>/dev/null || true
for f in "$out".*.*; do
  [[ "$f" =~ \.[0-9]+\.[0-9]+$ ]] || continue
  total=$(grep -E "^(summary|totals):" "$f" | head -1 | awk '{print $2}')
  echo "$f $(grep -m1 '^desc: Trigger' "$f" | sed 's/.*Trigger: //') $total $((total / 2000))"
done
