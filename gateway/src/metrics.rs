//! The gateway's metrics, for `/metrics` in the Prometheus text format. prometheus-client
//! writes them (with HELP and TYPE lines, and label values escaped, so that a name a
//! publisher chose cannot write series of its own). They live in a registry that outlives
//! snapshots, so a reload does not reset them. Requests reach them through handles
//! resolved when a snapshot is built, and update them with relaxed atomic adds only.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// The application label of the responses counted after the cap on per-application series.
pub const OTHER_APPLICATIONS: &str = "_other";

/// The `Content-Type` of what [`Metrics::render`] writes.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// A latency histogram that observes with two relaxed atomic adds (prometheus-client's own
/// takes a lock). Clones share their counts.
#[derive(Debug, Clone, Default)]
pub struct Histogram(Arc<HistogramCounts>);

#[derive(Debug, Default)]
struct HistogramCounts {
    /// One count per bucket of [`BUCKETS`], then the observations above the last bound; the
    /// total count is their sum, so a scrape never sees it disagree with the buckets.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Record one observation.
    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let i = BUCKETS.iter().position(|bound| secs <= *bound).unwrap_or(BUCKETS.len());
        self.0.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.0.sum_nanos.fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        let mut buckets = [(f64::INFINITY, 0); BUCKETS.len() + 1];
        for ((bucket, bound), count) in buckets.iter_mut().zip(BUCKETS.iter().chain([&f64::INFINITY])).zip(&self.0.buckets) {
            *bucket = (*bound, count.load(Ordering::Relaxed));
        }
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.0.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ApiLabels {
    api: String,
    version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResponseLabels {
    api: String,
    version: String,
    class: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ApplicationLabels {
    api: String,
    version: String,
    application: String,
    class: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PolicyLabels {
    policy: String,
}

/// Status classes, 1xx to 5xx, as labelled.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Responses by status class.
#[derive(Debug, Clone)]
struct ByClass([Counter; CLASSES.len()]);

impl ByClass {
    fn count(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, CLASSES.len()) - 1;
        self.0[class].inc();
    }
}

/// The handles of one API.
#[derive(Debug)]
pub struct ApiStats {
    responses: ByClass,
    /// Request latency, from routing to the response head.
    latency: Histogram,
    /// Upstream latency, from sending the request to the response head.
    pub upstream: Histogram,
    applications: Applications,
}

impl ApiStats {
    /// Count a response.
    pub fn record(&self, status: u16, elapsed: Duration) {
        self.responses.count(status);
        self.latency.observe(elapsed);
    }

    /// Count a response to `application`, when responses are counted per application.
    pub fn record_application(&self, application: &str, status: u16) {
        if self.applications.cap.limit == 0 {
            return;
        }
        let applications = &self.applications;
        let known = applications.known.read().unwrap_or_else(|e| e.into_inner());
        if let Some(counts) = known.get(application) {
            return counts.count(status);
        }
        drop(known);
        match applications.add(application) {
            Some(counts) => counts.count(status),
            None => applications.other.get_or_init(|| applications.counts(OTHER_APPLICATIONS)).count(status),
        }
    }
}

/// An API's per-application counters, made as applications call it, up to the process's
/// cap on such series.
#[derive(Debug)]
struct Applications {
    api: ApiLabels,
    family: Family<ApplicationLabels, Counter>,
    known: RwLock<HashMap<String, ByClass>>,
    /// The counts of the applications past the cap; they are not remembered one by one,
    /// since their names are the caller's (a token's claim) and unbounded.
    other: OnceLock<ByClass>,
    cap: Arc<ApplicationCap>,
}

/// How many (API, application) pairs may have series of their own.
#[derive(Debug, Default)]
struct ApplicationCap {
    limit: usize,
    taken: AtomicUsize,
}

impl Applications {
    /// The counts of a new application, unless the cap is reached.
    fn add(&self, application: &str) -> Option<ByClass> {
        if self.cap.taken.load(Ordering::Relaxed) >= self.cap.limit {
            return None;
        }
        let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
        if let Some(counts) = known.get(application) {
            return Some(counts.clone());
        }
        self.cap.taken.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < self.cap.limit).then_some(n + 1)).ok()?;
        let counts = self.counts(application);
        known.insert(application.to_owned(), counts.clone());
        Some(counts)
    }

    fn counts(&self, application: &str) -> ByClass {
        ByClass(CLASSES.map(|class| {
            let (api, version) = (self.api.api.clone(), self.api.version.clone());
            self.family.get_or_create_owned(&ApplicationLabels { api, version, application: application.to_owned(), class })
        }))
    }
}

/// The handles of one policy (all its attachments together).
#[derive(Debug, Clone, Default)]
pub struct PolicyStats {
    /// Call durations, both phases.
    pub duration: Histogram,
    /// Requests answered by the policy instead of forwarded.
    pub denials: Counter,
    /// Calls that trapped or ran out of time or memory.
    pub failures: Counter,
    /// Instances created.
    pub instantiations: Counter,
}

/// How the policy engine's components were made, for `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CompileCounts {
    /// Compiled from WebAssembly.
    pub compiled: u64,
    /// Read back, compiled, from the folder of compiled components.
    pub from_disk: u64,
}

