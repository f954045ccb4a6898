//! Counters the gateway keeps for `/metrics` (Prometheus text format). They live in a
//! registry that outlives snapshots, so a reload does not reset them; requests update
//! them with relaxed atomic adds only.

use std::collections::BTreeMap;
use std::fmt::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// A label's value as the text format must write it: `\`, `"` and line feeds escaped, so
/// that a name a publisher chose (an API's, from an OpenAPI title) cannot close the label or
/// the line and write series of its own.
struct LabelValue<'a>(&'a str);

impl fmt::Display for LabelValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in self.0.split_inclusive(['\\', '"', '\n']) {
            match part.as_bytes().last() {
                Some(b'\\') => write!(f, "{}\\\\", &part[..part.len() - 1])?,
                Some(b'"') => write!(f, "{}\\\"", &part[..part.len() - 1])?,
                Some(b'\n') => write!(f, "{}\\n", &part[..part.len() - 1])?,
                _ => f.write_str(part)?,
            }
        }
        Ok(())
    }
}

/// A latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Record one observation.
    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|bound| secs <= *bound) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// Counters of one API.
#[derive(Debug, Default)]
pub struct ApiStats {
    /// Responses by status class: index 1 for 1xx ... 5 for 5xx.
    responses: [AtomicU64; 6],
    /// Request latency, from routing to the response head.
    pub latency: Histogram,
}

impl ApiStats {
    /// Count a response.
    pub fn record(&self, status: u16, elapsed: Duration) {
        let class = usize::from(status / 100).min(5);
        self.responses[class].fetch_add(1, Ordering::Relaxed);
        self.latency.observe(elapsed);
    }
}

/// Counters of one policy (all its attachments together).
#[derive(Debug, Default)]
pub struct PolicyStats {
    /// Call durations, both phases.
    pub duration: Histogram,
    /// Requests answered by the policy instead of forwarded.
    pub denials: AtomicU64,
    /// Calls that trapped or ran out of time or memory.
    pub failures: AtomicU64,
    /// Instances created.
    pub instantiations: AtomicU64,
}

/// How the policy engine's components were made, for `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CompileCounts {
    /// Compiled from WebAssembly.
    pub compiled: u64,
    /// Read back, compiled, from the folder of compiled components.
    pub from_disk: u64,
}

/// The registry.
#[derive(Debug, Default)]
pub struct Metrics {
    apis: Mutex<BTreeMap<String, Arc<ApiStats>>>,
    policies: Mutex<BTreeMap<String, Arc<PolicyStats>>>,
    /// Requests that matched no API (or failed before routing).
    pub unrouted: ApiStats,
    /// Snapshots applied.
    pub reloads: AtomicU64,
    /// Configurations refused.
    pub reload_failures: AtomicU64,
    /// Connections closed at once because `limits.max_connections` were open.
    pub connections_refused: AtomicU64,
    /// The shared rate counters' state, when the gateway counts on Redis.
    pub shared_counters: arc_swap::ArcSwapOption<crate::counters::SharedStats>,
}

impl Metrics {
    /// The counters of an API (made on first use; called when building a snapshot).
    pub fn api(&self, name: &str, version: &str) -> Arc<ApiStats> {
        let mut apis = self.apis.lock().unwrap_or_else(|e| e.into_inner());
        apis.entry(format!("{name}@{version}")).or_default().clone()
    }

    /// The counters of a policy.
    pub fn policy(&self, name: &str) -> Arc<PolicyStats> {
        let mut policies = self.policies.lock().unwrap_or_else(|e| e.into_inner());
        policies.entry(name.to_owned()).or_default().clone()
    }

