"""The systems under test and how each one is configured and started: the backend, direct
access, the minimal hyper proxy, Portico, nginx, Envoy and Pingora. Every system under test
runs pinned to core 0 with one worker; the backend runs on core 1 with the load."""
import json, os, signal, socket, subprocess, time

from . import load, tools, tokens

SUT_CORE = "0"
BACKEND = "127.0.0.1:18081"
PORTS = {"minimal hyper proxy": 18082, "portico": 18083, "nginx": 18084, "envoy": 18085, "pingora": 18086}
TLS_PORTS = {"portico": 18443, "nginx": 18444}
# Another build of Portico (`--baseline`), run in turn with the one measured, on its ports
# and configuration: a before/after comparison within each round.
BASELINE = "portico baseline"
ENVOY_AUTH_PORT = 18087
# S2 the Envoy way: api_key_auth + local_ratelimit with a descriptor per application.
ENVOY_KEY_PORT = 18088
# S4 the Envoy way: its Lua filter with a JSON library in Lua (dkjson, from Debian).
ENVOY_TRANSFORM_PORT = 18089
# S7: two gateways sharing their counters in a Redis of the harness's own.
SHARED_PORTS = [18091, 18092]
REDIS_PORT = 18093
# S7's overshoot: a limit the two gateways share, in requests per second.
SHARED_LIMIT = 1000
CONSUMERS = 10_000


# S4's transform (Portico's json-transform policy, bench/policies/json-transform) in Envoy's
# Lua filter: the same edits of the JSON body and of the headers, a 400 for a body that is not
# a JSON object. `setBytes` also sets the request's content-length.
ENVOY_TRANSFORM_LUA = """
package.path = "DKJSON/?.lua;" .. package.path
local json = require("dkjson")

function envoy_on_request(handle)
  local body = handle:body()
  local object = body and json.decode(body:getBytes(0, body:length()))
  if type(object) ~= "table" then
    handle:respond({[":status"] = "400"}, "the body must be a JSON object")
    return
  end
  object.card = nil
  if object.qty ~= nil then
    object.quantity, object.qty = object.qty, nil
  end
  object.channel = "portico"
  body:setBytes(json.encode(object))
  local headers = handle:headers()
  headers:replace("x-transformed", "json")
  headers:remove("x-debug")
end
"""


def api_key(i):
    return f"bench-key-{i:05d}"


def wait_port(port, timeout=120, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            return
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port} after {timeout}s")


