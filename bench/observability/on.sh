#!/usr/bin/env bash
# The #15 benchmark's "observability on" gateway: run as `--baseline` of bench/run.py, it starts
# the portico named by PORTICO (default: target/release/portico) with the arguments the harness
# gives, except that the access log goes to a file instead of `off`, and the configuration gets
# traces at 1 % sampling (exported to a local OTLP receiver that answers 200) and usage
# analytics (reported to the log every 10 s; at the harness's `warn` level the lines are not
# written, their tallies and reports are made). The harness's own `portico` is the same binary
# with all three off:
#   python3 bench/run.py --only portico --cases '^S[12] ' --portico target/release/portico \
#     --baseline bench/observability/on.sh
# PARTS (default "log traces analytics") turns on only the parts it names, to measure each
# alone: PARTS=traces python3 bench/run.py ... --baseline bench/observability/on.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
portico=${PORTICO:-$here/../../target/release/portico}
work=$(mktemp -d /tmp/portico-observability-XXXXXX)
receiver_port=${OTLP_PORT:-18095}
parts=${PARTS:-log traces analytics}
for part in $parts; do
    case "$part" in log | traces | analytics) ;; *) echo "PARTS: unknown part '$part' (log, traces, analytics)" >&2; exit 2 ;; esac
done
# A receiver of OTLP/HTTP that takes every export, for as long as a benchmark round may last.
# It stands for an outside collector, so it runs where bench/run.py puts the other outside
# services (the backend, Redis): on the load's core, not on the gateway's, whose affinity this
# script inherits.
taskset -c "${RECEIVER_CORE:-1}" timeout 3600 python3 - "$receiver_port" >"$work/receiver.log" 2>&1 <<'PY' &
import http.server, sys
class Take(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.send_header("content-type", "application/x-protobuf"); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Take).serve_forever()
PY
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --access-log)
            if [[ " $parts " == *" log "* ]]; then args+=(--access-log "$work/access.log"); else args+=("$1" "$2"); fi
            shift 2 ;;
        --config)
            python3 - "$2" "$work/portico.json" "$receiver_port" "$parts" <<'PY'
import json, sys
config = json.load(open(sys.argv[1]))
parts = sys.argv[4].split()
if "traces" in parts:
    config["traces"] = {"endpoint": f"http://127.0.0.1:{sys.argv[3]}/v1/traces", "sampling_ratio": 0.01}
if "analytics" in parts:
    config["analytics"] = {"report_every": "10s"}
json.dump(config, open(sys.argv[2], "w"))
PY
            args+=(--config "$work/portico.json"); shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
exec "$portico" "${args[@]}"
