//! Portico's gateway (data plane): listener → router → policy chain → upstream, with
//! every security, throttling and mediation step a sandboxed Wasm component. All routing
//! and policy state is one immutable snapshot, swapped atomically. What the control plane
//! may rely on is the [`contract`] and the [`check`]s; the rest is the gateway's own.
//!
//! The phases of a request are drawn in `docs/request-path.md` and implemented in
//! [`pipeline`].

// What other crates use: the control plane the contract and the checks; the `portico`
// binary the processes; `portico policy test` and the benchmarks the policy engine with
// the phases it runs in.
pub mod analytics;
pub mod calendar;
pub mod check;
pub mod connection;
pub mod contract;
pub mod counters;
pub mod error;
pub mod exchange;
pub mod file_mode;
pub mod fleet;
pub mod keys;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod process;
pub mod settings;
pub mod tls;
pub mod traces;

mod admin;
mod blocking;
mod body;
mod config;
#[cfg(test)]
mod fuzz;
mod json_string;
mod listener;
mod network;
mod records;
mod router;
mod snapshot;
mod upstream;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use arc_swap::ArcSwapOption;

use crate::analytics::{Reporter, UsageSink};
use crate::contract::Problem;
use crate::contract::environment::Environment;
use crate::counters::{CountersConfig, Counting, LocalCounters, RedisCounters};
use crate::keys::Providers;
use crate::metrics::Metrics;
use crate::policy::PolicyEngine;
use crate::records::Recorder;
use crate::settings::{Limits, Settings};
pub use crate::snapshot::OnFailedApi;
use crate::snapshot::{BuildError, Shared, Snapshot};
use crate::traces::Traces;
use crate::upstream::Clients;

/// How long a new shared counter store is given to connect before snapshots use it.
const CONNECT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a replaced snapshot waits for its last requests to be freed off the request path.
const LET_GO_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// A running gateway: the live snapshot and what outlives snapshots (the Wasm engine and
/// its compiled components, rate counters, upstream connection pools, metrics).
pub struct Gateway {
    engine: PolicyEngine,
    snapshot: ArcSwapOption<Snapshot>,
    /// This process's counters: the store, or the fallback of a shared one.
    counters: Arc<LocalCounters>,
    /// Where the live snapshot's policies count: `counters`, or the store its environment
    /// shares with other gateways.
    counting: Mutex<Counting>,
    clients: Clients,
    /// The OpenID providers whose keys the snapshots use.
    providers: Providers,
    /// The process's request limits.
    limits: Limits,
    /// Counters for `/metrics`.
    pub metrics: Metrics,
    /// Set when the process begins to shut down: `/readyz` answers 503 from then on.
    shutting_down: AtomicBool,
    /// Where requests' records go (their access-log lines and usage tallies), once the
    /// process has either.
    recorder: OnceLock<Arc<Recorder>>,
    /// What reports usage analytics, for a gateway fed by a control plane.
    reporter: OnceLock<Arc<Reporter>>,
    /// The tracer, when the settings ask for traces.
    traces: Option<Traces>,
}

impl Gateway {
    /// A gateway with no snapshot yet (not ready), under the process's `settings` (its
    /// limits and metrics), counting in process until an environment says otherwise; it
    /// keeps the policies it compiles in `compiled_dir` too, when given one.
    pub fn new(settings: &Settings, compiled_dir: Option<&Path>) -> anyhow::Result<Arc<Self>> {
        let local = Arc::new(LocalCounters::new());
        let engine = match compiled_dir {
            Some(dir) => PolicyEngine::keeping_compiled_in(dir)?,
            None => PolicyEngine::new()?,
        };
        Ok(Arc::new(Self {
            engine,
            snapshot: ArcSwapOption::empty(),
            counting: Mutex::new(Counting::local(&local)),
            counters: local,
            clients: Clients::default(),
            providers: Providers::default(),
            limits: settings.limits.clone(),
            metrics: Metrics::new(settings.admin.as_ref().map_or(0, |admin| admin.metrics.applications)),
            shutting_down: AtomicBool::new(false),
            recorder: OnceLock::new(),
            reporter: OnceLock::new(),
            traces: settings.traces.as_ref().map(Traces::start).transpose()?,
        }))
    }

