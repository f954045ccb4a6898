//! The life of one request, in phases: normalise and route, run the request chain,
//! forward to the upstream, run the response chain (in reverse), log. Each phase is one
//! function below; the chains stop at the first policy that answers or fails closed.
//! [`run_phases`] is generic over its [`Upstream`] step, so that `portico policy test`
//! drives these same phases with a mocked upstream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use opentelemetry::KeyValue;

use crate::Gateway;
pub use crate::blocking::Blocking;
use crate::body::{Body, is_too_large};
use crate::contract::environment::FailureMode;
use crate::error::ProxyError;
use crate::exchange::{BodyState, Exchange, ResponseState};
use crate::policy::{AttachedPolicy, CallFailure, Decision, ImmediateResponse};
use crate::records::{Record, RequestLine};
use crate::router::{RouteMatch, normalize_path};
use crate::settings::Limits;
use crate::snapshot::{ServedOperation, Snapshot};
use crate::traces::SpanParent;
use crate::upstream::{Forward, strip_hop_by_hop};
use std::future::Future;

/// Where a connection came from.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The client's IP as a header value, made once per connection for `X-Forwarded-For`.
    pub ip_header: HeaderValue,
    /// The sha256 (lower-case hex) of the certificate the client presented and the listener
    /// verified (mutual TLS), once per connection.
    pub client_certificate: Option<Arc<str>>,
    /// Whether the listener writes its requests to the access log.
    pub access_log: bool,
}

impl Peer {
    /// A peer at `addr`, with the certificate it presented over TLS, if any, on a listener
    /// that writes its requests to the access log or not.
    pub fn new(addr: SocketAddr, tls: bool, client_certificate: Option<&[u8]>, access_log: bool) -> Self {
        let ip_header = HeaderValue::try_from(addr.ip().to_string()).expect("an IP address is a valid header value");
        let client_certificate = client_certificate.map(|der| Arc::from(crate::contract::hex::sha256(der)));
        Self { addr, tls, ip_header, client_certificate, access_log }
    }
}

/// What a request left behind for the metrics and the access log.
#[derive(Default)]
struct Served {
    /// The operation it was routed to.
    operation: Option<Arc<ServedOperation>>,
    /// The calling application, as key-auth found it.
    application: Option<String>,
    /// Its subscription to the API.
    subscription: Option<String>,
    /// From sending upstream to the upstream's response head.
    upstream: Option<Duration>,
    /// Time in policy calls.
    policy: Duration,
}

/// Serve one request. Never fails: errors become problem responses.
pub async fn handle(gateway: &Gateway, request: Request<Incoming>, peer: Peer) -> Response<Body> {
    let started = Instant::now();
    let Some(snapshot) = gateway.snapshot() else {
        return ProxyError::NotReady.into_response();
    };
    let trace = gateway.traces().map(|traces| traces.server_span(&request, Some(peer.addr.ip()), peer.tls));
    let recorder = gateway.recorder();
    // The access log needs the request line as received; copy it only when it is on.
    let line = (peer.access_log && recorder.is_some_and(|recorder| recorder.logging())).then(|| RequestLine {
        trace_id: trace.as_ref().map(SpanParent::trace_id).or_else(|| trace_id(request.headers())),
        client: peer.addr.ip(),
        method: request.method().clone(),
        path: crate::records::PathText::new(request.uri().path()),
    });
    let span = tracing::debug_span!("request", client = %peer.addr.ip(), snapshot = %snapshot.version);
    let routed = route_and_proxy(&snapshot, request, &peer, &gateway.limits, trace.as_ref());
    let (response, served) = match tracing::Instrument::instrument(routed, span).await {
        Ok(served) => served,
        Err(error) => {
            tracing::debug!(error = %error, "request refused before routing");
            (error.into_response(), Served::default())
        }
    };
    let finished = Instant::now();
    let elapsed = finished - started;
    let status = response.status().as_u16();
    match &served.operation {
        Some(operation) => {
            operation.stats.record(status, elapsed);
            if let Some(application) = &served.application {
                operation.stats.record_application(application, status);
            }
        }
        None => gateway.metrics.unrouted.record(status, elapsed),
    }
    if let Some(trace) = trace {
        let route = served.operation.as_ref().map(|operation| &operation.route);
        let template = || route.map(|route| route.operation.split_once(' ').map_or(route.operation.as_str(), |(_, template)| template));
        trace.finish(status, template, || {
            let mut attributes = Vec::new();
            if let Some(route) = route {
                attributes.push(KeyValue::new("portico.api", route.api_name.clone()));
                attributes.push(KeyValue::new("portico.api.version", route.api_version.clone()));
            }
            attributes.extend(served.application.as_ref().map(|application| KeyValue::new("portico.application", application.clone())));
            attributes
        });
    }
    if let Some(recorder) = recorder
        && (line.is_some() || (served.operation.is_some() && recorder.tallying()))
    {
        recorder.push(Record {
            at: finished,
            line,
            status,
            route: served.operation.map(|operation| operation.route.clone()),
            application: served.application,
            subscription: served.subscription,
            duration: elapsed,
            upstream: served.upstream,
            policy: served.policy,
        });
    }
    response
}

