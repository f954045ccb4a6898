#!/usr/bin/env python3
"""Token endpoint throughput: `POST /oauth2/token` with client_credentials against an
all-in-one Portico (release build, embedded SQLite), pinned to core 0; wrk on core 1.
Every request verifies the client secret against its Argon2id hash and signs an ES256
JWT, so this measures that cost.

    python3 bench/token_endpoint.py [--seconds 10] [--connections 4]
"""
import argparse, base64, json, os, shutil, signal, subprocess, tempfile, urllib.request

from run import wait_port  # bench/run.py: the same wait for a listener

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORTICO = os.path.join(ROOT, "target", "release", "portico")
API, GATEWAY, ADMIN = "127.0.0.1:19080", "127.0.0.1:18084", "127.0.0.1:19901"


def call(method, path, token=None, body=None):
    request = urllib.request.Request(f"http://{API}{path}", method=method, data=json.dumps(body or {}).encode(),
                                     headers={"content-type": "application/json", **({"authorization": f"Bearer {token}"} if token else {})})
    with urllib.request.urlopen(request) as response:
        text = response.read()
        return json.loads(text) if text else None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True)
    data = tempfile.mkdtemp()
    env = dict(os.environ, PORTICO_ADMIN_PASSWORD="bench-admin-pass-1")
    proc = subprocess.Popen(["taskset", "-c", "0", PORTICO, "--log", "warn", "--workers", "1", "all-in-one", "--data-dir", data,
                             "--api", API, "--gateway", GATEWAY, "--admin", ADMIN], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(API)
        admin = call("POST", "/api/v1/auth/login", body={"username": "admin", "password": "bench-admin-pass-1"})["token"]
        app = call("POST", "/api/v1/applications", admin, {"name": "bench"})
        client = call("POST", f"/api/v1/applications/{app['id']}/oauth-client", admin)
        basic = base64.b64encode(f"{client['client_id']}:{client['client_secret']}".encode()).decode()
        script = os.path.join(data, "token.lua")
        with open(script, "w") as f:
            f.write('wrk.method = "POST"\nwrk.body = "grant_type=client_credentials"\n'
                    'wrk.headers["content-type"] = "application/x-www-form-urlencoded"\n'
                    f'wrk.headers["authorization"] = "Basic {basic}"\n')
        with open(f"/proc/{proc.pid}/stat") as f:
            before = sum(int(x) for x in f.read().rsplit(")", 1)[1].split()[11:13])
        out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds}s", "--latency",
                              "-s", script, f"http://{API}/oauth2/token"], capture_output=True, text=True, check=True).stdout
        with open(f"/proc/{proc.pid}/stat") as f:
            after = sum(int(x) for x in f.read().rsplit(")", 1)[1].split()[11:13])
        requests = int(next(l for l in out.splitlines() if "requests in" in l).split()[0])
        non2xx = [l for l in out.splitlines() if "Non-2xx" in l]
        p99 = next((l.split()[1] for l in out.splitlines() if l.strip().startswith("99%")), "?")
        cpu_ms = (after - before) / os.sysconf("SC_CLK_TCK") * 1000 / max(requests, 1)
        print(f"token endpoint (client_credentials): {requests / args.seconds:.0f} tokens/s, {cpu_ms:.2f} ms CPU per token, "
              f"p99 {p99}, {args.connections} connections, {args.seconds}s" + (f"; {non2xx[0].strip()}" if non2xx else ""))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
