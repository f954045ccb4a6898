#!/usr/bin/env python3
"""Token endpoint throughput: `POST /oauth2/token` with client_credentials, wrk on core 1.
Every request authenticates the client (Argon2id, then its cache of verified secrets),
signs an ES256 JWT and stores a refresh token, so this measures that cost.

    python3 bench/token_endpoint.py [--seconds 10] [--connections 4]
        an all-in-one Portico (release build, embedded SQLite), pinned to core 0
    python3 bench/token_endpoint.py --key-managers 2 [--database-url postgres://…/postgres]
        WSO2 pattern 4: a control plane and N key-manager nodes (one worker each, not pinned)
        on a fresh PostgreSQL database; one wrk per node (on core 1), at the same time, their
        counts summed. PostgreSQL and the load share this machine's cores with the nodes: on
        two cores this says whether a second node adds anything, not how far the layer scales.
    python3 bench/token_endpoint.py --grant authorization_code [--key-managers N] [--seconds 2]
        the code exchange instead: codes are minted first through the sign-in page (each a
        password check, Argon2id), for at most 40 s since they last 60 s, then exchanged with
        their PKCE verifier, each once; wrk's Lua takes the next code for every request.
"""
import argparse, base64, concurrent.futures, hashlib, json, os, re, secrets, shutil, signal, subprocess, tempfile, time
import urllib.error, urllib.parse, urllib.request

from harness.systems import wait_port  # the harness's wait for a listener on a loopback port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORTICO = os.path.join(ROOT, "target", "release", "portico")
API, GATEWAY, ADMIN = "127.0.0.1:19080", "127.0.0.1:18084", "127.0.0.1:19901"
KEY_MANAGER_URL = "http://keys.portico.bench"
ADMIN_PASSWORD = "bench-admin-pass-1"


def call(method, path, token=None, body=None):
    request = urllib.request.Request(f"http://{API}{path}", method=method, data=json.dumps(body or {}).encode(),
                                     headers={"content-type": "application/json", **({"authorization": f"Bearer {token}"} if token else {})})
    with urllib.request.urlopen(request) as response:
        text = response.read()
        return json.loads(text) if text else None


REDIRECT_URI = "http://127.0.0.1:9/callback"
VERIFIER = "bench-verifier-" + "v" * 40


def mint_code(endpoint, client_id, password):
    """One code through the sign-in page, as a browser gets it: the page, then the form."""
    challenge = base64.urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest()).rstrip(b"=").decode()
    query = urllib.parse.urlencode({"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI,
                                    "code_challenge": challenge, "code_challenge_method": "S256", "state": "s"})
    with urllib.request.urlopen(f"http://{endpoint}/oauth2/authorize?{query}") as page:
        cookie = page.headers["set-cookie"].split(";")[0]
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.read().decode()))
    fields.update(username="bench-user", password=password, decision="allow")

    class Stay(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args):
            return None

    request = urllib.request.Request(f"http://{endpoint}/oauth2/authorize", data=urllib.parse.urlencode(fields).encode(),
                                     headers={"cookie": cookie, "content-type": "application/x-www-form-urlencoded"})
    try:
        urllib.request.build_opener(Stay).open(request)
    except urllib.error.HTTPError as answer:
        if answer.code == 303:
            return urllib.parse.parse_qs(urllib.parse.urlsplit(answer.headers["location"]).query)["code"][0]
        raise
    raise SystemExit("the sign-in did not redirect")


def mint_codes(endpoint, client_id, password, wanted, seconds=40):
    codes, deadline = [], time.time() + seconds
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        while len(codes) < wanted and time.time() < deadline:
            codes.extend(pool.map(lambda _: mint_code(endpoint, client_id, password), range(min(100, wanted - len(codes)))))
    return codes


def port(address):
    return int(address.rsplit(":", 1)[1])


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        return sum(int(x) for x in f.read().rsplit(")", 1)[1].split()[11:13])


