#!/usr/bin/env python3
"""Fleet scale: one control plane on PostgreSQL feeding N simulated gateways
(`fleet-streams`: N fleet-protocol clients in one process, each acknowledging every version
at once, as a gateway does once it applied it).

Measures, with the release build:
- the control plane's CPU and memory while N gateways are connected and nothing changes;
- from a deploy's request to every gateway's acknowledgement (target < 2 s), and to the
  last gateway receiving it;
- from a revocation's request to the last gateway receiving it (target < 1 s).

    cargo build --release -p portico --bin portico -p portico-bench --bin fleet-streams
    python3 bench/fleet_scale.py [--streams 1000] [--rounds 3] [--idle 20]
        [--database-url postgres://postgres@127.0.0.1:5432/postgres]

Everything runs on this machine's two cores (PostgreSQL, the control plane and the
simulated fleet), so the figures are upper bounds of what the control plane alone needs.
"""
import argparse, base64, json, os, queue, resource, secrets, shutil, signal, statistics, subprocess, tempfile, threading, time
import urllib.parse, urllib.request

from harness.systems import wait_port  # the harness's wait for a listener on a loopback port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API = "127.0.0.1:19080"
ADMIN_PASSWORD = "bench-admin-pass-1"


def call(method, path, token=None, body=None, form=None, basic=None):
    headers = {"content-type": "application/json"}
    data = json.dumps(body or {}).encode()
    if form is not None:
        headers["content-type"], data = "application/x-www-form-urlencoded", urllib.parse.urlencode(form).encode()
    if token:
        headers["authorization"] = f"Bearer {token}"
    if basic:
        headers["authorization"] = "Basic " + base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
    request = urllib.request.Request(f"http://{API}{path}", method=method, data=data, headers=headers)
    with urllib.request.urlopen(request) as response:
        text = response.read()
        return json.loads(text) if text else None


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        return sum(int(x) for x in f.read().rsplit(")", 1)[1].split()[11:13]) / os.sysconf("SC_CLK_TCK")


def memory_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def now_ms():
    return int(time.time() * 1000)


