//! The fleet: gateway tokens, gateway registrations and acknowledgements, rollouts, and
//! the event hub that pushes each environment's snapshot to its gateways (protocol in
//! `docs/fleet.md`). Several control-plane nodes on one PostgreSQL tell each other about
//! changes through `LISTEN`/`NOTIFY` ([`notify`]), so every node pushes every change.

pub mod change;
pub mod gateways;
pub mod hub;
pub mod notify;
pub mod stream;
pub mod tokens;

use axum::Router;
use axum::routing::{delete, get, post};
use portico_gateway::contract::fleet::{ACK_PATH, STREAM_PATH};
use utoipa::OpenApi;

use crate::AppState;

pub use change::Change;
pub use gateways::{GatewayStatus, Rollout, RolloutQuery, record, seen, wait_for_rollout};
pub use hub::{Hub, Published};

/// The OpenAPI paths of this module (the gateway-facing protocol is in `docs/fleet.md`).
#[derive(OpenApi)]
#[openapi(paths(tokens::create, tokens::list, tokens::delete, gateways::list, gateways::rollout))]
pub struct Doc;

/// The routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/environments/{name}/gateway-tokens", get(tokens::list).post(tokens::create))
        .route("/api/v1/environments/{name}/gateway-tokens/{id}", delete(tokens::delete))
        .route("/api/v1/environments/{name}/rollout", get(gateways::rollout))
        .route("/api/v1/gateways", get(gateways::list))
        .route(STREAM_PATH, get(stream::stream))
        .route("/fleet/v1/modules/{digest}", get(stream::module))
        .route(ACK_PATH, post(stream::ack))
}
