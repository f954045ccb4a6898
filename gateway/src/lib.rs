//! Portico's gateway (data plane): listener → router → policy chain → upstream, with
//! every security, throttling and mediation step a sandboxed Wasm component. All routing
//! and policy state is one immutable [`snapshot::Snapshot`], swapped atomically.
//!
//! The phases of a request are drawn in `docs/request-path.md` and implemented in
//! [`pipeline`].

pub mod admin;
pub mod blocking;
pub mod body;
pub mod config;
pub mod counters;
pub mod error;
pub mod exchange;
pub mod file_mode;
pub mod fleet;
pub mod hex;
pub mod keys;
pub mod listener;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod router;
pub mod snapshot;
pub mod upstream;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use arc_swap::ArcSwapOption;

use crate::config::LoadedConfig;
use crate::counters::{CounterStore, LocalCounters};
use crate::metrics::Metrics;
use crate::policy::PolicyEngine;
use crate::snapshot::{BuildError, Shared, Snapshot};
use crate::upstream::Clients;

/// A running gateway: the live snapshot and what outlives snapshots (the Wasm engine and
/// its compiled components, rate counters, upstream connection pools, metrics).
pub struct Gateway {
    engine: PolicyEngine,
    snapshot: ArcSwapOption<Snapshot>,
    counters: Arc<LocalCounters>,
    clients: Clients,
    /// Counters for `/metrics`.
    pub metrics: Metrics,
}

impl Gateway {
    /// A gateway with no snapshot yet (not ready).
    pub fn new() -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            engine: PolicyEngine::new()?,
            snapshot: ArcSwapOption::empty(),
            counters: Arc::new(LocalCounters::new()),
            clients: Clients::default(),
            metrics: Metrics::default(),
        }))
    }

    /// The live snapshot, if any.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.snapshot.load_full()
    }

    /// The in-process rate counters.
    pub fn counters(&self) -> &Arc<LocalCounters> {
        &self.counters
    }

    /// Build a snapshot from a configuration (blocking: compiles policies).
    pub fn build(&self, loaded: &LoadedConfig) -> Result<Snapshot, BuildError> {
        let counters: Arc<dyn CounterStore> = self.counters.clone();
        let shared = Shared { engine: &self.engine, counters, clients: &self.clients, metrics: &self.metrics };
        Snapshot::build(loaded, &shared)
    }

    /// Make a snapshot live. Requests already running finish on the one they started with.
    pub fn install(&self, snapshot: Snapshot) {
        let digests = snapshot.digests.clone();
        self.snapshot.store(Some(Arc::new(snapshot)));
        self.engine.retain(|digest| digests.iter().any(|d| d == digest));
        self.metrics.reloads.fetch_add(1, Ordering::Relaxed);
    }

    /// Build and install off the async threads; on failure the live snapshot stays.
    pub async fn apply(self: &Arc<Self>, loaded: LoadedConfig) -> Result<String, BuildError> {
        let gateway = self.clone();
        let (done, built) = tokio::sync::oneshot::channel();
        // Compiling a new module takes a core for tens or hundreds of milliseconds. At a low
        // priority it takes mostly what traffic leaves, so the requests served on the same
        // cores meanwhile are not queued behind it (S5 in docs/benchmarks.md); not the
        // lowest, so that a busy gateway still converges.
        let started = std::thread::Builder::new().name("portico-build".into()).spawn(move || {
            lower_priority();
            let _ = done.send(gateway.build(&loaded));
        });
        let failed = |reason: String| BuildError { problems: vec![config::Problem { path: "(build)".into(), reason }] };
        started.map_err(|e| failed(format!("cannot start the build thread: {e}")))?;
        let built = built.await.map_err(|_| failed("the build thread panicked".into()))?;
        match built {
            Ok(snapshot) => {
                let version = snapshot.version.clone();
                self.install(snapshot);
                Ok(version)
            }
            Err(error) => {
                self.metrics.reload_failures.fetch_add(1, Ordering::Relaxed);
                Err(error)
            }
        }
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