def start(args, env, core=None):
    pin = ["taskset", "-c", core] if core else []
    return subprocess.Popen([*pin, PORTICO, "--log", "warn", "--workers", "1", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=4, help="per token endpoint")
    parser.add_argument("--key-managers", type=int, default=0, help="key-manager nodes apart (pattern 4); 0: all-in-one")
    parser.add_argument("--grant", default="client_credentials", choices=["client_credentials", "authorization_code"])
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/postgres",
                        help="a PostgreSQL database to create the benchmark's database from (with --key-managers)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True)
    data = tempfile.mkdtemp()
    env = dict(os.environ, PORTICO_ADMIN_PASSWORD=ADMIN_PASSWORD)
    processes, endpoints, database = [], [], None
    try:
        if args.key_managers == 0:
            processes.append(start(["all-in-one", "--data-dir", data, "--api", API, "--gateway", GATEWAY, "--admin", ADMIN], env, "0"))
            endpoints.append(API)
        else:
            database = f"portico_bench_tokens_{os.getpid()}"
            subprocess.run(["psql", args.database_url, "-q", "-c", f"CREATE DATABASE {database}"], check=True)
            env.update(PORTICO_DATABASE_URL=f"{args.database_url.rsplit('/', 1)[0]}/{database}", PORTICO_SECRETS_KEY=secrets.token_hex(32))
            processes.append(start(["control-plane", "--data-dir", data, "--api", API, "--key-manager-url", KEY_MANAGER_URL], env))
            wait_port(port(API))
            for n in range(args.key_managers):
                endpoints.append(f"127.0.0.1:{19443 + n}")
                processes.append(start(["key-manager", "--api", endpoints[-1], "--public-url", KEY_MANAGER_URL], env))
        for endpoint in endpoints:
            wait_port(port(endpoint))
        admin = call("POST", "/api/v1/auth/login", body={"username": "admin", "password": ADMIN_PASSWORD})["token"]
        app = call("POST", "/api/v1/applications", admin, {"name": "bench"})
        client = call("POST", f"/api/v1/applications/{app['id']}/oauth-client", admin)
        basic = base64.b64encode(f"{client['client_id']}:{client['client_secret']}".encode()).decode()
        scripts = [os.path.join(data, f"token-{n}.lua") for n in range(len(endpoints))]
        for script in scripts:
            with open(script, "w") as f:
                f.write('wrk.method = "POST"\nwrk.body = "grant_type=client_credentials"\n'
                        'wrk.headers["content-type"] = "application/x-www-form-urlencoded"\n'
                        f'wrk.headers["authorization"] = "Basic {basic}"\n')
        if args.grant == "authorization_code":
            password = "bench-user-pass-1"
            call("POST", "/api/v1/signup", body={"username": "bench-user", "password": password})
            call("PUT", f"/api/v1/applications/{app['id']}/oauth-client/redirect-uris", admin, {"redirect_uris": [REDIRECT_URI]})
            started = time.time()
            codes = mint_codes(endpoints[0], client["client_id"], password, 3000 * len(endpoints))
            print(f"{len(codes)} codes minted through the sign-in page in {time.time() - started:.1f} s")
            exchange = urllib.parse.urlencode({"grant_type": "authorization_code", "redirect_uri": REDIRECT_URI, "code_verifier": VERIFIER})
            for n, script in enumerate(scripts):
                mine = codes[n::len(scripts)]
                with open(f"{script}.codes", "w") as f:
                    f.write("\n".join(mine) + "\n")
                with open(script, "a") as f:
                    f.write(f'codes = {{}}\nfor line in io.lines("{script}.codes") do codes[#codes + 1] = line end\nnext = 0\n'
                            'request = function()\n  next = next + 1\n  if next > #codes then next = 1 end\n'
                            f'  return wrk.format(nil, nil, nil, "{exchange}&code=" .. codes[next])\nend\n')
        # The token endpoints' processes: all of all-in-one, or the key-manager nodes.
        issuers = processes if args.key_managers == 0 else processes[1:]
        before = sum(cpu_ticks(p.pid) for p in issuers)
        loads = [subprocess.Popen(["taskset", "-c", "1", "wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds}s", "--latency",
                                   "-s", script, f"http://{endpoint}/oauth2/token"], stdout=subprocess.PIPE, text=True)
                 for endpoint, script in zip(endpoints, scripts)]
        outs = [load.communicate()[0] for load in loads]
        after = sum(cpu_ticks(p.pid) for p in issuers)
        non2xx = [l.strip() for out in outs for l in out.splitlines() if "Non-2xx" in l]
        # Tokens: the answers that were not refusals (a code used up, a brake).
        requests = sum(int(next(l for l in out.splitlines() if "requests in" in l).split()[0]) for out in outs)
        requests -= sum(int(l.rsplit(":", 1)[1]) for l in non2xx)
        p99 = [next((l.split()[1] for l in out.splitlines() if l.strip().startswith("99%")), "?") for out in outs]
        cpu_ms = (after - before) / os.sysconf("SC_CLK_TCK") * 1000 / max(requests, 1)
        where = "all-in-one on SQLite" if args.key_managers == 0 else f"{args.key_managers} key-manager node(s) on PostgreSQL"
        print(f"token endpoint ({args.grant}), {where}: {requests / args.seconds:.0f} tokens/s, {cpu_ms:.2f} ms CPU per token "
              f"(token endpoints' processes), p99 {' / '.join(p99)}, {args.connections} connections each, {args.seconds}s"
              + (f"; {'; '.join(non2xx)}" if non2xx else ""))
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=15)
        if database:
            subprocess.run(["psql", args.database_url, "-q", "-c", f"DROP DATABASE IF EXISTS {database}"], check=False)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