    /// Keep the keys OpenID providers last published in `dir`, and start from them: a gateway
    /// restarted while a provider is away still verifies its tokens.
    pub fn keep_provider_keys_in(&self, dir: &Path) -> std::io::Result<()> {
        self.providers.keep_keys_in(dir)
    }

    /// The live snapshot, if any.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.snapshot.load_full()
    }

    /// From now on, tell whoever asks `/readyz` that this gateway is leaving (it keeps
    /// serving until its listeners close).
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// Whether the process has begun to shut down.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// Send requests' records to `recorder` (the first one given stays).
    pub(crate) fn set_recorder(&self, recorder: Arc<Recorder>) {
        let _ = self.recorder.set(recorder);
    }

    /// Where requests' records go, if anywhere.
    pub(crate) fn recorder(&self) -> Option<&Arc<Recorder>> {
        self.recorder.get()
    }

    /// Tally requests for usage analytics and report them to `sink` as `settings` say (when
    /// they enable analytics; their absence does), as the gateway `gateway_id`; before the
    /// listeners start.
    pub fn report_usage(&self, sink: impl UsageSink + 'static, gateway_id: &str, settings: &Settings) {
        let config = settings.analytics.clone().unwrap_or_default();
        if config.enabled && self.reporter.get().is_none() {
            let reporter = Arc::new(Reporter::new(Box::new(sink), gateway_id, config.max_unsent_rows));
            tokio::spawn(reporter.clone().run(config.report_every.0));
            let _ = self.reporter.set(reporter);
        }
    }

    /// The tracer, if the gateway traces.
    pub(crate) fn traces(&self) -> Option<&Traces> {
        self.traces.as_ref()
    }

    /// What reports usage analytics, if the gateway does.
    pub(crate) fn reporter(&self) -> Option<&Arc<Reporter>> {
        self.reporter.get()
    }

    /// Everything `/metrics` shows, in the Prometheus text format.
    pub fn render_metrics(&self) -> String {
        self.metrics.render(self.engine.compile_counts())
    }

    /// The in-process rate counters.
    pub fn counters(&self) -> &Arc<LocalCounters> {
        &self.counters
    }

    /// Build a snapshot of `environment`, whose relative paths start at `base_dir`
    /// (blocking: compiles policies).
    pub fn build(&self, environment: &Environment, base_dir: &Path, on_failed_api: OnFailedApi) -> Result<Snapshot, BuildError> {
        // A store that cannot be made still lets the rest be built, so that every problem is told.
        let (counting, refused) = match self.counting_for(&environment.counters) {
            Ok(counting) => (counting, None),
            Err(refused) => (Counting::local(&self.counters), Some(refused)),
        };
        let shared = Shared {
            engine: &self.engine,
            counting,
            clients: &self.clients,
            metrics: &self.metrics,
            ceilings: self.limits.policy_ceilings(),
            providers: &self.providers,
        };
        let built = Snapshot::build(environment, base_dir, &shared, on_failed_api);
        match refused {
            None => built,
            Some(mut refused) => {
                refused.problems.extend(built.err().into_iter().flat_map(|more| more.problems));
                Err(refused)
            }
        }
    }

    /// The store an environment counting where `config` says builds on: the live one when
    /// it is made from the same configuration, else a new one (it connects in the
    /// background; the old one stops when no snapshot uses it).
    fn counting_for(&self, config: &CountersConfig) -> Result<Counting, BuildError> {
        let current = self.counting.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if current.config == *config {
            return Ok(current);
        }
        let Some(redis) = &config.redis else { return Ok(Counting::local(&self.counters)) };
        let problems: Vec<Problem> =
            redis.problems().into_iter().map(|(field, reason)| Problem { path: format!("counters.redis.{field}"), reason }).collect();
        if !problems.is_empty() {
            return Err(BuildError { problems });
        }
        let shared = RedisCounters::connect(redis, self.counters.clone())
            .map_err(|reason| BuildError { problems: vec![Problem { path: "counters.redis".into(), reason }] })?;
        // Connected before it goes live, so that its first hits are not counted alone for
        // want of a connection.
        if !shared.wait_connected(CONNECT_WAIT) {
            tracing::warn!("Redis of the shared rate counters not reachable yet; counting locally until it answers");
        }
        Ok(Counting { config: config.clone(), stats: Some(shared.stats()), store: Arc::new(shared) })
    }

    /// Make a snapshot live. Requests already running finish on the one they started with;
    /// the one replaced is freed here (blocking: call it off the request path).
    fn install(&self, snapshot: Snapshot) {
        self.metrics.shared_counters.store(snapshot.counting.stats.clone());
        let previous = std::mem::replace(&mut *self.counting.lock().unwrap_or_else(PoisonError::into_inner), snapshot.counting.clone());
        if previous.config != snapshot.counting.config {
            match &snapshot.counting.config.redis {
                Some(_) => tracing::info!("rate counters shared on Redis"),
                None => tracing::info!("rate counters kept in this process"),
            }
        }
        let digests = snapshot.digests.clone();
        let previous = self.snapshot.swap(Some(Arc::new(snapshot)));
        self.engine.retain(|digest| digests.iter().any(|d| d == digest));
        self.metrics.reloads.inc();
        if let Some(previous) = previous {
            let_go(previous);
        }
    }

    /// Build and install a snapshot of `environment` off the request path (see
    /// [`off_the_request_path`]); on failure the live snapshot stays.
    pub async fn apply(
        self: &Arc<Self>,
        environment: Environment,
        base_dir: PathBuf,
        on_failed_api: OnFailedApi,
    ) -> Result<String, BuildError> {
        let gateway = self.clone();
        off_the_request_path(move || gateway.apply_here(&environment, &base_dir, on_failed_api))
            .await
            .unwrap_or_else(|reason| Err(BuildError { problems: vec![Problem { path: "(build)".into(), reason }] }))
    }

    /// [`Gateway::apply`], on the calling thread.
    fn apply_here(&self, environment: &Environment, base_dir: &Path, on_failed_api: OnFailedApi) -> Result<String, BuildError> {
        // Only revocations changed (the common change, and the one a client can cause at
        // will): taken with nothing built again.
        if let Some(current) = self.snapshot()
            && current.failed.is_empty()
            && current.base == environment.version_but_revocations()
        {
            let revoked = current.revoked(environment);
            let version = revoked.version.clone();
            tracing::debug!(version, "revocations taken into the running snapshot");
            self.snapshot.store(Some(Arc::new(revoked)));
            return Ok(version);
        }
        match self.build(environment, base_dir, on_failed_api) {
            Ok(snapshot) => {
                let version = snapshot.version.clone();
                for failed in &snapshot.failed {
                    tracing::error!(api = %failed.name, version = %failed.version, problems = ?failed.problems, "API not loaded; it answers 503");
                }
                self.install(snapshot);
                Ok(version)
            }
            Err(error) => {
                self.metrics.reload_failures.inc();
                Err(error)
            }
        }
    }
}

