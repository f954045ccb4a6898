//! The OpenAPI 3 document of the management API, generated from the handlers' annotations
//! and served at `/api/v1/openapi.json`.

use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{AppState, auth, devportal, fleet, keymanager, publisher, registry, traffic};

#[derive(OpenApi)]
#[openapi(
    info(title = "Portico control plane", description = "Publisher, developer portal, key manager, traffic tiers, policy registry and gateway fleet."),
    paths(auth::login, auth::logout, auth::me, auth::create, auth::list),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    }
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(traffic::Doc::openapi());
    doc.merge(publisher::Doc::openapi());
    doc.merge(devportal::Doc::openapi());
    doc.merge(keymanager::Doc::openapi());
    doc.merge(registry::Doc::openapi());
    doc.merge(fleet::Doc::openapi());
    doc
}

/// `GET /api/v1/openapi.json`.
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/openapi.json", get(|| async { Json(document()) }))
}
