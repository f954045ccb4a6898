//! OpenAPI import: an API from an OpenAPI 3.x document, one operation per path and method.
//! `$ref`s are not resolved: only the paths, the methods, `info` and `servers` are read.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::checks;
use super::definition::{Api, NewApi, Operation};
use super::store;
use crate::AppState;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiResult, JsonBody};

/// The path item keys that are operations; `trace` is left out, as operations cannot name it.
const OPERATION_KEYS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch"];

/// The body of `POST /api/v1/apis/import`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Import {
    /// An OpenAPI 3.x document, as a JSON object.
    #[schema(value_type = Object)]
    pub openapi: Value,
    /// Upstream base URLs, at least one.
    pub endpoints: Vec<String>,
    /// Path prefix; by default the path of the first server URL, else made from the title.
    pub context: Option<String>,
}

/// Create an API from an OpenAPI document (publisher): name from `info.title`, version
/// from `info.version`, description from `info.description`.
#[utoipa::path(post, path = "/api/v1/apis/import", operation_id = "import_api", tag = "publisher", request_body = Import,
    responses((status = 201, body = Api), (status = 400, description = "invalid document or field"), (status = 401), (status = 403),
        (status = 409, description = "name and version, or context and version, taken")),
    security(("bearer" = [])))]
pub async fn import(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(import): JsonBody<Import>,
) -> ApiResult<(StatusCode, Json<Api>)> {
    caller.require(&[Role::Publisher])?;
    let api = read(import)?;
    let id = store::insert(&state.db, &caller.user_id, &api).await?;
    tracing::info!(api = %id, name = %api.name, version = %api.version, operations = api.operations.len(), "API imported");
    Ok((StatusCode::CREATED, Json(store::load(&state.db, &id).await?)))
}

/// The API an import describes, checked.
fn read(import: Import) -> ApiResult<NewApi> {
    let doc = import.openapi.as_object().ok_or_else(|| ApiError::invalid("openapi", "an OpenAPI 3.x document, as a JSON object"))?;
    match doc.get("openapi").and_then(Value::as_str) {
        Some(version) if version.starts_with("3.") => {}
        Some(version) => {
            return Err(ApiError::invalid("openapi.openapi", format!("OpenAPI `{version}` is not supported; import a 3.x document")));
        }
        None if doc.contains_key("swagger") => {
            return Err(ApiError::invalid("openapi.openapi", "Swagger 2.0 is not supported; convert it to OpenAPI 3.x"));
        }
        None => return Err(ApiError::invalid("openapi.openapi", "missing: the OpenAPI version, such as \"3.0.3\"")),
    }
    let info = doc.get("info").and_then(Value::as_object).ok_or_else(|| ApiError::invalid("openapi.info", "missing"))?;
    let name = text(info, "title", "openapi.info.title")?;
    let version = text(info, "version", "openapi.info.version")?;
    let description = info.get("description").and_then(Value::as_str).unwrap_or_default().to_owned();
    checks::check_name("openapi.info.title", &name)?;
    checks::check_version("openapi.info.version", &version)?;
    checks::check_texts("openapi.info.description", &description, "")?;

    let context = match import.context {
        Some(context) => context,
        None => match context_from_servers(doc) {
            Some(context) => context,
            None => context_from_title(&name),
        },
    };
    checks::check_context("context", &context)?;
    checks::check_endpoints("endpoints", &import.endpoints)?;

    let paths = doc.get("paths").and_then(Value::as_object).ok_or_else(|| ApiError::invalid("openapi.paths", "missing"))?;
    let mut operations = Vec::new();
    let mut fields = Vec::new();
    for (path, item) in paths {
        let item = item.as_object().ok_or_else(|| ApiError::invalid(format!("openapi.paths.{path}"), "a path item, as a JSON object"))?;
        for key in item.keys().filter(|key| OPERATION_KEYS.contains(&key.as_str())) {
            operations.push(Operation { method: key.to_ascii_uppercase(), path: path.clone(), policies: Vec::new(), scopes: Vec::new() });
            fields.push(format!("openapi.paths.{path}.{key}"));
        }
    }
    checks::check_operations(&mut operations, |i| fields[i].clone())?;

    Ok(NewApi {
        name,
        version,
        context,
        description,
        tags: Vec::new(),
        documentation: String::new(),
        endpoints: import.endpoints,
        endpoint_ca: None,
        endpoint_client_certificate: None,
        operations,
        policies: Vec::new(),
        scopes: Vec::new(),
        tiers: Vec::new(),
    })
}

/// A non-empty string member of `object`.
fn text(object: &Map<String, Value>, key: &str, field: &str) -> ApiResult<String> {
    match object.get(key).and_then(Value::as_str) {
        Some(text) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
        _ => Err(ApiError::invalid(field, "missing: a non-empty string")),
    }
}

/// The path of the first server URL (`https://host/base` or `/base`) if it makes a context.
fn context_from_servers(doc: &Map<String, Value>) -> Option<String> {
    let url = doc.get("servers")?.as_array()?.first()?.get("url")?.as_str()?;
    let path = match url.find("://") {
        Some(scheme_end) => {
            let rest = &url[scheme_end + 3..];
            rest.find('/').map_or("", |start| &rest[start..])
        }
        None => url,
    };
    let path = path.split(['?', '#']).next().unwrap_or_default().trim_end_matches('/');
    checks::check_context("context", path).is_ok().then(|| path.to_owned())
}

/// `/` and the title's letters and digits in lower case, other runs of characters as `-`:
/// `Swagger Petstore` → `/swagger-petstore`.
fn context_from_title(title: &str) -> String {
    let mut slug = String::new();
    for c in title.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    format!("/{}", slug.trim_end_matches('-'))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn contexts_come_from_servers_or_titles() {
        let doc = json!({"servers": [{"url": "https://api.example.com/v3/store/"}]});
        assert_eq!(context_from_servers(doc.as_object().unwrap()).as_deref(), Some("/v3/store"));
        let doc = json!({"servers": [{"url": "/api"}]});
        assert_eq!(context_from_servers(doc.as_object().unwrap()).as_deref(), Some("/api"));
        let doc = json!({"servers": [{"url": "https://api.example.com"}]});
        assert_eq!(context_from_servers(doc.as_object().unwrap()), None);
        let doc = json!({"servers": [{"url": "{scheme}://host/{base}"}]});
        assert_eq!(context_from_servers(doc.as_object().unwrap()), None);
        assert_eq!(context_from_title("Swagger Petstore — OpenAPI 3.0"), "/swagger-petstore-openapi-3-0");
    }
}
