//! The publisher: APIs with their operations, endpoints and policy attachments, OpenAPI
//! import, the lifecycle (CREATED → PUBLISHED → DEPRECATED → RETIRED, BLOCKED), immutable
//! revisions, gateway environments and the deployment of revisions to them.

pub(crate) mod apis;
mod checks;
mod definition;
pub(crate) mod deployments;
pub(crate) mod environments;
pub(crate) mod import;
pub(crate) mod lifecycle;
pub(crate) mod revisions;
mod status;
mod store;

use axum::Router;
use axum::routing::{delete, get, post, put};
use utoipa::OpenApi;

use crate::AppState;

pub use checks::{OPENID_SCOPE, is_scope_name};
pub use definition::{Api, ApiSummary, ApiUpdate, EndpointClientCertificate, NewApi, Operation, Scope};
pub use deployments::{Deploy, DeployedApi, Deployment, deployed};
pub use environments::{
    Counters, Environment, GatewayUrl, NewEnvironment, UpstreamNetworks, counters, offer_gateway_url, upstream_networks,
};
pub use import::Import;
pub use lifecycle::{LifecycleAction, LifecycleChange};
pub use revisions::{Revision, RevisionContent, client_key};
pub use status::ApiStatus;
pub use store::grantable_scopes;

/// The name and version of the API `id`, when the caller may manage it (a publisher their
/// own APIs, an admin all); another's is not found.
pub(crate) async fn visible_api(db: &crate::db::Db, caller: &crate::auth::Caller, id: &str) -> crate::error::ApiResult<(String, String)> {
    let row = store::visible(db, caller, id).await?;
    Ok((row.name, row.version))
}

/// The OpenAPI paths of this module.
#[derive(OpenApi)]
#[openapi(paths(
    apis::list,
    apis::create,
    apis::get,
    apis::replace,
    apis::delete,
    import::import,
    lifecycle::change,
    revisions::list,
    revisions::create,
    revisions::get,
    revisions::delete,
    environments::list,
    environments::create,
    environments::delete,
    environments::set_gateway_url,
    environments::get_upstream_networks,
    environments::set_upstream_networks,
    environments::get_counters,
    environments::set_counters,
    deployments::list,
    deployments::deploy,
    deployments::undeploy,
    deployments::rollback,
))]
pub struct Doc;

/// The routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/apis", get(apis::list).post(apis::create))
        .route("/api/v1/apis/import", post(import::import))
        .route("/api/v1/apis/{id}", get(apis::get).put(apis::replace).delete(apis::delete))
        .route("/api/v1/apis/{id}/lifecycle", post(lifecycle::change))
        .route("/api/v1/apis/{id}/revisions", get(revisions::list).post(revisions::create))
        .route("/api/v1/apis/{id}/revisions/{revision_id}", get(revisions::get).delete(revisions::delete))
        .route("/api/v1/apis/{id}/deployments", get(deployments::list).post(deployments::deploy))
        .route("/api/v1/apis/{id}/deployments/{environment}", delete(deployments::undeploy))
        .route("/api/v1/apis/{id}/deployments/{environment}/rollback", post(deployments::rollback))
        .route("/api/v1/environments", get(environments::list).post(environments::create))
        .route("/api/v1/environments/{name}", delete(environments::delete))
        .route(
            "/api/v1/environments/{name}/upstream-networks",
            get(environments::get_upstream_networks).put(environments::set_upstream_networks),
        )
        .route("/api/v1/environments/{name}/gateway-url", put(environments::set_gateway_url))
        .route("/api/v1/environments/{name}/counters", get(environments::get_counters).put(environments::set_counters))
}
