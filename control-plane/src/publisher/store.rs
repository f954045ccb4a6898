//! The `apis` and `operations` tables: rows, reads, locks and inserts.

use std::collections::BTreeSet;

use portico_gateway::contract::environment::Attachment;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::AnyConnection;

use super::definition::{Api, NewApi, Operation, Scope};
use super::status::ApiStatus;
use crate::auth::{Caller, Role};
use crate::db::{Db, new_id, now_ms};
use crate::error::{ApiError, ApiResult};

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
    pub endpoint_ca: Option<String>,
    pub endpoint_client_certificate: Option<String>,
    pub policies: String,
    pub tiers: String,
    pub status: String,
    pub owner_id: String,
    pub owner: String,
    pub created_at: i64,
    pub updated_at: i64,
}

const API_COLUMNS: &str = "a.id, a.name, a.version, a.context, a.description, a.tags, a.documentation, a.endpoints, \
     a.endpoint_ca, a.endpoint_client_certificate, a.policies, a.tiers, a.status, a.owner_id, u.username AS owner, a.created_at, a.updated_at";

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
    let rows: Vec<(String, String, String, String)> =
        sqlx::query_as("SELECT method, path, policies, scopes FROM operations WHERE api_id = $1 ORDER BY path, method")
            .bind(api_id)
            .fetch_all(&mut *conn)
            .await?;
    rows.into_iter()
        .map(|(method, path, policies, scopes)| {
            Ok(Operation { method, path, policies: from_stored("policies", &policies)?, scopes: from_stored("scopes", &scopes)? })
        })
        .collect()
}

