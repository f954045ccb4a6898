//! Usage analytics (WSO2's analytics, without a separate analytics server): gateways report
//! their requests per minute, API, operation, application and status class, with latency
//! histograms, over the fleet link ([`ANALYTICS_PATH`]); each report is stored once, however
//! often it is sent, in `analytics_minutes`, kept for the retention the control plane was
//! started with, and served to publishers (their APIs) and subscribers (their applications).

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use portico_gateway::contract::fleet::{ANALYTICS_PATH, LATENCY_BOUNDS_MS, MAX_USAGE_ROWS, UsageReport};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::AppState;
use crate::auth::Caller;
use crate::db::{Db, now_ms};
use crate::error::{ApiError, ApiResult, JsonBody, QueryParams};
use crate::fleet::tokens::GatewayCaller;

const BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;
/// The largest report body taken: [`MAX_USAGE_ROWS`] rows of long names.
const MAX_REPORT_BYTES: usize = 8 * 1024 * 1024;
/// The most points a query may ask for.
const MAX_POINTS: i64 = 10_080;

/// The OpenAPI paths of this module (the gateway-facing report is in `docs/fleet.md`).
#[derive(OpenApi)]
#[openapi(paths(api, application))]
pub struct Doc;

/// The routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(ANALYTICS_PATH, post(report).layer(DefaultBodyLimit::max(MAX_REPORT_BYTES)))
        .route("/api/v1/analytics/apis/{id}", get(api))
        .route("/api/v1/analytics/applications/{id}", get(application))
}

/// The bucket columns, in the order of [`LATENCY_BOUNDS_MS`], then the slowest.
static BUCKET_COLUMNS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let mut columns: Vec<String> = LATENCY_BOUNDS_MS.iter().map(|bound| format!("latency_le_{bound}ms")).collect();
    columns.push(format!("latency_over_{}ms", LATENCY_BOUNDS_MS[LATENCY_BOUNDS_MS.len() - 1]));
    columns
});

