//! Who is calling the management API: users with a role (admin, publisher, subscriber),
//! Argon2id password hashes, bearer session tokens (stored hashed), the `Caller`
//! extractor that every endpoint uses, and the first admin made at first start.

use std::net::IpAddr;
use std::sync::Arc;

use std::sync::atomic::{AtomicUsize, Ordering};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use portico_gateway::contract::hex;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::db::{Db, new_id, now_ms};
use crate::error::{ApiError, ApiResult, JsonBody};

/// How long a login session lasts.
const SESSION_TTL_MS: i64 = 12 * 3600 * 1000;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including users, tiers and environments.
    Admin,
    /// Create, publish and deploy APIs.
    Publisher,
    /// Use the developer portal: applications, subscriptions, keys.
    Subscriber,
}

impl Role {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Publisher => "publisher",
            Role::Subscriber => "subscriber",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "admin" => Some(Role::Admin),
            "publisher" => Some(Role::Publisher),
            "subscriber" => Some(Role::Subscriber),
            _ => None,
        }
    }
}

/// The authenticated caller of a management endpoint.
#[derive(Debug, Clone)]
pub struct Caller {
    /// User id.
    pub user_id: String,
    /// User name.
    pub username: String,
    /// Role.
    pub role: Role,
}

impl Caller {
    /// Refuse with 403 unless the caller has one of `roles` (admins always pass).
    pub fn require(&self, roles: &[Role]) -> ApiResult<()> {
        if self.role == Role::Admin || roles.contains(&self.role) {
            Ok(())
        } else {
            let allowed: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            Err(ApiError::Forbidden(format!("this needs the role {}; you are {}", allowed.join(" or "), self.role.as_str())))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::Unauthorized("log in first: send `Authorization: Bearer <token>` from POST /api/v1/auth/login".into())
            })?;
        session_caller(&state.db, token).await
    }
}

/// The user whose session `token` is (a bearer token, or the console's cookie).
pub(crate) async fn session_caller(db: &Db, token: &str) -> ApiResult<Caller> {
    let row: Option<(String, String, String, i64)> = sqlx::query_as(
        "SELECT u.id, u.username, u.role, s.expires_at FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = $1",
    )
    .bind(token_hash(token))
    .fetch_optional(&db.pool)
    .await?;
    match row {
        Some((user_id, username, role, expires_at)) if expires_at > now_ms() => {
            Ok(Caller { user_id, username, role: Role::parse(&role).ok_or_else(|| ApiError::Internal(format!("unknown role {role}")))? })
        }
        _ => Err(ApiError::Unauthorized("the session token is unknown or expired; log in again".into())),
    }
}

/// The value of the cookie `name` in a request's headers.
pub(crate) fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// sha256 hex of a bearer token: what the database keeps.
pub fn token_hash(token: &str) -> String {
    hex::sha256(token.as_bytes())
}

/// A random token of 32 bytes, base64url.
pub fn random_token() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether two secrets are equal, compared in time that depends on their length only.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Argon2id as pinned here (OWASP's minimum: 19 MiB, 2 passes, 1 lane), so that a library
/// upgrade cannot change the cost of new hashes unnoticed. A stored hash is verified with
/// the parameters it names.
fn argon2() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(19 * 1024, 2, 1, None).unwrap_or_default())
}

/// Argon2id hash of a password or client secret, as a PHC string. Blocking: handlers
/// call [`hash`].
pub fn hash_secret(secret: &str) -> ApiResult<String> {
    let salt = SaltString::generate(&mut OsRng);
    argon2().hash_password(secret.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| ApiError::Internal(format!("hashing: {e}")))
}

/// Whether `secret` matches an Argon2id PHC string. Blocking: handlers call [`verify`].
pub fn verify_secret(secret: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| argon2().verify_password(secret.as_bytes(), &hash).is_ok())
}

/// Argon2 computations that may run at once: each takes 19 MiB and tens of milliseconds
/// of a core, and anyone can cause one (sign-up, login, an unknown client).
const HASHING_AT_ONCE: usize = 2;
/// Computations that may wait for a turn; more are refused at once (429).
const HASHING_QUEUE: usize = 64;

/// Run Argon2 work off the async threads, [`HASHING_AT_ONCE`] at a time: a flood of
/// sign-ups or logins waits here (or is refused) instead of taking the threads that serve
/// everything else, fleet streams included.
async fn hashing<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
    static TURNS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(HASHING_AT_ONCE);
    static WAITING: AtomicUsize = AtomicUsize::new(0);
    /// Counts a waiter until it gets its turn or is dropped.
    struct Waiting;
    impl Drop for Waiting {
        fn drop(&mut self) {
            WAITING.fetch_sub(1, Ordering::Relaxed);
        }
    }
    if WAITING.fetch_add(1, Ordering::Relaxed) >= HASHING_QUEUE {
        WAITING.fetch_sub(1, Ordering::Relaxed);
        return Err(ApiError::TooManyRequests("too many password checks are waiting; retry in a moment".into()));
    }
    let waiting = Waiting;
    let _turn = TURNS.acquire().await.map_err(|e| ApiError::Internal(e.to_string()))?;
    drop(waiting);
    tokio::task::spawn_blocking(work).await.map_err(|e| ApiError::Internal(format!("hashing task: {e}")))
}