/// Run `work` on a thread of its own at a low priority, and wait for it. Parsing a large
/// configuration, compiling a module or freeing a large snapshot takes a core for
/// milliseconds to hundreds of them; at nice 10 that takes mostly what traffic leaves, so the
/// requests served on the same cores meanwhile are not queued behind it (S5 in
/// docs/benchmarks.md); not the lowest, so that a busy gateway still converges.
pub async fn off_the_request_path<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    let (done, finished) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("portico-build".into())
        .spawn(move || {
            lower_priority();
            let _ = done.send(work());
        })
        .map_err(|e| format!("cannot start the build thread: {e}"))?;
    finished.await.map_err(|_| "the build thread panicked".to_owned())
}

/// Free `snapshot` on this thread once the requests still running on it are done (waiting
/// up to [`LET_GO_WAIT`]): dropping its policy instances and tables takes milliseconds, which
/// the last of those requests would pay otherwise.
fn let_go(snapshot: Arc<Snapshot>) {
    let deadline = std::time::Instant::now() + LET_GO_WAIT;
    while Arc::strong_count(&snapshot) > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Make the calling thread yield to the request threads: nice 10, about a tenth of a
/// core when they are busy (Linux; elsewhere a no-op).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 10) {
        tracing::debug!(%error, "cannot lower the build thread's priority");
    }
}
