//! Gateway environments: named groups of gateways that revisions are deployed to. Admins
//! create and delete them, say which networks their upstreams may be in and where their
//! rate counters live; `default` comes with the schema and stays.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use portico_gateway::check;
use portico_gateway::contract::counters;
use portico_gateway::contract::environment as contract;
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::db::{Db, now_ms};
use crate::error::{ApiError, ApiResult, JsonBody};
use crate::fleet::Change;

use super::store::{from_stored, to_stored};

/// The environment every installation has.
const DEFAULT: &str = "default";

/// A gateway environment.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Environment {
    /// Name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Where API consumers reach its gateways (`https://gw.example.com`), if said.
    pub gateway_url: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// A new environment.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEnvironment {
    /// 1 to 64 lower-case letters, digits, `-`, `_`, starting with a letter or digit.
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Where API consumers reach its gateways: an `http://` or `https://` URL, with a path
    /// prefix or none, without a query.
    #[serde(default)]
    pub gateway_url: Option<String>,
}

/// The body of `PUT /api/v1/environments/{name}/gateway-url`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayUrl {
    /// As [`NewEnvironment::gateway_url`]; `null` to forget it.
    pub gateway_url: Option<String>,
}

/// `url` as kept: a checked `http(s)://host[:port][/prefix]`, without a trailing `/` (the
/// pattern the OpenAPI document gives, written out: a lower-case host name or IPv4 address,
/// a port from 1 to 65535, path segments of unreserved characters; at most 200 characters).
fn checked_gateway_url(url: &str) -> ApiResult<String> {
    let invalid = || {
        ApiError::invalid(
            "gateway_url",
            "an `http://` or `https://` URL: a lower-case host, a port from 1 to 65535 if any, a path prefix or none (at most 200 characters)",
        )
    };
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")).filter(|_| url.len() <= 200).ok_or_else(invalid)?;
    let (authority, path) = rest.find('/').map_or((rest, ""), |slash| rest.split_at(slash));
    let (host, port) = authority.split_once(':').map_or((authority, None), |(host, port)| (host, Some(port)));
    let host_ok = (1..=63).contains(&host.len())
        && host.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && host.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
    let port_ok = port.is_none_or(|port| !port.starts_with('0') && port.chars().all(|c| c.is_ascii_digit()) && port.parse::<u16>().is_ok());
    let path = path.strip_suffix('/').unwrap_or(path);
    let path_ok = path.is_empty()
        || path.strip_prefix('/').is_some_and(|path| {
            path.split('/').all(|segment| !segment.is_empty() && segment.chars().all(|c| c.is_ascii_alphanumeric() || "._~-".contains(c)))
        });
    if !(host_ok && port_ok && path_ok) {
        return Err(invalid());
    }
    Ok(url.strip_suffix('/').unwrap_or(url).to_owned())
}

/// Say where `environment`'s gateways are reached, unless it is said already (the
/// all-in-one profile offers its own gateway's address at start).
pub async fn offer_gateway_url(db: &Db, environment: &str, url: &str) -> ApiResult<()> {
    let url = checked_gateway_url(url)?;
    sqlx::query("UPDATE environments SET gateway_url = $1 WHERE name = $2 AND gateway_url IS NULL")
        .bind(&url)
        .bind(environment)
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// Say where an environment's gateways are reached by API consumers, or forget it (admin).
/// Gateways do not need it: the developer portal shows it and its try-it panel calls it.
#[utoipa::path(put, path = "/api/v1/environments/{name}/gateway-url", operation_id = "set_gateway_url", tag = "publisher",
    params(("name" = String, Path)), request_body = GatewayUrl,
    responses((status = 200, body = Environment), (status = 400), (status = 401), (status = 403), (status = 404)), security(("bearer" = [])))]
pub async fn set_gateway_url(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(change): JsonBody<GatewayUrl>,
) -> ApiResult<Json<Environment>> {
    caller.require(&[Role::Admin])?;
    let url = change.gateway_url.as_deref().map(checked_gateway_url).transpose()?;
    let updated =
        sqlx::query("UPDATE environments SET gateway_url = $1 WHERE name = $2").bind(&url).bind(&name).execute(&state.db.pool).await?;
    if updated.rows_affected() == 0 {
        return Err(ApiError::not_found("environment", &name));
    }
    let environment = sqlx::query_as::<_, Environment>(&format!("{SELECT} WHERE name = $1")).bind(&name).fetch_one(&state.db.pool).await?;
    Ok(Json(environment))
}

const SELECT: &str = "SELECT name, description, gateway_url, created_at FROM environments";