/// Add one row to what is stored (or store it).
static UPSERT: LazyLock<String> = LazyLock::new(|| {
    let columns = BUCKET_COLUMNS.join(", ");
    let values = (10..10 + BUCKETS).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
    let added = ["requests", "latency_us"]
        .into_iter()
        .chain(BUCKET_COLUMNS.iter().map(String::as_str))
        .map(|column| format!("{column} = analytics_minutes.{column} + excluded.{column}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT INTO analytics_minutes (environment, minute, api_name, api_version, operation, application_id, status_class, \
         requests, latency_us, {columns}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, {values}) \
         ON CONFLICT (environment, minute, api_name, api_version, operation, application_id, status_class) DO UPDATE SET {added}"
    )
});

/// `POST /fleet/v1/analytics`: a gateway's usage report, applied once per batch.
pub async fn report(
    State(state): State<AppState>,
    gateway: GatewayCaller,
    JsonBody(report): JsonBody<UsageReport>,
) -> ApiResult<StatusCode> {
    store(&state.db, &gateway.environment, &gateway.id, &report).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Check a report and add it to what `environment`'s gateways reported, unless the
/// gateway's batch was taken already.
pub async fn store(db: &Db, environment: &str, gateway_id: &str, report: &UsageReport) -> ApiResult<()> {
    check(report)?;
    let requests: u64 = report.rows.iter().map(|row| row.requests).sum();
    let mut tx = db.pool.begin().await?;
    let taken = sqlx::query(
        "INSERT INTO analytics_batches (gateway_id, batch, environment, received_at, requests, dropped) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (gateway_id, batch) DO NOTHING",
    )
    .bind(gateway_id)
    .bind(&report.batch)
    .bind(environment)
    .bind(now_ms())
    .bind(signed(requests))
    .bind(signed(report.dropped))
    .execute(&mut *tx)
    .await?;
    if taken.rows_affected() == 0 {
        return Ok(());
    }
    for row in &report.rows {
        let mut query = sqlx::query(UPSERT.as_str())
            .bind(environment)
            .bind(signed(row.minute))
            .bind(&row.api)
            .bind(&row.version)
            .bind(&row.operation)
            .bind(row.application.as_deref().unwrap_or(""))
            .bind(i64::from(row.class))
            .bind(signed(row.requests))
            .bind(signed(row.latency_us));
        for count in &row.latency {
            query = query.bind(signed(*count));
        }
        query.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Refuse a report that is not one, naming the field.
fn check(report: &UsageReport) -> ApiResult<()> {
    if report.batch.is_empty() || report.batch.len() > 200 {
        return Err(ApiError::invalid("batch", "1 to 200 characters"));
    }
    if report.rows.len() > MAX_USAGE_ROWS {
        return Err(ApiError::invalid("rows", format!("at most {MAX_USAGE_ROWS} rows a report")));
    }
    for (i, row) in report.rows.iter().enumerate() {
        let field = |name: &str| format!("rows[{i}].{name}");
        if row.minute % 60 != 0 || i64::try_from(row.minute).is_err() {
            return Err(ApiError::invalid(field("minute"), "the first second of a minute (Unix time, a multiple of 60)"));
        }
        if !(1..=5).contains(&row.class) {
            return Err(ApiError::invalid(field("class"), "a status class, 1 to 5"));
        }
        if row.latency.len() != BUCKETS {
            return Err(ApiError::invalid(field("latency"), format!("{BUCKETS} bucket counts")));
        }
        if row.latency.iter().try_fold(0u64, |sum, count| sum.checked_add(*count)) != Some(row.requests) {
            return Err(ApiError::invalid(field("latency"), "the bucket counts must add up to `requests`"));
        }
        for (name, text) in [("api", &row.api), ("version", &row.version), ("operation", &row.operation)] {
            if text.is_empty() || text.len() > 1024 || text.contains('\0') {
                return Err(ApiError::invalid(field(name), "1 to 1024 characters, without NUL"));
            }
        }
        if row.application.as_ref().is_some_and(|id| id.is_empty() || id.len() > 1024 || id.contains('\0')) {
            return Err(ApiError::invalid(field("application"), "1 to 1024 characters, without NUL"));
        }
    }
    Ok(())
}

/// Delete the minutes and batch records older than `retention` at `now` (milliseconds
/// since the Unix epoch).
pub async fn expire(db: &Db, now: i64, retention: Duration) -> ApiResult<()> {
    let cutoff_ms = now.saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
    sqlx::query("DELETE FROM analytics_minutes WHERE minute < $1").bind(cutoff_ms / 1000).execute(&db.pool).await?;
    sqlx::query("DELETE FROM analytics_batches WHERE received_at < $1").bind(cutoff_ms).execute(&db.pool).await?;
    Ok(())
}

/// The window and resolution of an analytics query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Start (Unix seconds, included); a day before `to` by default.
    pub from: Option<i64>,
    /// End (Unix seconds, excluded); now by default.
    pub to: Option<i64>,
    /// `minute`, `hour` (the default) or `day`: the width of each point of the series.
    pub interval: Option<String>,
    /// Only this gateway environment's requests; all environments by default.
    pub environment: Option<String>,
}

impl Window {
    /// `(from, to, interval in seconds)`, checked.
    fn checked(&self) -> ApiResult<(i64, i64, i64)> {
        let step = match self.interval.as_deref().unwrap_or("hour") {
            "minute" => 60,
            "hour" => 3_600,
            "day" => 86_400,
            other => return Err(ApiError::invalid("interval", format!("`{other}`: minute, hour or day"))),
        };
        let to = self.to.unwrap_or_else(|| now_ms() / 1000 + 1);
        let from = self.from.unwrap_or(to - 86_400);
        if from < 0 || to < 0 {
            return Err(ApiError::invalid(if from < 0 { "from" } else { "to" }, "Unix seconds, not negative"));
        }
        if from >= to {
            return Err(ApiError::invalid("from", "must be before `to`"));
        }
        if (to - from + step - 1) / step > MAX_POINTS {
            return Err(ApiError::invalid("interval", format!("at most {MAX_POINTS} points: widen the interval or narrow the window")));
        }
        Ok((from, to, step))
    }
}

/// Requests, their status classes and their latency.
#[derive(Debug, Clone, Default, Serialize, ToSchema, PartialEq)]
pub struct Figures {
    /// How many requests.
    pub requests: u64,
    /// Requests by status class (`2xx`, `4xx`, …), those with any.
    pub classes: BTreeMap<String, u64>,
    /// Requests answered 4xx or 5xx.
    pub errors: u64,
    /// Mean latency (routing to the response head), in milliseconds.
    pub latency_mean_ms: f64,
    /// Requests by latency: each bucket's upper bound in milliseconds (none for the
    /// slowest, past the largest bound) and how many fell in it.
    pub latency_buckets: Vec<LatencyBucket>,
    #[serde(skip)]
    latency_us: u64,
}

/// Requests whose latency fell in one bucket.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct LatencyBucket {
    /// Upper bound, in milliseconds; none for the last bucket.
    pub le_ms: Option<u64>,
    /// Requests in it.
    pub count: u64,
}

impl Figures {
    fn add(&mut self, class: i64, requests: u64, latency_us: u64, buckets: &[u64]) {
        self.requests += requests;
        *self.classes.entry(format!("{class}xx")).or_default() += requests;
        if class >= 4 {
            self.errors += requests;
        }
        self.latency_us += latency_us;
        if self.latency_buckets.is_empty() {
            self.latency_buckets = (0..BUCKETS).map(|i| LatencyBucket { le_ms: LATENCY_BOUNDS_MS.get(i).copied(), count: 0 }).collect();
        }
        for (bucket, count) in self.latency_buckets.iter_mut().zip(buckets) {
            bucket.count += count;
        }
        self.latency_mean_ms = self.latency_us as f64 / 1000.0 / self.requests.max(1) as f64;
    }
}

/// One point of a series: the requests of one interval.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Point {
    /// The interval's start (Unix seconds).
    pub start: i64,
    /// Its requests.
    #[serde(flatten)]
    pub figures: Figures,
}

/// The requests of one operation, by one application (API analytics) or to one API
/// (application analytics).
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Part {
    /// The API's name.
    pub api: String,
    /// The API's version.
    pub version: String,
    /// The operation, `METHOD /template`.
    pub operation: String,
    /// The calling application's id; none for calls without one.
    pub application: Option<String>,
    /// Its name, when it still exists.
    pub application_name: Option<String>,
    /// Its requests.
    #[serde(flatten)]
    pub figures: Figures,
}

/// Usage over a window.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Usage {
    /// The window's start (Unix seconds, included).
    pub from: i64,
    /// Its end (excluded).
    pub to: i64,
    /// `minute`, `hour` or `day`.
    pub interval: String,
    /// The environment, when the query named one.
    pub environment: Option<String>,
    /// Everything in the window.
    pub totals: Figures,
    /// By interval, those with requests, oldest first.
    pub series: Vec<Point>,
    /// By operation and application (API analytics) or API and operation (application
    /// analytics), most requests first.
    pub breakdown: Vec<Part>,
    /// Requests the gateways reported they could not tally or keep during the window
    /// (for any API): when not zero, the figures are short of what was served.
    pub dropped_by_gateways: u64,
}

