//! The policy registry: components uploaded as `name@version`, immutable once uploaded,
//! accepted only when they are components of a `portico:policy` world this build runs and
//! compile (off the async threads, one at a time, within a time and a size cap), kept with
//! their sha256 and an optional JSON Schema of their configuration. The gateway's built-in
//! policies are listed too. Attachments name a built-in (`key-auth`) or an upload
//! (`validate-json@1.0.0`); their configuration is checked against the schema and by the
//! policy's own `init`, the way a gateway will run it.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use bytes::Bytes;
use portico_gateway::check::{CompiledPolicy, LoadError, PolicyCeilings, PolicyChecker, WIT_PACKAGE, builtin};
use portico_gateway::contract::environment::Attachment;
use portico_gateway::contract::hex;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::db::{Db, now_ms};
use crate::error::{ApiError, ApiResult, JsonBody};

/// The largest component accepted: the largest a gateway compiles.
pub use portico_gateway::check::MAX_COMPONENT_BYTES;
/// How long a component may take to compile before it is refused.
const COMPILE_TIMEOUT: Duration = Duration::from_secs(60);

/// Serialises compilations of uploads: compiling is not protected against denial of
/// service, so at most one runs at a time.
#[derive(Debug)]
pub struct Registry {
    compiling: Arc<tokio::sync::Semaphore>,
    compile_timeout: Duration,
}

impl Default for Registry {
    fn default() -> Self {
        Self { compiling: Arc::new(tokio::sync::Semaphore::new(1)), compile_timeout: COMPILE_TIMEOUT }
    }
}

/// A policy the registry holds.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PolicyModule {
    /// What an attachment's `policy` says to use it: `name@version`, or the bare name of a built-in.
    pub reference: String,
    /// The name.
    pub name: String,
    /// The version (a built-in has the gateway's version).
    pub version: String,
    /// sha256 of the component, hex.
    pub digest: String,
    /// Size of the component in bytes.
    pub size: i64,
    /// What it does.
    pub description: String,
    /// A JSON Schema its configuration must satisfy.
    pub config_schema: Option<serde_json::Value>,
    /// Whether it is built into the gateway.
    pub builtin: bool,
    /// Who uploaded it (empty for a built-in).
    pub uploaded_by: String,
    /// Milliseconds since the Unix epoch (0 for a built-in).
    pub created_at: i64,
    /// The revisions whose attachments use it: `API version, revision N`.
    pub used_by: Vec<String>,
}

/// The body of `POST /api/v1/policies`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Upload {
    /// Lower-case letters, digits, `-`, `_` and `.`; not a built-in's name.
    pub name: String,
    /// Letters, digits, `.`, `-` and `+` (semantic versioning is advised).
    pub version: String,
    /// What it does.
    #[serde(default)]
    pub description: String,
    /// The component (`.wasm`), base64.
    pub component: String,
    /// A JSON Schema for the configuration of its attachments.
    #[serde(default)]
    pub config_schema: Option<serde_json::Value>,
}

/// The OpenAPI paths of this module.
#[derive(OpenApi)]
#[openapi(paths(list, upload, get_one, delete, download))]
pub struct Doc;

/// The routes of this module.
pub fn routes() -> Router<AppState> {
    // base64 makes an upload a third larger than the component.
    let body_limit = MAX_COMPONENT_BYTES / 3 * 4 + 64 * 1024;
    Router::new()
        .route("/api/v1/policies", get(list).post(upload).layer(DefaultBodyLimit::max(body_limit)))
        .route("/api/v1/policies/{name}/{version}", get(get_one).delete(delete))
        .route("/api/v1/policies/{name}/{version}/component", get(download))
}

fn builtin_digest(policy: &builtin::Builtin) -> String {
    static DIGESTS: OnceLock<BTreeMap<&'static str, String>> = OnceLock::new();
    DIGESTS.get_or_init(|| builtin::ALL.iter().map(|b| (b.name, hex::sha256(b.component))).collect())[policy.name].clone()
}

fn builtin_module(policy: &builtin::Builtin) -> PolicyModule {
    PolicyModule {
        reference: policy.name.to_owned(),
        name: policy.name.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        digest: builtin_digest(policy),
        size: policy.component.len() as i64,
        description: "built into the gateway".to_owned(),
        config_schema: None,
        builtin: true,
        uploaded_by: String::new(),
        created_at: 0,
        used_by: Vec::new(),
    }
}