/// The whole API from its row.
pub(super) async fn with_operations(conn: &mut AnyConnection, row: ApiRow) -> ApiResult<Api> {
    let operations = operations(conn, &row.id).await?;
    Ok(Api {
        status: row.status()?,
        tags: row.tags()?,
        endpoints: row.endpoints()?,
        endpoint_ca: row.endpoint_ca.clone(),
        endpoint_client_certificate: row.endpoint_client_certificate.clone(),
        policies: row.policies()?,
        scopes: scopes(conn, &row.id).await?,
        tiers: from_stored("tiers", &row.tiers)?,
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
    // Gateways serve `{context}/{version}`: one inside another's (`/pets/v1` and
    // `/pets/v1/admin`) would let one API's publisher capture the other's paths.
    let served = format!("{}/{}", api.context, api.version);
    let others: Vec<(String, String, String)> = sqlx::query_as("SELECT name, context, version FROM apis").fetch_all(&db.pool).await?;
    for (name, context, version) in others {
        let other = format!("{context}/{version}");
        if is_inside(&served, &other) || is_inside(&other, &served) {
            return Err(ApiError::Conflict(format!(
                "gateways would serve this API at `{served}` and `{name}` {version} at `{other}`: one inside the other; choose another context"
            )));
        }
    }
    let id = new_id();
    let now = now_ms();
    let mut tx = db.pool.begin().await?;
    sqlx::query(
        "INSERT INTO apis (id, name, version, context, description, tags, documentation, endpoints, endpoint_ca, policies, tiers, status, \
         owner_id, created_at, updated_at, endpoint_client_certificate, endpoint_client_key) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
    )
    .bind(&id)
    .bind(&api.name)
    .bind(&api.version)
    .bind(&api.context)
    .bind(&api.description)
    .bind(to_stored(&api.tags)?)
    .bind(&api.documentation)
    .bind(to_stored(&api.endpoints)?)
    .bind(&api.endpoint_ca)
    .bind(to_stored(&api.policies)?)
    .bind(to_stored(&api.tiers)?)
    .bind(ApiStatus::Created.as_str())
    .bind(owner_id)
    .bind(now)
    .bind(now)
    .bind(api.endpoint_client_certificate.as_ref().map(|c| c.certificate.clone()))
    .bind(api.endpoint_client_certificate.as_ref().map(|c| seal_client_key(db, &id, &c.key)))
    .execute(&mut *tx)
    .await?;
    insert_operations(&mut tx, &id, &api.operations).await?;
    replace_scopes(&mut tx, &id, &api.scopes).await?;
    tx.commit().await?;
    Ok(id)
}

/// Whether path `inner` is below path `outer`, segment-wise.
fn is_inside(outer: &str, inner: &str) -> bool {
    inner.strip_prefix(outer).is_some_and(|rest| rest.starts_with('/'))
}

pub(super) async fn insert_operations(conn: &mut AnyConnection, api_id: &str, operations: &[Operation]) -> ApiResult<()> {
    for operation in operations {
        sqlx::query("INSERT INTO operations (id, api_id, method, path, policies, scopes) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(new_id())
            .bind(api_id)
            .bind(&operation.method)
            .bind(&operation.path)
            .bind(to_stored(&operation.policies)?)
            .bind(to_stored(&operation.scopes)?)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The scopes an API defines, in order.
pub(super) async fn scopes(conn: &mut AnyConnection, api_id: &str) -> ApiResult<Vec<Scope>> {
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT name, description, roles FROM api_scopes WHERE api_id = $1 ORDER BY position")
            .bind(api_id)
            .fetch_all(&mut *conn)
            .await?;
    rows.into_iter().map(|(name, description, roles)| Ok(Scope { name, description, roles: from_stored("roles", &roles)? })).collect()
}

/// Make `scopes` the API's; a name another API defines is a conflict naming it (and the
/// table's key refuses it too, should two saves race).
pub(super) async fn replace_scopes(conn: &mut AnyConnection, api_id: &str, scopes: &[Scope]) -> ApiResult<()> {
    for scope in scopes {
        let owner: Option<String> =
            sqlx::query_scalar("SELECT api_id FROM api_scopes WHERE name = $1").bind(&scope.name).fetch_optional(&mut *conn).await?;
        if owner.is_some_and(|owner| owner != api_id) {
            return Err(ApiError::Conflict(format!("the scope `{}` is defined by another API; choose another name", scope.name)));
        }
    }
    sqlx::query("DELETE FROM api_scopes WHERE api_id = $1").bind(api_id).execute(&mut *conn).await?;
    for (position, scope) in scopes.iter().enumerate() {
        sqlx::query("INSERT INTO api_scopes (name, api_id, description, roles, position) VALUES ($1, $2, $3, $4, $5)")
            .bind(&scope.name)
            .bind(api_id)
            .bind(&scope.description)
            .bind(to_stored(&scope.roles)?)
            .bind(i64::try_from(position).unwrap_or(i64::MAX))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The scopes an application may be granted: those defined by the APIs it is actively
/// subscribed to (PUBLISHED or DEPRECATED) whose roles include the role of the user it acts
/// for (`end_user`, by id, with the authorization code grant; else its owner), or that name
/// no role. A name belongs to one API, so a scope is only ever granted for it.
pub async fn grantable_scopes(db: &Db, application_id: &str, end_user: Option<&str>) -> Result<BTreeSet<String>, sqlx::Error> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT sc.name, sc.roles, u.role FROM subscriptions s JOIN apis a ON a.id = s.api_id \
         JOIN api_scopes sc ON sc.api_id = a.id JOIN applications p ON p.id = s.application_id JOIN users u ON u.id = COALESCE($2, p.owner_id) \
         WHERE s.application_id = $1 AND s.status = 'ACTIVE' AND a.status IN ('PUBLISHED', 'DEPRECATED')",
    )
    .bind(application_id)
    .bind(end_user)
    .fetch_all(&db.pool)
    .await?;
    let mut grantable = BTreeSet::new();
    for (name, roles, role) in rows {
        match from_stored::<Vec<String>>("roles", &roles) {
            Ok(roles) if roles.is_empty() || roles.contains(&role) => {
                grantable.insert(name);
            }
            Ok(_) => {}
            Err(error) => tracing::error!(scope = %name, %error, "a stored scope's roles are not valid; it is not granted"),
        }
    }
    Ok(grantable)
}

/// Where an API's upstream client key is sealed: its revisions keep the sealed text as it is.
fn client_key_context(api_id: &str) -> String {
    format!("apis.endpoint_client_key:{api_id}")
}

/// An API's upstream client key, sealed for its row.
pub(super) fn seal_client_key(db: &Db, api_id: &str, key: &str) -> String {
    db.sealing.seal(key.as_bytes(), &client_key_context(api_id))
}

/// The upstream client key a revision of `api_id` was made with, opened.
pub(super) fn open_client_key(db: &Db, api_id: &str, sealed: &str) -> ApiResult<String> {
    String::from_utf8(db.sealing.open(sealed, &client_key_context(api_id))?)
        .map_err(|_| ApiError::Internal(format!("the upstream client key of API {api_id} is not text")))
}
