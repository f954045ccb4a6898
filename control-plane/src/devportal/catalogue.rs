//! The catalogue: the APIs subscribers can see (PUBLISHED or DEPRECATED), searchable by
//! name, description and tags. APIs in any other status do not exist here.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, QueryParams};

/// The statuses in which an API is in the catalogue, as an SQL list.
const VISIBLE: &str = "('PUBLISHED', 'DEPRECATED')";

/// The gateway URLs of the environments each API is deployed on (api id, URL).
const GATEWAYS: &str =
    "SELECT d.api_id, e.gateway_url FROM deployments d JOIN environments e ON e.name = d.environment WHERE e.gateway_url IS NOT NULL";

/// An API as subscribers see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CatalogueApi {
    /// Id, to subscribe with.
    pub id: String,
    /// Name.
    pub name: String,
    /// Version label.
    pub version: String,
    /// Path prefix; gateways serve the API at `{context}/{version}`.
    pub context: String,
    /// What it is for.
    pub description: String,
    /// Labels.
    pub tags: Vec<String>,
    /// `PUBLISHED`, or `DEPRECATED` (still served, closed to new subscriptions).
    /// The subscription tiers it offers (the most restrictive one when empty).
    pub tiers: Vec<String>,
    pub status: String,
    /// The operations, by path then method.
    pub operations: Vec<CatalogueOperation>,
    /// Where gateways serve it: `{gateway URL}{context}/{version}` for each environment it
    /// is deployed on whose gateway URL is said, by environment name.
    pub gateway_urls: Vec<String>,
    /// Markdown documentation; only when reading one API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub documentation: Option<String>,
}

/// An operation of a catalogue API.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct CatalogueOperation {
    /// HTTP method, or `ANY`.
    pub method: String,
    /// Path template below the API's base path.
    pub path: String,
}

/// The search of `GET /api/v1/catalogue`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct CatalogueSearch {
    /// Part of a name, a description or a tag, case-insensitive.
    pub q: Option<String>,
    /// A tag the API has, case-insensitive.
    pub tag: Option<String>,
}

#[derive(Debug, sqlx::FromRow)]
struct Row {
    id: String,
    name: String,
    version: String,
    context: String,
    description: String,
    tags: String,
    tiers: String,
    status: String,
    documentation: String,
}

impl Row {
    fn into_api(self, operations: Vec<CatalogueOperation>, gateways: Vec<String>, with_documentation: bool) -> ApiResult<CatalogueApi> {
        let tags = serde_json::from_str(&self.tags)
            .map_err(|e| ApiError::Internal(format!("stored tags of API {} are not valid: {e}", self.id)))?;
        let tiers = serde_json::from_str(&self.tiers)
            .map_err(|e| ApiError::Internal(format!("stored tiers of API {} are not valid: {e}", self.id)))?;
        let gateway_urls = gateways.iter().map(|gateway| format!("{gateway}{}/{}", self.context, self.version)).collect();
        Ok(CatalogueApi {
            id: self.id,
            name: self.name,
            version: self.version,
            context: self.context,
            description: self.description,
            tags,
            tiers,
            status: self.status,
            gateway_urls,
            operations,
            documentation: with_documentation.then_some(self.documentation),
        })
    }
}

/// Whether an API matches a lower-cased search text.
fn matches(api: &CatalogueApi, needle: &str) -> bool {
    api.name.to_lowercase().contains(needle)
        || api.description.to_lowercase().contains(needle)
        || api.tags.iter().any(|tag| tag.to_lowercase().contains(needle))
}

/// List the catalogue, by name and version (any logged-in user).
#[utoipa::path(get, path = "/api/v1/catalogue", operation_id = "list_catalogue", tag = "devportal", params(CatalogueSearch),
    responses((status = 200, body = [CatalogueApi]), (status = 401)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _caller: Caller,
    QueryParams(search): QueryParams<CatalogueSearch>,
) -> ApiResult<Json<Vec<CatalogueApi>>> {
    // Documentation can be large and is not listed; the search runs here rather than in
    // SQL so that case folding is the same (and Unicode-aware) on both engines.
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT id, name, version, context, description, tags, tiers, status, '' AS documentation FROM apis WHERE status IN {VISIBLE} ORDER BY name, version"
    ))
    .fetch_all(&state.db.pool)
    .await?;
    let operation_rows: Vec<(String, String, String)> = sqlx::query_as(&format!(
        "SELECT o.api_id, o.method, o.path FROM operations o JOIN apis a ON a.id = o.api_id WHERE a.status IN {VISIBLE} ORDER BY o.path, o.method"
    ))
    .fetch_all(&state.db.pool)
    .await?;
    let mut operations: HashMap<String, Vec<CatalogueOperation>> = HashMap::new();
    for (api_id, method, path) in operation_rows {
        operations.entry(api_id).or_default().push(CatalogueOperation { method, path });
    }
    let gateway_rows: Vec<(String, String)> = sqlx::query_as(&format!("{GATEWAYS} ORDER BY e.name")).fetch_all(&state.db.pool).await?;
    let mut gateways: HashMap<String, Vec<String>> = HashMap::new();
    for (api_id, gateway_url) in gateway_rows {
        gateways.entry(api_id).or_default().push(gateway_url);
    }
    let lowered = |text: &Option<String>| text.as_deref().map(str::trim).filter(|t| !t.is_empty()).map(str::to_lowercase);
    let (needle, tag) = (lowered(&search.q), lowered(&search.tag));
    let mut apis = Vec::new();
    for row in rows {
        let api_operations = operations.remove(&row.id).unwrap_or_default();
        let api_gateways = gateways.remove(&row.id).unwrap_or_default();
        let api = row.into_api(api_operations, api_gateways, false)?;
        if needle.as_deref().is_none_or(|needle| matches(&api, needle))
            && tag.as_deref().is_none_or(|tag| api.tags.iter().any(|t| t.to_lowercase() == tag))
        {
            apis.push(api);
        }
    }
    Ok(Json(apis))
}