/// [`hash_secret`], scheduled by [`hashing`].
pub(crate) async fn hash(secret: &str) -> ApiResult<String> {
    let secret = secret.to_owned();
    hashing(move || hash_secret(&secret)).await?
}

/// [`verify_secret`] against `phc`, or against a decoy when there is none (an unknown
/// user or client costs what a known one does), scheduled by [`hashing`].
pub(crate) async fn verify(secret: &str, phc: Option<&str>) -> ApiResult<bool> {
    let (secret, phc) = (secret.to_owned(), phc.map(str::to_owned));
    hashing(move || match phc {
        Some(phc) => verify_secret(&secret, &phc),
        None => {
            verify_secret(&secret, decoy_hash());
            false
        }
    })
    .await
}

/// A PHC string that verifies nothing, checked against when a user is unknown so that
/// answering does not reveal which names exist by taking less time.
pub(crate) fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_secret(&random_token()).unwrap_or_default())
}

/// The decoy hash, for tests that check it costs what a real one does.
#[doc(hidden)]
pub fn decoy_hash_for_tests() -> &'static str {
    decoy_hash()
}

/// Check a user name: 3–64 characters of letters, digits, `.`, `_`, `-`, `@`.
pub fn validate_username(field: &str, name: &str) -> ApiResult<()> {
    let ok = (3..=64).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c));
    if ok { Ok(()) } else { Err(ApiError::invalid(field, "3 to 64 characters: letters, digits, `.`, `_`, `-`, `@`")) }
}

/// Check a password: at least 12 characters.
pub fn validate_password(field: &str, password: &str) -> ApiResult<()> {
    if password.chars().count() >= 12 { Ok(()) } else { Err(ApiError::invalid(field, "at least 12 characters")) }
}

/// Create a user; a taken name is a conflict.
pub async fn create_user(db: &Db, username: &str, password: &str, role: Role) -> ApiResult<String> {
    validate_username("username", username)?;
    validate_password("password", password)?;
    let id = new_id();
    let result = sqlx::query("INSERT INTO users (id, username, password_hash, role, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&id)
        .bind(username)
        .bind(hash(password).await?)
        .bind(role.as_str())
        .bind(now_ms())
        .execute(&db.pool)
        .await;
    match result {
        Ok(_) => Ok(id),
        Err(sqlx::Error::Database(db_err)) if db_err.is_unique_violation() => {
            Err(ApiError::Conflict(format!("the user name `{username}` is taken")))
        }
        Err(e) => Err(e.into()),
    }
}

/// At first start (no admin yet), create `admin` with the password from
/// `PORTICO_ADMIN_PASSWORD`, or a random one that is returned to be shown once.
pub async fn bootstrap_admin(db: &Db) -> anyhow::Result<Option<String>> {
    let admins: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = 'admin'").fetch_one(&db.pool).await?;
    if admins > 0 {
        return Ok(None);
    }
    let (password, generated) = match std::env::var("PORTICO_ADMIN_PASSWORD") {
        Ok(password) if !password.is_empty() => (password, false),
        _ => (random_token(), true),
    };
    match create_user(db, "admin", &password, Role::Admin).await {
        Ok(_) => Ok(generated.then_some(password)),
        // Another node sharing the database made it first.
        Err(ApiError::Conflict(_)) => Ok(None),
        Err(e) => Err(anyhow::anyhow!("creating the first admin: {e}")),
    }
}

/// The routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/logout", post(logout))
        .route("/api/v1/me", get(me))
        .route("/api/v1/users", post(create).get(list))
        .route("/api/v1/users/{id}/role", put(set_role))
}

/// Credentials for `POST /api/v1/auth/login`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

/// A session.
#[derive(Debug, Serialize, ToSchema)]
pub struct Session {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    /// Milliseconds since the Unix epoch.
    pub expires_at: i64,
    /// The user's role.
    pub role: Role,
}

/// Log in with a user name and password.
#[utoipa::path(operation_id = "login", post, path = "/api/v1/auth/login", tag = "auth", request_body = Login,
    responses((status = 200, body = Session), (status = 401, description = "wrong credentials"), (status = 429, description = "too many failures, or too many password checks waiting")))]
