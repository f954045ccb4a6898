"""The markdown report: per-case figures (median and range over rounds) and the ratios
against the targets of ../shared/BENCHMARKS.md, each ratio taken within its round."""
import statistics

# (what, case, baseline, target or None)
RATIOS = [
    ("S1 Portico ÷ minimal hyper proxy", "S1 portico", "S1 minimal hyper proxy", 0.90),
    ("S1 Portico ÷ nginx", "S1 portico", "S1 nginx", 1.0),
    ("S1 Portico ÷ Pingora", "S1 portico", "S1 pingora", None),
    ("S1 Portico ÷ Envoy", "S1 portico", "S1 envoy", None),
    ("S2 API key + rate limit ÷ S1", "S2 portico API key + rate limit, 10k keys", "S1 portico", 0.90),
    ("S2 nginx API key map + limit_req ÷ nginx passthrough", "S2 nginx API key map + limit_req, 10k keys", "S1 nginx", None),
    ("S2 Envoy api_key_auth + local_ratelimit ÷ Envoy passthrough", "S2 envoy api_key_auth + local_ratelimit, 10k keys", "S1 envoy", None),
    ("S3 JWT ES256 hit + rate limit ÷ S1", "S3 portico JWT ES256 hit", "S1 portico", 0.85),
    ("S3 JWT RS256 hit + rate limit ÷ S1", "S3 portico JWT RS256 hit", "S1 portico", 0.85),
    ("S3 JWT ES256 all misses ÷ S1", "S3 portico JWT ES256 miss", "S1 portico", None),
    ("S3 JWT RS256 all misses ÷ S1", "S3 portico JWT RS256 miss", "S1 portico", None),
    ("S3 Envoy JWT ES256 hit ÷ Envoy passthrough", "S3 envoy JWT ES256 hit", "S1 envoy", None),
    ("S3 Envoy JWT RS256 hit ÷ Envoy passthrough", "S3 envoy JWT RS256 hit", "S1 envoy", None),
    ("S4 JSON transform 1 KiB ÷ S1", "S4 portico JSON transform 1 KiB", "S1 portico", 0.80),
    ("S4 JSON transform 10 KiB ÷ S1", "S4 portico JSON transform 10 KiB", "S1 portico", 0.60),
    ("S4 JSON transform 1 KiB ÷ passthrough POST 1 KiB", "S4 portico JSON transform 1 KiB", "S4 portico passthrough POST 1 KiB", None),
    ("S4 JSON transform 10 KiB ÷ passthrough POST 10 KiB", "S4 portico JSON transform 10 KiB", "S4 portico passthrough POST 10 KiB", None),
    ("S4 Envoy Lua JSON transform 1 KiB ÷ Envoy passthrough", "S4 envoy Lua JSON transform 1 KiB", "S1 envoy", None),
    ("S4 Envoy Lua JSON transform 10 KiB ÷ Envoy passthrough", "S4 envoy Lua JSON transform 10 KiB", "S1 envoy", None),
    ("S4 Envoy Lua JSON transform 1 KiB ÷ Envoy passthrough POST 1 KiB", "S4 envoy Lua JSON transform 1 KiB", "S4 envoy passthrough POST 1 KiB", None),
    ("S4 Envoy Lua JSON transform 10 KiB ÷ Envoy passthrough POST 10 KiB", "S4 envoy Lua JSON transform 10 KiB", "S4 envoy passthrough POST 10 KiB", None),
    ("S6 Portico TLS ÷ S1", "S6 portico TLS", "S1 portico", 0.75),
    ("S6 nginx TLS ÷ nginx", "S6 nginx TLS", "S1 nginx", None),
]


def spread(values, fmt="{:.2f}"):
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def cpu(result):
    """CPU µs per request: at the first fixed rate when measured, else at full speed."""
    fixed = [v for k, v in result.items() if k != "max" and "cpu_us" in v]
    return fixed[0]["cpu_us"] if fixed else result["max"].get("cpu_us")


S2 = "S2 portico API key + rate limit, 10k keys"


