//! Portico's control plane: one axum service with a module per business area, on SQLite
//! (embedded) or PostgreSQL. `auth` (users, roles, sessions), `traffic` (tiers),
//! `publisher` (APIs, lifecycle, revisions, deployments), `devportal` (applications,
//! subscriptions, keys), `keymanager` (the OAuth2 authorization server), `registry`
//! (policy components), `environment` (what a gateway environment runs) and `fleet` (the
//! gateways, the event hub that feeds them, rollouts); `health` and `metrics` are the
//! operator's (with `traces`), and `analytics` the usage gateways report; `console` is the
//! web pages over all of it (developer portal, publisher).

pub mod analytics;
pub mod auth;
mod console;
pub mod db;
pub mod devportal;
pub mod environment;
pub mod error;
pub mod expiry;
pub mod fleet;
mod health;
pub mod keymanager;
pub mod metrics;
pub mod openapi;
pub mod publisher;
pub mod registry;
pub mod replication;
pub mod secrets;
#[cfg(feature = "test-support")]
pub mod test_support;
pub mod traces;
pub mod traffic;

use std::sync::Arc;

use axum::Router;

use crate::auth::FailureLimiter;
use crate::db::Db;

/// Settings of the control plane.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The public base URL of this node's layer (behind its load balancer), without a
    /// trailing slash.
    pub public_url: String,
    /// The OAuth2 issuer: the public URL of the key manager, which is `public_url` unless
    /// the key manager runs apart (the `key-manager` profile, patterns 4 and 5).
    pub issuer: String,
    /// What a policy attachment may ask for; gateways should be given the same.
    pub policy_ceilings: portico_gateway::check::PolicyCeilings,
    /// Whether the fleet endpoints require a client certificate (mutual TLS) besides the
    /// gateway token.
    pub fleet_client_certificates: bool,
}

/// Whether the connection a request came on presented a client certificate that the TLS
/// layer verified; set per connection by the server (absent: no TLS, no certificate).
#[derive(Debug, Clone, Copy)]
pub struct ClientCertified(pub bool);

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub db: Db,
    /// Settings.
    pub settings: Arc<Settings>,
    /// Failed-login and failed-client-authentication brake.
    pub failures: Arc<FailureLimiter>,
    /// The policies attachments may name, and the check of their configurations.
    pub registry: Arc<registry::Registry>,
    /// OAuth2 client secrets verified lately.
    pub verified_secrets: Arc<keymanager::VerifiedSecrets>,
    /// Bumped whenever what gateways serve may have changed (by a committed
    /// [`fleet::Change`] here, or announced by another node); gateway feeders watch it.
    pub(crate) changes: Arc<tokio::sync::watch::Sender<u64>>,
    /// Bumped with `changes` for changes made on this node only: what other nodes are told.
    pub(crate) outbox: Arc<tokio::sync::watch::Sender<u64>>,
    /// Each environment's latest snapshot, for its gateways.
    pub hub: Arc<fleet::Hub>,
    /// Bumped whenever a gateway acknowledges; rollouts wait on it.
    pub acks: Arc<tokio::sync::watch::Sender<u64>>,
    /// Connections to the environments' shared counters, to show subscribers their usage.
    pub counter_readers: Arc<traffic::usage::Readers>,
    /// What `/metrics` shows.
    pub metrics: Arc<metrics::Metrics>,
    /// The tracer, when the control plane traces its requests.
    pub traces: Option<Arc<portico_gateway::traces::Traces>>,
}

impl AppState {
    /// State over a connected database.
    pub fn new(db: Db, settings: Settings) -> Self {
        let counter = || Arc::new(tokio::sync::watch::channel(0).0);
        Self {
            db,
            settings: Arc::new(settings),
            failures: FailureLimiter::shared(),
            registry: Arc::default(),
            verified_secrets: Arc::default(),
            changes: counter(),
            outbox: counter(),
            hub: Arc::new(fleet::Hub::new(environment::build)),
            acks: counter(),
            counter_readers: Arc::default(),
            metrics: Arc::default(),
            traces: None,
        }
    }

    /// A receiver that sees every change gateways must hear of (for feeders and tests).
    pub fn subscribe_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

/// Which layers of WSO2's model a node serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layers {
    /// The control plane with its own key manager (patterns 0 to 3).
    ControlPlaneAndKeyManager,
    /// The control plane alone: a key-manager layer apart issues the tokens (patterns 4, 5).
    ControlPlane,
    /// The key manager alone: the OAuth2 authorization server (the `key-manager` profile).
    KeyManager,
}

/// The HTTP API of `layers`; every node answers `/healthz`, `/readyz` and `/metrics`.
pub fn app(state: AppState, layers: Layers) -> Router {
    let mut router = Router::new().merge(health::routes()).merge(metrics::routes());
    if layers != Layers::KeyManager {
        router = router
            .merge(auth::routes())
            .merge(analytics::routes())
            .merge(traffic::routes())
            .merge(publisher::routes())
            .merge(devportal::routes())
            .merge(keymanager::admin_routes())
            .merge(registry::routes())
            .merge(fleet::routes())
            .merge(openapi::routes(layers))
            .merge(console::routes());
    }
    if layers != Layers::ControlPlane {
        router = router.merge(keymanager::routes());
    }
    router
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::count_requests))
        .layer(axum::middleware::from_fn_with_state(state.clone(), traces::trace_requests))
        .layer(axum::middleware::from_fn(error::refuse_nul_in_uri))
        .with_state(state)
}
