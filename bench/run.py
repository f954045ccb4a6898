#!/usr/bin/env python3
"""Portico side by side with a minimal hyper reverse proxy, nginx, Envoy, Pingora and
direct access, following ../shared/BENCHMARKS.md. One command builds everything in
release, installs the peers it lacks, runs scenarios S1–S6 and the memory figure in
interleaved rounds, then S7a (S2 on one gateway, on local counters and on Redis leases)
and S7 (S2 on two gateways sharing their counters in Redis), and writes a markdown report:

    python3 bench/run.py                      # the full run (about 20 minutes)
    python3 bench/run.py --rounds 5 --seconds 8
    python3 bench/run.py --smoke              # seconds of load on debug builds: every system
                                              # must answer correctly; no speed is judged
    python3 bench/run.py --only portico --cases 'S1|S3' --baseline /tmp/portico-before
                                              # a change against the build before it, in turn
                                              # in every round (the report's last table)

The system under test runs on core 0 with one worker; the backend and the load
generators (wrk, oha) on core 1.
"""
import argparse, datetime, os, platform, re, resource, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import load, report, scenarios, systems, tools  # noqa: E402

ORDER = ["direct", "minimal hyper proxy", "nginx", "envoy", "pingora", "portico"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5, help="length of each measured run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--swap-seconds", type=int, default=15, help="length of each S5 phase")
    parser.add_argument("--memory-connections", type=int, default=1000)
    parser.add_argument("--only", nargs="*", choices=ORDER, help="run these systems only")
    parser.add_argument("--smoke", action="store_true", help="a quick check that every system answers (debug build)")
    parser.add_argument("--prepare", action="store_true", help="install the tools and build the peers, then stop")
    parser.add_argument("--portico", help="a built portico binary to measure (default: build it in release)")
    parser.add_argument("--policy", help="the built S4 policy component (default: build it)")
    parser.add_argument("--out", default=os.path.join(tools.TARGET, "bench-report.md"))
    parser.add_argument("--baseline", help="another portico binary (e.g. the build before a change), run in turn with "
                        "the measured one on every Portico case; the report sets each case against it within each round")
    parser.add_argument("--cases", help="run only the cases whose name matches this regular expression (e.g. 'S1|S3'); "
                        "S5, S7 and the memory figure then run only if it matches them")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.seconds, args.swap_seconds, args.memory_connections = 1, 1, 3, 50
    profile = "debug" if args.smoke else "release"
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))

    chosen = list(args.only or ORDER)
    if args.baseline and "portico" in chosen:
        chosen.insert(chosen.index("portico") + 1, systems.BASELINE)
    try:
        pattern = re.compile(args.cases) if args.cases else None
    except re.error as e:
        parser.error(f"--cases {args.cases!r} is not a regular expression: {e}")
    wanted = lambda name: pattern is None or pattern.search(name) is not None
    tools.install()
    tools.build_peers(profile, pingora="pingora" in chosen)
    if args.prepare:
        return
    portico = os.path.abspath(args.portico) if args.portico else tools.build_portico(profile)
    policy = os.path.abspath(args.policy) if args.policy else tools.build_policy(portico)
    workdir = tempfile.mkdtemp(prefix="portico-bench-")
    baseline = os.path.abspath(args.baseline) if args.baseline else None
    setup = systems.Setup(workdir, profile, portico, policy, miss_tokens=200 if args.smoke else 100_000, baseline=baseline)
    every_case = scenarios.cases(setup)
    by_system = {system: [c for c in cases if wanted(c.key)] for system, cases in every_case.items()}
    backend = setup.start_backend()
    try:
        # The fixed rates are fractions of the minimal proxy's maximum, as the method asks
        # (measured on its first case even when --cases leaves it out).
        calibration = setup.start("minimal hyper proxy")
        try:
            top = load.wrk(every_case["minimal hyper proxy"][0].request, max(1, args.seconds // 2), args.connections, workdir)["rps"]
        finally:
            calibration.stop()
        rates = {"25%": top * 0.25, "50%": top * 0.50, "75%": top * 0.75}
        if args.smoke:
            rates = {"25%": min(rates["25%"], 200.0)}
        rounds = []
        for r in range(args.rounds):
            order = chosen[r % len(chosen):] + chosen[:r % len(chosen)]  # rotate who goes first
            results = {}
            for system in (s for s in order if by_system[s]):
                proc = setup.start(system)
                try:
                    for case in by_system[system]:
                        scenarios.probe(case)
                        results[case.key] = scenarios.measure(case, proc.pid if proc else None, rates, args, workdir)
                        m = results[case.key]["max"]
                        print(f"round {r + 1} {case.key}: {m['rps']:,.0f} req/s, {m.get('cpu_us', float('nan')):.1f} µs CPU/req, "
                              f"{m['failed']} failed", file=sys.stderr, flush=True)
                finally:
                    if proc:
                        proc.stop()
            rounds.append(results)
        swap = shared = None
        if "portico" in chosen and wanted("S5"):
            swap = scenarios.hot_swap(setup, args, workdir, os.path.join(workdir, "portico-swap.log"))
            print(f"S5: {swap['swaps']} swaps, {swap['swapping']['failed']} failed", file=sys.stderr)
        if "portico" in chosen and wanted("S7"):
            shared = scenarios.shared_counters(setup, args, workdir, next(iter(rates.values())))
            for pair in shared["single"]:
                print(f"S7a: {pair['local']['max']['rps']:,.0f} req/s on local counters, "
                      f"{pair['leased']['max']['rps']:,.0f} on Redis leases", file=sys.stderr)
            print(f"S7: {shared['leased']['max']['rps']:,.0f} req/s on leases, {shared['exact']['max']['rps']:,.0f} exact, "
                  f"{shared['without']['max']['rps']:,.0f} without Redis; "
                  f"admitted {shared['overshoot']['ratio']:.3f} of the shared limit", file=sys.stderr)
        memory = {s: scenarios.peak_memory(setup, s, args.memory_connections) for s in chosen if s != "direct" and wanted("memory")}
    finally:
        backend.terminate()

    cases = [c for s in chosen for c in by_system[s]]
    chosen_args = (f"{' --smoke' if args.smoke else ''}{' --only ' + ' '.join(repr(s) for s in args.only) if args.only else ''}"
                   f"{' --cases ' + repr(args.cases) if args.cases else ''}{' --baseline ' + args.baseline if args.baseline else ''}")
    header = (f"## {datetime.date.today()}: `python3 bench/run.py{chosen_args} --rounds {args.rounds} "
              f"--seconds {args.seconds}`\n\n{platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
              f"{profile} build; {args.connections} connections; system under test on core 0, backend and load on core 1.")
    text = report.markdown(rounds, cases, rates, swap, memory, header, shared)
    if baseline:
        text += report.versus_baseline(rounds, cases, systems.BASELINE, baseline)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)
    if args.smoke:
        smoke_check(rounds, cases, swap, memory, args, shared)


def smoke_check(rounds, cases, swap, memory, args, shared):
    """The smoke run judges no speed: every case must have been answered, without failures."""
    problems = []
    for case in cases:
        result = rounds[0].get(case.key)
        runs = list(result.values()) if result else []
        if not runs or any(not run["requests"] or run["failed"] for run in runs):
            problems.append(f"{case.key}: {runs}")
    if swap and (swap["swapping"]["failed"] or not swap["swaps"] or not swap["swapping"]["requests"]):
        problems.append(f"S5: {swap['swaps']} swaps, {swap['swapping']['failed']} failed")
    if shared:
        runs = [shared[phase][kind] for phase in ("leased", "exact", "without") for kind in ("max", "fixed")]
        runs += [pair[counting][kind] for pair in shared["single"] for counting in ("local", "leased") for kind in ("max", "fixed")]
        if any(not run["requests"] or run["failed"] for run in runs) or shared["overshoot"]["other"] or not shared["overshoot"]["admitted"]:
            problems.append(f"S7: {shared}")
    for system, m in (memory or {}).items():
        if m["answered"] != args.memory_connections:
            problems.append(f"memory {system}: {m['answered']} of {args.memory_connections} connections answered")
    if problems:
        sys.exit("smoke run failed:\n  " + "\n  ".join(problems))
    print("smoke run: every system answered", file=sys.stderr)


if __name__ == "__main__":
    main()