pub async fn login(State(state): State<AppState>, source: Source, JsonBody(login): JsonBody<Login>) -> ApiResult<Json<Session>> {
    let (user_id, role) = check_password(&state, source, &login.username, &login.password).await?;
    let token = random_token();
    let expires_at = now_ms() + SESSION_TTL_MS;
    sqlx::query("INSERT INTO sessions (token_hash, user_id, expires_at) VALUES ($1, $2, $3)")
        .bind(token_hash(&token))
        .bind(&user_id)
        .bind(expires_at)
        .execute(&state.db.pool)
        .await?;
    Ok(Json(Session { token, expires_at, role }))
}

/// Delete the sessions expired at `now` (milliseconds since the Unix epoch).
pub(crate) async fn delete_expired_sessions(db: &Db, now: i64) -> ApiResult<()> {
    sqlx::query("DELETE FROM sessions WHERE expires_at < $1").bind(now).execute(&db.pool).await?;
    Ok(())
}

/// The id and role of the user `username` if `password` is theirs: 401 if not, 429 when
/// that user name failed too often from `source` lately (see [`FailureLimiter`]).
pub(crate) async fn check_password(state: &AppState, source: Source, username: &str, password: &str) -> ApiResult<(String, Role)> {
    let attempt = state.failures.begin(&format!("user:{username}"), source.0)?;
    let row: Option<(String, String, String)> = sqlx::query_as("SELECT id, password_hash, role FROM users WHERE username = $1")
        .bind(username)
        .fetch_optional(&state.db.pool)
        .await?;
    let matches = verify(password, row.as_ref().map(|(_, hash, _)| hash.as_str())).await?;
    let Some((user_id, _, role)) = row.filter(|_| matches) else {
        attempt.failed();
        return Err(ApiError::Unauthorized("wrong user name or password".into()));
    };
    attempt.succeeded();
    Ok((user_id, Role::parse(&role).unwrap_or(Role::Subscriber)))
}

/// End the caller's session.
#[utoipa::path(operation_id = "logout", post, path = "/api/v1/auth/logout", tag = "auth", responses((status = 204)), security(("bearer" = [])))]
pub async fn logout(State(state): State<AppState>, _caller: Caller, parts: axum::http::HeaderMap) -> ApiResult<axum::http::StatusCode> {
    if let Some(token) = parts.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")) {
        end_session(&state.db, token).await?;
    }
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Forget the session `token`.
pub(crate) async fn end_session(db: &Db, token: &str) -> ApiResult<()> {
    sqlx::query("DELETE FROM sessions WHERE token_hash = $1").bind(token_hash(token)).execute(&db.pool).await?;
    Ok(())
}

/// The body of `PUT /api/v1/users/{id}/role`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleChange {
    /// The user's new role.
    pub role: Role,
}

/// Give a user another role (admin); it holds from their next request. An admin cannot
/// change their own role (so that the last admin cannot lock everyone out).
#[utoipa::path(operation_id = "set_user_role", put, path = "/api/v1/users/{id}/role", tag = "auth", params(("id" = String, Path)),
    request_body = RoleChange, responses((status = 200, body = User), (status = 401), (status = 403), (status = 404), (status = 409, description = "one's own role")),
    security(("bearer" = [])))]
pub async fn set_role(
    State(state): State<AppState>,
    caller: Caller,
    axum::extract::Path(id): axum::extract::Path<String>,
    JsonBody(change): JsonBody<RoleChange>,
) -> ApiResult<Json<User>> {
    caller.require(&[Role::Admin])?;
    if id == caller.user_id {
        return Err(ApiError::Conflict("you cannot change your own role; another admin can".into()));
    }
    let updated =
        sqlx::query("UPDATE users SET role = $1 WHERE id = $2").bind(change.role.as_str()).bind(&id).execute(&state.db.pool).await?;
    if updated.rows_affected() == 0 {
        return Err(ApiError::not_found("user", &id));
    }
    tracing::info!(user = %id, role = change.role.as_str(), by = %caller.username, "role changed");
    let user = sqlx::query_as::<_, User>("SELECT id, username, role FROM users WHERE id = $1").bind(&id).fetch_one(&state.db.pool).await?;
    Ok(Json(user))
}

/// A user as shown by the API (never its password hash).
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct User {
    /// Id.
    pub id: String,
    /// Name.
    pub username: String,
    /// Role, as text.
    pub role: String,
}

/// The caller.
#[utoipa::path(operation_id = "me", get, path = "/api/v1/me", tag = "auth", responses((status = 200, body = User)), security(("bearer" = [])))]
pub async fn me(caller: Caller) -> Json<User> {
    Json(User { id: caller.user_id, username: caller.username, role: caller.role.as_str().to_owned() })
}

