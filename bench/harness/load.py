"""Load generators and the gateway's CPU clock: wrk for maximum throughput, oha for fixed
rates with latency correction, both pinned to the load core; CPU time per request read from
/proc around a run, summed over the system's process tree (nginx serves from a child)."""
import json, os, subprocess

from . import tools

CLK_TCK = os.sysconf("SC_CLK_TCK")
LOAD_CORE = "1"


def process_tree(pid):
    """`pid` and its descendants."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, ValueError):
                pass
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def cpu_seconds(pid):
    """utime + stime of the process tree, in seconds."""
    ticks = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return ticks / CLK_TCK


def memory_kib(pid, field):
    """A /proc/PID/status field (VmRSS, VmHWM) summed over the process tree, in KiB."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


class Request:
    """What each load generator sends: a URL, headers, an optional body, and optionally a
    varying part (a wrk Lua script and an oha URL pattern that produce the same requests).
    `example` is one of the varying requests, as `(url, headers)`, for the correctness probe."""

    def __init__(self, url, headers=(), body=None, lua=None, url_pattern=None, example=None):
        self.url, self.headers, self.body, self.lua, self.url_pattern = url, list(headers), body, lua, url_pattern
        self.example = example or (url, self.headers)


def _body_file(request, workdir):
    """The request's body in a file, for wrk's script and oha's `-D`."""
    path = os.path.join(workdir, f"body-{abs(hash(request.body))}")
    with open(path, "wb") as f:
        f.write(request.body)
    return path


def _lua_for(request, workdir):
    if request.lua:
        return request.lua
    if request.body is None:
        return None
    body_file = _body_file(request, workdir)
    path = body_file + ".lua"
    with open(path, "w") as f:
        f.write(f'wrk.method = "POST"\nlocal f = io.open("{body_file}", "rb")\nwrk.body = f:read("*a")\nf:close()\n'
                'wrk.headers["content-type"] = "application/json"\n')
    return path


def wrk(request, seconds, connections, workdir):
    """Maximum throughput: requests/s, requests answered and failed (non-2xx, socket errors)."""
    cmd = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for h in request.headers:
        cmd += ["-H", h]
    script = _lua_for(request, workdir)
    if script:
        cmd += ["-s", script]
    out = subprocess.run(cmd + [request.url], capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    total = int(next(l for l in lines if "requests in" in l).split()[0])
    failed = sum(int(l.split()[-1]) for l in lines if "Non-2xx" in l)
    for l in lines:
        if l.strip().startswith("Socket errors"):
            failed += sum(int(part.split()[-1]) for part in l.split(":", 1)[1].split(","))
    return {"rps": total / seconds, "requests": total, "failed": failed}


def oha(request, rate, seconds, connections, workdir, insecure=False, statuses=False):
    """A fixed offered rate with latency correction: percentiles in ms, and failures (with
    `statuses`, also the count of each status, and a 429 is no failure)."""
    cmd = ["taskset", "-c", LOAD_CORE, tools.oha_binary(), "--no-tui", "--output-format", "json",
           "-z", f"{seconds}s", "-q", str(int(rate)), "--latency-correction", "-c", str(connections)]
    for h in request.headers:
        cmd += ["-H", h]
    if request.body is not None:
        cmd += ["-m", "POST", "-D", _body_file(request, workdir), "-T", "application/json"]
    if insecure:
        cmd.append("--insecure")
    if request.url_pattern:
        cmd += ["--rand-regex-url", request.url_pattern]
    else:
        cmd.append(request.url)
    out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    counts = {int(k): v for k, v in out.get("statusCodeDistribution", {}).items()}
    # Requests still in flight at the deadline are aborted by oha, not failed by the system.
    errors = {k: v for k, v in out.get("errorDistribution", {}).items() if "deadline" not in k}
    answered = (200, 429) if statuses else (200,)
    ok = sum(v for k, v in counts.items() if 200 <= k < 300)
    percentiles = out["latencyPercentiles"]
    result = {
        "requests": ok,
        "failed": sum(v for k, v in counts.items() if not 200 <= k < 300 and k not in answered) + sum(errors.values()),
        "errors": errors,
        "p50": percentiles["p50"] * 1000, "p99": percentiles["p99"] * 1000, "p99.9": percentiles["p99.9"] * 1000,
    }
    if statuses:
        result["statuses"] = counts
    return result
