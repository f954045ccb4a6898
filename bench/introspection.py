#!/usr/bin/env python3
"""Tokens of an outside OpenID provider through the gateway (pattern 5): a JWT verified with
the provider's fetched keys, an opaque token whose introspection answer the gateway caches,
and the same opaque token asked about at the provider on every request (a cache time of
0s: what WSO2 measured as 500 TPS against 3,000 with its key cache).

    cargo build --release -p portico --bin portico -p portico-bench --bin bench-backend
    python3 bench/introspection.py [--seconds 10] [--connections 4]

One gateway worker (release build, `serve --config`) pinned to core 0; wrk, the backend and
the provider (panva's oidc-provider from npm, run by node, installed under target/test-node
as the tests install it) on core 1. Prints requests/s, latency percentiles and the gateway's
CPU time per request for each case.
"""
import argparse, base64, hashlib, json, os, re, shutil, subprocess, tempfile, time
import urllib.request

from harness.systems import wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORTICO = os.path.join(ROOT, "target", "release", "portico")
BACKEND_BIN = os.path.join(ROOT, "target", "release", "bench-backend")
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "oidc-provider")
GATEWAY, BACKEND, PROVIDER_PORT = "127.0.0.1:18085", "127.0.0.1:18086", 18087
ISSUER = f"http://127.0.0.1:{PROVIDER_PORT}"
RESOURCE = "https://api.portico.test"
CLIENTS = [{"client_id": "shop", "client_secret": "shop-secret"}, {"client_id": "portico", "client_secret": "portico-secret"}]


def installed_provider():
    """The fixture with its packages, where the tests install it (once per file contents)."""
    files = ["package.json", "package-lock.json", "provider.mjs"]
    digest = hashlib.sha256(b"".join(open(os.path.join(FIXTURE, f), "rb").read() for f in files)).digest()
    target = os.path.join(ROOT, "target", "test-node", "oidc-provider-" + digest[:4].hex())
    if not os.path.isdir(target):
        staging = target + f".installing-{os.getpid()}"
        os.makedirs(staging)
        for f in files:
            shutil.copy(os.path.join(FIXTURE, f), staging)
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel", "error"], cwd=staging, check=True)
        os.rename(staging, target)
    return os.path.join(target, "provider.mjs")


def token(jwt):
    basic = base64.b64encode(b"shop:shop-secret").decode()
    form = "grant_type=client_credentials&scope=read" + ("&resource=" + urllib.request.quote(RESOURCE, safe="") if jwt else "")
    request = urllib.request.Request(f"{ISSUER}/token", data=form.encode(),
                                     headers={"authorization": f"Basic {basic}", "content-type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(request) as reply:
        return json.load(reply)["access_token"]


def gateway_config(cache_ttl):
    return {
        "listeners": [{"address": GATEWAY}],
        "upstream_networks": {"allow": ["127.0.0.1"]},
        "jwt_issuers": [{"issuer": ISSUER, "audiences": [RESOURCE], "algorithms": ["RS256"],
                         "discovery": {"introspection": {"client_id": "portico", "client_secret": "portico-secret", "cache_ttl": cache_ttl}}}],
        "apis": [{"name": "outside", "context": "/outside", "upstream": {"endpoints": [f"http://{BACKEND}"]},
                  "policies": [{"policy": "key-auth", "config": {"api_key": False}, "timeout": "1s"}]}],
    }


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(config, bearer, seconds, connections, workdir):
    path = os.path.join(workdir, "gateway.json")
    with open(path, "w") as f:
        json.dump(config, f)
    gateway = subprocess.Popen(["taskset", "-c", "0", PORTICO, "--workers", "1", "--log", "warn", "--access-log", "off", "serve", "--config", path],
                               stdout=open(os.path.join(workdir, "gateway.log"), "ab"), stderr=subprocess.STDOUT)
    try:
        wait_port(int(GATEWAY.rsplit(":", 1)[1]), proc=gateway)
        url = f"http://{GATEWAY}/outside/"
        request = urllib.request.Request(url, headers={"authorization": f"Bearer {bearer}"})
        for _ in range(50):  # until the provider's keys are in
            try:
                with urllib.request.urlopen(request) as reply:
                    if reply.status == 200:
                        break
            except urllib.error.HTTPError:
                time.sleep(0.1)
        else:
            raise SystemExit(f"the gateway does not accept the token: see {workdir}/gateway.log")
        before = cpu_seconds(gateway.pid)
        out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
                              "-H", f"authorization: Bearer {bearer}", url], capture_output=True, text=True, check=True).stdout
        cpu = cpu_seconds(gateway.pid) - before
    finally:
        gateway.terminate()
        gateway.wait()
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    non_2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    latency = dict(re.findall(r"\s+(50|99)%\s+(\S+)", out))
    return {"rps": (requests - non_2xx) / seconds, "non_2xx": non_2xx, "p50": latency.get("50"), "p99": latency.get("99"),
            "cpu_us_per_request": cpu / max(requests, 1) * 1e6}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    for binary in (PORTICO, BACKEND_BIN):
        if not os.path.exists(binary):
            raise SystemExit(f"{binary} missing: cargo build --release -p portico --bin portico -p portico-bench --bin bench-backend")
    if not shutil.which("wrk"):
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True)
    script = installed_provider()
    with tempfile.TemporaryDirectory() as workdir:
        keys, clients = os.path.join(workdir, "jwks.json"), os.path.join(workdir, "clients.json")
        subprocess.run(["node", script, "--generate-key", keys, "bench-key"], check=True)
        with open(clients, "w") as f:
            json.dump(CLIENTS, f)
        env = dict(os.environ, PORT=str(PROVIDER_PORT), RESOURCE=RESOURCE, JWKS_FILE=keys, CLIENTS_FILE=clients, ACCESS_TOKEN_TTL="3600")
        provider = subprocess.Popen(["taskset", "-c", "1", "node", script], env=env, stdout=subprocess.PIPE)
        backend = subprocess.Popen(["taskset", "-c", "1", BACKEND_BIN, "--listen", BACKEND], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert provider.stdout.readline().startswith(b"listening"), "oidc-provider did not start"
            wait_port(int(BACKEND.rsplit(":", 1)[1]))
            jwt, opaque = token(True), token(False)
            results = {
                "JWT (fetched keys)": run(gateway_config("60s"), jwt, args.seconds, args.connections, workdir),
                "opaque, introspection cached (60s)": run(gateway_config("60s"), opaque, args.seconds, args.connections, workdir),
                "opaque, introspected on every request (0s)": run(gateway_config("0s"), opaque, args.seconds, args.connections, workdir),
            }
        finally:
            provider.terminate()
            backend.terminate()
    print(f"{'case':46} {'req/s':>9} {'p50':>9} {'p99':>9} {'gateway CPU/req':>16} {'non-2xx':>8}")
    for case, r in results.items():
        print(f"{case:46} {r['rps']:9.0f} {r['p50']:>9} {r['p99']:>9} {r['cpu_us_per_request']:13.1f} µs {r['non_2xx']:8}")


if __name__ == "__main__":
    main()
