#!/usr/bin/env python3
"""Multi-datacenter, active-active: how long a change made in one region takes to reach the
other region's gateway. Two regions on this machine, each a control plane (release build)
on its own database of the PostgreSQL test server and a gateway of its own, set up as
docs/deployment.md says (the second region's database a copy of the first's). Each round
makes an application, a subscription and an API key in east and polls west's gateway until
it accepts the key, then revokes the key in west and polls east's gateway until it refuses
it; printed: the median and the max of each, from the change's answer to the gateway's.

    cargo build --release -p portico --bin portico -p portico-bench --bin bench-backend
    python3 bench/multi_dc.py [--rounds 30]
"""
import argparse, json, os, secrets, statistics, subprocess, tempfile, time
import urllib.error, urllib.request

from harness.systems import wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORTICO = os.path.join(ROOT, "target", "release", "portico")
BACKEND_BIN = os.path.join(ROOT, "target", "release", "bench-backend")
SERVER = os.environ.get("PORTICO_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test").rsplit("/", 1)[0]
PASSWORD = "multi-dc-admin-1"
BACKEND = "127.0.0.1:18186"
REGIONS = {"east": ("127.0.0.1:18180", "127.0.0.1:18182", "127.0.0.1:18184"),
           "west": ("127.0.0.1:18181", "127.0.0.1:18183", "127.0.0.1:18185")}


def psql(sql):
    subprocess.run(["psql", "-q", f"{SERVER}/test", "-c", sql], check=True)


def call(method, url, token=None, body=None, headers=None):
    """(status, JSON or None) of a request."""
    all_headers = dict(headers or {})
    if token:
        all_headers["authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data, all_headers["content-type"] = json.dumps(body).encode(), "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=all_headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            text = reply.read()
            json_answer = reply.headers.get("content-type", "").startswith("application/json") and text
            return reply.status, (json.loads(text) if json_answer else None)
    except urllib.error.HTTPError as error:
        return error.code, None


def ok(method, url, token, body):
    status, answer = call(method, url, token, body)
    assert status < 300, f"{method} {url}: {status}"
    return answer


def until(check, limit=10.0):
    """Seconds until `check()` held, polled every 2 ms."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > limit:
            raise SystemExit(f"not within {limit} s")
        time.sleep(0.002)
    return time.monotonic() - started


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    rounds = parser.parse_args().rounds
    work = tempfile.mkdtemp(prefix="portico-multi-dc-")
    names = {region: f"portico_bench_{region}_{secrets.token_hex(4)}" for region in REGIONS}
    env = dict(os.environ, PORTICO_ADMIN_PASSWORD=PASSWORD, PORTICO_SECRETS_KEY=secrets.token_hex(32))
    processes = []

    def start(args, log, port, extra=None):
        process = subprocess.Popen(args, env=dict(env, **(extra or {})), stdout=open(os.path.join(work, log), "ab"), stderr=subprocess.STDOUT)
        processes.append(process)
        wait_port(int(port.rsplit(":", 1)[1]), proc=process)
        return process

    try:
        psql(f"CREATE DATABASE {names['east']}")
        first = start([PORTICO, "control-plane", "--database-url", f"{SERVER}/{names['east']}", "--api", REGIONS["east"][0],
                       "--data-dir", os.path.join(work, "first")], "first.log", REGIONS["east"][0])
        first.terminate()
        first.wait()
        for _ in range(100):
            if subprocess.run(["psql", "-q", f"{SERVER}/test", "-c", f"CREATE DATABASE {names['west']} TEMPLATE {names['east']}"],
                              stderr=subprocess.DEVNULL).returncode == 0:
                break
            time.sleep(0.1)
        start([BACKEND_BIN, "--listen", BACKEND], "backend.log", BACKEND)
        sessions = {}
        for region, (api, _, _) in REGIONS.items():
            peer = names["west" if region == "east" else "east"]
            start([PORTICO, "control-plane", "--database-url", f"{SERVER}/{names[region]}", "--api", api, "--public-url", "http://portico.bench.test",
                   "--region", region, "--peer-database-url", f"{SERVER}/{peer}", "--data-dir", os.path.join(work, region)], f"{region}.log", api)
            sessions[region] = ok("POST", f"http://{api}/api/v1/auth/login", None, {"username": "admin", "password": PASSWORD})["token"]
        east, west = (f"http://{REGIONS[r][0]}" for r in ("east", "west"))
        admin = sessions["east"]
        ok("PUT", f"{east}/api/v1/environments/default/upstream-networks", admin, {"allow": ["127.0.0.1"]})
        gateway_token = ok("POST", f"{east}/api/v1/environments/default/gateway-tokens", admin, {})["token"]
        definition = {"name": "global", "version": "v1", "context": "/global", "endpoints": [f"http://{BACKEND}"],
                      "operations": [{"method": "GET", "path": "/x"}], "tiers": ["Unlimited"]}
        api = ok("POST", f"{east}/api/v1/apis", admin, definition)["id"]
        ok("POST", f"{east}/api/v1/apis/{api}/lifecycle", admin, {"action": "publish"})
        revision = ok("POST", f"{east}/api/v1/apis/{api}/revisions", admin, {})
        ok("POST", f"{east}/api/v1/apis/{api}/deployments", admin, {"revision_id": revision["id"], "environments": ["default"]})
        until(lambda: call("GET", f"{west}/api/v1/apis/{api}", sessions["west"])[0] == 200)
        for region, (api_address, listen, admin_address) in REGIONS.items():
            start([PORTICO, "gateway", "--control-plane", f"http://{api_address}", "--environment", "default", "--cache-dir",
                   os.path.join(work, f"{region}-cache"), "--listen", listen, "--admin", admin_address], f"{region}-gateway.log", listen,
                  {"PORTICO_GATEWAY_TOKEN": gateway_token})

        def status_at(region, key):
            return call("GET", f"http://{REGIONS[region][1]}/global/v1/x", headers={"apikey": key})[0]

        until(lambda: status_at("east", "none") == 401 and status_at("west", "none") == 401)
        to_west, to_east = [], []
        for number in range(rounds):
            app = ok("POST", f"{east}/api/v1/applications", admin, {"name": f"app-{number}"})["id"]
            ok("POST", f"{east}/api/v1/applications/{app}/subscriptions", admin, {"api_id": api, "tier": "Unlimited"})
            key = ok("POST", f"{east}/api/v1/applications/{app}/api-keys", admin, {})
            to_west.append(until(lambda: status_at("west", key["key"]) == 200))
            assert call("DELETE", f"{west}/api/v1/applications/{app}/api-keys/{key['id']}", sessions["west"])[0] < 300
            to_east.append(until(lambda: status_at("east", key["key"]) == 401))
        for what, times in (("a key made in east, accepted by west's gateway", to_west), ("a key revoked in west, refused by east's gateway", to_east)):
            ms = [t * 1000 for t in times]
            print(f"{what}: median {statistics.median(ms):.0f} ms, max {max(ms):.0f} ms ({len(ms)} rounds)")
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait()
        for name in names.values():
            subprocess.run(["psql", "-q", f"{SERVER}/test", "-c", f"DROP DATABASE IF EXISTS {name}"], stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