/// Read a catalogue API with its documentation (any logged-in user).
#[utoipa::path(get, path = "/api/v1/catalogue/{api_id}", operation_id = "get_catalogue_api", tag = "devportal", params(("api_id" = String, Path)),
    responses((status = 200, body = CatalogueApi), (status = 401), (status = 404, description = "no such API in the catalogue")),
    security(("bearer" = [])))]
pub async fn get(State(state): State<AppState>, _caller: Caller, Path(api_id): Path<String>) -> ApiResult<Json<CatalogueApi>> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT id, name, version, context, description, tags, tiers, status, documentation FROM apis WHERE id = $1 AND status IN {VISIBLE}"
    ))
    .bind(&api_id)
    .fetch_optional(&state.db.pool)
    .await?;
    let row = row.ok_or_else(|| ApiError::not_found("API", &api_id))?;
    let operations: Vec<(String, String)> = sqlx::query_as("SELECT method, path FROM operations WHERE api_id = $1 ORDER BY path, method")
        .bind(&api_id)
        .fetch_all(&state.db.pool)
        .await?;
    let operations = operations.into_iter().map(|(method, path)| CatalogueOperation { method, path }).collect();
    let gateways: Vec<(String, String)> =
        sqlx::query_as(&format!("{GATEWAYS} AND d.api_id = $1 ORDER BY e.name")).bind(&api_id).fetch_all(&state.db.pool).await?;
    Ok(Json(row.into_api(operations, gateways.into_iter().map(|(_, url)| url).collect(), true)?))
}

/// The OpenAPI methods an operation's method stands for (`ANY`: all of them).
fn openapi_methods(method: &str) -> Vec<String> {
    match method {
        "ANY" => ["get", "put", "post", "delete", "options", "head", "patch"].map(str::to_owned).to_vec(),
        other => vec![other.to_lowercase()],
    }
}

/// A gateway path template as an OpenAPI path (a trailing `*`, any rest of the path, as the
/// parameter `rest`), and its parameters' names.
fn openapi_path(template: &str) -> (String, Vec<String>) {
    let path = match template.strip_suffix('*') {
        Some(prefix) => format!("{prefix}{{rest}}"),
        None => template.to_owned(),
    };
    let parameters = path.split('{').skip(1).filter_map(|part| part.split_once('}').map(|(name, _)| name.to_owned())).collect();
    (path, parameters)
}

/// The OpenAPI 3 document of a catalogue API: its operations through the gateways that serve
/// it, called with an API key (`apikey` header) or an OAuth2 access token from this key
/// manager.
fn openapi_document(api: &CatalogueApi, issuer: &str) -> serde_json::Value {
    use serde_json::{Map, json};
    let mut paths = Map::new();
    for operation in &api.operations {
        let (path, parameters) = openapi_path(&operation.path);
        let parameters: Vec<_> =
            parameters.iter().map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})).collect();
        let item = paths.entry(path).or_insert_with(|| json!({}));
        for method in openapi_methods(&operation.method) {
            item[method.as_str()] = json!({
                "operationId": format!("{method} {}", operation.path),
                "parameters": parameters,
                "responses": {"default": {"description": "The backend's answer, or the gateway's refusal"}},
            });
        }
    }
    let servers: Vec<_> = match api.gateway_urls.as_slice() {
        [] => vec![json!({"url": format!("{}/{}", api.context, api.version)})],
        urls => urls.iter().map(|url| json!({"url": url})).collect(),
    };
    json!({
        "openapi": "3.0.3",
        "info": {"title": api.name, "version": api.version, "description": api.description},
        "servers": servers,
        "paths": paths,
        "components": {"securitySchemes": {
            "apiKey": {"type": "apiKey", "in": "header", "name": "apikey"},
            "oauth2": {"type": "oauth2", "flows": {"clientCredentials": {"tokenUrl": format!("{issuer}/oauth2/token"), "scopes": {}}}},
        }},
        "security": [{"apiKey": []}, {"oauth2": []}],
    })
}

/// An API's OpenAPI 3 document, as the catalogue shows it (any logged-in user).
#[utoipa::path(get, path = "/api/v1/catalogue/{api_id}/openapi.json", operation_id = "get_catalogue_api_openapi", tag = "devportal",
    params(("api_id" = String, Path)),
    responses((status = 200, description = "an OpenAPI 3.0 document", body = Object), (status = 401), (status = 404, description = "no such API in the catalogue")),
    security(("bearer" = [])))]
pub async fn openapi(State(state): State<AppState>, caller: Caller, Path(api_id): Path<String>) -> ApiResult<Json<serde_json::Value>> {
    let Json(api) = get(State(state.clone()), caller, Path(api_id)).await?;
    Ok(Json(openapi_document(&api, &state.settings.issuer)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_openapi_paths_with_their_parameters() {
        assert_eq!(
            openapi_path("/items/{id}/notes/{note}"),
            ("/items/{id}/notes/{note}".to_owned(), vec!["id".to_owned(), "note".to_owned()])
        );
        assert_eq!(openapi_path("/files/*"), ("/files/{rest}".to_owned(), vec!["rest".to_owned()]));
        assert_eq!(openapi_path("/plain"), ("/plain".to_owned(), vec![]));
        assert_eq!(openapi_methods("ANY").len(), 7);
        assert_eq!(openapi_methods("GET"), ["get"]);
    }
}