/// The trace id of a valid W3C `traceparent` header (Trace Context level 1:
/// `{version}-{trace id}-{parent id}-{flags}` in lower-case hex, version `ff` and all-zero
/// ids invalid, version `00` exactly 55 bytes, a later version at least that and a `-` next).
fn trace_id(headers: &http::HeaderMap) -> Option<[u8; 16]> {
    let value = headers.get(crate::traces::TRACEPARENT)?.as_bytes();
    let lower_hex = |bytes: &[u8]| bytes.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let well_formed = value.len() >= 55
        && [value[2], value[35], value[52]] == [b'-'; 3]
        && [&value[..2], &value[3..35], &value[36..52], &value[53..55]].into_iter().all(lower_hex)
        && value[..2] != *b"ff"
        && (value.len() == 55 || (value[..2] != *b"00" && value[55] == b'-'))
        && value[36..52].iter().any(|&c| c != b'0');
    if !well_formed {
        return None;
    }
    let id = crate::contract::hex::decode_array(std::str::from_utf8(&value[3..35]).ok()?)?;
    (id != [0; 16]).then_some(id)
}

/// Normalise, route and check limits; then run the operation's phases.
async fn route_and_proxy(
    snapshot: &Snapshot,
    request: Request<Incoming>,
    peer: &Peer,
    limits: &Limits,
    trace: Option<&SpanParent>,
) -> Result<(Response<Body>, Served), ProxyError> {
    if snapshot.blocking.client_blocked(peer.addr.ip()) {
        return Err(ProxyError::Blocked);
    }
    let (mut head, body) = request.into_parts();
    let normalised = normalize_path(head.uri.path())?;
    let host = head.uri.authority().map(|a| a.as_str()).or_else(|| head.headers.get(header::HOST).and_then(|h| h.to_str().ok()));
    let (operation, context_len) = match snapshot.routes.route(host, &head.method, &normalised) {
        // `rest` is a suffix of the path, or a bare "/" when the path is the context itself.
        RouteMatch::Found { value, rest, .. } if rest == "/" && !normalised.ends_with('/') => (value.clone(), normalised.len()),
        RouteMatch::Found { value, rest, .. } => (value.clone(), normalised.len() - rest.len()),
        RouteMatch::MethodNotAllowed { allowed, .. } => {
            let allow = allowed.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ");
            return Err(ProxyError::MethodNotAllowed { allow });
        }
        RouteMatch::NotFound => return Err(ProxyError::NotFound),
    };
    // From here on, the request carries the normalised path: what was routed is what
    // policies see and what is forwarded.
    let target = (normalised.as_ref() != head.uri.path() || head.uri.scheme().is_some()).then(|| match head.uri.query() {
        Some(query) => format!("{normalised}?{query}"),
        None => normalised.into_owned(),
    });
    // Refused after routing: counted and logged under the API.
    if let Err(error) = check_routed(&operation, &mut head, target, limits) {
        return Ok((error.into_response(), Served { operation: Some(operation), ..Served::default() }));
    }
    let (response, served) =
        run_operation(&operation, &snapshot.blocking, Request::from_parts(head, body), context_len, peer, limits, trace).await;
    Ok((response, Served { operation: Some(operation), ..served }))
}