/// The families an API's handles come from.
#[derive(Debug, Default)]
struct ApiFamilies {
    responses: Family<ResponseLabels, Counter>,
    request_duration: Family<ApiLabels, Histogram>,
    upstream_duration: Family<ApiLabels, Histogram>,
    application_responses: Family<ApplicationLabels, Counter>,
    application_cap: Arc<ApplicationCap>,
}

impl ApiFamilies {
    fn stats(&self, api: ApiLabels) -> ApiStats {
        ApiStats {
            responses: ByClass(CLASSES.map(|class| {
                self.responses.get_or_create_owned(&ResponseLabels { api: api.api.clone(), version: api.version.clone(), class })
            })),
            latency: self.request_duration.get_or_create_owned(&api),
            upstream: self.upstream_duration.get_or_create_owned(&api),
            applications: Applications {
                api,
                family: self.application_responses.clone(),
                known: RwLock::default(),
                other: OnceLock::new(),
                cap: self.application_cap.clone(),
            },
        }
    }
}

/// The registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    families: ApiFamilies,
    /// Each API's handles, kept across snapshots (with the applications seen calling it).
    apis: Mutex<HashMap<ApiLabels, Arc<ApiStats>>>,
    policy_duration: Family<PolicyLabels, Histogram>,
    policy_denials: Family<PolicyLabels, Counter>,
    policy_failures: Family<PolicyLabels, Counter>,
    policy_instantiations: Family<PolicyLabels, Counter>,
    /// Requests that matched no API (or failed before routing), under empty API labels.
    pub unrouted: ApiStats,
    /// Snapshots applied.
    pub reloads: Counter,
    /// Configurations refused.
    pub reload_failures: Counter,
    /// Connections closed at once because `limits.max_connections` were open.
    pub connections_refused: Counter,
    /// Access-log lines dropped because the writer could not keep up.
    pub access_log_dropped: Counter,
    /// The shared rate counters' state, when the gateway counts on Redis.
    pub shared_counters: arc_swap::ArcSwapOption<crate::counters::SharedStats>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(0)
    }
}

