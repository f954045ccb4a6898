//! Runs a policy component outside a gateway: on the gateway's own engine (same world
//! check, limits, pooled instances and host functions), against the cases of a fixture
//! file, with the host services mocked. Each case is one request through a chain of this
//! one policy, as the gateway's pipeline runs it; what came out is compared with what the
//! case expects, and every difference becomes a line of the [`Report`].

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use portico_gateway::blocking::Blocking;
use portico_gateway::config::{FailureMode, defaults};
use portico_gateway::error::ProxyError;
use portico_gateway::exchange::{BodyState, Exchange, ResponseState, RouteInfo};
use portico_gateway::keys;
use portico_gateway::metrics::PolicyStats;
use portico_gateway::pipeline::{RequestEnd, ResponseHead, Upstream, UpstreamBody, run_phases};
use portico_gateway::policy::{Attachment, AttachmentSettings, CompiledPolicy, LoadError, PolicyEngine, Services};

use super::capture::Captured;
use super::fixtures::{Case, DecisionKind, Expect, Fixtures, HeaderValues};
use super::mocks::{self, Hit, MockHost};

/// Lines of a policy's output shown under a failed case.
const MAX_OUTPUT_LINES: usize = 40;

/// A policy engine whose host services are mocks. Compile once, run many fixture files.
pub struct Harness {
    engine: PolicyEngine,
    host: Arc<MockHost>,
    services: Arc<Services>,
    /// The mocks hold one case at a time.
    running: Mutex<()>,
}

impl Harness {
    /// A new engine (with its epoch ticker) on mocked services.
    pub fn new() -> anyhow::Result<Self> {
        let host = Arc::new(MockHost::default());
        let engine = PolicyEngine::with_clock(host.clone())?;
        let services = Arc::new(Services { keys: host.clone(), counters: host.clone() });
        Ok(Self { engine, host, services, running: Mutex::new(()) })
    }

    /// Compile a component under `name` and check that it fits the gateway's world, as a
    /// gateway does when it loads it (cached by digest: the second call is free).
    pub fn compile(&self, name: &str, component: &[u8]) -> Result<Arc<CompiledPolicy>, LoadError> {
        self.engine.compile(name, component, None)
    }

    /// Make an instance and run its `init` with `config`, as a gateway does when it loads
    /// an attachment. Returns what the policy said it needs; a refusal or a trap is an error
    /// naming the policy, followed by what the policy printed.
    pub fn init(&self, policy: &Arc<CompiledPolicy>, config: &serde_json::Value, fixtures: Option<&Fixtures>) -> anyhow::Result<Needs> {
        let _running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        self.host.reset(&fixtures.map(|f| f.mocks.clone()).unwrap_or_default());
        let captured = Captured::default();
        match captured.during(|| self.attach(policy, config, fixtures)) {
            Ok(attachment) => Ok(Needs::of(&attachment)),
            Err(error) => {
                let output = captured.take();
                if output.is_empty() {
                    Err(error.into())
                } else {
                    Err(anyhow::anyhow!("{error}\npolicy output:\n  {}", output.join("\n  ")))
                }
            }
        }
    }