class Process:
    """A started system: its process, its ports, stopped with SIGTERM."""

    def __init__(self, name, cmd, ports, log):
        self.name, self.ports = name, ports
        self.log = open(log, "ab")
        self.proc = subprocess.Popen(["taskset", "-c", SUT_CORE, *cmd], stdout=self.log, stderr=self.log)
        for port in ports:
            wait_port(port, proc=self.proc)
        if self.proc.poll() is not None:
            with open(log, errors="replace") as f:
                raise SystemExit(f"{name} exited at start ({log}):\n{f.read()[-2000:]}")

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class Setup:
    """Everything written once per run: keys, tokens, certificates and the configurations."""

    def __init__(self, workdir, profile, portico, policy, miss_tokens, baseline=None):
        self.workdir, self.profile, self.portico, self.baseline = workdir, profile, portico, baseline
        self.signer = tokens.Signer()
        self.token = {alg: self.signer.token(alg, "hit") for alg in ("ES256", "RS256")}
        self.token_files = {alg: self.signer.token_file(alg, miss_tokens, workdir) for alg in ("ES256", "RS256")}
        self.cert, self.key = self._certificate()
        self.policy = policy
        self.swap_module = os.path.join(workdir, "swap.wasm")
        with open(policy, "rb") as f:
            self.policy_bytes = f.read()
        self.write_swap_module(0)
        self.portico_config = self._portico_config()
        self.nginx_config = self._nginx_config()
        self.envoy_config = self._envoy_config()

    def _certificate(self):
        cert, key = os.path.join(self.workdir, "cert.pem"), os.path.join(self.workdir, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
        return cert, key

    def write_swap_module(self, serial):
        """The S4 policy with a custom section naming `serial` appended: new code each time
        (a new digest, so the gateway compiles it), same behaviour."""
        name = b"portico-bench-swap"
        payload = bytes([len(name)]) + name + serial.to_bytes(8, "little")
        section = b"\x00" + _leb128(len(payload)) + payload
        tmp = self.swap_module + ".tmp"
        with open(tmp, "wb") as f:
            f.write(self.policy_bytes + section)
        os.replace(tmp, self.swap_module)

    def _portico_config(self):
        backend = f"http://{BACKEND}"
        throttle = {"policy": "throttle", "config": {"limits": [{"requests": 1_000_000_000, "per": "1h"}]}}
        # Authentication with the ceiling as its deadline: the benchmark measures speed, and a
        # first (uncached) token verification on the loaded, pinned core can pass the 50 ms
        # default (seen once in CI: "deadline exceeded" right after S2's full-speed run).
        key_auth = lambda config: {"policy": "key-auth", "config": config, "timeout": "1s"}
        transform = {"remove": ["card"], "rename": {"qty": "quantity"}, "add": {"channel": "portico"},
                     "set_headers": {"x-transformed": "json"}, "remove_headers": ["x-debug"]}
        config = {
            "listeners": [
                {"address": f"127.0.0.1:{PORTS['portico']}"},
                {"address": f"127.0.0.1:{TLS_PORTS['portico']}", "tls": {"certificates": [{"cert": self.cert, "key": self.key}]}},
            ],
            "upstream_networks": {"allow": ["127.0.0.1"]},
            "consumers": [{"name": tokens.APPLICATION, "api_keys": ["bench-app-key"]}]
                         + [{"name": f"app-{i:05d}", "api_keys": [api_key(i)]} for i in range(CONSUMERS)],
            "jwt_issuers": [{"issuer": tokens.ISSUER, "audiences": [tokens.AUDIENCE], "algorithms": ["ES256", "RS256"],
                             "jwks": self.signer.jwks()}],
            "modules": {"json-transform": {"path": self.policy}, "swap": {"path": self.swap_module}},
            "apis": [
                {"name": "pass", "context": "/pass", "upstream": {"endpoints": [backend]}},
                {"name": "key", "context": "/key", "upstream": {"endpoints": [backend]},
                 "policies": [key_auth({"api_key": {"header": "apikey", "query": "apikey"}}), throttle]},
                {"name": "jwt", "context": "/jwt", "upstream": {"endpoints": [backend]},
                 "policies": [key_auth({"api_key": False}), throttle]},
                {"name": "transform", "context": "/transform", "upstream": {"endpoints": [backend]},
                 "policies": [{"policy": "json-transform", "config": transform}]},
                {"name": "swap", "context": "/swap", "upstream": {"endpoints": [backend]},
                 "policies": [{"policy": "swap", "config": transform}]},
                {"name": "all", "context": "/all", "upstream": {"endpoints": [backend]},
                 "policies": [key_auth({}), throttle,
                              {"policy": "headers", "config": {"request": {"set": {"x-gateway": "portico"}}}}]},
            ],
        }
        path = os.path.join(self.workdir, "portico.json")
        with open(path, "w") as f:
            json.dump(config, f)
        # S7: the same APIs on two gateways counting in one Redis (a fleet of two), on leases
        # or a round trip per hit, plus one whose limit they share and that the overshoot run
        # offers three times it.
        self.shared_configs = {}
        for mode in ("leased", "exact"):
            self.shared_configs[mode] = []
            for port in SHARED_PORTS:
                shared = dict(config, listeners=[{"address": f"127.0.0.1:{port}"}], counters=_on_redis(mode, fleet_size=2))
                shared["apis"] = config["apis"] + [
                    {"name": "shared", "context": "/shared", "upstream": {"endpoints": [backend]},
                     "policies": [{"policy": "throttle", "config": {"key_by": "api", "limits": [{"requests": SHARED_LIMIT, "per": "1s"}]}}]}]
                shared_path = os.path.join(self.workdir, f"portico-shared-{mode}-{port}.json")
                with open(shared_path, "w") as f:
                    json.dump(shared, f)
                self.shared_configs[mode].append(shared_path)
        # S7a: one gateway with S2's APIs on local counters, and the same on Redis leases.
        self.single_configs = {}
        for counting in ("local", "leased"):
            single = dict(config, listeners=[{"address": f"127.0.0.1:{SHARED_PORTS[0]}"}])
            if counting == "leased":
                single["counters"] = _on_redis("leased", fleet_size=1)
            single_path = os.path.join(self.workdir, f"portico-single-{counting}.json")
            with open(single_path, "w") as f:
                json.dump(single, f)
            self.single_configs[counting] = single_path
        return path

    def _nginx_config(self):
        w = self.workdir
        # S2 the nginx way: the API keys in a `map` (an exact-match hash table), and a
        # `limit_req` zone keyed per application at Portico's S2 limit (10^9 an hour).
        keys = os.path.join(w, "nginx-keys.map")
        with open(keys, "w") as f:
            f.writelines(f'"{api_key(i)}" app-{i:05d};\n' for i in range(CONSUMERS))
        text = f"""worker_processes 1;
daemon off;
pid {w}/nginx.pid;
error_log {w}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {w}/nginx-body;
    proxy_temp_path {w}/nginx-proxy;
    upstream backend {{ server {BACKEND}; keepalive 64; }}
    map_hash_max_size 32768;
    map $arg_apikey $application {{ default ""; include {keys}; }}
    limit_req_zone $application zone=per_application:16m rate=277777r/s;
    server {{
        listen 127.0.0.1:{PORTS['nginx']} backlog=4096;
        listen 127.0.0.1:{TLS_PORTS['nginx']} ssl backlog=4096;
        ssl_certificate {self.cert};
        ssl_certificate_key {self.key};
        keepalive_requests 1000000;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location /key/ {{
            if ($application = "") {{ return 401; }}
            limit_req zone=per_application burst=1000 nodelay;
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""
        path = os.path.join(w, "nginx.conf")
        with open(path, "w") as f:
            f.write(text)
        return path

    def _envoy_config(self):
        """Passthrough on one listener; jwt_authn (with its cache) + local_ratelimit on another;
        S2 on a third: api_key_auth (the 10,000 keys from the query) + local_ratelimit with
        one descriptor per application at Portico's S2 limit (10^9 an hour)."""
        def listener(name, port, filters):
            return {"name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                    "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": name, "codec_type": "HTTP1",
                        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"],
                                                            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]}]},
                        "http_filters": filters + [{"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}
        percent = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}
        auth = [
            {"name": "envoy.filters.http.jwt_authn", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                "providers": {"bench": {"issuer": tokens.ISSUER, "audiences": [tokens.AUDIENCE],
                                        "local_jwks": {"inline_string": json.dumps(self.signer.jwks())},
                                        "forward": True, "jwt_cache_config": {"jwt_cache_size": 10000}}},
                "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}]}},
            {"name": "envoy.filters.http.local_ratelimit", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
                "stat_prefix": "rate",
                "token_bucket": {"max_tokens": 1_000_000_000, "tokens_per_fill": 1_000_000_000, "fill_interval": "3600s"},
                "filter_enabled": {"runtime_key": "rate_enabled", **percent},
                "filter_enforced": {"runtime_key": "rate_enforced", **percent}}},
        ]
        bucket = {"max_tokens": 1_000_000_000, "tokens_per_fill": 1_000_000_000, "fill_interval": "3600s"}
        keys = [
            {"name": "envoy.filters.http.api_key_auth", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth",
                "credentials": [{"key": api_key(i), "client": f"app-{i:05d}"} for i in range(CONSUMERS)],
                "key_sources": [{"query": "apikey"}], "forwarding": {"header": "x-client-id"}}},
            {"name": "envoy.filters.http.local_ratelimit", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
                "stat_prefix": "keys", "token_bucket": bucket,
                "filter_enabled": {"runtime_key": "keys_enabled", **percent},
                "filter_enforced": {"runtime_key": "keys_enforced", **percent},
                "rate_limits": [{"actions": [{"request_headers": {"header_name": "x-client-id", "descriptor_key": "client"}}]}],
                "descriptors": [{"entries": [{"key": "client", "value": f"app-{i:05d}"}], "token_bucket": bucket}
                                for i in range(CONSUMERS)]}},
        ]
        transform = [{"name": "envoy.filters.http.lua", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": ENVOY_TRANSFORM_LUA.replace("DKJSON", tools.dkjson_folder())}}}]
        host, port = BACKEND.split(":")
        config = {
            "static_resources": {
                "listeners": [listener("pass", PORTS["envoy"], []), listener("auth", ENVOY_AUTH_PORT, auth),
                              listener("keys", ENVOY_KEY_PORT, keys), listener("transform", ENVOY_TRANSFORM_PORT, transform)],
                "clusters": [{"name": "backend", "type": "STATIC", "connect_timeout": "1s",
                              "load_assignment": {"cluster_name": "backend", "endpoints": [{"lb_endpoints": [
                                  {"endpoint": {"address": {"socket_address": {"address": host, "port_value": int(port)}}}}]}]}}],
            }
        }
        path = os.path.join(self.workdir, "envoy.json")
        with open(path, "w") as f:
            json.dump(config, f)
        return path

    def start(self, name):
        """Start a system under test; `None` for direct access to the backend."""
        log = os.path.join(self.workdir, f"{name.replace(' ', '-')}.log")
        if name == "direct":
            return None
        if name == "minimal hyper proxy":
            cmd = [tools.binary(self.profile, "minimal-proxy"), "--workers", "1",
                   "--listen", f"127.0.0.1:{PORTS[name]}", "--upstream", f"http://{BACKEND}"]
            return Process(name, cmd, [PORTS[name]], log)
        if name in ("portico", BASELINE):
            binary = self.portico if name == "portico" else self.baseline
            cmd = [binary, "--workers", "1", "--log", "warn", "--access-log", "off", "serve", "--config", self.portico_config]
            return Process(name, cmd, [PORTS["portico"], TLS_PORTS["portico"]], log)
        if name == "nginx":
            cmd = ["nginx", "-c", self.nginx_config, "-p", self.workdir, "-e", os.path.join(self.workdir, "nginx-error.log")]
            return Process(name, cmd, [PORTS[name], TLS_PORTS[name]], log)
        if name == "envoy":
            cmd = [tools.envoy_binary(), "-c", self.envoy_config, "--concurrency", "1", "--log-level", "error",
                   "--disable-hot-restart"]
            return Process(name, cmd, [PORTS[name], ENVOY_AUTH_PORT, ENVOY_KEY_PORT, ENVOY_TRANSFORM_PORT], log)
        if name == "pingora":
            cmd = [tools.binary(self.profile, "pingora-peer"), f"127.0.0.1:{PORTS[name]}", BACKEND]
            return Process(name, cmd, [PORTS[name]], log)
        raise ValueError(name)

    def start_redis(self):
        """S7's Redis, on the load's core (its CPU is reported apart), keeping nothing on disk."""
        log = os.path.join(self.workdir, "redis.log")
        proc = subprocess.Popen(["taskset", "-c", load.LOAD_CORE, "redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1",
                                 "--save", "", "--appendonly", "no", "--dir", self.workdir],
                                stdout=open(log, "ab"), stderr=subprocess.STDOUT)
        wait_port(REDIS_PORT, proc=proc)
        return proc

    def start_shared(self, mode):
        """S7's two gateways counting in `mode` (`leased` or `exact`), both on the core under test."""
        return [self._gateway(f"portico-shared-{port}", path, port, f"portico-shared-{mode}-{port}.log")
                for port, path in zip(SHARED_PORTS, self.shared_configs[mode])]

    def start_single(self, counting):
        """S7a's one gateway counting `local`ly or on Redis `leased`, on the core under test."""
        return self._gateway(f"portico-single-{counting}", self.single_configs[counting], SHARED_PORTS[0],
                             f"portico-single-{counting}.log")

    def _gateway(self, name, config, port, log):
        """A Portico of S7 or S7a: one worker, warnings only, serving `config` on `port`."""
        return Process(name, [self.portico, "--workers", "1", "--log", "warn", "--access-log", "off", "serve", "--config", config], [port],
                       os.path.join(self.workdir, log))

    def start_backend(self):
        log = os.path.join(self.workdir, "backend.log")
        proc = subprocess.Popen(["taskset", "-c", load.LOAD_CORE, tools.binary(self.profile, "bench-backend"), "--listen", BACKEND],
                                stdout=open(log, "ab"), stderr=subprocess.STDOUT)
        wait_port(int(BACKEND.split(":")[1]))
        return proc


def _on_redis(mode, fleet_size):
    """S7's counters: the harness's Redis, in `mode`, for a fleet of `fleet_size`."""
    return {"redis": {"url": f"redis://127.0.0.1:{REDIS_PORT}/", "mode": mode, "fleet_size": fleet_size}}


def _leb128(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
