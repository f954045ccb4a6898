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