    /// Run every case of `fixtures`. Cases with the same configuration share warm
    /// instances, as requests do in a gateway.
    pub fn run(&self, policy: &Arc<CompiledPolicy>, fixtures: &Fixtures) -> Report {
        let _running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mut attachments: HashMap<String, Result<Arc<Attachment>, String>> = HashMap::new();
        let mut report = Report {
            policy: policy.name().to_owned(),
            digest: policy.digest().to_owned(),
            cases: Vec::new(),
            instance_memory: None,
            request_times: Vec::new(),
        };
        let captured = Captured::default();
        for case in &fixtures.cases {
            self.host.reset(&fixtures.mocks.merged(&case.mocks));
            let config = case.config.as_ref().unwrap_or(&fixtures.config);
            let started = Instant::now();
            let outcome = captured.during(|| {
                let attachment = attachments
                    .entry(config.to_string())
                    .or_insert_with(|| self.attach(policy, config, Some(fixtures)).map(Arc::new).map_err(|e| e.to_string()));
                match attachment {
                    Ok(attachment) => {
                        report.instance_memory.get_or_insert(attachment.instance_memory_bytes());
                        run_case(attachment, case, fixtures, &self.host)
                    }
                    Err(refused) => Ok(Outcome::failed(refused.clone())),
                }
            });
            let mismatches = match outcome {
                Ok(outcome) => {
                    report.request_times.push(outcome.time);
                    compare(&case.expect, &outcome)
                }
                Err(error) => vec![format!("the case cannot run: {error:#}")],
            };
            let output = captured.take();
            report.cases.push(CaseReport { name: case.name.clone(), mismatches, output, time: started.elapsed() });
        }
        report
    }

    fn attach(
        &self,
        policy: &Arc<CompiledPolicy>,
        config: &serde_json::Value,
        fixtures: Option<&Fixtures>,
    ) -> Result<Attachment, LoadError> {
        let settings = AttachmentSettings {
            config_json: config.to_string(),
            timeout: fixtures.and_then(|f| f.timeout).map_or(defaults::POLICY_TIMEOUT, |t| t.0),
            memory_bytes: usize::try_from(fixtures.and_then(|f| f.memory).map_or(defaults::POLICY_MEMORY_BYTES, |m| m.0))
                .unwrap_or(usize::MAX),
            on_failure: FailureMode::Closed,
        };
        self.engine.attach(policy.clone(), settings, self.services.clone(), Arc::new(PolicyStats::default()))
    }
}

/// What a policy asked for in `init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// The request body.
    pub request_body: bool,
    /// The response body.
    pub response_body: bool,
    /// A response phase.
    pub response_phase: bool,
    /// Linear memory of the instance after `init`, in bytes.
    pub instance_memory: usize,
}

impl Needs {
    fn of(attachment: &Attachment) -> Self {
        Self {
            request_body: attachment.needs_request_body(),
            response_body: attachment.needs_response_body(),
            response_phase: attachment.needs_response_phase(),
            instance_memory: attachment.instance_memory_bytes(),
        }
    }
}

impl fmt::Display for Needs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> =
            [(self.request_body, "request-body"), (self.response_body, "response-body"), (self.response_phase, "response-phase")]
                .into_iter()
                .filter_map(|(on, name)| on.then_some(name))
                .collect();
        if names.is_empty() { f.write_str("nothing") } else { f.write_str(&names.join(", ")) }
    }
}

/// The request as the upstream saw it.
struct Forwarded {
    method: String,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
}

/// What came out of one case.
struct Outcome {
    failure: Option<String>,
    decision: Option<DecisionKind>,
    status: u16,
    headers: HeaderMap,
    body: Bytes,
    upstream: Option<Forwarded>,
    identity: Option<keys::Identity>,
    attributes: Vec<(String, String)>,
    hits: Vec<Hit>,
    /// Both phases through the pipeline.
    time: Duration,
}

impl Outcome {
    fn failed(failure: String) -> Self {
        Self {
            failure: Some(failure),
            decision: None,
            status: 500,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            upstream: None,
            identity: None,
            attributes: Vec::new(),
            hits: Vec::new(),
            time: Duration::ZERO,
        }
    }
}

/// A body given as text or as JSON, and whether it was JSON.
fn fixture_body(text: &Option<String>, json: &Option<serde_json::Value>) -> (Bytes, bool) {
    match (json, text) {
        (Some(json), _) => (Bytes::from(json.to_string()), true),
        (None, Some(text)) => (Bytes::from(text.clone()), false),
        (None, None) => (Bytes::new(), false),
    }
}