/// What a routed request must pass before its phases run: its API is available and not
/// blocked, its target (rewritten to the normalised path, when given) and its declared
/// length are acceptable. Strips the client's hop-by-hop headers on the way.
fn check_routed(
    operation: &ServedOperation,
    head: &mut http::request::Parts,
    target: Option<String>,
    limits: &Limits,
) -> Result<(), ProxyError> {
    if operation.unavailable {
        return Err(ProxyError::ApiUnavailable);
    }
    if operation.blocked {
        return Err(ProxyError::Blocked);
    }
    // The client's hop-by-hop headers go before any policy runs: a `Connection` header
    // naming a header a policy adds must not remove it on the way out.
    strip_hop_by_hop(&mut head.headers);
    // Over HTTP/2 the host is the URI's authority, which the path rewrite below drops:
    // keep it as `Host`, so that policies and `X-Forwarded-Host` see the one routed on.
    if !head.headers.contains_key(header::HOST)
        && let Some(authority) = head.uri.authority().and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
    {
        head.headers.insert(header::HOST, authority);
    }
    if let Some(target) = target {
        head.uri = Uri::try_from(target).map_err(|_| ProxyError::BadRequest("invalid request target"))?;
    }
    if let Some(length) = head.headers.get(header::CONTENT_LENGTH) {
        let length: u64 = length.to_str().ok().and_then(|l| l.parse().ok()).ok_or(ProxyError::BadRequest("invalid content-length"))?;
        if length > limits.max_body_bytes.0 {
            return Err(ProxyError::PayloadTooLarge);
        }
    }
    Ok(())
}

/// The phases of a routed request, with the upstream over HTTP.
async fn run_operation(
    operation: &ServedOperation,
    blocking: &Blocking,
    request: Request<Incoming>,
    context_len: usize,
    peer: &Peer,
    limits: &Limits,
    trace: Option<&SpanParent>,
) -> (Response<Body>, Served) {
    let (head, body) = request.into_parts();
    let max_body = usize::try_from(limits.max_body_bytes.0).unwrap_or(usize::MAX);
    let mut exchange = Box::new(Exchange {
        request: head,
        request_body: BodyState::Streaming,
        request_body_replaced: false,
        client_addr: peer.addr.ip(),
        client_certificate: peer.client_certificate.clone(),
        route: operation.route.clone(),
        identity: None,
        attributes: Vec::new(),
        response_headers: Vec::new(),
        quota_remaining: None,
        response: None,
        policy_time: Default::default(),
        upstream_time: None,
    });
    let mut stream = None;
    if operation.needs_request_body {
        match collect(body, max_body, limits.body_read_timeout.0).await {
            Ok(bytes) => exchange.request_body = BodyState::Buffered(bytes),
            Err(error) => return (error.into_response(), Served::default()),
        }
    } else if body.is_end_stream() {
        stream = Some(Body::Empty);
    } else {
        stream = Some(Body::Limited(Limited::new(body, max_body)));
    }
    let upstream = HttpUpstream { operation, stream, peer, context_len, max_body, body_timeout: limits.body_read_timeout.0, trace };
    let Phases { response, stream, mut exchange, .. } = run_phases(&operation.chain, exchange, blocking, upstream, trace).await;
    let (application, subscription) = match exchange.identity.as_mut() {
        Some(identity) => (identity.application.take(), identity.subscription.take()),
        None => (None, None),
    };
    let served = Served { operation: None, application, subscription, upstream: exchange.upstream_time, policy: exchange.policy_time };
    (finish(response, stream), served)
}

/// The upstream step of [`run_phases`]: where the request goes once the request chain let
/// it through. The gateway's is an HTTP client; `portico policy test` has a mocked one.
pub trait Upstream {
    /// A response body the phases pass on without reading it.
    type Stream;

    /// Send the request as the request chain left it. With `buffer`, a response-phase
    /// policy reads the body: return it whole.
    fn send(
        self,
        exchange: &mut Exchange,
        buffer: bool,
    ) -> impl Future<Output = Result<(ResponseHead, UpstreamBody<Self::Stream>), ProxyError>> + Send;
}

/// The status and headers of a response.
pub type ResponseHead = http::response::Parts;

