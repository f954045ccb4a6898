//! The publisher's pages: the APIs the visitor manages.

use askama::Template;
use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::page::{self, Shell, Visitor, query_value, render, when};
use crate::AppState;
use crate::error::QueryParams;
use crate::publisher::{ApiSummary, apis};

#[derive(Template)]
#[template(path = "console/publisher_apis.html")]
struct ApisPage {
    shell: Shell,
    q: String,
    apis: Vec<ApiSummary>,
}

/// `GET /publisher`: the APIs the visitor manages, searched by `q`.
pub(super) async fn apis(State(state): State<AppState>, visitor: Visitor, RawQuery(query): RawQuery) -> Response {
    let q = query_value(query.as_deref(), "q");
    match apis::list(State(state), visitor.caller.clone(), QueryParams(apis::ApiSearch { q: Some(q.clone()) })).await {
        Ok(Json(apis)) => render(StatusCode::OK, &ApisPage { shell: Shell::of(&visitor, "Your APIs", "publisher"), q, apis }),
        Err(e) => page::error(Some(&visitor), e),
    }
}