fn fixture_headers(headers: &std::collections::BTreeMap<String, HeaderValues>, json: bool) -> anyhow::Result<HeaderMap> {
    let mut map = HeaderMap::new();
    for (name, values) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| anyhow::anyhow!("invalid header name `{name}`"))?;
        for value in values.values() {
            let value = HeaderValue::from_str(value).map_err(|_| anyhow::anyhow!("invalid value of header `{name}`"))?;
            map.append(name.clone(), value);
        }
    }
    if json && !map.contains_key(header::CONTENT_TYPE) {
        map.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    Ok(map)
}

/// One request through a chain of this one policy, on the gateway's own phases
/// ([`run_phases`]) with a mocked upstream that answers with the case's `upstream`.
fn run_case(attachment: &Arc<Attachment>, case: &Case, fixtures: &Fixtures, host: &MockHost) -> anyhow::Result<Outcome> {
    let request = &case.request;
    let (request_body, json) = fixture_body(&request.body, &request.json);
    let target = match &request.query {
        Some(query) => format!("{}?{query}", request.path),
        None => request.path.clone(),
    };
    let method = http::Method::from_bytes(request.method.as_bytes()).map_err(|_| anyhow::anyhow!("invalid method `{}`", request.method))?;
    let uri = http::Uri::try_from(target.as_str()).map_err(|_| anyhow::anyhow!("invalid path or query `{target}`"))?;
    let (mut head, ()) = http::Request::new(()).into_parts();
    head.method = method;
    head.uri = uri;
    head.headers = fixture_headers(&request.headers, json)?;

    let answer = &case.upstream;
    let (upstream_body, json) = fixture_body(&answer.body, &answer.json);
    let (mut upstream_head, ()) = http::Response::new(()).into_parts();
    upstream_head.status =
        http::StatusCode::from_u16(answer.status).map_err(|_| anyhow::anyhow!("invalid upstream status {}", answer.status))?;
    upstream_head.headers = fixture_headers(&answer.headers, json)?;

    let route = case.route.as_ref().unwrap_or(&fixtures.route);
    let operation = route.operation.clone().unwrap_or_else(|| format!("{} {}", request.method, request.path));
    let exchange = Box::new(Exchange {
        request: head,
        request_body: if attachment.needs_request_body() { BodyState::Buffered(request_body.clone()) } else { BodyState::Streaming },
        request_body_replaced: false,
        client_addr: request.client_addr.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        route: Arc::new(RouteInfo { api_name: route.api.clone(), api_version: route.version.clone(), operation }),
        identity: request.identity.as_ref().map(|identity| mocks::identity_of(identity, "api-key")),
        attributes: request.attributes.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        response_headers: Vec::new(),
        response: None,
    });

    let mut forwarded = None;
    let upstream = MockUpstream { request_body, head: Some(upstream_head), body: upstream_body, forwarded: &mut forwarded };
    let chain = std::slice::from_ref(attachment);
    let started = Instant::now();
    let phases = complete(run_phases(chain, exchange, &Blocking::default(), upstream))?;
    let time = started.elapsed();

    let policy = attachment.policy().name();
    let (decision, mut failure) = match &phases.request {
        RequestEnd::Forwarded => (Some(DecisionKind::Continue), None),
        RequestEnd::Answered => (Some(DecisionKind::Respond), None),
        RequestEnd::Blocked => (None, Some("the caller is blocked".to_owned())),
        RequestEnd::Failed(error) => (None, Some(format!("policy `{policy}` failed in on-request: {error}"))),
    };
    if let Some(error) = &phases.response_failure {
        failure = Some(format!("policy `{policy}` failed in on-response: {error}"));
    }
    let ResponseState { head, body, .. } = phases.response;
    let body = match body {
        BodyState::Buffered(bytes) => bytes,
        BodyState::Streaming | BodyState::TooLarge => phases.stream.unwrap_or_default(),
    };
    Ok(Outcome {
        failure,
        decision,
        status: head.status.as_u16(),
        headers: head.headers,
        body,
        upstream: forwarded,
        identity: phases.exchange.identity.clone(),
        attributes: phases.exchange.attributes.clone(),
        hits: host.hits(),
        time,
    })
}

