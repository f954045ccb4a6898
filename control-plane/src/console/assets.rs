//! The console's style sheet and script, compiled into the binary.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::page::with_headers;

const STYLE: &str = include_str!("../../console-assets/console.css");
const SCRIPT: &str = include_str!("../../console-assets/console.js");

/// `GET /console/assets/{name}`.
pub(super) async fn serve(Path(name): Path<String>) -> Response {
    let (content_type, body) = match name.as_str() {
        "console.css" => ("text/css; charset=utf-8", STYLE),
        "console.js" => ("text/javascript; charset=utf-8", SCRIPT),
        _ => return with_headers((StatusCode::NOT_FOUND, "no such asset").into_response()),
    };
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    with_headers(response)
}