/// A user to create (admins only).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Name.
    pub username: String,
    /// Password, at least 12 characters.
    pub password: String,
    /// Role.
    pub role: Role,
}

/// Create a user (admin).
#[utoipa::path(operation_id = "create_user", post, path = "/api/v1/users", tag = "auth", request_body = NewUser,
    responses((status = 201, body = User), (status = 400), (status = 403), (status = 409), (status = 429)), security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(user): JsonBody<NewUser>,
) -> ApiResult<(axum::http::StatusCode, Json<User>)> {
    caller.require(&[Role::Admin])?;
    let id = create_user(&state.db, &user.username, &user.password, user.role).await?;
    Ok((axum::http::StatusCode::CREATED, Json(User { id, username: user.username, role: user.role.as_str().to_owned() })))
}

/// List users (admin).
#[utoipa::path(operation_id = "list_users", get, path = "/api/v1/users", tag = "auth", responses((status = 200, body = [User]), (status = 403, description = "not an admin")), security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<User>>> {
    caller.require(&[Role::Admin])?;
    let users = sqlx::query_as::<_, User>("SELECT id, username, role FROM users ORDER BY username").fetch_all(&state.db.pool).await?;
    Ok(Json(users))
}

/// Counts failed attempts per identity (a user name, a client id) and source address, and
/// refuses further ones from that source for a while once there are too many: a brake on
/// password and secret guessing that does not lock an identity out for everyone (another
/// source, with the right secret, still gets in). Checking and counting are one step, so
/// that concurrent guesses cannot pass the brake together.
#[derive(Debug, Default)]
pub struct FailureLimiter {
    attempts: std::sync::Mutex<std::collections::HashMap<(String, IpAddr), Tally>>,
}

#[derive(Debug, Clone, Copy)]
struct Tally {
    failures: u32,
    /// Attempts begun and not settled yet: counted as failures until they are.
    pending: u32,
    since: i64,
}

/// Failures allowed per window before refusing.
const MAX_FAILURES: u32 = 10;
/// The window, and how long a refusal lasts.
const FAILURE_WINDOW_MS: i64 = 60_000;

impl FailureLimiter {
    /// A shared limiter.
    pub fn shared() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Begin an attempt of `identity` from `source`, or refuse it (429) when that pair
    /// failed too often lately, counting the attempts still in progress.
    pub fn begin(&self, identity: &str, source: IpAddr) -> ApiResult<Attempt<'_>> {
        let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        let now = now_ms();
        if attempts.len() > 100_000 {
            attempts.retain(|_, tally| tally.pending > 0 || now - tally.since < FAILURE_WINDOW_MS);
        }
        let key = (identity.to_owned(), source);
        let tally = attempts.entry(key.clone()).or_insert(Tally { failures: 0, pending: 0, since: now });
        if now - tally.since >= FAILURE_WINDOW_MS {
            *tally = Tally { failures: 0, pending: tally.pending, since: now };
        }
        if tally.failures + tally.pending >= MAX_FAILURES {
            return Err(ApiError::TooManyRequests("too many failed attempts; wait a minute".into()));
        }
        tally.pending += 1;
        Ok(Attempt { limiter: self, key, settled: false })
    }

    fn settle(&self, key: &(String, IpAddr), failed: bool) {
        let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tally) = attempts.get_mut(key) {
            tally.pending = tally.pending.saturating_sub(1);
            if failed {
                tally.failures += 1;
            } else if tally.pending == 0 {
                attempts.remove(key);
            } else {
                tally.failures = 0;
            }
        }
    }
}

/// An attempt in progress; say how it ended (dropped unsettled, it counts for nothing).
#[must_use]
pub struct Attempt<'a> {
    limiter: &'a FailureLimiter,
    key: (String, IpAddr),
    settled: bool,
}

impl Attempt<'_> {
    /// The secret was wrong: one more failure.
    pub fn failed(mut self) {
        self.settled = true;
        self.limiter.settle(&self.key, true);
    }

    /// The secret was right: the pair's failures are forgotten.
    pub fn succeeded(mut self) {
        self.settled = true;
        self.limiter.settle(&self.key, false);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.settled {
            let mut attempts = self.limiter.attempts.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(tally) = attempts.get_mut(&self.key) {
                tally.pending = tally.pending.saturating_sub(1);
            }
        }
    }
}

/// The address a request came from (its TCP peer), as the server recorded it; unspecified
/// when it did not (a request built in process).
#[derive(Debug, Clone, Copy)]
pub struct Source(pub IpAddr);

impl Source {
    /// The source of a request whose parts these are.
    pub fn of(parts: &Parts) -> Self {
        let peer = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>();
        Source(peer.map_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |info| info.0.ip()))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Source {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Source::of(parts))
    }
}
