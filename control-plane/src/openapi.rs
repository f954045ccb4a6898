//! The OpenAPI 3 document of the management API, generated from the handlers' annotations
//! and served at `/api/v1/openapi.json`.

use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

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
    complete_error_responses(&mut doc);
    doc
}

/// The body of every error of the management API (RFC 9457).
#[derive(ToSchema)]
#[allow(dead_code)]
struct Problem {
    /// Always `about:blank`.
    r#type: String,
    /// The status's reason phrase.
    title: String,
    /// The status code.
    status: u16,
    /// What is wrong.
    detail: String,
    /// For a 400: the field that is wrong (`endpoints[0]`, `allow[1]`).
    field: Option<String>,
}

/// Add the errors every management operation may answer where its annotation leaves them
/// out, and give every error its problem body, so that the document is the truth for
/// generated clients: 400 for an operation that takes a body or parameters (one that does
/// not parse or is refused names its field), 401 for one that needs a session. (The OAuth2
/// endpoints answer RFC 6749 errors and are left as they are.)
fn complete_error_responses(doc: &mut utoipa::openapi::OpenApi) {
    doc.components.get_or_insert_with(Default::default).schemas.insert("Problem".to_owned(), Problem::schema());
    for (path, item) in doc.paths.paths.iter_mut() {
        if !path.starts_with("/api/v1/") {
            continue;
        }
        let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
        for operation in operations.into_iter().flatten() {
            complete(operation);
        }
    }
}

fn complete(operation: &mut Operation) {
    let takes_input = operation.request_body.is_some() || operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let needs_session = operation
        .security
        .as_ref()
        .is_some_and(|requirements| serde_json::to_value(requirements).is_ok_and(|v| v.to_string().contains("\"bearer\"")));
    let responses = &mut operation.responses.responses;
    for (status, needed, description) in [
        ("400", takes_input, "a field does not parse or is refused (`field` names it)"),
        ("401", needs_session, "no session, or an expired or unknown one"),
    ] {
        if needed && !responses.contains_key(status) {
            responses.insert(status.to_owned(), RefOr::T(ResponseBuilder::new().description(description).build()));
        }
    }
    for (status, response) in responses.iter_mut() {
        if let (true, RefOr::T(response)) = (status.starts_with('4') || status.starts_with('5'), response)
            && response.content.is_empty()
        {
            response.content.insert("application/problem+json".to_owned(), Content::new(Some(Ref::from_schema_name("Problem"))));
        }
    }
}

/// `GET /api/v1/openapi.json`.
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/openapi.json", get(|| async { Json(document()) }))
}