def markdown(rounds, cases, rates, swap, memory, header, shared=None):
    out = [header, ""]
    first_rate = next(iter(rates))
    out += [f"### Every case ({len(rounds)} rounds; median, range)", "",
            f"Max req/s from wrk; CPU per request, p50, p99 and p99.9 from oha at {int(rates[first_rate]):,} req/s "
            f"({first_rate} of the minimal proxy's maximum; all-miss JWT cases and Envoy's Lua transform, whose capacity is below that rate: CPU at full speed, no fixed-rate run).", "",
            "| case | max req/s | failed | CPU µs/req | p50 ms | p99 ms | p99.9 ms |", "|---|---|---|---|---|---|---|"]
    for case in cases:
        results = [r[case.key] for r in rounds if case.key in r]
        fixed = [r.get(first_rate) for r in results]
        failed = sum(r["max"]["failed"] + sum(v["failed"] for k, v in r.items() if k != "max") for r in results)
        out.append(f"| {case.key} | {spread([r['max']['rps'] for r in results], '{:,.0f}')} | {failed} | "
                   f"{spread([cpu(r) for r in results], '{:.1f}')} | "
                   + " | ".join(spread([f[p] if f else None for f in fixed], "{:.3f}") for p in ("p50", "p99", "p99.9")) + " |")
    ladder = [c for c in cases if c.ladder]
    out += ["", "### S1 latency at fixed rates (median of rounds: p50 / p99 / p99.9 ms)", "",
            "| system | " + " | ".join(f"{name} ({int(rate):,}/s)" for name, rate in rates.items()) + " |",
            "|---|" + "---|" * len(rates)]
    for case in ladder:
        cells = []
        for name in rates:
            runs = [r[case.key][name] for r in rounds if case.key in r and name in r[case.key]]
            cells.append(" / ".join(f"{statistics.median(run[p] for run in runs):.2f}" for p in ("p50", "p99", "p99.9")) if runs else "—")
        out.append(f"| {case.label} | " + " | ".join(cells) + " |")
    out += ["", "### Ratios, each within its round (median, range)", "",
            "Capacity per core is the inverse ratio of CPU time per request; throughput is wrk's maximum.", "",
            "| ratio | capacity per core | throughput | target | met |", "|---|---|---|---|---|"]
    for what, case, base, target in RATIOS:
        pairs = [(r[case], r[base]) for r in rounds if case in r and base in r]
        capacity = [cpu(b) / cpu(c) for c, b in pairs if cpu(c) and cpu(b)]
        throughput = [c["max"]["rps"] / b["max"]["rps"] for c, b in pairs if b["max"]["rps"]]
        met = "—" if target is None or not capacity else ("yes" if statistics.median(capacity) >= target else "**no**")
        out.append(f"| {what} | {spread(capacity)} | {spread(throughput)} | {'≥ %.2f' % target if target else '—'} | {met} |")
    if swap:
        s, w = swap["steady"], swap["swapping"]
        out += ["", "### S5 policy hot-swap under load", "",
                f"{int(swap['rate']):,} req/s (half of Portico's maximum on `/swap`), a new module written every second, {swap['swaps']} applied.", "",
                "| phase | requests | failed | p50 ms | p99 ms | p99.9 ms |", "|---|---|---|---|---|---|",
                f"| steady | {s['requests']:,} | {s['failed']} | {s['p50']:.2f} | {s['p99']:.2f} | {s['p99.9']:.2f} |",
                f"| swapping | {w['requests']:,} | {w['failed']} | {w['p50']:.2f} | {w['p99']:.2f} | {w['p99.9']:.2f} |",
                "", f"p99.9 swapping ÷ steady: {w['p99.9'] / s['p99.9']:.2f} (target ≤ 1.5); failed: {w['failed']} (target 0)."]
    if shared:
        out += s7(rounds, rates, shared)
    if memory:
        out += ["", "### Memory at open connections", "",
                "| system | connections answered | RSS MiB | peak RSS MiB |", "|---|---|---|---|"]
        for system, m in memory.items():
            out.append(f"| {system} | {m['answered']} | {m['rss_kib'] / 1024:.1f} | {m['hwm_kib'] / 1024:.1f} |")
    return "\n".join(out) + "\n"


def s7(rounds, rates, shared):
    """S7: S2 on two gateways sharing their counters in Redis, against S2 on local counters
    (the median of this run's rounds), and with Redis stopped; the shared limit's overshoot."""
    first_rate = next(iter(rates))
    local = [r[S2] for r in rounds if S2 in r]
    out = ["", "### S7 shared rate counters (two gateways, Redis)", "",
           f"S2's requests; the two gateways share core 0, the load is split between them. Latency from oha at "
           f"{int(rates[first_rate]):,} req/s in all (half to each; the worse gateway's percentile).", "",
           "| setup | max req/s | CPU µs/req (gateways) | Redis CPU µs/req | p50 ms | p99 ms | p99.9 ms | failed |",
           "|---|---|---|---|---|---|---|---|"]
    if local:
        fixed = [r[first_rate] for r in local if first_rate in r]
        out.append(f"| S2, one gateway, local counters ({len(local)} rounds) | {spread([r['max']['rps'] for r in local], '{:,.0f}')} | "
                   f"{spread([cpu(r) for r in local], '{:.1f}')} | — | "
                   + " | ".join(spread([f[p] for f in fixed], "{:.3f}") for p in ("p50", "p99", "p99.9")) + " | — |")
    phases = (("S7, two gateways on Redis, leases", "leased"), ("S7, two gateways on Redis, a round trip per hit", "exact"),
              ("S7, Redis stopped (each counts its half)", "without"))
    for label, phase in phases:
        run = shared[phase]
        top, fixed = run["max"], run["fixed"]
        redis_cpu = f"{fixed['redis_cpu_us']:.1f}" if fixed.get("redis_cpu_us") is not None else "—"
        out.append(f"| {label} | {top['rps']:,.0f} | {fixed['cpu_us']:.1f} | {redis_cpu} | {fixed['p50']:.3f} | {fixed['p99']:.3f} | "
                   f"{fixed['p99.9']:.3f} | {top['failed'] + fixed['failed']} |")
    if local:
        # Two gateways on one core cost more per request than one, whatever they count on:
        # each is set against S2 on one gateway, and against the same two on local counters
        # (Redis stopped: each counts alone, as without Redis).
        base_cpu = statistics.median(cpu(r) for r in local)
        base_rps = statistics.median(r["max"]["rps"] for r in local)
        alone = shared["without"]
        out += ["", "| ratio | capacity per core | throughput | target | met |", "|---|---|---|---|---|"]
        for label, phase in phases[:2]:
            run = shared[phase]
            for base, (b_cpu, b_rps) in (("S2 on one gateway", (base_cpu, base_rps)),
                                         ("the two gateways on local counters", (alone["fixed"]["cpu_us"], alone["max"]["rps"]))):
                capacity = b_cpu / run["fixed"]["cpu_us"]
                met = "yes" if capacity >= 0.9 else "**no**"
                out.append(f"| {label} ÷ {base} | {capacity:.2f} | {run['max']['rps'] / b_rps:.2f} | ≥ 0.90 | {met} |")
    out += s7a(shared["single"])
    o = shared["overshoot"]
    out += ["", f"Overshoot: a limit of {o['limit']:,} a second on both gateways, offered {3 * o['limit']:,} a second for "
            f"{o['seconds']} s: {o['admitted']:,} admitted, {o['refused']:,} refused (429), {o['other']} otherwise; admitted ÷ "
            f"(L × {o['seconds']} windows) = {o['ratio']:.3f} (overshoot {max(0.0, o['ratio'] - 1) * 100:.1f} %, target ≤ 1 %)."]
    return out


