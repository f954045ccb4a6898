#!/usr/bin/env python3
"""Portico against a minimal hyper reverse proxy, side by side, following
../shared/BENCHMARKS.md: the system under test pinned to core 0 with one worker, the
backend and the load generator (wrk) on core 1; rounds interleave the systems; every
ratio is computed within a round; medians and ranges are reported.

Figures: requests/s at saturation and gateway CPU time per request, read from
/proc/PID/stat around the measured run.

    python3 bench/run.py [--rounds 5] [--seconds 10] [--connections 16]
"""
import argparse, base64, json, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")
BACKEND, PROXY, GATEWAY = "127.0.0.1:18081", "127.0.0.1:18082", "127.0.0.1:18083"
CLK_TCK = os.sysconf("SC_CLK_TCK")

CONFIG = """
listeners: [{address: "%(gw)s"}]
consumers:
  - name: bench-app
    api_keys: ["bench-key-0001"]
apis:
  - name: pass
    context: /pass
    upstream: {endpoints: ["http://%(be)s"]}
  - name: auth
    context: /auth
    upstream: {endpoints: ["http://%(be)s"]}
    policies:
      - policy: key-auth
      - policy: throttle
        config: {limits: [{requests: 1000000000, per: 1h}]}
  - name: jwt
    context: /jwt
    upstream: {endpoints: ["http://%(be)s"]}
    policies:
      - policy: key-auth
        config: {api_key: false}
      - policy: throttle
        config: {limits: [{requests: 1000000000, per: 1h}]}
jwt_issuers:
  - issuer: https://bench.invalid
    audiences: [portico]
    algorithms: [RS256]
    keys: [{pem_file: jwt-public.pem}]
"""


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def rs256_token(workdir):
    """An RS256 access token signed with a fresh key (openssl), and its public key file."""
    key = os.path.join(workdir, "jwt-private.pem")
    subprocess.run(["openssl", "genrsa", "-out", key, "2048"], check=True, capture_output=True)
    subprocess.run(["openssl", "rsa", "-in", key, "-pubout", "-out", os.path.join(workdir, "jwt-public.pem")], check=True, capture_output=True)
    now = int(time.time())
    header = b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    claims = b64url(json.dumps({"iss": "https://bench.invalid", "aud": "portico", "sub": "bench", "azp": "bench-app",
                                "iat": now, "nbf": now, "exp": now + 86400}).encode())
    signing_input = f"{header}.{claims}".encode()
    signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=signing_input, capture_output=True, check=True).stdout
    return f"{header}.{claims}.{b64url(signature)}"


def wait_port(addr, timeout=60):
    host, port = addr.split(":")
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection((host, int(port)), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {addr}")


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def wrk(url, seconds, connections, headers=()):
    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    requests = int(next(l for l in out.splitlines() if "requests in" in l).split()[0])
    errors = sum(int(w) for l in out.splitlines() if "Non-2xx" in l for w in l.split()[-1:])
    p99 = next((l.split()[1] for l in out.splitlines() if l.strip().startswith("99%")), "?")
    return requests, errors, p99


def measure(name, start, url, args, headers=()):
    proc = start()
    try:
        wait_port(url.split("/")[2])
        wrk(url, 2, args.connections, headers)  # warm up
        pid = proc.pid if proc else None
        before = cpu_ticks(pid) if pid else 0
        requests, errors, p99 = wrk(url, args.seconds, args.connections, headers)
        after = cpu_ticks(pid) if pid else 0
    finally:
        if proc:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
    rps = requests / args.seconds
    cpu_us = (after - before) / CLK_TCK * 1e6 / requests if pid else float("nan")
    if errors:
        print(f"  {name}: {errors} non-2xx responses!", file=sys.stderr)
    return {"rps": rps, "cpu_us": cpu_us, "p99": p99}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True)
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-p", "portico", "-p", "portico-bench"], cwd=ROOT, check=True)
    workdir = tempfile.mkdtemp()
    config = os.path.join(workdir, "portico.yaml")
    with open(config, "w") as f:
        f.write(CONFIG % {"gw": GATEWAY, "be": BACKEND})
    token = rs256_token(workdir)

    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    backend = subprocess.Popen(["taskset", "-c", "1", os.path.join(RELEASE, "bench-backend"), "--listen", BACKEND], **quiet)
    wait_port(BACKEND)
    proxy = lambda: subprocess.Popen(["taskset", "-c", "0", os.path.join(RELEASE, "minimal-proxy"), "--workers", "1", "--listen", PROXY, "--upstream", f"http://{BACKEND}"], **quiet)
    gateway = lambda: subprocess.Popen(["taskset", "-c", "0", os.path.join(RELEASE, "portico"), "--workers", "1", "--log", "warn", "serve", "--config", config], **quiet)
    systems = [
        ("direct to backend", lambda: None, f"http://{BACKEND}/", ()),
        ("minimal hyper proxy", proxy, f"http://{PROXY}/", ()),
        ("portico passthrough", gateway, f"http://{GATEWAY}/pass/", ()),
        ("portico key-auth + throttle", gateway, f"http://{GATEWAY}/auth/", ("apikey: bench-key-0001",)),
        ("portico JWT (RS256, cached) + throttle", gateway, f"http://{GATEWAY}/jwt/", (f"authorization: Bearer {token}",)),
    ]
    rounds = []
    try:
        for r in range(args.rounds):
            results = {}
            for name, start, url, headers in systems:
                results[name] = measure(name, start, url, args, headers)
                print(f"round {r + 1} {name}: {results[name]['rps']:.0f} req/s, {results[name]['cpu_us']:.1f} us CPU/req, p99 {results[name]['p99']}", file=sys.stderr)
            rounds.append(results)
    finally:
        backend.terminate()

    def summary(values):
        return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"

    print(f"\n{args.rounds} rounds of {args.seconds}s, {args.connections} connections, wrk on core 1, system under test on core 0\n")
    print("| system | req/s | CPU µs/request | p99 (last round) |")
    print("|---|---|---|---|")
    for name, *_ in systems:
        rps = [r[name]["rps"] for r in rounds]
        cpu = [r[name]["cpu_us"] for r in rounds]
        print(f"| {name} | {statistics.median(rps):.0f} ({min(rps):.0f}–{max(rps):.0f}) | {summary(cpu)} | {rounds[-1][name]['p99']} |")
    print("\nRatios within each round (median, range):\n")
    base = "minimal hyper proxy"
    for name in ["portico passthrough", "portico key-auth + throttle", "portico JWT (RS256, cached) + throttle"]:
        tput = [r[name]["rps"] / r[base]["rps"] for r in rounds]
        cpu = [r[base]["cpu_us"] / r[name]["cpu_us"] for r in rounds]
        print(f"- {name} vs {base}: throughput ×{summary(tput)}; capacity per core (inverse CPU/request) ×{summary(cpu)}")
    for name in ["portico key-auth + throttle", "portico JWT (RS256, cached) + throttle"]:
        tput = [r[name]["rps"] / r["portico passthrough"]["rps"] for r in rounds]
        cpu = [r["portico passthrough"]["cpu_us"] / r[name]["cpu_us"] for r in rounds]
        print(f"- {name} vs passthrough: throughput ×{summary(tput)}; capacity per core ×{summary(cpu)}")


if __name__ == "__main__":
    main()