    /// Everything, with how the policy engine made its components, in the Prometheus text
    /// format.
    pub fn render(&self, compiles: CompileCounts) -> String {
        let mut out = String::new();
        out.push_str("# TYPE portico_responses_total counter\n");
        let apis = self.apis.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let all = apis.iter().map(|(name, stats)| (name.as_str(), &**stats)).chain([("", &self.unrouted)]);
        for (api, stats) in all.clone() {
            for (class, count) in stats.responses.iter().enumerate().skip(1) {
                let (api, count) = (LabelValue(api), count.load(Ordering::Relaxed));
                let _ = writeln!(out, "portico_responses_total{{api=\"{api}\",class=\"{class}xx\"}} {count}");
            }
        }
        out.push_str("# TYPE portico_request_duration_seconds histogram\n");
        for (api, stats) in all {
            stats.latency.render(&mut out, "portico_request_duration_seconds", &format!("api=\"{}\"", LabelValue(api)));
        }
        let policies = self.policies.lock().unwrap_or_else(|e| e.into_inner()).clone();
        out.push_str("# TYPE portico_policy_duration_seconds histogram\n");
        for (policy, stats) in &policies {
            stats.duration.render(&mut out, "portico_policy_duration_seconds", &format!("policy=\"{}\"", LabelValue(policy)));
        }
        for (metric, read) in [
            ("portico_policy_denials_total", (|s: &PolicyStats| s.denials.load(Ordering::Relaxed)) as fn(&PolicyStats) -> u64),
            ("portico_policy_failures_total", |s| s.failures.load(Ordering::Relaxed)),
            ("portico_policy_instantiations_total", |s| s.instantiations.load(Ordering::Relaxed)),
        ] {
            let _ = writeln!(out, "# TYPE {metric} counter");
            for (policy, stats) in &policies {
                let _ = writeln!(out, "{metric}{{policy=\"{}\"}} {}", LabelValue(policy), read(stats));
            }
        }
        let _ = writeln!(
            out,
            "# TYPE portico_policy_compiles_total counter\nportico_policy_compiles_total {}\n\
             # TYPE portico_policy_compiled_reads_total counter\nportico_policy_compiled_reads_total {}",
            compiles.compiled, compiles.from_disk
        );
        let _ = writeln!(
            out,
            "# TYPE portico_snapshot_reloads_total counter\nportico_snapshot_reloads_total {}",
            self.reloads.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# TYPE portico_snapshot_reload_failures_total counter\nportico_snapshot_reload_failures_total {}",
            self.reload_failures.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# TYPE portico_connections_refused_total counter\nportico_connections_refused_total {}",
            self.connections_refused.load(Ordering::Relaxed)
        );
        if let Some(shared) = self.shared_counters.load_full() {
            let _ = writeln!(
                out,
                "# TYPE portico_shared_counters_up gauge\nportico_shared_counters_up {}\n\
                 # TYPE portico_shared_counters_changes_total counter\nportico_shared_counters_changes_total {}\n\
                 # TYPE portico_shared_counters_local_hits_total counter\nportico_shared_counters_local_hits_total {}",
                u8::from(shared.reachable.load(Ordering::Relaxed)),
                shared.changes.load(Ordering::Relaxed),
                shared.local_hits.load(Ordering::Relaxed)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_stay_inside_their_label() {
        let metrics = Metrics::default();
        metrics.api("pets\"} 1\nportico_forged_total 9\n# \\", "v1");
        metrics.policy("mask\"fields\\");
        let text = metrics.render(CompileCounts::default());
        assert!(!text.lines().any(|line| line.starts_with("portico_forged_total")), "{text}");
        assert!(
            text.contains("portico_responses_total{api=\"pets\\\"} 1\\nportico_forged_total 9\\n# \\\\@v1\",class=\"2xx\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("portico_policy_failures_total{policy=\"mask\\\"fields\\\\\"} 0\n"), "{text}");
        assert!(text.contains("portico_policy_duration_seconds_count{policy=\"mask\\\"fields\\\\\"} 0\n"), "{text}");
        // No label left open swallowed a line's value: every series line still ends in a number.
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let value = line.rsplit_once(' ').map(|(_, value)| value).unwrap_or_default();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