def s7a(pairs):
    """S7a: S2 on one gateway on Redis leases against the same gateway on local counters, the
    ratios taken within each round: the issue's target (≥ 0.9× local) judged like for like."""
    out = ["", "### S7a one gateway: Redis leases ÷ local counters", "",
           "S2's requests on one gateway, with its counters in the process and then on Redis leases, in turn in "
           "each round, after the same warm-up. Capacity per core: local CPU µs/req ÷ leased CPU µs/req at the first "
           "fixed rate.", "",
           "| counting | max req/s | CPU µs/req | Redis CPU µs/req | p50 ms | p99 ms | p99.9 ms | failed |",
           "|---|---|---|---|---|---|---|---|"]
    for label, counting in (("local counters", "local"), ("Redis leases", "leased")):
        runs = [pair[counting] for pair in pairs]
        out.append(f"| {label} ({len(runs)} rounds) | {spread([r['max']['rps'] for r in runs], '{:,.0f}')} | "
                   f"{spread([r['fixed']['cpu_us'] for r in runs], '{:.1f}')} | "
                   f"{spread([r['fixed']['redis_cpu_us'] for r in runs], '{:.1f}')} | "
                   + " | ".join(spread([r["fixed"][p] for r in runs], "{:.3f}") for p in ("p50", "p99", "p99.9"))
                   + f" | {sum(r['max']['failed'] + r['fixed']['failed'] for r in runs)} |")
    capacity = [p["local"]["fixed"]["cpu_us"] / p["leased"]["fixed"]["cpu_us"] for p in pairs]
    throughput = [p["leased"]["max"]["rps"] / p["local"]["max"]["rps"] for p in pairs]
    met = "yes" if min(statistics.median(capacity), statistics.median(throughput)) >= 0.9 else "**no**"
    out += ["", "| ratio | capacity per core | throughput | target | met |", "|---|---|---|---|---|",
            f"| S7a Redis leases ÷ local counters | {spread(capacity)} | {spread(throughput)} | ≥ 0.90 | {met} |"]
    return out


def versus_baseline(rounds, cases, baseline_system, binary):
    """Each Portico case against the same case on the baseline build, within each round:
    capacity per core (baseline CPU µs/req ÷ this build's) and throughput (this ÷ baseline)."""
    out = ["", "### This build ÷ the baseline, each within its round (median, range)", "",
           f"Baseline: `{binary}`, started in turn with this build in every round, same configuration and load.", "",
           "| case | CPU µs/req this build | CPU µs/req baseline | capacity per core | throughput |", "|---|---|---|---|---|"]
    before = {c.label.replace("baseline", "portico", 1): c for c in cases if c.system == baseline_system}
    for case in cases:
        base = before.get(case.label) if case.system == "portico" else None
        if base is None:
            continue
        pairs = [(r[case.key], r[base.key]) for r in rounds if case.key in r and base.key in r]
        capacity = [cpu(b) / cpu(c) for c, b in pairs if cpu(c) and cpu(b)]
        throughput = [c["max"]["rps"] / b["max"]["rps"] for c, b in pairs if b["max"]["rps"]]
        out.append(f"| {case.key} | {spread([cpu(c) for c, _ in pairs], '{:.1f}')} | {spread([cpu(b) for _, b in pairs], '{:.1f}')} | "
                   f"{spread(capacity)} | {spread(throughput)} |")
    return "\n".join(out) + "\n"