/// A response body from the upstream.
pub enum UpstreamBody<S> {
    /// Read in full.
    Buffered(Bytes),
    /// Passed on as it comes.
    Stream(S),
}

/// How the request chain ended.
#[derive(Debug)]
pub enum RequestEnd {
    /// Every policy let it through: it went to the upstream.
    Forwarded,
    /// A policy answered.
    Answered,
    /// A blocking condition names the authenticated caller.
    Blocked,
    /// A fail-closed policy failed; a 500 answered.
    Failed(CallFailure),
}

/// What the phases produced.
pub struct Phases<S> {
    /// The response, as the response chain left it.
    pub response: ResponseState,
    /// The upstream's body, when it streams (`response.body` is then `Streaming`).
    pub stream: Option<S>,
    /// The exchange, as the last policy left it.
    pub exchange: Box<Exchange>,
    /// How the request chain ended.
    pub request: RequestEnd,
    /// Set when a fail-closed policy failed in its response phase (a 500 answered).
    pub response_failure: Option<CallFailure>,
}

/// The phases after routing, the same for every caller: the request chain, the caller's
/// blocking check, the upstream (unless a policy answered), then the response chain in
/// reverse, for the policies whose request phase ran. Never fails: a failure becomes a
/// response.
pub async fn run_phases<U: Upstream>(
    chain: &[Arc<AttachedPolicy>],
    exchange: Box<Exchange>,
    blocking: &Blocking,
    upstream: U,
    trace: Option<&SpanParent>,
) -> Phases<U::Stream> {
    let (mut exchange, ran, answer) = request_phase(chain, exchange, trace);
    let (answer, request_end) = match answer {
        Some((state, end)) => (Some(state), end),
        None if blocking.caller_blocked(exchange.identity.as_ref()) => (Some(error_state(ProxyError::Blocked)), RequestEnd::Blocked),
        None => (None, RequestEnd::Forwarded),
    };

    let mut stream = None;
    let mut response = match answer {
        Some(response) => response,
        None => {
            if exchange.request_body_replaced {
                exchange.request.headers.remove(header::CONTENT_LENGTH);
            }
            let buffer = chain[..ran].iter().any(|a| a.needs_response_body());
            match upstream.send(&mut exchange, buffer).await {
                Ok((head, UpstreamBody::Buffered(bytes))) => ResponseState { head, body: BodyState::Buffered(bytes), body_replaced: false },
                Ok((head, UpstreamBody::Stream(body))) => {
                    stream = Some(body);
                    ResponseState { head, body: BodyState::Streaming, body_replaced: false }
                }
                Err(error) => error_state(error),
            }
        }
    };

    for (name, value) in exchange.response_headers.drain(..) {
        response.head.headers.insert(name, value);
    }
    exchange.response = Some(response);
    let (mut exchange, response_failure) = response_phase(chain, exchange, ran, trace);
    let mut response = exchange.response.take().unwrap_or_else(|| error_state(ProxyError::Internal("response lost".into())));
    if response.body_replaced && matches!(response.body, BodyState::Buffered(_)) {
        response.head.headers.remove(header::CONTENT_LENGTH);
    }
    Phases { response, stream, exchange, request: request_end, response_failure }
}

/// The gateway's upstream step: the operation's pooled HTTP client.
struct HttpUpstream<'a> {
    operation: &'a ServedOperation,
    /// The request body, unless a policy buffered it.
    stream: Option<Body>,
    peer: &'a Peer,
    context_len: usize,
    max_body: usize,
    /// Time allowed to receive a response body a policy buffers.
    body_timeout: std::time::Duration,
    /// The request's server span, when the gateway traces.
    trace: Option<&'a SpanParent>,
}