/// List the environments (any logged-in user).
#[utoipa::path(get, path = "/api/v1/environments", operation_id = "list_environments", tag = "publisher", responses((status = 200, body = [Environment]), (status = 401)), security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, _caller: Caller) -> ApiResult<Json<Vec<Environment>>> {
    let environments = sqlx::query_as::<_, Environment>(&format!("{SELECT} ORDER BY name")).fetch_all(&state.db.pool).await?;
    Ok(Json(environments))
}

/// Create an environment (admin).
#[utoipa::path(post, path = "/api/v1/environments", operation_id = "create_environment", tag = "publisher", request_body = NewEnvironment,
    responses((status = 201, body = Environment), (status = 400), (status = 401), (status = 403), (status = 409, description = "name taken")),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(new): JsonBody<NewEnvironment>,
) -> ApiResult<(StatusCode, Json<Environment>)> {
    caller.require(&[Role::Admin])?;
    let name_ok = (1..=64).contains(&new.name.len())
        && new.name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && new.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !name_ok {
        return Err(ApiError::invalid("name", "1 to 64 lower-case letters, digits, `-`, `_`, starting with a letter or digit"));
    }
    if new.description.chars().count() > 1000 {
        return Err(ApiError::invalid("description", "at most 1000 characters"));
    }
    let gateway_url = new.gateway_url.as_deref().map(checked_gateway_url).transpose()?;
    let environment = Environment { name: new.name, description: new.description, gateway_url, created_at: now_ms() };
    let inserted = sqlx::query("INSERT INTO environments (name, description, gateway_url, created_at) VALUES ($1, $2, $3, $4)")
        .bind(&environment.name)
        .bind(&environment.description)
        .bind(&environment.gateway_url)
        .bind(environment.created_at)
        .execute(&state.db.pool)
        .await;
    match inserted {
        Ok(_) => Ok((StatusCode::CREATED, Json(environment))),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(ApiError::Conflict(format!("the environment `{}` exists", environment.name)))
        }
        Err(e) => Err(e.into()),
    }
}

/// Delete an environment nothing is deployed on (admin); `default` stays.
#[utoipa::path(delete, path = "/api/v1/environments/{name}", operation_id = "delete_environment", tag = "publisher", params(("name" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404), (status = 409, description = "in use, or the default")),
    security(("bearer" = [])))]
pub async fn delete(State(state): State<AppState>, caller: Caller, Path(name): Path<String>) -> ApiResult<StatusCode> {
    caller.require(&[Role::Admin])?;
    if name == DEFAULT {
        return Err(ApiError::Conflict("the default environment cannot be deleted".into()));
    }
    // One statement, so that no deployment slips in between check and delete.
    let deleted = sqlx::query("DELETE FROM environments WHERE name = $1 AND NOT EXISTS (SELECT 1 FROM deployments WHERE environment = $1)")
        .bind(&name)
        .execute(&state.db.pool)
        .await?;
    if deleted.rows_affected() == 1 {
        return Ok(StatusCode::NO_CONTENT);
    }
    let deployments: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM deployments WHERE environment = $1").bind(&name).fetch_one(&state.db.pool).await?;
    if deployments > 0 {
        Err(ApiError::Conflict(format!("{deployments} APIs are deployed on `{name}`; undeploy them first")))
    } else {
        Err(ApiError::not_found("environment", &name))
    }
}

/// The networks an environment's upstreams may be in: an address in an `allow` network is
/// accepted, else one in a `deny` network is refused, else it is accepted. An endpoint
/// written as a refused IP address cannot be deployed there; a host name that resolves only
/// to refused addresses fails its requests with 502.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamNetworks {
    /// Networks accepted even when `deny` lists them: an IP (`127.0.0.1`) or a network
    /// (`10.0.0.0/8`, `2001:db8::/32`); at most 256.
    #[serde(default)]
    #[schema(max_items = 256)]
    pub allow: Vec<String>,
    /// Networks refused; at most 256. Left out of a change, the defaults: loopback, `0.0.0.0/8`,
    /// `::`, link-local and cloud metadata addresses.
    #[serde(default)]
    #[schema(max_items = 256)]
    pub deny: Option<Vec<String>>,
}

/// The networks `environment`'s upstreams may be in; `None` when there is no such environment.
pub async fn upstream_networks(conn: &mut AnyConnection, environment: &str) -> ApiResult<Option<contract::UpstreamNetworks>> {
    let Some(stored) = stored_setting(conn, environment, "upstream_networks").await? else { return Ok(None) };
    stored.map_or_else(|| Ok(contract::UpstreamNetworks::default()), |text| from_stored("upstream networks", &text)).map(Some)
}