/// The upstream of a case: records the request as forwarded, answers with the fixture.
struct MockUpstream<'a> {
    /// The request body as sent, for when no policy buffered it.
    request_body: Bytes,
    head: Option<ResponseHead>,
    body: Bytes,
    forwarded: &'a mut Option<Forwarded>,
}

impl Upstream for MockUpstream<'_> {
    type Stream = Bytes;

    async fn send(mut self, exchange: &mut Exchange, buffer: bool) -> Result<(ResponseHead, UpstreamBody<Bytes>), ProxyError> {
        *self.forwarded = Some(Forwarded {
            method: exchange.request.method.to_string(),
            path: exchange.request.uri.path().to_owned(),
            query: exchange.request.uri.query().map(str::to_owned),
            headers: exchange.request.headers.clone(),
            body: match &exchange.request_body {
                BodyState::Buffered(bytes) => bytes.clone(),
                _ => self.request_body,
            },
        });
        let head = self.head.take().ok_or_else(|| ProxyError::Internal("the mocked upstream answers once".into()))?;
        Ok((head, if buffer { UpstreamBody::Buffered(self.body) } else { UpstreamBody::Stream(self.body) }))
    }
}

/// Run the phases to the end. The mocked upstream answers at once and policy calls are
/// synchronous, so they complete in one poll: no runtime is needed, and the harness can
/// run inside one.
fn complete<T>(phases: impl Future<Output = T>) -> anyhow::Result<T> {
    let mut phases = std::pin::pin!(phases);
    match phases.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
        std::task::Poll::Ready(done) => Ok(done),
        std::task::Poll::Pending => Err(anyhow::anyhow!("the phases waited on something a test case cannot give")),
    }
}

