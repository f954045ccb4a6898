"""The scenarios (S1–S6 and memory) as cases: which system, which request, and how it is
loaded. A round starts each system once, checks that it answers correctly, then runs its
cases: a maximum-throughput run (wrk) and fixed-rate runs (oha) during which the system's
CPU time per request is read from /proc."""
import json, os, selectors, socket, threading, time, urllib.request, ssl

from . import load, systems, tokens
from .load import Request

P = systems.PORTS


def json_body(size):
    """A JSON order of about `size` bytes, with the fields the S4 policy edits."""
    base = {"sku": "A-1", "qty": 2, "card": "4111111111111111", "note": ""}
    base["note"] = "n" * (size - len(json.dumps(base)))
    return json.dumps(base).encode()


class Case:
    """One measured combination. A `ladder` case runs at every fixed rate, others at the
    first only; `fixed=False` runs none (the all-miss JWT cases and Envoy's Lua transform,
    whose capacity is below it)."""

    def __init__(self, scenario, system, label, request, ladder=False, fixed=True, tls=False, check=None):
        self.scenario, self.system, self.label, self.request = scenario, system, label, request
        self.ladder, self.fixed, self.tls, self.check = ladder, fixed, tls, check

    @property
    def key(self):
        return f"{self.scenario} {self.label}"


def cases(setup):
    """Every case, grouped by the system that serves it."""
    def url(system, path="/", tls=False):
        port = systems.TLS_PORTS[system] if tls else (P[system] if system != "direct" else int(systems.BACKEND.split(":")[1]))
        return f"{'https' if tls else 'http'}://127.0.0.1:{port}{path}"

    bearer = {alg: f"authorization: Bearer {setup.token[alg]}" for alg in setup.token}
    keys_lua = os.path.join(setup.workdir, "keys.lua")
    with open(keys_lua, "w") as f:
        f.write(f'local i = 0\nrequest = function()\n  i = i % {systems.CONSUMERS} + 1\n'
                f'  return wrk.format(nil, string.format("/key/?apikey=bench-key-%05d", i - 1))\nend\n')
    miss_lua = {alg: tokens.cycling_lua(setup.workdir, f"miss-{alg}", setup.token_files[alg]) for alg in setup.token_files}

    def miss(target, alg):
        with open(setup.token_files[alg]) as f:
            first = f.readline().strip()
        return Request(target, lua=miss_lua[alg], example=(target, [f"authorization: Bearer {first}"]))
    envoy_auth = f"http://127.0.0.1:{systems.ENVOY_AUTH_PORT}/"
    envoy_transform = f"http://127.0.0.1:{systems.ENVOY_TRANSFORM_PORT}/"
    body = {size: json_body(size) for size in (1024, 10240)}
    transformed = lambda text: '"channel":"portico"' in text and '"quantity":2' in text and "card" not in text

    def keyed(system, path, port=None):
        """S2's requests: 10,000 API keys in turn, in the query."""
        base = f"http://127.0.0.1:{port or P[system]}{path}"
        return Request(base, lua=keys_lua, url_pattern=rf"{base}\?apikey=bench-key-0[0-9]{{4}}",
                       example=(f"{base}?apikey={systems.api_key(42)}", []))

    all_cases = {
        "direct": [Case("S1", "direct", "direct to backend", Request(url("direct")), ladder=True)],
        "minimal hyper proxy": [Case("S1", "minimal hyper proxy", "minimal hyper proxy", Request(url("minimal hyper proxy")), ladder=True)],
        "nginx": [
            Case("S1", "nginx", "nginx", Request(url("nginx")), ladder=True),
            Case("S2", "nginx", "nginx API key map + limit_req, 10k keys", keyed("nginx", "/key/")),
            Case("S6", "nginx", "nginx TLS", Request(url("nginx", tls=True)), tls=True),
        ],
        "envoy": [
            Case("S1", "envoy", "envoy", Request(url("envoy")), ladder=True),
            Case("S2", "envoy", "envoy api_key_auth + local_ratelimit, 10k keys", keyed("envoy", "/key/", systems.ENVOY_KEY_PORT)),
            Case("S3", "envoy", "envoy JWT ES256 hit", Request(envoy_auth, [bearer["ES256"]])),
            Case("S3", "envoy", "envoy JWT RS256 hit", Request(envoy_auth, [bearer["RS256"]])),
            Case("S3", "envoy", "envoy JWT ES256 miss", miss(envoy_auth, "ES256"), fixed=False),
            Case("S3", "envoy", "envoy JWT RS256 miss", miss(envoy_auth, "RS256"), fixed=False),
            Case("S4", "envoy", "envoy passthrough POST 1 KiB", Request(url("envoy"), body=body[1024])),
            Case("S4", "envoy", "envoy Lua JSON transform 1 KiB", Request(envoy_transform, body=body[1024]), fixed=False,
                 check=transformed),
            Case("S4", "envoy", "envoy passthrough POST 10 KiB", Request(url("envoy"), body=body[10240])),
            Case("S4", "envoy", "envoy Lua JSON transform 10 KiB", Request(envoy_transform, body=body[10240]), fixed=False,
                 check=transformed),
        ],
        "pingora": [Case("S1", "pingora", "pingora", Request(url("pingora")), ladder=True)],
        "portico": [
            Case("S1", "portico", "portico", Request(url("portico", "/pass/")), ladder=True),
            Case("S2", "portico", "portico API key + rate limit, 10k keys", keyed("portico", "/key/")),
            Case("S3", "portico", "portico JWT ES256 hit", Request(url("portico", "/jwt/"), [bearer["ES256"]])),
            Case("S3", "portico", "portico JWT RS256 hit", Request(url("portico", "/jwt/"), [bearer["RS256"]])),
            Case("S3", "portico", "portico JWT ES256 miss", miss(url("portico", "/jwt/"), "ES256"), fixed=False),
            Case("S3", "portico", "portico JWT RS256 miss", miss(url("portico", "/jwt/"), "RS256"), fixed=False),
            Case("S4", "portico", "portico passthrough POST 1 KiB", Request(url("portico", "/pass/"), body=body[1024])),
            Case("S4", "portico", "portico JSON transform 1 KiB", Request(url("portico", "/transform/"), body=body[1024]), check=transformed),
            Case("S4", "portico", "portico passthrough POST 10 KiB", Request(url("portico", "/pass/"), body=body[10240])),
            Case("S4", "portico", "portico JSON transform 10 KiB", Request(url("portico", "/transform/"), body=body[10240]), check=transformed),
            Case("S6", "portico", "portico TLS", Request(url("portico", "/pass/", tls=True)), tls=True),
        ],
    }
    if setup.baseline:
        all_cases[systems.BASELINE] = [Case(c.scenario, systems.BASELINE, c.label.replace("portico", "baseline", 1), c.request,
                                            c.ladder, c.fixed, c.tls, c.check) for c in all_cases["portico"]]
    return all_cases