/// An environment's setting kept as JSON text in `column` (`Some(None)` when NULL: its
/// default); `None` when there is no such environment.
async fn stored_setting(conn: &mut AnyConnection, environment: &str, column: &'static str) -> ApiResult<Option<Option<String>>> {
    let row: Option<(Option<String>,)> =
        sqlx::query_as(&format!("SELECT {column} FROM environments WHERE name = $1")).bind(environment).fetch_optional(&mut *conn).await?;
    Ok(row.map(|(stored,)| stored))
}

/// Set an environment's setting kept in `column` (`None`: its default), through the one
/// path that tells its gateways.
async fn store_setting(state: &AppState, environment: &str, column: &'static str, stored: Option<String>) -> ApiResult<()> {
    let mut change = Change::begin(state).await?;
    let updated = sqlx::query(&format!("UPDATE environments SET {column} = $1 WHERE name = $2"))
        .bind(&stored)
        .bind(environment)
        .execute(&mut *change)
        .await?;
    if updated.rows_affected() == 0 {
        return Err(ApiError::not_found("environment", environment));
    }
    change.commit().await
}

/// The networks an environment's upstreams may be in (any logged-in user).
#[utoipa::path(get, path = "/api/v1/environments/{name}/upstream-networks", operation_id = "get_upstream_networks", tag = "publisher",
    params(("name" = String, Path)), responses((status = 200, body = UpstreamNetworks), (status = 401), (status = 404)), security(("bearer" = [])))]
pub async fn get_upstream_networks(
    State(state): State<AppState>,
    _caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<UpstreamNetworks>> {
    let mut conn = state.db.pool.acquire().await?;
    let networks = upstream_networks(&mut conn, &name).await?.ok_or_else(|| ApiError::not_found("environment", &name))?;
    Ok(Json(UpstreamNetworks { allow: networks.allow, deny: Some(networks.deny) }))
}

/// Say which networks an environment's upstreams may be in (admin). Its gateways apply it
/// within a second; an API deployed there whose endpoint is an address now refused stops
/// loading (503) and is listed in `GET /api/v1/gateways`' `failed_apis`.
#[utoipa::path(put, path = "/api/v1/environments/{name}/upstream-networks", operation_id = "set_upstream_networks", tag = "publisher",
    params(("name" = String, Path)), request_body = UpstreamNetworks,
    responses((status = 200, body = UpstreamNetworks), (status = 400), (status = 401), (status = 403), (status = 404)), security(("bearer" = [])))]
pub async fn set_upstream_networks(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(change): JsonBody<UpstreamNetworks>,
) -> ApiResult<Json<UpstreamNetworks>> {
    caller.require(&[Role::Admin])?;
    let networks = contract::UpstreamNetworks {
        allow: change.allow.iter().map(|n| n.trim().to_owned()).collect(),
        deny: match change.deny {
            Some(deny) => deny.iter().map(|n| n.trim().to_owned()).collect(),
            None => contract::UpstreamNetworks::default().deny,
        },
    };
    for (field, list) in [("allow", &networks.allow), ("deny", &networks.deny)] {
        if list.len() > 256 {
            return Err(ApiError::invalid(field, "at most 256 networks"));
        }
    }
    check::upstream_networks(&networks).map_err(|reason| {
        let field = reason.split(':').next().unwrap_or("allow").to_owned();
        ApiError::invalid(field, reason)
    })?;
    store_setting(&state, &name, "upstream_networks", Some(to_stored(&networks)?)).await?;
    tracing::info!(environment = %name, allow = ?networks.allow, deny = ?networks.deny, by = %caller.username, "upstream networks changed");
    Ok(Json(UpstreamNetworks { allow: networks.allow, deny: Some(networks.deny) }))
}

/// Where an environment's rate counters live.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Counters {
    /// A Redis the environment's gateways share (the Traffic Manager's store), so that a
    /// limit holds across them and a day's or a month's quota outlives their restarts:
    /// `url` (`redis://host:port/db`, `rediss://` for TLS) or `sentinel` (`nodes`, `master`,
    /// `db`, `password`), with `timeout` (how long a hit waits for Redis, default `20ms`, at
    /// most `1s`), `mode` (`leased`, the default, or `exact`: a round trip per hit) and
    /// `fleet_size` (how many gateways share it: each counts alone against its share while
    /// Redis is away). Left out, each gateway counts in its own process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub redis: Option<counters::RedisConfig>,
}

/// Where `environment`'s rate counters live; `None` when there is no such environment.
pub async fn counters(db: &Db, environment: &str) -> ApiResult<Option<counters::CountersConfig>> {
    let Some(stored) = stored_setting(&mut *db.pool.acquire().await?, environment, "counters").await? else { return Ok(None) };
    let Some(sealed) = stored else { return Ok(Some(counters::CountersConfig::default())) };
    let text = String::from_utf8(db.sealing.open(&sealed, &counters_context(environment))?)
        .map_err(|_| ApiError::Internal(format!("the counters of `{environment}` are not text")))?;
    Ok(Some(from_stored("counters", &text)?))
}

