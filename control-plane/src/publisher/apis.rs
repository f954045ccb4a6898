//! APIs: create, list, read, replace and delete, and the checks every way of defining an
//! API shares (name, version, context, endpoints, operations, policy attachments).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use portico_gateway::config::Attachment;
use portico_gateway::router::{ApiRoutes, OperationRoute, RouteError, RouteTable, normalize_path};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use utoipa::{IntoParams, ToSchema};

use super::status::ApiStatus;
use crate::AppState;
use crate::auth::{Caller, Role};
use crate::db::{Db, new_id, now_ms};
use crate::error::{ApiError, ApiResult, JsonBody};

/// The methods an operation may name; `ANY` matches every method.
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "ANY"];

/// Longest description, in characters.
const MAX_DESCRIPTION: usize = 10_000;

/// Longest documentation, in characters.
const MAX_DOCUMENTATION: usize = 500_000;

/// An API as its publisher sees it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Api {
    /// Id.
    pub id: String,
    /// Name, unique with `version`.
    pub name: String,
    /// Version label, e.g. `v1`.
    pub version: String,
    /// Path prefix such as `/pets`; gateways serve the API at `{context}/{version}`.
    pub context: String,
    /// What it is for.
    pub description: String,
    /// Labels for searching.
    pub tags: Vec<String>,
    /// Markdown documentation.
    pub documentation: String,
    /// Upstream base URLs (`http://host:port/base`).
    pub endpoints: Vec<String>,
    /// The operations, by path then method.
    pub operations: Vec<Operation>,
    /// Policies for every operation, in order.
    #[schema(value_type = Vec<Object>)]
    pub policies: Vec<Attachment>,
    /// Lifecycle status.
    pub status: ApiStatus,
    /// User name of the owner.
    pub owner: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    /// Milliseconds since the Unix epoch.
    pub updated_at: i64,
}

/// An API in a list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiSummary {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Version label.
    pub version: String,
    /// Path prefix.
    pub context: String,
    /// What it is for.
    pub description: String,
    /// Labels.
    pub tags: Vec<String>,
    /// Lifecycle status.
    pub status: ApiStatus,
    /// User name of the owner.
    pub owner: String,
    /// Milliseconds since the Unix epoch.
    pub updated_at: i64,
}

/// One operation of an API: a method and a path template below the API's context, the
/// shape of the gateway's `OperationConfig`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Operation {
    /// `GET`, `POST`, `PUT`, `PATCH`, `DELETE`, `HEAD`, `OPTIONS` or `ANY` (any case on input).
    pub method: String,
    /// Path template: `/pets`, `/pets/{id}`, `/files/*`.
    pub path: String,
    /// Policies for this operation, after the API's: `{"policy": "key-auth"|"throttle"|"headers", "config": {...}}`.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub policies: Vec<Attachment>,
}

/// A new API, for `POST /api/v1/apis`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApi {
    /// Name, unique with `version`.
    pub name: String,
    /// Version label: letters, digits, `.`, `-`, `_`.
    pub version: String,
    /// Path prefix such as `/pets`, unique with `version`.
    pub context: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Labels for searching.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Markdown documentation.
    #[serde(default)]
    pub documentation: String,
    /// Upstream base URLs, at least one.
    pub endpoints: Vec<String>,
    /// The operations.
    #[serde(default)]
    pub operations: Vec<Operation>,
    /// Policies for every operation: `{"policy": "key-auth"|"throttle"|"headers", "config": {...}}`.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub policies: Vec<Attachment>,
}

/// The new state of an API, for `PUT /api/v1/apis/{id}`: every updatable field is replaced
/// (the operations as a set). Name, version and context are fixed at creation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiUpdate {
    /// May be sent, but must be the current name.
    pub name: Option<String>,
    /// May be sent, but must be the current version.
    pub version: Option<String>,
    /// May be sent, but must be the current context.
    pub context: Option<String>,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Labels for searching.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Markdown documentation.
    #[serde(default)]
    pub documentation: String,
    /// Upstream base URLs, at least one.
    pub endpoints: Vec<String>,
    /// The operations.
    #[serde(default)]
    pub operations: Vec<Operation>,
    /// Policies for every operation.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub policies: Vec<Attachment>,
}

/// An `apis` row with its owner's name.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct ApiRow {
    pub id: String,
    pub name: String,
    pub version: String,
    pub context: String,
    pub description: String,
    pub tags: String,
    pub documentation: String,
    pub endpoints: String,
    pub policies: String,
    pub status: String,
    pub owner_id: String,
    pub owner: String,
    pub created_at: i64,
    pub updated_at: i64,
}

