//! Portico's control plane: one axum service with a module per business area, on SQLite
//! (embedded) or PostgreSQL. `auth` (users, roles, sessions), `traffic` (tiers),
//! `publisher` (APIs, lifecycle, revisions, deployments), `devportal` (applications,
//! subscriptions, keys), `keymanager` (the OAuth2 authorization server) and `snapshot`
//! (what a gateway environment runs).

pub mod auth;
pub mod db;
pub mod devportal;
pub mod error;
pub mod keymanager;
pub mod openapi;
pub mod publisher;
pub mod registry;
pub mod snapshot;
pub mod test_support;
pub mod traffic;

use std::sync::Arc;

use axum::Router;

use crate::auth::FailureLimiter;
use crate::db::Db;

/// Settings of the control plane.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The public base URL of the control plane (the OAuth2 issuer), without a trailing slash.
    pub public_url: String,
}

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
    /// Bumped whenever what gateways serve may have changed (a deployment, a lifecycle
    /// change, a subscription, a key, a revocation); gateway feeders watch it.
    pub changes: Arc<tokio::sync::watch::Sender<u64>>,
}

impl AppState {
    /// State over a connected database.
    pub fn new(db: Db, settings: Settings) -> Self {
        let (changes, _) = tokio::sync::watch::channel(0);
        Self { db, settings: Arc::new(settings), failures: FailureLimiter::shared(), registry: Arc::default(), verified_secrets: Arc::default(), changes: Arc::new(changes) }
    }

    /// Say that what gateways serve may have changed.
    pub fn changed(&self) {
        self.changes.send_modify(|version| *version += 1);
    }
}

/// The whole HTTP API.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(auth::routes())
        .merge(traffic::routes())
        .merge(publisher::routes())
        .merge(devportal::routes())
        .merge(keymanager::routes())
        .merge(openapi::routes())
        .with_state(state)
}