def probe(case):
    """One request as the load generators send it: the system must answer it correctly
    (a benchmark of 401s or of a wrong transform measures nothing)."""
    request = case.request
    target, header_lines = request.example
    headers = dict(h.split(": ", 1) for h in header_lines)
    if request.body is not None:
        headers["content-type"] = "application/json"
    req = urllib.request.Request(target, data=request.body, headers=headers)
    context = ssl._create_unverified_context() if case.tls else None
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as response:
            status, text = response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode(errors="replace")
    if status != 200 or (case.check and not case.check(text)) or (request.body is None and len(text) != 1024):
        raise SystemExit(f"{case.key}: answered {status} {text[:200]!r}; the benchmark needs a correct answer")


def measure(case, pid, rates, args, workdir):
    """wrk at full speed, then oha at each fixed rate; CPU time per request at each."""
    load.wrk(case.request, 1, args.connections, workdir)  # warm up: caches, pools, JIT
    result = {"max": _with_cpu(pid, lambda: load.wrk(case.request, args.seconds, args.connections, workdir))}
    if case.fixed:
        for name, rate in rates.items() if case.ladder else [next(iter(rates.items()))]:
            result[name] = _with_cpu(pid, lambda: load.oha(case.request, rate, args.seconds, args.connections, workdir,
                                                          insecure=case.tls))
    return result


def _with_cpu(pid, run):
    """`run()`'s figures with the system's CPU time per request during it (not for direct)."""
    before = load.cpu_seconds(pid) if pid else 0
    result = run()
    if pid and result["requests"]:
        result["cpu_us"] = (load.cpu_seconds(pid) - before) * 1e6 / result["requests"]
    return result