type ModuleRow = (String, String, String, i64, String, Option<String>, String, i64);
const MODULE_COLUMNS: &str = "name, version, digest, size, description, config_schema, uploaded_by, created_at";

fn module_of(row: ModuleRow) -> PolicyModule {
    let (name, version, digest, size, description, schema, uploaded_by, created_at) = row;
    PolicyModule {
        reference: format!("{name}@{version}"),
        name,
        version,
        digest,
        size,
        description,
        config_schema: schema.and_then(|s| serde_json::from_str(&s).ok()),
        builtin: false,
        uploaded_by,
        created_at,
        used_by: Vec::new(),
    }
}

/// Split `name@version`.
pub fn parse_reference(reference: &str) -> Option<(&str, &str)> {
    reference.split_once('@').filter(|(name, version)| !name.is_empty() && !version.is_empty())
}

/// The policy an attachment's `policy` names: a built-in by its bare name, an upload by
/// `name@version` (`None` for an unknown one).
pub async fn module(db: &Db, reference: &str) -> ApiResult<Option<PolicyModule>> {
    match builtin::find(reference) {
        Some(policy) => Ok(Some(builtin_module(policy))),
        None => find(db, reference).await,
    }
}

/// The uploaded module an attachment's `policy` names (`None` for a built-in or an unknown one).
pub async fn find(db: &Db, reference: &str) -> ApiResult<Option<PolicyModule>> {
    let Some((name, version)) = parse_reference(reference) else { return Ok(None) };
    let row: Option<ModuleRow> = sqlx::query_as(&format!("SELECT {MODULE_COLUMNS} FROM policy_modules WHERE name = $1 AND version = $2"))
        .bind(name)
        .bind(version)
        .fetch_optional(&db.pool)
        .await?;
    Ok(row.map(module_of))
}

/// The bytes of the component with this digest (uploaded or built in).
pub async fn component(db: &Db, digest: &str) -> ApiResult<Option<Vec<u8>>> {
    if let Some(policy) = builtin::ALL.iter().find(|b| builtin_digest(b) == digest) {
        return Ok(Some(policy.component.to_vec()));
    }
    Ok(sqlx::query_scalar("SELECT component FROM policy_modules WHERE digest = $1 LIMIT 1").bind(digest).fetch_optional(&db.pool).await?)
}

/// The digest of each uploaded module among `references`, for a gateway configuration's
/// `modules`. A reference to nothing is left out (and logged): gateways then fail the APIs
/// that attach it, and serve the rest of the environment.
pub async fn digests<'a>(db: &Db, references: impl IntoIterator<Item = &'a str>) -> ApiResult<BTreeMap<String, String>> {
    let mut digests = BTreeMap::new();
    for reference in references {
        if builtin::find(reference).is_some() || digests.contains_key(reference) {
            continue;
        }
        match find(db, reference).await? {
            Some(module) => {
                digests.insert(reference.to_owned(), module.digest);
            }
            None => tracing::error!(policy = reference, "a deployed API attaches a policy that is not in the registry; it answers 503"),
        }
    }
    Ok(digests)
}

/// The engine uploads and configurations are checked with: one per process, made on first
/// use; it keeps what it compiled, so each component is compiled once.
fn checker() -> ApiResult<&'static PolicyChecker> {
    static CHECKER: OnceLock<Result<PolicyChecker, String>> = OnceLock::new();
    CHECKER
        .get_or_init(|| PolicyChecker::new().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| ApiError::Internal(format!("policy engine: {e}")))
}

impl Registry {
    /// Compile `bytes` off the async threads, one compilation at a time, within the time cap.
    /// A compile cannot be stopped: one past the cap is answered as refused but keeps its
    /// turn until it ends, so that uploads in a loop never run more than one at once.
    async fn compile(&self, reference: &str, bytes: Bytes) -> ApiResult<Result<Arc<CompiledPolicy>, LoadError>> {
        let checker = checker()?;
        let permit = self.compiling.clone().acquire_owned().await.map_err(|e| ApiError::Internal(e.to_string()))?;
        let name = reference.to_owned();
        let task = tokio::task::spawn_blocking(move || {
            let _turn = permit;
            checker.compile(&name, &bytes)
        });
        match tokio::time::timeout(self.compile_timeout, task).await {
            Ok(joined) => joined.map_err(|e| ApiError::Internal(e.to_string())),
            Err(_) => Err(ApiError::invalid("component", format!("did not compile within {:?}", self.compile_timeout))),
        }
    }