/// Every difference between what a case expects and what came out, one line each.
fn compare(expect: &Expect, outcome: &Outcome) -> Vec<String> {
    let mut out = Vec::new();
    match (&expect.failure, &outcome.failure) {
        (Some(expected), Some(actual)) if actual.contains(expected.as_str()) => return out,
        (Some(expected), Some(actual)) => {
            out.push(format!("failure: expected one mentioning {expected:?}, got: {actual}"));
            return out;
        }
        (Some(expected), None) => out.push(format!("failure: expected one mentioning {expected:?}, but the policy did not fail")),
        (None, Some(actual)) => {
            out.push(actual.clone());
            return out;
        }
        (None, None) => {}
    }
    if let Some(expected) = expect.decision
        && outcome.decision != Some(expected)
    {
        let got = match outcome.decision {
            Some(DecisionKind::Respond) => format!("respond with {} {}", outcome.status, excerpt(&outcome.body)),
            Some(DecisionKind::Continue) => "continue".to_owned(),
            None => "no decision".to_owned(),
        };
        out.push(format!("decision: expected {}, got {got}", decision_name(expected)));
    }
    if let Some(expected) = expect.status
        && outcome.status != expected
    {
        // The body says why, unless the decision's line above showed it already.
        let shown = matches!(out.last(), Some(line) if line.starts_with("decision:"));
        let body = if shown { String::new() } else { format!(" {}", excerpt(&outcome.body)) };
        out.push(format!("status: expected {expected}, got {}{body}", outcome.status));
    }
    compare_headers("header", &expect.headers, &outcome.headers, &mut out);
    compare_body("body", expect.body.as_deref(), expect.json.as_ref(), &outcome.body, &mut out);
    if let Some(needle) = &expect.body_contains
        && !String::from_utf8_lossy(&outcome.body).contains(needle.as_str())
    {
        out.push(format!("body: expected it to contain {needle:?}, got {}", excerpt(&outcome.body)));
    }
    if let Some(expected) = &expect.upstream {
        match &outcome.upstream {
            None => out.push(format!(
                "upstream: expected the request to be forwarded, but the client got {} {}",
                outcome.status,
                excerpt(&outcome.body)
            )),
            Some(seen) => {
                if let Some(method) = &expected.method
                    && !method.eq_ignore_ascii_case(&seen.method)
                {
                    out.push(format!("upstream method: expected {method}, got {}", seen.method));
                }
                if let Some(path) = &expected.path
                    && *path != seen.path
                {
                    out.push(format!("upstream path: expected {path:?}, got {:?}", seen.path));
                }
                if let Some(query) = &expected.query
                    && *query != seen.query
                {
                    out.push(format!("upstream query: expected {}, got {}", optional(query), optional(&seen.query)));
                }
                compare_headers("upstream header", &expected.headers, &seen.headers, &mut out);
                compare_body("upstream body", expected.body.as_deref(), expected.json.as_ref(), &seen.body, &mut out);
            }
        }
    }
    if let Some(expected) = &expect.identity {
        let actual = outcome.identity.as_ref().map(mocks::fixture_identity);
        let matches = match (expected, &actual) {
            (None, None) => true,
            (Some(expected), Some(actual)) => {
                expected.method.as_ref().is_none_or(|m| Some(m) == actual.method.as_ref())
                    && fixture_identity_fields(expected) == fixture_identity_fields(actual)
            }
            _ => false,
        };
        if !matches {
            out.push(format!("identity: expected {}, got {}", identity_text(expected.as_ref()), identity_text(actual.as_ref())));
        }
    }
    for (key, expected) in &expect.attributes {
        let actual = outcome.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        if *expected != actual {
            out.push(format!("attribute {key:?}: expected {}, got {}", optional(expected), optional(&actual)));
        }
    }
    if let Some(expected) = &expect.hits {
        let fits = expected.len() == outcome.hits.len()
            && expected.iter().zip(&outcome.hits).all(|(e, a)| {
                e.key == a.key
                    && e.limit.is_none_or(|l| l == a.limit)
                    && e.window_ms.is_none_or(|w| w == a.window_ms)
                    && e.cost.is_none_or(|c| c == a.cost)
            });
        if !fits {
            let describe = |hits: Vec<String>| if hits.is_empty() { "none".to_owned() } else { hits.join(", ") };
            let expected = describe(expected.iter().map(|h| format!("{:?}", h.key)).collect());
            let actual = describe(
                outcome.hits.iter().map(|h| format!("{:?} (limit {} per {}ms, cost {})", h.key, h.limit, h.window_ms, h.cost)).collect(),
            );
            out.push(format!("counter hits: expected {expected}; got {actual}"));
        }
    }
    out
}

fn fixture_identity_fields(identity: &super::fixtures::Identity) -> impl PartialEq + '_ {
    (&identity.application, &identity.subscription, &identity.tier, &identity.user, &identity.scopes)
}

fn identity_text(identity: Option<&super::fixtures::Identity>) -> String {
    let Some(identity) = identity else { return "none".to_owned() };
    let mut parts = Vec::new();
    let mut field = |name: &str, value: &Option<String>| {
        if let Some(value) = value {
            parts.push(format!("{name}: {value}"));
        }
    };
    field("method", &identity.method);
    field("application", &identity.application);
    field("subscription", &identity.subscription);
    field("tier", &identity.tier);
    field("user", &identity.user);
    if !identity.scopes.is_empty() {
        parts.push(format!("scopes: [{}]", identity.scopes.join(", ")));
    }
    format!("{{{}}}", parts.join(", "))
}

fn decision_name(decision: DecisionKind) -> &'static str {
    match decision {
        DecisionKind::Continue => "continue",
        DecisionKind::Respond => "respond",
    }
}

fn optional(value: &Option<String>) -> String {
    value.as_ref().map_or_else(|| "(none)".to_owned(), |v| format!("{v:?}"))
}

