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
use portico_gateway::contract::defaults;
use portico_gateway::contract::environment::FailureMode;
use portico_gateway::error::ProxyError;
use portico_gateway::exchange::{BodyState, Exchange, ResponseState, RouteInfo};
use portico_gateway::metrics::PolicyStats;
use portico_gateway::pipeline::{Blocking, RequestEnd, ResponseHead, Upstream, UpstreamBody, run_phases};
use portico_gateway::policy::{AttachedPolicy, AttachmentSettings, CompiledPolicy, LoadError, PolicyEngine, Services};

use super::capture::Captured;
use super::compare::compare;
use super::fixtures::{Case, DecisionKind, Fixtures, HeaderValues};
use super::mocks::{self, MockHost};
use super::outcome::{Forwarded, Outcome};
use super::report::{CaseReport, Report};

/// A policy engine whose host services are mocks. Compile once, run many fixture files.
pub struct Harness {
    engine: PolicyEngine,
    host: Arc<MockHost>,
    services: Arc<Services>,
    /// Every call's deadline, whatever the fixture file says (`--timeout`).
    timeout: Option<Duration>,
    /// The mocks hold one case at a time.
    running: Mutex<()>,
}

impl Harness {
    /// A new engine (with its epoch ticker) on mocked services.
    pub fn new() -> anyhow::Result<Self> {
        let host = Arc::new(MockHost::default());
        let engine = PolicyEngine::with_clock(host.clone())?;
        let services = Arc::new(Services { keys: host.clone(), counters: host.clone() });
        Ok(Self { engine, host, services, timeout: None, running: Mutex::new(()) })
    }

    /// Run every call under `timeout` instead of the fixture file's `timeout`. Deadlines
    /// are wall-clock, as in a gateway: on a loaded machine (a busy CI runner) a call can
    /// miss a tight one for the machine's sake, not the policy's.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
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
        let mut attachments: HashMap<String, Result<Arc<AttachedPolicy>, String>> = HashMap::new();
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
    ) -> Result<AttachedPolicy, LoadError> {
        let timeout = self.timeout.or(fixtures.and_then(|f| f.timeout).map(|t| t.0)).unwrap_or(defaults::POLICY_TIMEOUT);
        let settings = AttachmentSettings {
            name: policy.name().to_owned(),
            config_json: config.to_string(),
            timeout,
            startup_timeout: timeout.max(defaults::POLICY_TIMEOUT_CEILING),
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
    fn of(attachment: &AttachedPolicy) -> Self {
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
fn run_case(attachment: &Arc<AttachedPolicy>, case: &Case, fixtures: &Fixtures, host: &MockHost) -> anyhow::Result<Outcome> {
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
        client_certificate: request.client_certificate.as_deref().map(|sha256| Arc::from(sha256.to_ascii_lowercase())),
        route: Arc::new(RouteInfo::new(route.api.clone(), route.version.clone(), operation)),
        identity: request.identity.as_ref().map(|identity| mocks::identity_of(identity, "api-key")),
        attributes: request.attributes.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        response_headers: Vec::new(),
        quota_remaining: None,
        response: None,
        policy_time: Default::default(),
        upstream_time: None,
    });

    let mut forwarded = None;
    let upstream = MockUpstream { request_body, head: Some(upstream_head), body: upstream_body, forwarded: &mut forwarded };
    let chain = std::slice::from_ref(attachment);
    let started = Instant::now();
    let phases = complete(run_phases(chain, exchange, &Blocking::default(), upstream, None))?;
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