impl Metrics {
    /// The registry, counting responses per application as well for at most `applications`
    /// (API, application) pairs (none with 0).
    pub fn new(applications: usize) -> Self {
        let families = ApiFamilies {
            application_cap: Arc::new(ApplicationCap { limit: applications, taken: AtomicUsize::new(0) }),
            ..ApiFamilies::default()
        };
        let metrics = Self {
            registry: Registry::default(),
            unrouted: families.stats(ApiLabels { api: String::new(), version: String::new() }),
            families,
            apis: Mutex::default(),
            policy_duration: Family::default(),
            policy_denials: Family::default(),
            policy_failures: Family::default(),
            policy_instantiations: Family::default(),
            reloads: Counter::default(),
            reload_failures: Counter::default(),
            connections_refused: Counter::default(),
            access_log_dropped: Counter::default(),
            shared_counters: arc_swap::ArcSwapOption::empty(),
        };
        let mut registry = Registry::default();
        let (r, f) = (&mut registry, &metrics.families);
        r.register("portico_responses", "Responses by API and status class (API and version empty: no API matched)", f.responses.clone());
        r.register_with_unit(
            "portico_request_duration",
            "Time from a request's routing to its response head, by API",
            Unit::Seconds,
            f.request_duration.clone(),
        );
        r.register_with_unit(
            "portico_upstream_duration",
            "Time from sending a request upstream to the upstream's response head, by API",
            Unit::Seconds,
            f.upstream_duration.clone(),
        );
        r.register(
            "portico_application_responses",
            "Responses by API, calling application and status class, when admin.metrics.applications allows; pairs past that cap are counted as application _other",
            f.application_responses.clone(),
        );
        r.register_with_unit(
            "portico_policy_duration",
            "Time in a policy's calls, both phases",
            Unit::Seconds,
            metrics.policy_duration.clone(),
        );
        r.register("portico_policy_denials", "Requests a policy answered instead of letting them through", metrics.policy_denials.clone());
        r.register("portico_policy_failures", "Policy calls that trapped or ran out of time or memory", metrics.policy_failures.clone());
        r.register("portico_policy_instantiations", "Policy instances created", metrics.policy_instantiations.clone());
        r.register("portico_snapshot_reloads", "Snapshots applied", metrics.reloads.clone());
        r.register("portico_snapshot_reload_failures", "Configurations refused", metrics.reload_failures.clone());
        r.register(
            "portico_connections_refused",
            "Connections closed at once because limits.max_connections were open",
            metrics.connections_refused.clone(),
        );
        r.register(
            "portico_access_log_dropped",
            "Access-log lines dropped because the writer could not keep up (access_log.queue was full)",
            metrics.access_log_dropped.clone(),
        );
        Self { registry, ..metrics }
    }

    /// The handles of an API (made on first use; called when building a snapshot).
    pub fn api(&self, name: &str, version: &str) -> Arc<ApiStats> {
        let labels = ApiLabels { api: name.to_owned(), version: version.to_owned() };
        let mut apis = self.apis.lock().unwrap_or_else(|e| e.into_inner());
        apis.entry(labels.clone()).or_insert_with(|| Arc::new(self.families.stats(labels))).clone()
    }

    /// The handles of a policy.
    pub fn policy(&self, name: &str) -> PolicyStats {
        let labels = PolicyLabels { policy: name.to_owned() };
        PolicyStats {
            duration: self.policy_duration.get_or_create_owned(&labels),
            denials: self.policy_denials.get_or_create_owned(&labels),
            failures: self.policy_failures.get_or_create_owned(&labels),
            instantiations: self.policy_instantiations.get_or_create_owned(&labels),
        }
    }

