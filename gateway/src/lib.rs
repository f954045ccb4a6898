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
        let built = tokio::task::spawn_blocking(move || gateway.build(&loaded))
            .await
            .map_err(|e| BuildError { problems: vec![config::Problem { path: "(build)".into(), reason: e.to_string() }] })?;
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