def hot_swap(setup, args, workdir, log):
    """S5: a Portico of its own at half its /swap capacity, first steady, then with a new
    policy module (new code: a new digest to compile) written every second."""
    request = Request(f"http://127.0.0.1:{P['portico']}/swap/", body=json_body(1024))
    gateway = systems.Process("portico", [setup.portico, "--workers", "1", "--log", "info", "serve",
                                          "--config", setup.portico_config], [P["portico"]], log)
    try:
        load.wrk(request, 1, args.connections, workdir)
        rate = load.wrk(request, max(1, args.seconds // 2), args.connections, workdir)["rps"] / 2
        steady = load.oha(request, rate, args.swap_seconds, args.connections, workdir)
        applied_before = _count(log, "configuration applied")
        stop = threading.Event()

        def swapper():
            serial = 0
            while not stop.wait(1.0):
                serial += 1
                setup.write_swap_module(serial)

        thread = threading.Thread(target=swapper)
        thread.start()
        try:
            swapping = load.oha(request, rate, args.swap_seconds, args.connections, workdir)
        finally:
            stop.set()
            thread.join()
        # Let the builds under way land (a debug build takes seconds): wait until at least
        # one swap is applied and none for 2 s.
        deadline, swaps, quiet = time.time() + 30, -1, 0
        while time.time() < deadline and not (swaps > 0 and quiet >= 4):
            time.sleep(0.5)
            now = _count(log, "configuration applied") - applied_before
            quiet = quiet + 1 if now == swaps else 0
            swaps = now
    finally:
        gateway.stop()
    return {"rate": rate, "steady": steady, "swapping": swapping, "swaps": swaps}


def _count(path, text):
    with open(path, errors="replace") as f:
        return f.read().count(text)


def peak_memory(setup, system, connections):
    """Peak RSS of a system holding `connections` open keep-alive connections, each having
    made one request (Portico's through key-auth, throttle and headers)."""
    proc = setup.start(system)
    portico = system in ("portico", systems.BASELINE)
    port = P["portico" if portico else system]
    path, header = ("/all/", "apikey: bench-app-key\r\n") if portico else ("/", "")
    request = f"GET {path} HTTP/1.1\r\nhost: localhost\r\n{header}\r\n".encode()
    sockets, selector = [], selectors.DefaultSelector()
    try:
        for _ in range(connections):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(request)
            sockets.append(s)
        answered = 0
        pending = {s: b"" for s in sockets}
        for s in sockets:
            s.setblocking(False)
            selector.register(s, selectors.EVENT_READ)
        deadline = time.time() + 60
        while pending and time.time() < deadline:
            for key, _ in selector.select(timeout=1):
                s = key.fileobj
                data = s.recv(65536)
                pending[s] += data
                if b"\r\n\r\n" in pending[s] and len(pending[s].split(b"\r\n\r\n", 1)[1]) >= 1024 or not data:
                    if pending[s].startswith(b"HTTP/1.1 200"):
                        answered += 1
                    selector.unregister(s)
                    del pending[s]
        time.sleep(0.5)
        return {"answered": answered, "rss_kib": load.memory_kib(proc.pid, "VmRSS"), "hwm_kib": load.memory_kib(proc.pid, "VmHWM")}
    finally:
        for s in sockets:
            s.close()
        proc.stop()


def shared_counters(setup, args, workdir, rate):
    """S7: S2 (API key + rate limit, 10k keys) on two gateways sharing their counters in Redis,
    both on the core under test, the load split between them: throughput (wrk), CPU per
    request (the two gateways' CPU over the requests of both; Redis's apart) and latency at
    `rate` (oha, half to each). On leases, then with a round trip per hit (`exact`: what a
    store asked at every request costs, as Kong's Redis policy or Envoy's global rate limit
    service are); the overshoot of a limit L the leased gateways share, offered 3 × L for a
    few windows; and the same throughput and latency with Redis stopped, each gateway
    counting alone against its half of every limit.

    First S7a, the target's like-for-like measure: S2 on one gateway on local counters and
    the same gateway on Redis leases, one after the other in each of `args.rounds` rounds
    (who goes first alternates), with the same warm-up."""
    s2 = [_s2_request(setup, port) for port in systems.SHARED_PORTS]
    result = {"single": []}
    redis = setup.start_redis()
    try:
        for r in range(args.rounds):
            pair = {}
            for counting in (("local", "leased") if r % 2 == 0 else ("leased", "local")):
                gateway = setup.start_single(counting)
                try:
                    probe(Case("S7a", "portico", counting, s2[0]))
                    pair[counting] = _split([gateway], s2[:1], rate, args, workdir, redis.pid if counting == "leased" else None)
                finally:
                    gateway.stop()
            result["single"].append(pair)
        for mode in ("exact", "leased"):
            gateways = setup.start_shared(mode)
            try:
                for request in s2:
                    probe(Case("S7", "portico", "shared", request))
                result[mode] = _split(gateways, s2, rate, args, workdir, redis.pid)
                if mode == "leased":
                    result["overshoot"] = _overshoot(args, workdir)
                    redis.terminate()
                    redis.wait()
                    result["without"] = _split(gateways, s2, rate, args, workdir, None)
            finally:
                for gateway in gateways:
                    gateway.stop()
    finally:
        if redis.poll() is None:
            redis.terminate()
            redis.wait()
    return result


def _s2_request(setup, port):
    """S2's request (the keys cycled by `cases`'s script), to the gateway on `port`."""
    return Request(f"http://127.0.0.1:{port}/key/", lua=os.path.join(setup.workdir, "keys.lua"),
                   url_pattern=rf"http://127.0.0.1:{port}/key/\?apikey=bench-key-0[0-9]{{4}}",
                   example=(f"http://127.0.0.1:{port}/key/?apikey={systems.api_key(42)}", []))


def _both(runs):
    """Run each of `runs` (functions) at once, in threads; their results in order."""
    results = [None] * len(runs)

    def run(i):
        results[i] = runs[i]()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(runs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


WARM_UP_SECONDS = 12
"""S7's warm-up on each gateway."""


def _split(gateways, requests, rate, args, workdir, redis_pid):
    """wrk at full speed on every gateway at once (the connections split between them), then
    oha at `rate` in all (split the same way); CPU of the gateways (and Redis's) per request."""
    each = max(1, args.connections // len(requests))
    # Warm up until every key has been hit a few times: the first hit of a key waits for its
    # first lease (a round trip); a running fleet holds them already. Each wrk thread cycles
    # the 10,000 keys from the first, so the warm-up must be long enough for every thread to
    # go round them: 4 s left keys cold on a slow machine (a Redis call per request measured).
    _both([lambda r=r: load.wrk(r, 1 if args.smoke else WARM_UP_SECONDS, each, workdir) for r in requests])
    pids = [g.pid for g in gateways]

    def measured(runs):
        before = [load.cpu_seconds(p) for p in pids]
        redis_before = load.cpu_seconds(redis_pid) if redis_pid else 0
        results = _both(runs)
        total = sum(r["requests"] for r in results)
        cpu = sum(load.cpu_seconds(p) - b for p, b in zip(pids, before))
        merged = {"requests": total, "failed": sum(r["failed"] for r in results),
                  "cpu_us": cpu * 1e6 / total if total else None,
                  "redis_cpu_us": (load.cpu_seconds(redis_pid) - redis_before) * 1e6 / total if redis_pid and total else None}
        if "rps" in results[0]:
            merged["rps"] = sum(r["rps"] for r in results)
        else:
            merged.update({p: max(r[p] for r in results) for p in ("p50", "p99", "p99.9")})
        return merged
    top = measured([lambda r=r: load.wrk(r, args.seconds, each, workdir) for r in requests])
    fixed = measured([lambda r=r: load.oha(r, rate / len(requests), args.seconds, each, workdir) for r in requests])
    return {"max": top, "fixed": fixed}


def _overshoot(args, workdir, windows=5):
    """A limit of L a second on `/shared/`, offered 1.5 × L on each gateway for `windows`
    seconds: what was admitted, over the L × windows that no more than L in any window allows
    (every admitted request falls in `windows` consecutive one-second windows)."""
    limit = systems.SHARED_LIMIT
    seconds = max(windows, args.seconds)
    requests = [Request(f"http://127.0.0.1:{port}/shared/") for port in systems.SHARED_PORTS]
    runs = _both([lambda r=r: load.oha(r, 1.5 * limit, seconds, max(1, args.connections // 2), workdir, statuses=True)
                  for r in requests])
    admitted = sum(r["statuses"].get(200, 0) for r in runs)
    refused = sum(r["statuses"].get(429, 0) for r in runs)
    other = sum(v for r in runs for k, v in r["statuses"].items() if k not in (200, 429)) + sum(sum(r["errors"].values()) for r in runs)
    return {"limit": limit, "seconds": seconds, "admitted": admitted, "refused": refused, "other": other,
            "ratio": admitted / (limit * seconds)}
