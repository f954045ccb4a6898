//! The control plane's own metrics, at `/metrics` in the Prometheus text format: its HTTP
//! requests by route, tokens issued, snapshot builds, the gateways connected to this node,
//! and how long gateways take to acknowledge a new snapshot. Like `/healthz`, it needs no
//! login; it names routes and environments, never a user, an application or an API.

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use portico_gateway::metrics::Histogram;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text::{CONTENT_TYPE, encode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::AppState;
use crate::error::ApiResult;
use crate::fleet;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    /// The route's template (`/api/v1/apis/{id}`), empty when no route matched.
    route: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct GrantLabels {
    grant_type: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EnvironmentLabels {
    environment: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    environment: String,
    outcome: &'static str,
}

/// The registry and its families.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<RouteLabels, Histogram>,
    tokens_issued: Family<GrantLabels, Counter>,
    snapshot_builds: Family<BuildLabels, Counter>,
    snapshot_build_duration: Family<EnvironmentLabels, Histogram>,
    gateways_connected: Family<EnvironmentLabels, Gauge>,
    rollout_lag: Family<EnvironmentLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let metrics = Self {
            registry: Registry::default(),
            requests: Family::default(),
            request_duration: Family::default(),
            tokens_issued: Family::default(),
            snapshot_builds: Family::default(),
            snapshot_build_duration: Family::default(),
            gateways_connected: Family::default(),
            rollout_lag: Family::default(),
        };
        let mut r = Registry::with_prefix("portico_control_plane");
        r.register("requests", "HTTP requests by method, route template and status", metrics.requests.clone());
        r.register_with_unit(
            "request_duration",
            "Time to answer an HTTP request's head, by method and route template",
            Unit::Seconds,
            metrics.request_duration.clone(),
        );
        r.register("tokens_issued", "OAuth2 access tokens issued, by grant type", metrics.tokens_issued.clone());
        r.register("snapshot_builds", "Builds of an environment's snapshot from the database, by outcome", metrics.snapshot_builds.clone());
        r.register_with_unit(
            "snapshot_build_duration",
            "Time to build an environment's snapshot from the database",
            Unit::Seconds,
            metrics.snapshot_build_duration.clone(),
        );
        r.register("gateways_connected", "Gateways streaming their environment from this node", metrics.gateways_connected.clone());
        r.register_with_unit(
            "rollout_lag",
            "Time from this node building a snapshot to each gateway's first acknowledgement of it",
            Unit::Seconds,
            metrics.rollout_lag.clone(),
        );
        Self { registry: r, ..metrics }
    }
}

impl Metrics {
    /// Count an access token issued with `grant_type`.
    pub(crate) fn token_issued(&self, grant_type: &'static str) {
        self.tokens_issued.get_or_create(&GrantLabels { grant_type }).inc();
    }

    /// Count a snapshot build of `environment` that took `elapsed`.
    pub(crate) fn snapshot_built(&self, environment: &str, ok: bool, elapsed: Duration) {
        let outcome = if ok { "ok" } else { "failed" };
        self.snapshot_builds.get_or_create(&BuildLabels { environment: environment.to_owned(), outcome }).inc();
        self.snapshot_build_duration.get_or_create(&EnvironmentLabels { environment: environment.to_owned() }).observe(elapsed);
    }

    /// A gateway of `environment` connected (or runs in this process): counted until the
    /// guard is dropped.
    pub fn gateway_connected(&self, environment: &str) -> Connected {
        let gauge = self.gateways_connected.get_or_create_owned(&EnvironmentLabels { environment: environment.to_owned() });
        gauge.inc();
        Connected(gauge)
    }

    /// A gateway of `environment` acknowledged, for the first time, a snapshot built `lag` ago.
    pub(crate) fn rollout_lag(&self, environment: &str, lag: Duration) {
        self.rollout_lag.get_or_create(&EnvironmentLabels { environment: environment.to_owned() }).observe(lag);
    }
}

/// A connected gateway, counted in `portico_control_plane_gateways_connected` while it lives.
#[derive(Debug)]
pub struct Connected(Gauge);

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(render))
}

/// Count every request by the route it matched (a template, so the label's values are
/// bounded), and time it to its response head.
pub(crate) async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().map(|path| path.as_str().to_owned()).unwrap_or_default();
    let method = method_label(request.method());
    let response = next.run(request).await;
    let route = RouteLabels { method, route };
    state.metrics.request_duration.get_or_create(&route).observe(started.elapsed());
    let status = response.status().as_u16();
    state.metrics.requests.get_or_create(&RequestLabels { method: route.method, route: route.route, status }).inc();
    response
}

/// A method as labelled: the ones the API serves by name, any other (a client may send any
/// token) as `other`, so that clients cannot add series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// `GET /metrics`.
async fn render(State(state): State<AppState>) -> ApiResult<Response> {
    // Read at scrape time: the healthy gateways that do not run the current snapshot of an
    // environment this node serves.
    let mut read = Registry::with_prefix("portico_control_plane");
    let behind = Family::<EnvironmentLabels, Gauge>::default();
    for (environment, count) in fleet::gateways::behind(&state).await? {
        behind.get_or_create(&EnvironmentLabels { environment }).set(count);
    }
    read.register("gateways_behind", "Healthy gateways not (yet) running the current snapshot of an environment this node serves", behind);
    let mut text = String::new();
    for registry in [&state.metrics.registry, &read] {
        // Writing to a String cannot fail.
        let _ = encode(&mut text, registry);
    }
    let mut response = text.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Ok(response)
}