    /// Check `attachments` (each with the field path it came from) as a gateway under
    /// `ceilings` will run them: `timeout` and `memory` within the ceilings, the policy
    /// exists, its configuration satisfies the policy's schema, and the policy's own `init`
    /// accepts it within the attachment's own `timeout` and `memory`.
    pub async fn check(&self, db: &Db, attachments: &[(String, Attachment)], ceilings: &PolicyCeilings) -> ApiResult<()> {
        for (field, attachment) in attachments {
            ceilings.check(attachment).map_err(|(name, reason)| ApiError::invalid(format!("{field}.{name}"), reason))?;
            let compiled = if let Some(policy) = builtin::find(&attachment.policy) {
                self.compile(policy.name, Bytes::from_static(policy.component)).await?
            } else {
                let module = find(db, &attachment.policy).await?.ok_or_else(|| {
                    ApiError::invalid(format!("{field}.policy"), format!("`{}` is not in the policy registry", attachment.policy))
                })?;
                if let Some(schema) = &module.config_schema {
                    check_schema(&format!("{field}.config"), schema, &attachment.config)?;
                }
                // Compiled at upload, usually: then the component need not be read again.
                match checker()?.cached(&module.digest) {
                    Some(compiled) => Ok(compiled),
                    None => {
                        let bytes = component(db, &module.digest)
                            .await?
                            .ok_or_else(|| ApiError::Internal(format!("component {} is missing", module.digest)))?;
                        self.compile(&attachment.policy, Bytes::from(bytes)).await?
                    }
                }
            }
            .map_err(|e| ApiError::Internal(e.to_string()))?;
            let (field, attachment, ceilings) = (field.clone(), attachment.clone(), *ceilings);
            tokio::task::spawn_blocking(move || match checker()?.init(compiled, &attachment, &ceilings) {
                Ok(_) => Ok(()),
                Err(LoadError::Config { reason, .. }) => Err(ApiError::invalid(format!("{field}.config"), reason)),
                // It could not start (out of `memory`, past the start-up budget, a trap).
                Err(other) => Err(ApiError::invalid(field, other.to_string())),
            })
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
        }
        Ok(())
    }
}

/// Check `value` against a JSON Schema; the error names the failing place in the value.
fn check_schema(field: &str, schema: &serde_json::Value, value: &serde_json::Value) -> ApiResult<()> {
    let validator = jsonschema::validator_for(schema).map_err(|e| ApiError::Internal(format!("stored schema: {e}")))?;
    match validator.iter_errors(value).next() {
        None => Ok(()),
        Some(error) => {
            let at = error.instance_path().to_string();
            let place = if at.is_empty() { String::new() } else { format!(" at `{at}`") };
            Err(ApiError::invalid(field, format!("does not satisfy the policy's schema{place}: {error}")))
        }
    }
}

fn check_name(field: &str, value: &str, allowed: impl Fn(char) -> bool, what: &str) -> ApiResult<()> {
    if value.is_empty()
        || value.len() > 64
        || !value.chars().all(&allowed)
        || !value.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
    {
        return Err(ApiError::invalid(field, format!("`{value}`: 1 to 64 characters, {what}, starting with a letter or digit")));
    }
    Ok(())
}

/// List the built-in policies, then the uploaded ones by name and version.
#[utoipa::path(get, path = "/api/v1/policies", operation_id = "list_policies", tag = "registry",
    responses((status = 200, body = [PolicyModule]), (status = 401)), security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<PolicyModule>>> {
    let mut modules: Vec<PolicyModule> = builtin::ALL.iter().map(builtin_module).collect();
    let rows: Vec<ModuleRow> =
        sqlx::query_as(&format!("SELECT {MODULE_COLUMNS} FROM policy_modules ORDER BY name, created_at")).fetch_all(&state.db.pool).await?;
    modules.extend(rows.into_iter().map(module_of));
    for module in &mut modules {
        module.used_by = used_by(&state.db, &caller, &module.reference).await?;
    }
    Ok(Json(modules))
}

/// Upload a policy component. It is refused with 400 and the reason unless it is a
/// component of a `portico:policy` world this build runs and compiles within the caps; a
/// `name@version` already uploaded cannot be replaced (409).
#[utoipa::path(post, path = "/api/v1/policies", operation_id = "upload_policy", tag = "registry", request_body = Upload,
    responses((status = 201, body = PolicyModule), (status = 400, description = "not a valid policy component, or a bad field"), (status = 401), (status = 403),
        (status = 409, description = "this name and version exist")),
    security(("bearer" = [])))]
pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(upload): JsonBody<Upload>,
) -> ApiResult<(StatusCode, Json<PolicyModule>)> {
    caller.require(&[Role::Publisher])?;
    check_name(
        "name",
        &upload.name,
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c),
        "lower-case letters, digits, `-`, `_`, `.`",
    )?;
    if builtin::find(&upload.name).is_some() {
        return Err(ApiError::invalid("name", format!("`{}` is a built-in policy; choose another name", upload.name)));
    }
    check_name("version", &upload.version, |c| c.is_ascii_alphanumeric() || ".-+".contains(c), "letters, digits, `.`, `-`, `+`")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(upload.component.trim())
        .map_err(|e| ApiError::invalid("component", format!("not base64: {e}")))?;
    if bytes.len() > MAX_COMPONENT_BYTES {
        return Err(ApiError::invalid("component", format!("{} bytes; the limit is {MAX_COMPONENT_BYTES}", bytes.len())));
    }
    let schema = match &upload.config_schema {
        Some(schema) => {
            jsonschema::validator_for(schema).map_err(|e| ApiError::invalid("config_schema", format!("not a valid JSON Schema: {e}")))?;
            Some(schema.to_string())
        }
        None => None,
    };
    let reference = format!("{}@{}", upload.name, upload.version);
    if find(&state.db, &reference).await?.is_some() {
        return Err(ApiError::Conflict(format!("`{reference}` is already uploaded; versions are immutable, upload a new version")));
    }
    let bytes = Bytes::from(bytes);
    let compiled = match state.registry.compile(&reference, bytes.clone()).await? {
        Ok(compiled) => compiled,
        Err(LoadError::WrongWorld { reason, .. }) => {
            return Err(ApiError::invalid(
                "component",
                format!("not a policy of the {WIT_PACKAGE} world this control plane runs: {reason}"),
            ));
        }
        Err(LoadError::NotAComponent { reason, .. }) => {
            return Err(ApiError::invalid("component", format!("not a WebAssembly component: {reason}")));
        }
        Err(other) => return Err(ApiError::invalid("component", other.to_string())),
    };
    let digest = compiled.digest();
    let now = now_ms();
    sqlx::query(
        "INSERT INTO policy_modules (name, version, digest, size, description, config_schema, component, uploaded_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&upload.name)
    .bind(&upload.version)
    .bind(digest)
    .bind(bytes.len() as i64)
    .bind(&upload.description)
    .bind(&schema)
    .bind(bytes.as_ref())
    .bind(&caller.username)
    .bind(now)
    .execute(&state.db.pool)
    .await?;
    tracing::info!(policy = %reference, digest = %digest, size = bytes.len(), by = %caller.username, "policy uploaded");
    let module = PolicyModule {
        reference,
        name: upload.name,
        version: upload.version,
        digest: digest.to_owned(),
        size: bytes.len() as i64,
        description: upload.description,
        config_schema: upload.config_schema,
        builtin: false,
        uploaded_by: caller.username,
        created_at: now,
        used_by: Vec::new(),
    };
    Ok((StatusCode::CREATED, Json(module)))
}

async fn lookup(db: &Db, name: &str, version: &str) -> ApiResult<PolicyModule> {
    if let Some(policy) = builtin::find(name) {
        let module = builtin_module(policy);
        if module.version == version {
            return Ok(module);
        }
    }
    find(db, &format!("{name}@{version}")).await?.ok_or_else(|| ApiError::not_found("policy", &format!("{name}@{version}")))
}

/// Describe one policy.
#[utoipa::path(get, path = "/api/v1/policies/{name}/{version}", operation_id = "get_policy", tag = "registry",
    params(("name" = String, Path), ("version" = String, Path)),
    responses((status = 200, body = PolicyModule), (status = 401), (status = 404)), security(("bearer" = [])))]
pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<Json<PolicyModule>> {
    let mut module = lookup(&state.db, &name, &version).await?;
    module.used_by = used_by(&state.db, &caller, &module.reference).await?;
    Ok(Json(module))
}

/// The revisions using `reference` that `caller` may see: an admin all, a publisher those of
/// their own APIs, a subscriber none.
async fn used_by(db: &Db, caller: &Caller, reference: &str) -> ApiResult<Vec<String>> {
    match caller.role {
        Role::Admin => revisions_using(&db.pool, reference, None).await,
        Role::Publisher => revisions_using(&db.pool, reference, Some(&caller.user_id)).await,
        Role::Subscriber => Ok(Vec::new()),
    }
}

