//! (being written)

use axum::Router;
use utoipa::OpenApi;

use crate::AppState;

/// The OpenAPI paths of this module.
#[derive(OpenApi)]
#[openapi()]
pub struct Doc;

/// The routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
}