/// Which rows a query reads.
enum Subject<'a> {
    Api { name: &'a str, version: &'a str },
    Application(&'a str),
}

/// `GET /api/v1/analytics/apis/{id}`: the usage of an API, for its publisher (or an admin).
#[utoipa::path(get, path = "/api/v1/analytics/apis/{id}", operation_id = "api_analytics", tag = "analytics",
    params(("id" = String, Path), Window),
    responses((status = 200, body = Usage), (status = 400, description = "invalid query"), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
pub async fn api(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    QueryParams(window): QueryParams<Window>,
) -> ApiResult<Json<Usage>> {
    let (name, version) = crate::publisher::visible_api(&state.db, &caller, &id).await?;
    Ok(Json(usage(&state.db, Subject::Api { name: &name, version: &version }, &window).await?))
}

/// `GET /api/v1/analytics/applications/{id}`: the usage of an application, for its owner
/// (or an admin).
#[utoipa::path(get, path = "/api/v1/analytics/applications/{id}", operation_id = "application_analytics", tag = "analytics",
    params(("id" = String, Path), Window),
    responses((status = 200, body = Usage), (status = 400, description = "invalid query"), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
pub async fn application(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    QueryParams(window): QueryParams<Window>,
) -> ApiResult<Json<Usage>> {
    let application = crate::devportal::owned_application(&state.db, &caller, &id).await?;
    Ok(Json(usage(&state.db, Subject::Application(&application.id), &window).await?))
}

async fn usage(db: &Db, subject: Subject<'_>, window: &Window) -> ApiResult<Usage> {
    let (from, to, step) = window.checked()?;
    let sums = std::iter::once("requests")
        .chain(std::iter::once("latency_us"))
        .chain(BUCKET_COLUMNS.iter().map(String::as_str))
        .map(|column| format!("CAST(SUM(m.{column}) AS BIGINT)"))
        .collect::<Vec<_>>()
        .join(", ");
    let filter = match subject {
        Subject::Api { .. } => "m.api_name = $4 AND m.api_version = $5",
        Subject::Application(_) => "m.application_id = $4",
    };
    let (environment_filter, environment_bind) = match (&window.environment, &subject) {
        (Some(_), Subject::Api { .. }) => (" AND m.environment = $6", true),
        (Some(_), Subject::Application(_)) => (" AND m.environment = $5", true),
        (None, _) => ("", false),
    };
    let sql = format!(
        "SELECT (m.minute - $1) / $3 AS point, m.api_name, m.api_version, m.operation, m.application_id, ap.name, m.status_class, {sums} \
         FROM analytics_minutes m LEFT JOIN applications ap ON ap.id = m.application_id \
         WHERE m.minute >= $1 AND m.minute < $2 AND {filter}{environment_filter} \
         GROUP BY point, m.api_name, m.api_version, m.operation, m.application_id, ap.name, m.status_class"
    );
    let mut query = sqlx::query(&sql).bind(from).bind(to).bind(step);
    query = match subject {
        Subject::Api { name, version } => query.bind(name).bind(version),
        Subject::Application(id) => query.bind(id),
    };
    if environment_bind {
        query = query.bind(window.environment.as_deref());
    }
    let rows = query.fetch_all(&db.pool).await?;

    let mut totals = Figures::default();
    let mut series: BTreeMap<i64, Figures> = BTreeMap::new();
    // By (API, version, operation, application id): the order of parts with as many requests.
    let mut parts: BTreeMap<[String; 4], Part> = BTreeMap::new();
    for row in rows {
        let point: i64 = row.try_get(0)?;
        let (api, version, operation, application): (String, String, String, String) =
            (row.try_get(1)?, row.try_get(2)?, row.try_get(3)?, row.try_get(4)?);
        let application_name: Option<String> = row.try_get(5)?;
        let class: i64 = row.try_get(6)?;
        let unsigned = |i: usize| row.try_get::<Option<i64>, _>(i).map(|n| u64::try_from(n.unwrap_or(0)).unwrap_or(0));
        let (requests, latency_us) = (unsigned(7)?, unsigned(8)?);
        let buckets = (9..9 + BUCKETS).map(unsigned).collect::<Result<Vec<_>, _>>()?;
        totals.add(class, requests, latency_us, &buckets);
        series.entry(from + point * step).or_default().add(class, requests, latency_us, &buckets);
        let part = parts.entry([api, version, operation, application]).or_insert_with_key(|[api, version, operation, application]| Part {
            api: api.clone(),
            version: version.clone(),
            operation: operation.clone(),
            application: (!application.is_empty()).then(|| application.clone()),
            application_name,
            figures: Figures::default(),
        });
        part.figures.add(class, requests, latency_us, &buckets);
    }
    let mut breakdown: Vec<Part> = parts.into_values().collect();
    breakdown.sort_by_key(|part| std::cmp::Reverse(part.figures.requests));
    let dropped: Option<i64> = sqlx::query_scalar(
        "SELECT CAST(SUM(dropped) AS BIGINT) FROM analytics_batches \
         WHERE received_at >= $1 AND received_at < $2 AND ($3 IS NULL OR environment = $3)",
    )
    .bind(from * 1000)
    .bind(to * 1000)
    .bind(window.environment.as_deref())
    .fetch_one(&db.pool)
    .await?;
    let interval = match step {
        60 => "minute",
        3_600 => "hour",
        _ => "day",
    };
    Ok(Usage {
        from,
        to,
        interval: interval.into(),
        environment: window.environment.clone(),
        totals,
        series: series.into_iter().map(|(start, figures)| Point { start, figures }).collect(),
        breakdown,
        dropped_by_gateways: dropped.map_or(0, |n| u64::try_from(n).unwrap_or(0)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_columns_are_the_contract_s_buckets() {
        let migration = include_str!("../migrations/0015_analytics.sql");
        for column in BUCKET_COLUMNS.iter() {
            assert!(migration.contains(&format!("    {column} BIGINT NOT NULL,")), "{column}");
        }
        assert_eq!(migration.matches("latency_le_").count() + migration.matches("latency_over_").count(), BUCKETS);
    }
}