fn compare_headers(
    what: &str,
    expected: &std::collections::BTreeMap<String, Option<HeaderValues>>,
    actual: &HeaderMap,
    out: &mut Vec<String>,
) {
    for (name, expected) in expected {
        let values: Vec<&str> = actual.get_all(name.as_str()).iter().map(|v| v.to_str().unwrap_or("(not text)")).collect();
        let shown = match values.as_slice() {
            [] => "(absent)".to_owned(),
            [one] => format!("{one:?}"),
            many => format!("{many:?}"),
        };
        match expected {
            None if !values.is_empty() => out.push(format!("{what} {name}: expected it absent, got {shown}")),
            Some(expected) if expected.values() != values => {
                let wanted = match expected {
                    HeaderValues::One(value) => format!("{value:?}"),
                    HeaderValues::Many(values) => format!("{values:?}"),
                };
                out.push(format!("{what} {name}: expected {wanted}, got {shown}"));
            }
            _ => {}
        }
    }
}

fn compare_body(what: &str, text: Option<&str>, json: Option<&serde_json::Value>, actual: &Bytes, out: &mut Vec<String>) {
    if let Some(expected) = text
        && expected.as_bytes() != actual.as_ref()
    {
        out.push(format!("{what}: {}", text_difference(expected, &String::from_utf8_lossy(actual))));
    }
    if let Some(expected) = json {
        match serde_json::from_slice::<serde_json::Value>(actual) {
            Err(_) => out.push(format!("{what}: expected JSON, got {}", excerpt(actual))),
            Ok(actual) => {
                let mut differences = Vec::new();
                json_difference("", expected, &actual, &mut differences);
                for difference in differences {
                    out.push(format!("{what} {difference}"));
                }
            }
        }
    }
}

/// The differences between two JSON values, one line per JSON pointer that differs.
fn json_difference(at: &str, expected: &serde_json::Value, actual: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    let here = if at.is_empty() { "/" } else { at };
    match (expected, actual) {
        (Value::Object(expected), Value::Object(actual)) => {
            for (key, value) in expected {
                let path = format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"));
                match actual.get(key) {
                    Some(found) => json_difference(&path, value, found, out),
                    None => out.push(format!("at {path}: missing, expected {value}")),
                }
            }
            for (key, value) in actual {
                if !expected.contains_key(key) {
                    out.push(format!("at {at}/{key}: unexpected {value}"));
                }
            }
        }
        (Value::Array(expected), Value::Array(actual)) => {
            for (i, value) in expected.iter().enumerate() {
                match actual.get(i) {
                    Some(found) => json_difference(&format!("{at}/{i}"), value, found, out),
                    None => out.push(format!("at {at}/{i}: missing, expected {value}")),
                }
            }
            for (i, value) in actual.iter().enumerate().skip(expected.len()) {
                out.push(format!("at {at}/{i}: unexpected {value}"));
            }
        }
        _ if expected != actual => out.push(format!("at {here}: expected {expected}, got {actual}")),
        _ => {}
    }
}

/// Where two texts first differ, with a little context of each.
fn text_difference(expected: &str, actual: &str) -> String {
    let at = expected
        .char_indices()
        .zip(actual.chars())
        .find(|((_, e), a)| e != a)
        .map(|((i, _), _)| i)
        .unwrap_or(expected.len().min(actual.len()));
    let window = |text: &str| {
        let start = text.floor_char_boundary(at.saturating_sub(30));
        let end = text.ceil_char_boundary((at + 50).min(text.len()));
        format!("{}{:?}{}", if start > 0 { "…" } else { "" }, &text[start..end], if end < text.len() { "…" } else { "" })
    };
    format!("differs at byte {at}: expected {}, got {}", window(expected), window(actual))
}