/// The revisions whose attachments use the policy `reference` (of the APIs `owner` owns,
/// when given), as `API version, revision N`.
async fn revisions_using<'c>(
    db: impl sqlx::Executor<'c, Database = sqlx::Any>,
    reference: &str,
    owner: Option<&str>,
) -> ApiResult<Vec<String>> {
    // `_` (allowed in names) would match any character: escaped.
    let pattern = format!("%\"policy\":\"{}\"%", reference.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT a.name, a.version, r.number FROM revisions r JOIN apis a ON a.id = r.api_id \
         WHERE r.content LIKE $1 ESCAPE '\\' AND ($2 = '' OR a.owner_id = $2) ORDER BY a.name, a.version, r.number",
    )
    .bind(pattern)
    .bind(owner.unwrap_or(""))
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|(name, version, number)| format!("{name} {version}, revision {number}")).collect())
}

/// Download a policy's component (`application/wasm`).
#[utoipa::path(get, path = "/api/v1/policies/{name}/{version}/component", operation_id = "download_policy", tag = "registry",
    params(("name" = String, Path), ("version" = String, Path)),
    responses((status = 200, content_type = "application/wasm", body = Vec<u8>), (status = 401), (status = 404)), security(("bearer" = [])))]
pub async fn download(
    State(state): State<AppState>,
    _caller: Caller,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<Response> {
    let module = lookup(&state.db, &name, &version).await?;
    let bytes = component(&state.db, &module.digest).await?.ok_or_else(|| ApiError::not_found("component", &module.digest))?;
    Ok(wasm_response(&module.digest, bytes))
}

/// A component as an HTTP response, with its digest.
pub fn wasm_response(digest: &str, bytes: Vec<u8>) -> Response {
    let mut response = bytes.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/wasm"));
    if let Ok(value) = HeaderValue::from_str(&format!("\"{digest}\"")) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// Delete an uploaded policy that no revision uses: its uploader or an admin may.
#[utoipa::path(delete, path = "/api/v1/policies/{name}/{version}", operation_id = "delete_policy", tag = "registry",
    params(("name" = String, Path), ("version" = String, Path)),
    responses((status = 204), (status = 401), (status = 403, description = "not a publisher, or another publisher's upload"), (status = 404),
        (status = 409, description = "a revision uses it, or it is built in")),
    security(("bearer" = [])))]
pub async fn delete(State(state): State<AppState>, caller: Caller, Path((name, version)): Path<(String, String)>) -> ApiResult<StatusCode> {
    caller.require(&[Role::Publisher])?;
    let module = lookup(&state.db, &name, &version).await?;
    if module.builtin {
        return Err(ApiError::Conflict(format!("`{name}` is built into the gateway and cannot be deleted")));
    }
    if module.uploaded_by != caller.username && caller.role != Role::Admin {
        return Err(ApiError::Forbidden(format!(
            "`{}` was uploaded by another publisher; only they or an admin may delete it",
            module.reference
        )));
    }
    let mut tx = state.db.pool.begin().await?;
    let users = revisions_using(&mut *tx, &module.reference, None).await?;
    if !users.is_empty() {
        return Err(ApiError::Conflict(format!(
            "`{}` is used by {} revision(s) ({}); delete them first",
            module.reference,
            users.len(),
            users.join("; ")
        )));
    }
    sqlx::query("DELETE FROM policy_modules WHERE name = $1 AND version = $2").bind(&name).bind(&version).execute(&mut *tx).await?;
    tx.commit().await?;
    tracing::info!(policy = %module.reference, by = %caller.username, "policy deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A compile past its time is answered as refused, yet keeps the one compile slot until
    /// it ends: uploads in a loop never compile two components at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_compile_past_its_time_is_refused_and_keeps_its_turn() {
        let registry = Registry { compile_timeout: Duration::from_millis(1), ..Registry::default() };
        let component = Bytes::from_static(portico_gateway::policy::builtin::find("throttle").unwrap().component);
        let Err(refused) = registry.compile("throttle", component.clone()).await else { panic!("compiled within 1 ms") };
        assert!(refused.to_string().contains("did not compile within 1ms"), "{refused}");
        assert_eq!(registry.compiling.available_permits(), 0, "the slot was given back while the compile still ran");

        // The next upload waits for that compile to end, then has its turn.
        let next = Registry { compiling: registry.compiling.clone(), compile_timeout: COMPILE_TIMEOUT };
        let compiled = next.compile("throttle", component).await.unwrap();
        assert!(compiled.is_ok());
        assert_eq!(registry.compiling.available_permits(), 1);
    }
}