    /// Everything, with how the policy engine made its components, in the Prometheus text
    /// format.
    pub fn render(&self, compiles: CompileCounts) -> String {
        // What is read at scrape time rather than counted here.
        let mut read = Registry::default();
        read.register("portico_policy_compiles", "Policy components compiled from WebAssembly", ConstCounter::new(compiles.compiled));
        read.register(
            "portico_policy_compiled_reads",
            "Policy components read back compiled from the folder of compiled policies",
            ConstCounter::new(compiles.from_disk),
        );
        if let Some(shared) = self.shared_counters.load_full() {
            read.register(
                "portico_shared_counters_up",
                "Whether the shared rate-counter store (Redis) decided the last hit",
                ConstGauge::new(i64::from(shared.reachable.load(Ordering::Relaxed))),
            );
            read.register(
                "portico_shared_counters_changes",
                "Changes between the shared store and local counting",
                ConstCounter::new(shared.changes.load(Ordering::Relaxed)),
            );
            read.register(
                "portico_shared_counters_local_hits",
                "Hits counted locally because the shared store did not answer",
                ConstCounter::new(shared.local_hits.load(Ordering::Relaxed)),
            );
        }
        let mut out = String::new();
        for registry in [&self.registry, &read] {
            // Writing to a String cannot fail.
            let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, registry);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_stay_inside_their_label() {
        let metrics = Metrics::new(10);
        let api = metrics.api("pets\"} 1\nportico_forged_total 9\n# \\", "v1");
        api.record(200, Duration::from_millis(3));
        api.record_application("app\"\n", 200);
        metrics.policy("mask\"fields\\");
        let text = metrics.render(CompileCounts::default());
        assert!(!text.lines().any(|line| line.starts_with("portico_forged_total")), "{text}");
        assert!(
            text.contains(
                "portico_responses_total{api=\"pets\\\"} 1\\nportico_forged_total 9\\n# \\\\\",version=\"v1\",class=\"2xx\"} 1\n"
            ),
            "{text}"
        );
        assert!(text.contains("application=\"app\\\"\\n\",class=\"2xx\"} 1\n"), "{text}");
        assert!(text.contains("portico_policy_failures_total{policy=\"mask\\\"fields\\\\\"} 0\n"), "{text}");
        assert!(text.contains("portico_policy_duration_seconds_count{policy=\"mask\\\"fields\\\\\"} 0\n"), "{text}");
        // No label left open swallowed a line's value: every series line still ends in a number.
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let value = line.rsplit_once(' ').map(|(_, value)| value).unwrap_or_default();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn applications_past_the_cap_are_counted_together() {
        let metrics = Metrics::new(2);
        let (pets, shop) = (metrics.api("pets", "v1"), metrics.api("shop", "v1"));
        for (api, application) in [(&pets, "a"), (&pets, "b"), (&shop, "a"), (&shop, "c"), (&pets, "a")] {
            api.record_application(application, 200);
        }
        let text = metrics.render(CompileCounts::default());
        let count = |api: &str, application: &str| {
            let series =
                format!("portico_application_responses_total{{api=\"{api}\",version=\"v1\",application=\"{application}\",class=\"2xx\"}} ");
            text.lines().find_map(|line| line.strip_prefix(&series)).map(|n| n.to_owned())
        };
        assert_eq!(count("pets", "a").as_deref(), Some("2"), "{text}");
        assert_eq!(count("pets", "b").as_deref(), Some("1"), "{text}");
        assert_eq!(count("shop", OTHER_APPLICATIONS).as_deref(), Some("2"), "{text}");
        assert_eq!(count("shop", "a"), None, "{text}");
        // Past the cap, names are not kept: callers cannot grow the map.
        for n in 0..100 {
            shop.record_application(&format!("caller-{n}"), 200);
        }
        assert_eq!(shop.applications.known.read().unwrap().len(), 0);
        assert_eq!(pets.applications.known.read().unwrap().len(), 2);
    }

    #[test]
    fn histogram_buckets_add_up_to_the_count() {
        let metrics = Metrics::new(0);
        let api = metrics.api("pets", "v1");
        for millis in [0, 2, 2, 40, 9_000] {
            api.record(200, Duration::from_millis(millis));
        }
        let text = metrics.render(CompileCounts::default());
        let labels = "api=\"pets\",version=\"v1\"";
        for (le, n) in [("0.0005", 1), ("0.0025", 3), ("0.05", 4), ("5", 4), ("+Inf", 5)] {
            let series = format!("portico_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {n}\n");
            assert!(text.contains(&series), "{series} in {text}");
        }
        assert!(text.contains(&format!("portico_request_duration_seconds_count{{{labels}}} 5\n")), "{text}");
        assert!(text.contains(&format!("portico_request_duration_seconds_sum{{{labels}}} 9.044\n")), "{text}");
        assert!(text.contains("# TYPE portico_request_duration_seconds histogram\n"), "{text}");
        assert!(text.contains("# HELP portico_responses_total Responses by API"), "{text}");
    }
}