/// A short, printable view of a body: as it is when it is one line of text, else quoted.
fn excerpt(body: &[u8]) -> String {
    if body.is_empty() {
        return "(empty body)".to_owned();
    }
    let text = String::from_utf8_lossy(body);
    let cut = text.floor_char_boundary(160);
    let (head, more) = (&text[..cut], if cut < text.len() { "…" } else { "" });
    if head.chars().any(char::is_control) { format!("{head:?}{more}") } else { format!("{head}{more}") }
}

/// The outcome of one case.
#[derive(Debug, Clone)]
pub struct CaseReport {
    /// The case's name.
    pub name: String,
    /// What differed from the expectation (empty when it passed).
    pub mismatches: Vec<String>,
    /// What the policy logged or printed during the case.
    pub output: Vec<String>,
    /// How long the case took, instance creation included.
    pub time: Duration,
}

/// The outcome of a fixture file.
#[derive(Debug, Clone)]
pub struct Report {
    /// The policy's name.
    pub policy: String,
    /// Its sha256.
    pub digest: String,
    /// Each case, in order.
    pub cases: Vec<CaseReport>,
    /// Linear memory of an instance after `init`.
    pub instance_memory: Option<usize>,
    /// How long each case's request took through both phases.
    pub request_times: Vec<Duration>,
}

impl Report {
    /// How many cases failed.
    pub fn failed(&self) -> usize {
        self.cases.iter().filter(|c| !c.mismatches.is_empty()).count()
    }

    /// Whether every case passed.
    pub fn passed(&self) -> bool {
        self.failed() == 0
    }

    /// The median time of a case's request through both phases.
    pub fn median_request(&self) -> Option<Duration> {
        let mut times = self.request_times.clone();
        times.sort();
        times.get(times.len() / 2).copied()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "policy `{}` (sha256 {})", self.policy, &self.digest[..self.digest.len().min(12)])?;
        for case in &self.cases {
            if case.mismatches.is_empty() {
                writeln!(f, "  ✓ {}", case.name)?;
            } else {
                writeln!(f, "  ✗ {}", case.name)?;
                for mismatch in &case.mismatches {
                    writeln!(f, "      {mismatch}")?;
                }
                if !case.output.is_empty() {
                    writeln!(f, "      policy output:")?;
                    for line in case.output.iter().take(MAX_OUTPUT_LINES) {
                        writeln!(f, "        {line}")?;
                    }
                    if case.output.len() > MAX_OUTPUT_LINES {
                        writeln!(f, "        … {} more lines", case.output.len() - MAX_OUTPUT_LINES)?;
                    }
                }
            }
        }
        write!(f, "{} cases: {} passed, {} failed", self.cases.len(), self.cases.len() - self.failed(), self.failed())?;
        if let Some(memory) = self.instance_memory {
            write!(f, "; instance memory {:.1} MiB", memory as f64 / (1024.0 * 1024.0))?;
        }
        if let Some(median) = self.median_request() {
            write!(f, "; median request {:.0} µs", median.as_secs_f64() * 1e6)?;
        }
        writeln!(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_differences_name_their_pointer() {
        let mut out = Vec::new();
        json_difference(
            "",
            &json!({"a": 1, "b": [1, 2], "c": {"d": "x"}}),
            &json!({"a": 2, "b": [1], "c": {"d": "x", "e": true}}),
            &mut out,
        );
        assert_eq!(out, vec!["at /a: expected 1, got 2", "at /b/1: missing, expected 2", "at /c/e: unexpected true"]);
        let mut out = Vec::new();
        json_difference("", &json!(1), &json!("1"), &mut out);
        assert_eq!(out, vec!["at /: expected 1, got \"1\""]);
    }

    #[test]
    fn text_differences_show_where() {
        let text = text_difference("hello world", "hello there");
        assert!(text.starts_with("differs at byte 6"), "{text}");
        assert!(text.contains("\"hello world\"") && text.contains("\"hello there\""), "{text}");
    }
}