const API_COLUMNS: &str = "a.id, a.name, a.version, a.context, a.description, a.tags, a.documentation, a.endpoints, \
     a.policies, a.status, a.owner_id, u.username AS owner, a.created_at, a.updated_at";

impl ApiRow {
    pub fn status(&self) -> ApiResult<ApiStatus> {
        ApiStatus::parse(&self.status).ok_or_else(|| ApiError::Internal(format!("API {} has the unknown status {}", self.id, self.status)))
    }

    pub fn endpoints(&self) -> ApiResult<Vec<String>> {
        from_stored("endpoints", &self.endpoints)
    }

    pub fn policies(&self) -> ApiResult<Vec<Attachment>> {
        from_stored("policies", &self.policies)
    }

    pub fn tags(&self) -> ApiResult<Vec<String>> {
        from_stored("tags", &self.tags)
    }
}

/// A JSON column's value.
pub(super) fn from_stored<T: DeserializeOwned>(what: &str, text: &str) -> ApiResult<T> {
    serde_json::from_str(text).map_err(|e| ApiError::Internal(format!("stored {what} are not valid: {e}")))
}

/// A value as a JSON column.
pub(super) fn to_stored<T: Serialize>(value: &T) -> ApiResult<String> {
    serde_json::to_string(value).map_err(|e| ApiError::Internal(format!("serialising: {e}")))
}

/// The API `id` if the caller may manage it: publishers see their own APIs, admins all.
/// Others' APIs are answered as not found, so that their ids reveal nothing.
pub(super) async fn visible(db: &Db, caller: &Caller, id: &str) -> ApiResult<ApiRow> {
    caller.require(&[Role::Publisher])?;
    let row: Option<ApiRow> =
        sqlx::query_as(&format!("SELECT {API_COLUMNS} FROM apis a JOIN users u ON u.id = a.owner_id WHERE a.id = $1"))
            .bind(id)
            .fetch_optional(&db.pool)
            .await?;
    match row {
        Some(row) if caller.role == Role::Admin || row.owner_id == caller.user_id => Ok(row),
        _ => Err(ApiError::not_found("API", id)),
    }
}

/// The API's row as it is now, inside a transaction.
pub(super) async fn row_in(conn: &mut AnyConnection, id: &str) -> ApiResult<ApiRow> {
    let row: Option<ApiRow> =
        sqlx::query_as(&format!("SELECT {API_COLUMNS} FROM apis a JOIN users u ON u.id = a.owner_id WHERE a.id = $1"))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    row.ok_or_else(|| ApiError::not_found("API", id))
}

/// Write-lock the API's row until the transaction ends (a row lock on PostgreSQL, the
/// database write lock on SQLite), so that what is read next is consistent with itself
/// and no concurrent replace or lifecycle change slips in between.
pub(super) async fn lock(conn: &mut AnyConnection, id: &str) -> ApiResult<()> {
    let locked = sqlx::query("UPDATE apis SET updated_at = updated_at WHERE id = $1").bind(id).execute(&mut *conn).await?;
    if locked.rows_affected() == 0 {
        return Err(ApiError::not_found("API", id));
    }
    Ok(())
}

/// The operations of an API, by path then method.
pub(super) async fn operations(conn: &mut AnyConnection, api_id: &str) -> ApiResult<Vec<Operation>> {
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT method, path, policies FROM operations WHERE api_id = $1 ORDER BY path, method")
            .bind(api_id)
            .fetch_all(&mut *conn)
            .await?;
    rows.into_iter().map(|(method, path, policies)| Ok(Operation { method, path, policies: from_stored("policies", &policies)? })).collect()
}

