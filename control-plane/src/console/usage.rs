//! The usage pages: an API's requests (for its publisher) and an application's (for its
//! owner) over the last hour, day or month, from the analytics gateways report: requests
//! and errors, and mean latency, as charts drawn here in SVG (no script), with the same
//! figures in a table and broken down by operation and application.

use askama::Template;
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::page::{self, Shell, Visitor, query_value, render};
use crate::AppState;
use crate::analytics::{self, Figures, Usage, Window};
use crate::db::now_ms;
use crate::error::{ApiResult, QueryParams};

/// The chart's drawing area, in SVG units.
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 140.0;

/// A window the pages offer: its name in the query, its title, its length, and its
/// points' interval as the analytics query names it and in seconds.
struct Range {
    name: &'static str,
    title: &'static str,
    length: i64,
    interval: &'static str,
    step: i64,
}

const RANGES: &[Range] = &[
    Range { name: "hour", title: "Last hour", length: 3_600, interval: "minute", step: 60 },
    Range { name: "day", title: "Last day", length: 86_400, interval: "hour", step: 3_600 },
    Range { name: "month", title: "Last 30 days", length: 30 * 86_400, interval: "day", step: 86_400 },
];

/// One interval of the window, drawn.
struct Bar {
    x: f64,
    width: f64,
    /// The successful part (below 400).
    ok_y: f64,
    ok_height: f64,
    /// The errors, stacked on top.
    error_y: f64,
    error_height: f64,
    /// What a pointer over it says.
    title: String,
}

/// The window's points, dense (intervals without requests are zero), drawn.
struct Chart {
    bars: Vec<Bar>,
    max_requests: u64,
    /// The mean latency of each interval with requests, as a point (x, y).
    latency: Vec<(f64, f64)>,
    max_latency_ms: f64,
    first: String,
    last: String,
    /// The rows of the table: (interval start, figures), those with requests.
    rows: Vec<(String, Figures)>,
}

impl Chart {
    /// The latency's line, as SVG `points`.
    fn line(&self) -> String {
        self.latency.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect::<Vec<_>>().join(" ")
    }
}

fn label(seconds: i64, step: i64) -> String {
    let format = if step >= 86_400 { "%Y-%m-%d" } else { "%Y-%m-%d %H:%M" };
    jiff::Timestamp::from_second(seconds).map_or_else(|_| seconds.to_string(), |t| t.strftime(format).to_string())
}

fn chart(usage: &Usage, step: i64) -> Chart {
    let points = ((usage.to - usage.from + step - 1) / step).max(1) as usize;
    let mut dense = vec![Figures::default(); points];
    for point in &usage.series {
        let index = ((point.start - usage.from) / step) as usize;
        if let Some(slot) = dense.get_mut(index) {
            *slot = point.figures.clone();
        }
    }
    let max_requests = dense.iter().map(|f| f.requests).max().unwrap_or(0).max(1);
    let max_latency_ms = dense.iter().map(|f| f.latency_mean_ms).fold(0.0, f64::max).max(1.0);
    let width = WIDTH / points as f64;
    let scale = |requests: u64| requests as f64 / max_requests as f64 * HEIGHT;
    let mut bars = Vec::new();
    let mut latency = Vec::new();
    for (i, figures) in dense.iter().enumerate() {
        let x = i as f64 * width;
        if figures.requests > 0 {
            let (ok_height, error_height) = (scale(figures.requests - figures.errors), scale(figures.errors));
            bars.push(Bar {
                x,
                width: (width - 1.0).max(1.0),
                ok_y: HEIGHT - ok_height,
                ok_height,
                error_y: HEIGHT - ok_height - error_height,
                error_height,
                title: format!("{}: {} requests, {} errors", label(usage.from + i as i64 * step, step), figures.requests, figures.errors),
            });
            let y = HEIGHT - figures.latency_mean_ms / max_latency_ms * HEIGHT;
            latency.push((x + width / 2.0, y));
        }
    }
    let rows = dense
        .into_iter()
        .enumerate()
        .filter(|(_, f)| f.requests > 0)
        .map(|(i, f)| (label(usage.from + i as i64 * step, step), f))
        .collect();
    Chart { bars, max_requests, latency, max_latency_ms, first: label(usage.from, step), last: label(usage.to, step), rows }
}

#[derive(Template)]
#[template(path = "console/usage.html")]
struct UsagePage {
    shell: Shell,
    /// Where the page's subject is, and its name.
    back: (String, String),
    /// The page's own path, for the window links.
    here: String,
    range: &'static Range,
    ranges: &'static [Range],
    usage: Usage,
    chart: Chart,
    /// Whether the breakdown names applications (an API's) or operations of APIs (an
    /// application's).
    by_application: bool,
}

/// The range the `range` query parameter names (a day unless it names another), and its
/// window: whole intervals, the current one last.
fn window(query: Option<&str>) -> (&'static Range, Window) {
    let asked = query_value(query, "range");
    let range = RANGES.iter().find(|range| range.name == asked).unwrap_or(&RANGES[1]);
    let to = (now_ms() / 1000 / range.step + 1) * range.step;
    (range, Window { from: Some(to - range.length), to: Some(to), interval: Some(range.interval.to_owned()), environment: None })
}

async fn usage_page(
    visitor: &Visitor,
    title: String,
    back: (String, String),
    here: String,
    by_application: bool,
    query: Option<&str>,
    usage: impl AsyncFnOnce(Window) -> ApiResult<Json<Usage>>,
) -> Response {
    let (range, window) = window(query);
    match usage(window).await {
        Ok(Json(usage)) => {
            let chart = chart(&usage, range.step);
            let section = if by_application { "publisher" } else { "applications" };
            let page =
                UsagePage { shell: Shell::of(visitor, title, section), back, here, range, ranges: RANGES, usage, chart, by_application };
            render(StatusCode::OK, &page)
        }
        Err(e) => page::error(Some(visitor), e),
    }
}

/// `GET /publisher/apis/{id}/usage?range=hour|day|month`.
pub(super) async fn api(State(state): State<AppState>, visitor: Visitor, Path(id): Path<String>, RawQuery(query): RawQuery) -> Response {
    let api = match crate::publisher::apis::get(State(state.clone()), visitor.caller.clone(), Path(id.clone())).await {
        Ok(Json(api)) => api,
        Err(e) => return page::error(Some(&visitor), e),
    };
    let title = format!("Usage of {} {}", api.name, api.version);
    let back = (format!("/publisher/apis/{id}"), format!("{} {}", api.name, api.version));
    let caller = visitor.caller.clone();
    let usage = async |window| analytics::api(State(state.clone()), caller, Path(id.clone()), QueryParams(window)).await;
    usage_page(&visitor, title, back, format!("/publisher/apis/{}/usage", api.id), true, query.as_deref(), usage).await
}

/// `GET /devportal/applications/{id}/usage?range=hour|day|month`.
pub(super) async fn application(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let application = match crate::devportal::applications::get(State(state.clone()), visitor.caller.clone(), Path(id.clone())).await {
        Ok(Json(application)) => application,
        Err(e) => return page::error(Some(&visitor), e),
    };
    let title = format!("Usage of {}", application.name);
    let back = (format!("/devportal/applications/{id}"), application.name.clone());
    let caller = visitor.caller.clone();
    let usage = async |window| analytics::application(State(state.clone()), caller, Path(id.clone()), QueryParams(window)).await;
    usage_page(&visitor, title, back, format!("/devportal/applications/{}/usage", application.id), false, query.as_deref(), usage).await
}