impl Upstream for HttpUpstream<'_> {
    type Stream = Incoming;

    async fn send(self, exchange: &mut Exchange, buffer: bool) -> Result<(ResponseHead, UpstreamBody<Incoming>), ProxyError> {
        let operation = self.operation;
        let body = match (&exchange.request_body, self.stream) {
            (BodyState::Buffered(bytes), _) => Body::bytes(bytes.clone()),
            (_, Some(stream)) => stream,
            (_, None) => Body::Empty,
        };
        // A response-phase policy still reads the request: copy its headers then.
        let mut headers =
            if operation.needs_response_phase { exchange.request.headers.clone() } else { std::mem::take(&mut exchange.request.headers) };
        let rest = exchange.request.uri.path().get(self.context_len..).filter(|r| r.starts_with('/')).unwrap_or("/");
        let span = self.trace.and_then(|trace| trace.upstream(&exchange.request.method, rest, &mut headers));
        let forward = Forward { rest, client_ip: &self.peer.ip_header, tls: self.peer.tls };
        let sent = Instant::now();
        let response = operation.upstream.send(&exchange.request, headers, body, forward).await;
        if let Some(span) = span {
            span.end(match &response {
                Ok(response) => Ok(KeyValue::new("http.response.status_code", i64::from(response.status().as_u16()))),
                Err(error) => Err(error.to_string()),
            });
        }
        let response = response.inspect_err(|error| {
            tracing::warn!(api = %operation.route.api_name, error = %error, "upstream request failed");
        })?;
        let upstream_time = sent.elapsed();
        operation.stats.upstream.observe(upstream_time);
        exchange.upstream_time = Some(upstream_time);
        let (mut head, body) = response.into_parts();
        strip_hop_by_hop(&mut head.headers);
        if !buffer {
            return Ok((head, UpstreamBody::Stream(body)));
        }
        match collect(body, self.max_body, self.body_timeout).await {
            Ok(bytes) => Ok((head, UpstreamBody::Buffered(bytes))),
            Err(ProxyError::RequestTimeout) => Err(ProxyError::UpstreamTimeout),
            Err(_) => Err(ProxyError::UpstreamTooLarge),
        }
    }
}

/// Run `on-request` along the chain. Returns how many policies ran (whose response phase
/// must run) and, when one answered or failed closed, the response and how it ended.
fn request_phase(
    chain: &[Arc<AttachedPolicy>],
    mut exchange: Box<Exchange>,
    trace: Option<&SpanParent>,
) -> (Box<Exchange>, usize, Option<(ResponseState, RequestEnd)>) {
    for (i, attachment) in chain.iter().enumerate() {
        let _span = policy_span(attachment, "request").entered();
        let traced = trace.and_then(|trace| trace.policy(attachment.policy().name(), attachment.policy().digest(), "request"));
        let (back, result) = attachment.on_request(exchange);
        exchange = back;
        if let Some(traced) = traced {
            traced.end(match &result {
                Ok(Decision::Continue) => Ok(KeyValue::new("portico.policy.outcome", "continue")),
                Ok(Decision::Respond(immediate)) => Ok(KeyValue::new("portico.policy.outcome", format!("respond {}", immediate.status))),
                Err(failure) => Err(failure.to_string()),
            });
        }
        match result {
            Ok(Decision::Continue) => {}
            Ok(Decision::Respond(immediate)) => {
                attachment.stats().denials.inc();
                return (exchange, i + 1, Some((immediate_state(immediate), RequestEnd::Answered)));
            }
            Err(failure) => match attachment.on_failure() {
                FailureMode::Open => {
                    tracing::warn!(policy = attachment.policy().name(), error = %failure, "policy failed open; skipped");
                }
                FailureMode::Closed => {
                    // The 500 carries no header a policy set for the response.
                    exchange.response_headers.clear();
                    exchange.quota_remaining = None;
                    let error = ProxyError::PolicyFailed { policy: attachment.policy().name().to_owned(), reason: failure.to_string() };
                    return (exchange, i, Some((error_state(error), RequestEnd::Failed(failure))));
                }
            },
        }
    }
    (exchange, chain.len(), None)
}