/// The whole API from its row.
pub(super) async fn with_operations(conn: &mut AnyConnection, row: ApiRow) -> ApiResult<Api> {
    let operations = operations(conn, &row.id).await?;
    Ok(Api {
        status: row.status()?,
        tags: row.tags()?,
        endpoints: row.endpoints()?,
        policies: row.policies()?,
        operations,
        id: row.id,
        name: row.name,
        version: row.version,
        context: row.context,
        description: row.description,
        documentation: row.documentation,
        owner: row.owner,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// The whole API `id`.
pub(super) async fn load(db: &Db, id: &str) -> ApiResult<Api> {
    let mut conn = db.pool.acquire().await?;
    let row = row_in(&mut conn, id).await?;
    with_operations(&mut conn, row).await
}

/// Check an API name: 1 to 100 characters without control characters or surrounding spaces.
pub(super) fn check_name(field: &str, name: &str) -> ApiResult<()> {
    let length = name.chars().count();
    if (1..=100).contains(&length) && name.trim() == name && !name.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(ApiError::invalid(field, "1 to 100 characters, without control characters or surrounding spaces"))
    }
}

/// Check a version label: it becomes a path segment, so 1 to 32 letters, digits, `.`, `-`,
/// `_`, starting with a letter or digit.
pub(super) fn check_version(field: &str, version: &str) -> ApiResult<()> {
    let ok = (1..=32).contains(&version.len())
        && version.starts_with(|c: char| c.is_ascii_alphanumeric())
        && version.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok { Ok(()) } else { Err(ApiError::invalid(field, "1 to 32 letters, digits, `.`, `-`, `_`, starting with a letter or digit")) }
}

/// Check a context: a normalised path of at least one segment, without a trailing slash
/// (the gateway appends `/{version}`).
pub(super) fn check_context(field: &str, context: &str) -> ApiResult<()> {
    if !context.starts_with('/') {
        return Err(ApiError::invalid(field, "must start with `/`, as in `/pets`"));
    }
    if context == "/" || context.ends_with('/') {
        return Err(ApiError::invalid(field, "a path such as `/pets`, without a trailing `/`"));
    }
    if context.len() > 200 {
        return Err(ApiError::invalid(field, "at most 200 characters"));
    }
    if context.contains(['{', '}', '*']) {
        return Err(ApiError::invalid(field, "a context has no parameters or wildcards"));
    }
    match normalize_path(context) {
        Ok(normal) if normal == context => Ok(()),
        _ => {
            Err(ApiError::invalid(field, "not a normalised path: no empty, `.` or `..` segments, no spaces, percent-escapes in upper case"))
        }
    }
}

/// Check the free-text fields.
pub(super) fn check_texts(description_field: &str, description: &str, documentation: &str) -> ApiResult<()> {
    if description.chars().count() > MAX_DESCRIPTION {
        return Err(ApiError::invalid(description_field, format!("at most {MAX_DESCRIPTION} characters")));
    }
    if documentation.chars().count() > MAX_DOCUMENTATION {
        return Err(ApiError::invalid("documentation", format!("at most {MAX_DOCUMENTATION} characters")));
    }
    Ok(())
}

/// Check tags: 1 to 50 characters each, no duplicates.
pub(super) fn check_tags(field: &str, tags: &[String]) -> ApiResult<()> {
    for (i, tag) in tags.iter().enumerate() {
        let length = tag.chars().count();
        if !(1..=50).contains(&length) || tag.trim() != tag || tag.chars().any(char::is_control) {
            return Err(ApiError::invalid(format!("{field}[{i}]"), "1 to 50 characters, without control characters or surrounding spaces"));
        }
        if tags[..i].contains(tag) {
            return Err(ApiError::invalid(format!("{field}[{i}]"), format!("`{tag}` is given twice")));
        }
    }
    Ok(())
}

/// Check endpoints: at least one, each an `http://` URL the gateway accepts.
pub(super) fn check_endpoints(field: &str, endpoints: &[String]) -> ApiResult<()> {
    if endpoints.is_empty() {
        return Err(ApiError::invalid(field, "at least one endpoint, such as `http://backend:8080/base`"));
    }
    for (i, endpoint) in endpoints.iter().enumerate() {
        portico_gateway::upstream::parse_endpoint(endpoint).map_err(|reason| ApiError::invalid(format!("{field}[{i}]"), reason))?;
    }
    Ok(())
}

/// Check policy attachments' shape: a built-in policy or a registry reference
/// (`name@version`), each configured by a JSON object. Whether the policy exists and what
/// its configuration says is checked in [`check_policy_configs`].
pub(super) fn check_attachments(field: &str, attachments: &[Attachment]) -> ApiResult<()> {
    for (i, attachment) in attachments.iter().enumerate() {
        if portico_gateway::policy::builtin::find(&attachment.policy).is_none()
            && crate::registry::parse_reference(&attachment.policy).is_none()
        {
            let known: Vec<&str> = portico_gateway::policy::builtin::ALL.iter().map(|b| b.name).collect();
            return Err(ApiError::invalid(
                format!("{field}[{i}].policy"),
                format!(
                    "`{}` is not a policy: name a built-in ({}) or an uploaded policy as `name@version`",
                    attachment.policy,
                    known.join(", ")
                ),
            ));
        }
        if !attachment.config.is_object() {
            return Err(ApiError::invalid(format!("{field}[{i}].config"), "must be a JSON object"));
        }
    }
    Ok(())
}

/// Run each attached policy's own check of its configuration (see [`crate::registry`]).
pub(super) async fn check_policy_configs(state: &AppState, policies: &[Attachment], operations: &[Operation]) -> ApiResult<()> {
    let mut attachments: Vec<(String, Attachment)> =
        policies.iter().enumerate().map(|(i, a)| (format!("policies[{i}]"), a.clone())).collect();
    for (j, operation) in operations.iter().enumerate() {
        attachments.extend(operation.policies.iter().enumerate().map(|(i, a)| (format!("operations[{j}].policies[{i}]"), a.clone())));
    }
    state.registry.check(&state.db, &attachments).await
}

/// Check operations, upper-casing their methods. The templates are compiled by the
/// gateway's own router, so an accepted API always routes. `field_of(i)` names operation `i`.
pub(super) fn check_operations(operations: &mut [Operation], field_of: impl Fn(usize) -> String) -> ApiResult<()> {
    for (i, operation) in operations.iter_mut().enumerate() {
        let field = field_of(i);
        operation.method = operation.method.to_ascii_uppercase();
        if !METHODS.contains(&operation.method.as_str()) {
            return Err(ApiError::invalid(format!("{field}.method"), format!("one of {}", METHODS.join(", "))));
        }
        if let Err(error) = compile(std::slice::from_ref(operation)) {
            let reason = match error {
                RouteError::InvalidTemplate { reason, .. } => reason.to_string(),
                other => other.to_string(),
            };
            return Err(ApiError::invalid(format!("{field}.path"), format!("`{}` is not a path template: {reason}", operation.path)));
        }
        check_attachments(&format!("{field}.policies"), &operation.policies)?;
    }
    if compile(operations).is_err() {
        // Only repeated routes are left to fail; name the first operation that repeats one.
        let repeat = (1..operations.len()).find(|&n| compile(&operations[..=n]).is_err()).unwrap_or(0);
        let operation = &operations[repeat];
        return Err(ApiError::invalid(
            field_of(repeat),
            format!("`{} {}` is the same route as an earlier operation", operation.method, operation.path),
        ));
    }
    Ok(())
}

/// Build the gateway's route table of these operations alone.
fn compile(operations: &[Operation]) -> Result<(), RouteError> {
    let routes = operations
        .iter()
        .enumerate()
        .map(|(i, operation)| OperationRoute { method: route_method(&operation.method), template: operation.path.clone(), value: i })
        .collect();
    RouteTable::new(vec![ApiRoutes { hosts: Vec::new(), context: "/".to_owned(), operations: routes }]).map(|_| ())
}

/// The router's method for a checked method name; `None` for `ANY`.
fn route_method(method: &str) -> Option<http::Method> {
    match method {
        "GET" => Some(http::Method::GET),
        "POST" => Some(http::Method::POST),
        "PUT" => Some(http::Method::PUT),
        "PATCH" => Some(http::Method::PATCH),
        "DELETE" => Some(http::Method::DELETE),
        "HEAD" => Some(http::Method::HEAD),
        "OPTIONS" => Some(http::Method::OPTIONS),
        _ => None,
    }
}

/// Insert an API (checked already) owned by `owner_id`, in status CREATED; returns its id.
pub(super) async fn insert(db: &Db, owner_id: &str, api: &NewApi) -> ApiResult<String> {
    let taken: Option<(String, String)> =
        sqlx::query_as("SELECT name, context FROM apis WHERE version = $1 AND (name = $2 OR context = $3)")
            .bind(&api.version)
            .bind(&api.name)
            .bind(&api.context)
            .fetch_optional(&db.pool)
            .await?;
    if let Some((name, context)) = taken {
        return Err(ApiError::Conflict(if name == api.name {
            format!("an API named `{name}` with version `{}` exists", api.version)
        } else {
            format!("the context `{context}` is taken for version `{}`", api.version)
        }));
    }
    let id = new_id();
    let now = now_ms();
    let mut tx = db.pool.begin().await?;
    sqlx::query(
        "INSERT INTO apis (id, name, version, context, description, tags, documentation, endpoints, policies, status, owner_id, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(&id)
    .bind(&api.name)
    .bind(&api.version)
    .bind(&api.context)
    .bind(&api.description)
    .bind(to_stored(&api.tags)?)
    .bind(&api.documentation)
    .bind(to_stored(&api.endpoints)?)
    .bind(to_stored(&api.policies)?)
    .bind(ApiStatus::Created.as_str())
    .bind(owner_id)
    .bind(now)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    insert_operations(&mut tx, &id, &api.operations).await?;
    tx.commit().await?;
    Ok(id)
}

async fn insert_operations(conn: &mut AnyConnection, api_id: &str, operations: &[Operation]) -> ApiResult<()> {
    for operation in operations {
        sqlx::query("INSERT INTO operations (id, api_id, method, path, policies) VALUES ($1, $2, $3, $4, $5)")
            .bind(new_id())
            .bind(api_id)
            .bind(&operation.method)
            .bind(&operation.path)
            .bind(to_stored(&operation.policies)?)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The search of `GET /api/v1/apis`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ApiSearch {
    /// Part of a name or a tag, case-insensitive.
    pub q: Option<String>,
}

#[derive(Debug, sqlx::FromRow)]
struct SummaryRow {
    id: String,
    name: String,
    version: String,
    context: String,
    description: String,
    tags: String,
    status: String,
    owner: String,
    updated_at: i64,
}

/// List the APIs the caller manages (all of them for admins), by name and version.
#[utoipa::path(get, path = "/api/v1/apis", operation_id = "list_apis", tag = "publisher", params(ApiSearch),
    responses((status = 200, body = [ApiSummary]), (status = 401), (status = 403)), security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, caller: Caller, Query(search): Query<ApiSearch>) -> ApiResult<Json<Vec<ApiSummary>>> {
    caller.require(&[Role::Publisher])?;
    let mut sql = "SELECT a.id, a.name, a.version, a.context, a.description, a.tags, a.status, u.username AS owner, a.updated_at \
                   FROM apis a JOIN users u ON u.id = a.owner_id WHERE 1 = 1"
        .to_owned();
    let mut binds = Vec::new();
    if caller.role != Role::Admin {
        binds.push(caller.user_id.clone());
        sql.push_str(&format!(" AND a.owner_id = ${}", binds.len()));
    }
    if let Some(q) = search.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        let escaped = q.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        binds.push(format!("%{escaped}%"));
        let n = binds.len();
        // Tags are a JSON array in TEXT: a substring of it is a substring of some tag.
        sql.push_str(&format!(" AND (LOWER(a.name) LIKE ${n} ESCAPE '\\' OR LOWER(a.tags) LIKE ${n} ESCAPE '\\')"));
    }
    sql.push_str(" ORDER BY a.name, a.version");
    let mut query = sqlx::query_as::<_, SummaryRow>(&sql);
    for bind in &binds {
        query = query.bind(bind);
    }
    let rows = query.fetch_all(&state.db.pool).await?;
    let summaries = rows
        .into_iter()
        .map(|row| {
            Ok(ApiSummary {
                status: ApiStatus::parse(&row.status)
                    .ok_or_else(|| ApiError::Internal(format!("API {} has the unknown status {}", row.id, row.status)))?,
                tags: from_stored("tags", &row.tags)?,
                id: row.id,
                name: row.name,
                version: row.version,
                context: row.context,
                description: row.description,
                owner: row.owner,
                updated_at: row.updated_at,
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(summaries))
}

/// Create an API (publisher); it starts in status CREATED.
#[utoipa::path(post, path = "/api/v1/apis", operation_id = "create_api", tag = "publisher", request_body = NewApi,
    responses((status = 201, body = Api), (status = 400, description = "invalid field"), (status = 401), (status = 403),
        (status = 409, description = "name and version, or context and version, taken")),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(mut api): JsonBody<NewApi>,
) -> ApiResult<(StatusCode, Json<Api>)> {
    caller.require(&[Role::Publisher])?;
    check_name("name", &api.name)?;
    check_version("version", &api.version)?;
    check_context("context", &api.context)?;
    check_texts("description", &api.description, &api.documentation)?;
    check_tags("tags", &api.tags)?;
    check_endpoints("endpoints", &api.endpoints)?;
    check_operations(&mut api.operations, |i| format!("operations[{i}]"))?;
    check_attachments("policies", &api.policies)?;
    check_policy_configs(&state, &api.policies, &api.operations).await?;
    let id = insert(&state.db, &caller.user_id, &api).await?;
    tracing::info!(api = %id, name = %api.name, version = %api.version, "API created");
    Ok((StatusCode::CREATED, Json(load(&state.db, &id).await?)))
}

/// Read an API.
#[utoipa::path(get, path = "/api/v1/apis/{id}", operation_id = "get_api", tag = "publisher", params(("id" = String, Path)),
    responses((status = 200, body = Api), (status = 401), (status = 403), (status = 404)), security(("bearer" = [])))]
pub async fn get(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Api>> {
    let row = visible(&state.db, &caller, &id).await?;
    let mut conn = state.db.pool.acquire().await?;
    Ok(Json(with_operations(&mut conn, row).await?))
}

/// Replace an API's updatable fields and its set of operations. Deployed revisions are
/// not affected: make a new revision and deploy it.
#[utoipa::path(put, path = "/api/v1/apis/{id}", operation_id = "replace_api", tag = "publisher", params(("id" = String, Path)), request_body = ApiUpdate,
    responses((status = 200, body = Api), (status = 400, description = "invalid field"), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
pub async fn replace(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(mut update): JsonBody<ApiUpdate>,
) -> ApiResult<Json<Api>> {
    let row = visible(&state.db, &caller, &id).await?;
    for (field, given, current) in
        [("name", &update.name, &row.name), ("version", &update.version, &row.version), ("context", &update.context, &row.context)]
    {
        if given.as_ref().is_some_and(|given| given != current) {
            return Err(ApiError::invalid(field, format!("cannot be changed (it is `{current}`); create a new API version instead")));
        }
    }
    check_texts("description", &update.description, &update.documentation)?;
    check_tags("tags", &update.tags)?;
    check_endpoints("endpoints", &update.endpoints)?;
    check_operations(&mut update.operations, |i| format!("operations[{i}]"))?;
    check_attachments("policies", &update.policies)?;
    check_policy_configs(&state, &update.policies, &update.operations).await?;
    let mut tx = state.db.pool.begin().await?;
    let updated = sqlx::query(
        "UPDATE apis SET description = $1, tags = $2, documentation = $3, endpoints = $4, policies = $5, updated_at = $6 WHERE id = $7",
    )
    .bind(&update.description)
    .bind(to_stored(&update.tags)?)
    .bind(&update.documentation)
    .bind(to_stored(&update.endpoints)?)
    .bind(to_stored(&update.policies)?)
    .bind(now_ms())
    .bind(&id)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(ApiError::not_found("API", &id));
    }
    sqlx::query("DELETE FROM operations WHERE api_id = $1").bind(&id).execute(&mut *tx).await?;
    insert_operations(&mut tx, &id, &update.operations).await?;
    let row = row_in(&mut tx, &id).await?;
    let api = with_operations(&mut tx, row).await?;
    tx.commit().await?;
    Ok(Json(api))
}

/// Delete an API that is CREATED or RETIRED and deployed nowhere, with its revisions.
#[utoipa::path(delete, path = "/api/v1/apis/{id}", operation_id = "delete_api", tag = "publisher", params(("id" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404), (status = 409, description = "deployed, or not CREATED or RETIRED")),
    security(("bearer" = [])))]
pub async fn delete(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    visible(&state.db, &caller, &id).await?;
    // One statement, so that no deployment or status change slips in between check and delete.
    let deleted = sqlx::query(
        "DELETE FROM apis WHERE id = $1 AND status IN ('CREATED', 'RETIRED') AND NOT EXISTS (SELECT 1 FROM deployments WHERE api_id = $1)",
    )
    .bind(&id)
    .execute(&state.db.pool)
    .await?;
    if deleted.rows_affected() == 1 {
        tracing::info!(api = %id, "API deleted");
        return Ok(StatusCode::NO_CONTENT);
    }
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM apis WHERE id = $1").bind(&id).fetch_optional(&state.db.pool).await?;
    let Some(status) = status else {
        return Err(ApiError::not_found("API", &id));
    };
    let environments: Vec<String> = sqlx::query_scalar("SELECT environment FROM deployments WHERE api_id = $1 ORDER BY environment")
        .bind(&id)
        .fetch_all(&state.db.pool)
        .await?;
    if !environments.is_empty() {
        return Err(ApiError::Conflict(format!("the API is deployed on {}; undeploy it first", environments.join(", "))));
    }
    Err(ApiError::Conflict(format!("only a CREATED or RETIRED API can be deleted; this one is {status} (retire it first)")))
}