/// Where an environment's counters are sealed (they may hold the store's password).
fn counters_context(environment: &str) -> String {
    format!("environments.counters:{environment}")
}

/// A counters setting as shown: passwords as `***`.
fn shown(config: counters::CountersConfig) -> Counters {
    let mut redis = config.redis;
    if let Some(redis) = &mut redis {
        if let Some(url) = &mut redis.url {
            *url = without_password(url);
        }
        if let Some(sentinel) = &mut redis.sentinel {
            sentinel.nodes = sentinel.nodes.iter().map(|node| without_password(node)).collect();
            if sentinel.password.is_some() {
                sentinel.password = Some("***".into());
            }
        }
    }
    Counters { redis }
}

/// `url` with the password of its user information (`redis://user:secret@host`) as `***`.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority = rest.split('/').next().unwrap_or(rest);
    let Some((user_info, host)) = authority.rsplit_once('@') else { return url.to_owned() };
    let Some((user, _password)) = user_info.split_once(':') else { return url.to_owned() };
    format!("{scheme}://{user}:***@{host}{}", &rest[authority.len()..])
}

/// Where an environment's rate counters live (admin), passwords shown as `***`.
#[utoipa::path(get, path = "/api/v1/environments/{name}/counters", operation_id = "get_counters", tag = "publisher",
    params(("name" = String, Path)), responses((status = 200, body = Counters), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
pub async fn get_counters(State(state): State<AppState>, caller: Caller, Path(name): Path<String>) -> ApiResult<Json<Counters>> {
    caller.require(&[Role::Admin])?;
    let config = counters(&state.db, &name).await?.ok_or_else(|| ApiError::not_found("environment", &name))?;
    Ok(Json(shown(config)))
}

/// Say where an environment's rate counters live (admin); kept sealed, since it may hold the
/// store's password (shown as `***`: a change gives it again). Its gateways move to that
/// store within a second (counts kept in the old one stay there); `{}` keeps them in each
/// gateway.
#[utoipa::path(put, path = "/api/v1/environments/{name}/counters", operation_id = "set_counters", tag = "publisher",
    params(("name" = String, Path)), request_body = Counters,
    responses((status = 200, body = Counters), (status = 400), (status = 401), (status = 403), (status = 404)), security(("bearer" = [])))]
pub async fn set_counters(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(change): JsonBody<Counters>,
) -> ApiResult<Json<Counters>> {
    caller.require(&[Role::Admin])?;
    if let Some(redis) = &change.redis
        && let Some((field, reason)) = redis.problems().into_iter().next()
    {
        return Err(ApiError::invalid(format!("redis.{field}"), reason));
    }
    let config = counters::CountersConfig { redis: change.redis };
    let stored = (!config.is_local()).then(|| to_stored(&config)).transpose()?;
    let sealed = stored.map(|text| state.db.sealing.seal(text.as_bytes(), &counters_context(&name)));
    store_setting(&state, &name, "counters", sealed).await?;
    tracing::info!(environment = %name, shared = !config.is_local(), by = %caller.username, "rate counters' store changed");
    Ok(Json(shown(config)))
}

#[cfg(test)]
mod tests {
    use super::checked_gateway_url;

    #[test]
    fn a_gateway_url_is_what_the_document_s_pattern_says() {
        for (given, kept) in [
            ("https://gw.example", "https://gw.example"),
            ("http://127.0.0.1:40815", "http://127.0.0.1:40815"),
            ("http://127.0.0.1:65535/", "http://127.0.0.1:65535"),
            ("http://gw.example:1", "http://gw.example:1"),
            ("https://gw.example/edge/", "https://gw.example/edge"),
            ("https://gw.example/a.b/c~d-e_f", "https://gw.example/a.b/c~d-e_f"),
        ] {
            assert_eq!(checked_gateway_url(given).unwrap(), kept);
        }
        let long = format!("https://gw.example/{}", "a".repeat(190));
        for bad in [
            "https://gw.example\n",
            " https://gw.example",
            "https://GW.example",
            "https://gw.example:0",
            "https://gw.example:123456",
            "https://gw.example:65536",
            "https://gw.example:99999",
            "https://gw.example:+80",
            "https://gw.example:",
            "https://gw.example//",
            "https://gw.example/a%20b",
            "https://[::1]",
            "https://-gw.example",
            long.as_str(),
        ] {
            assert!(checked_gateway_url(bad).is_err(), "{bad:?}");
        }
    }
}