class Lines:
    """The simulated fleet's JSON lines, read on a thread."""

    def __init__(self, process):
        self.queue = queue.Queue()
        threading.Thread(target=self.read, args=(process,), daemon=True).start()

    def read(self, process):
        for line in process.stdout:
            if os.environ.get("FLEET_SCALE_TRACE"):  # set to see every line of the fleet
                print("fleet:", line.strip(), flush=True)
            self.queue.put(json.loads(line))

    def next(self, timeout, what):
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            raise SystemExit(f"no {what} within {timeout} s")

    def first_since(self, sent_ms, kind, timeout, what):
        """The first version of `kind` whose first stream received it after `sent_ms`."""
        deadline = time.time() + timeout
        while True:
            seen = self.next(max(deadline - time.time(), 0.1), what)
            if seen.get("kind") == kind and seen["first_received_ms"] >= sent_ms:
                return seen


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--apis", type=int, default=1, help="APIs deployed before the fleet connects (the environment's size)")
    parser.add_argument("--idle", type=int, default=20, help="seconds measured with the fleet connected and nothing changing")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--profile", default="release", help="the cargo profile whose binaries run (debug: to try the script)")
    args = parser.parse_args()
    portico, streams = (os.path.join(ROOT, "target", args.profile, name) for name in ("portico", "fleet-streams"))
    # A socket per stream and per acknowledgement on both sides.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * args.streams + 1024)), hard))

    data = tempfile.mkdtemp()
    database = f"portico_bench_fleet_{os.getpid()}"
    subprocess.run(["psql", args.database_url, "-q", "-c", f"CREATE DATABASE {database}"], check=True)
    env = dict(os.environ, PORTICO_ADMIN_PASSWORD=ADMIN_PASSWORD, PORTICO_SECRETS_KEY=secrets.token_hex(32),
               PORTICO_DATABASE_URL=f"{args.database_url.rsplit('/', 1)[0]}/{database}")
    processes = []
    try:
        control_plane = subprocess.Popen([portico, "--log", "warn", "control-plane", "--data-dir", data, "--api", API], env=env,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(control_plane)
        wait_port(int(API.rsplit(":", 1)[1]))
        admin = call("POST", "/api/v1/auth/login", body={"username": "admin", "password": ADMIN_PASSWORD})["token"]
        call("PUT", "/api/v1/environments/default/upstream-networks", admin, {"allow": ["127.0.0.1"]})
        gateway_token = call("POST", "/api/v1/environments/default/gateway-tokens", admin, {"description": "fleet bench"})["token"]
        definition = {"name": "fleet", "version": "v1", "context": "/fleet", "endpoints": ["http://127.0.0.1:18081"],
                      "operations": [{"method": "GET", "path": "/x"}], "tiers": ["Unlimited"]}
        api = call("POST", "/api/v1/apis", admin, definition)["id"]
        call("POST", f"/api/v1/apis/{api}/lifecycle", admin, {"action": "publish"})
        for n in range(1, args.apis):
            other = call("POST", "/api/v1/apis", admin, dict(definition, name=f"fleet-{n}", context=f"/fleet-{n}"))["id"]
            call("POST", f"/api/v1/apis/{other}/lifecycle", admin, {"action": "publish"})
            revision = call("POST", f"/api/v1/apis/{other}/revisions", admin, {})
            call("POST", f"/api/v1/apis/{other}/deployments", admin, {"revision_id": revision["id"], "environments": ["default"]})
        app = call("POST", "/api/v1/applications", admin, {"name": "fleet-bench"})
        client = call("POST", f"/api/v1/applications/{app['id']}/oauth-client", admin)

        fleet = subprocess.Popen([streams, "--url", f"http://{API}", "--token", gateway_token, "--streams", str(args.streams)],
                                 stdout=subprocess.PIPE, stderr=None if args.profile == "debug" else subprocess.DEVNULL, text=True)
        processes.append(fleet)
        lines = Lines(fleet)
        started = now_ms()
        connected = lines.next(120, "connection of every stream")
        print(f"{args.streams} simulated gateways connected and sent the first version in {connected['at_ms'] - started} ms")

        time.sleep(2)
        cpu_before = cpu_seconds(control_plane.pid)
        time.sleep(args.idle)
        idle_cpu = (cpu_seconds(control_plane.pid) - cpu_before) / args.idle
        rss, _ = memory_kib(control_plane.pid)
        print(f"idle with {args.streams} connected: control plane {idle_cpu * 100:.1f} % of a core, RSS {rss / 1024:.0f} MiB")

        deploys, deploy_received, revocations, sizes = [], [], [], []
        cpu_changes = 0.0
        # The first token makes the first signing key, which is a change of its own.
        call("POST", "/oauth2/token", form={"grant_type": "client_credentials"}, basic=(client["client_id"], client["client_secret"]))
        time.sleep(2)
        for round in range(args.rounds):
            # Each deploy changes what gateways run (an identical revision would change nothing).
            definition["operations"] = [{"method": "GET", "path": f"/x{round}"}]
            call("PUT", f"/api/v1/apis/{api}", admin, definition)
            revision = call("POST", f"/api/v1/apis/{api}/revisions", admin, {})
            cpu_before = cpu_seconds(control_plane.pid)
            sent = now_ms()
            call("POST", f"/api/v1/apis/{api}/deployments", admin, {"revision_id": revision["id"], "environments": ["default"]})
            seen = lines.first_since(sent, "environment", 60, "acknowledgement of a deploy by every stream")
            cpu_changes += cpu_seconds(control_plane.pid) - cpu_before
            deploys.append(seen["all_acked_ms"] - sent)
            sizes.append(seen["bytes"])
            deploy_received.append(seen["all_received_ms"] - sent)

            token = call("POST", "/oauth2/token", form={"grant_type": "client_credentials"},
                         basic=(client["client_id"], client["client_secret"]))["access_token"]
            cpu_before = cpu_seconds(control_plane.pid)
            sent = now_ms()
            call("POST", "/oauth2/revoke", form={"token": token}, basic=(client["client_id"], client["client_secret"]))
            seen = lines.first_since(sent, "revocations", 60, "a revocation at every stream")
            cpu_changes += cpu_seconds(control_plane.pid) - cpu_before
            revocations.append(seen["all_received_ms"] - sent)
            sizes.append(seen["bytes"])
            time.sleep(1)
        _, peak = memory_kib(control_plane.pid)

        def summary(values):
            return f"median {statistics.median(values):.0f} ms (max {max(values)} ms)"

        print(f"deploy ({args.apis} APIs, {sizes[0]} bytes sent to each gateway) → every acknowledgement: {summary(deploys)}; "
              f"→ every gateway received it: {summary(deploy_received)}")
        print(f"revocation ({sizes[1]} bytes to each gateway) → every gateway received it: {summary(revocations)}")
        print(f"control plane CPU per change (deploy or revocation, its {args.streams} sends and acknowledgements): "
              f"{cpu_changes / (2 * args.rounds) * 1000:.0f} ms; peak RSS {peak / 1024:.0f} MiB")
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        subprocess.run(["psql", args.database_url, "-q", "-c", f"DROP DATABASE IF EXISTS {database}"], check=False)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