/// Run `on-response`, in reverse, for the first `ran` policies; a fail-closed failure
/// replaces the response with a 500 and ends the phase.
fn response_phase(
    chain: &[Arc<AttachedPolicy>],
    mut exchange: Box<Exchange>,
    ran: usize,
    trace: Option<&SpanParent>,
) -> (Box<Exchange>, Option<CallFailure>) {
    for attachment in chain[..ran].iter().rev().filter(|a| a.needs_response_phase()) {
        let _span = policy_span(attachment, "response").entered();
        let traced = trace.and_then(|trace| trace.policy(attachment.policy().name(), attachment.policy().digest(), "response"));
        let (back, result) = attachment.on_response(exchange);
        exchange = back;
        if let Some(traced) = traced {
            traced.end(result.as_ref().map(|_| KeyValue::new("portico.policy.outcome", "continue")).map_err(ToString::to_string));
        }
        if let Err(failure) = result {
            match attachment.on_failure() {
                FailureMode::Open => {
                    tracing::warn!(policy = attachment.policy().name(), error = %failure, "policy failed open; skipped");
                }
                FailureMode::Closed => {
                    let error = ProxyError::PolicyFailed { policy: attachment.policy().name().to_owned(), reason: failure.to_string() };
                    exchange.response = Some(error_state(error));
                    return (exchange, Some(failure));
                }
            }
        }
    }
    (exchange, None)
}

/// A span per policy call (debug level: free when not enabled).
fn policy_span(attachment: &AttachedPolicy, phase: &'static str) -> tracing::Span {
    tracing::debug_span!("policy", name = attachment.policy().name(), digest = attachment.policy().digest(), phase)
}

async fn collect(body: Incoming, max: usize, deadline: std::time::Duration) -> Result<Bytes, ProxyError> {
    match tokio::time::timeout(deadline, Limited::new(body, max).collect()).await {
        Err(_) => Err(ProxyError::RequestTimeout),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if is_too_large(&*error) => Err(ProxyError::PayloadTooLarge),
        Ok(Err(_)) => Err(ProxyError::BadRequest("the request body could not be read")),
    }
}

/// The response state of an error, as the gateway answers it.
fn error_state(error: ProxyError) -> ResponseState {
    let (head, body) = error.into_parts();
    ResponseState { head, body: BodyState::Buffered(body), body_replaced: true }
}

/// The response state of a policy's immediate answer.
fn immediate_state(immediate: ImmediateResponse) -> ResponseState {
    let mut response = Response::new(());
    *response.status_mut() = StatusCode::from_u16(immediate.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    for (name, value) in immediate.headers {
        match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value)) {
            (Ok(name), Ok(value)) if name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING => {
                headers.append(name, value);
            }
            _ => tracing::warn!(header = %name, "policy answered with an invalid header; dropped"),
        }
    }
    let (head, ()) = response.into_parts();
    ResponseState { head, body: BodyState::Buffered(Bytes::from(immediate.body)), body_replaced: true }
}

/// Turn the final response state into what hyper sends.
fn finish(state: ResponseState, stream: Option<Incoming>) -> Response<Body> {
    let ResponseState { head, body, .. } = state;
    let body = match (body, stream) {
        (BodyState::Buffered(bytes), _) => Body::bytes(bytes),
        (_, Some(stream)) => Body::Stream(stream),
        (_, None) => Body::Empty,
    };
    Response::from_parts(head, body)
}

#[cfg(test)]
mod tests {
    use super::trace_id;

    fn of(value: &str) -> Option<String> {
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", value.parse().unwrap());
        trace_id(&headers).map(|id| crate::contract::hex::encode(&id))
    }

    #[test]
    fn only_a_valid_traceparent_gives_a_trace_id() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(of(&format!("00-{id}-00f067aa0ba902b7-01")).as_deref(), Some(id));
        assert_eq!(of(&format!("01-{id}-00f067aa0ba902b7-01-what-comes-later")).as_deref(), Some(id), "a later version may add fields");
        for invalid in [
            format!("ff-{id}-00f067aa0ba902b7-01"),
            format!("0g-{id}-00f067aa0ba902b7-01"),
            format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32)),
            format!("00-{id}-0000000000000000-01"),
            format!("00-{}-00f067aa0ba902b7-01", id.to_uppercase()),
            format!("00-{id}-00f067aa0ba902b7-0z"),
            format!("00-{id}-00f067aa0ba902b7-01-extra"),
            format!("01-{id}-00f067aa0ba902b7-01x"),
            format!("00-{id}_00f067aa0ba902b7-01"),
            format!("00-{id}-00f067aa0ba902b7"),
        ] {
            assert_eq!(of(&invalid), None, "{invalid}");
        }
    }
}
