//! OpenTelemetry traces, off unless the settings have `traces`. Each request gets a server
//! span, a child of the client's W3C `traceparent` (and `tracestate`) when it sent one, and
//! that span gets a child per policy call and one for the upstream call, whose context goes
//! upstream in `traceparent`. Whether a trace is recorded is its parent's decision, else
//! `sampling_ratio` of new trace ids; a request whose trace is not recorded pays for its ids
//! and the header only. The SDK's thread hands spans in batches to [`otlp`], which sends them
//! to the collector.

mod otlp;

use std::borrow::Cow;
use std::cell::Cell;
use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};

use crate::contract::hex;
use crate::settings::TracesConfig;

/// The process's tracer and what exports its spans.
pub struct Traces {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    /// Whether a trace begun here is recorded, decided before the SDK is asked for a span
    /// (which then records whatever this chose).
    ratio: Ratio,
}

impl Traces {
    /// Start exporting to the collector `config` names (on the current runtime).
    pub fn start(config: &TracesConfig) -> anyhow::Result<Self> {
        let exporter = otlp::Exporter::new(&config.endpoint)?;
        let service = config.resource.get("service.name").cloned().unwrap_or_else(|| "portico-gateway".into());
        let resource = Resource::builder()
            .with_service_name(service)
            .with_attributes(
                config.resource.iter().filter(|(key, _)| *key != "service.name").map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("portico-gateway");
        Ok(Self { provider, tracer, ratio: Ratio::new(config.sampling_ratio) })
    }

    /// Export what is left and stop.
    pub async fn shutdown(&self) {
        let provider = self.provider.clone();
        if let Ok(Err(error)) = tokio::task::spawn_blocking(move || provider.shutdown()).await {
            tracing::warn!(%error, "the last spans could not be exported");
        }
    }

    /// The server span of a request from `client`, child of the trace context it sent.
    pub fn server_span<B>(&self, request: &Request<B>, client: Option<IpAddr>, tls: bool) -> SpanParent {
        if has(request.headers(), &TRACEPARENT) {
            let parent = TraceContextPropagator::new().extract_with_context(&Context::new(), &HeaderExtractor(request.headers()));
            return self.sdk_span(request, parent, client, tls);
        }
        // A trace begins here. Most are not recorded: they get their ids, for the log and
        // the upstream, and nothing of the SDK, whose span costs more than the rest.
        let (trace_id, span_id) = new_ids();
        if self.ratio.records(trace_id) {
            return self.sdk_span(request, Context::new(), client, tls);
        }
        SpanParent(Parent::Unrecorded { trace_id, span_id })
    }

    /// The SDK's server span, child of `parent`. Out of line and cold, so that the few lines
    /// above, all that a request whose trace is not recorded runs, are not interleaved with
    /// it in the instruction cache.
    #[cold]
    #[inline(never)]
    fn sdk_span<B>(&self, request: &Request<B>, parent: Context, client: Option<IpAddr>, tls: bool) -> SpanParent {
        let mut span = self.tracer.span_builder("HTTP").with_kind(SpanKind::Server).start_with_context(&self.tracer, &parent);
        let method = span.is_recording().then(|| {
            let mut attributes = vec![
                KeyValue::new("http.request.method", request.method().to_string()),
                KeyValue::new("url.path", request.uri().path().to_owned()),
                KeyValue::new("url.scheme", if tls { "https" } else { "http" }),
                KeyValue::new("network.protocol.version", protocol_version(request.version())),
            ];
            attributes.extend(client.map(|client| KeyValue::new("client.address", client.to_string())));
            if let Some(agent) = request.headers().get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()) {
                attributes.push(KeyValue::new("user_agent.original", agent.to_owned()));
            }
            span.set_attributes(attributes);
            request.method().clone()
        });
        SpanParent(Parent::Span(Box::new(SdkParent { cx: parent.with_span(span), tracer: self.tracer.clone(), method })))
    }

    /// A span `name` with `attributes`, child of the W3C `traceparent` given (another
    /// process's span: a deploy's, for the snapshot it made), when that trace is recorded.
    pub fn child_of_remote(&self, traceparent: &str, name: &'static str, attributes: Vec<KeyValue>) -> Option<ChildSpan> {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", http::HeaderValue::from_str(traceparent).ok()?);
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(&headers));
        if !parent.span().span_context().is_sampled() {
            return None;
        }
        let mut span = self.tracer.start_with_context(name, &parent);
        span.set_attributes(attributes);
        Some(ChildSpan(parent.with_span(span)))
    }
}

/// A new trace id and span id, for a trace begun here: from wyrand (Wang Yi's generator: an
/// add and a multiply a word) with a state per thread seeded from the standard library's
/// random hash keys. Ids must be unique and evenly spread (the ratio reads their bits), not
/// secret; the SDK's generator, a `RefCell` around a larger state per word, cost twice this.
fn new_ids() -> (TraceId, SpanId) {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), "trace ids"));
    }
    STATE.with(|state| {
        let next = || {
            let s = state.get().wrapping_add(0xa076_1d64_78bd_642f);
            state.set(s);
            let product = u128::from(s) * u128::from(s ^ 0xe703_7ed1_a0b4_28db);
            (product >> 64) as u64 ^ product as u64
        };
        let trace = (u128::from(next()) << 64) | u128::from(next());
        // An id of zeros is invalid; one in 2^64 draws.
        (TraceId::from(trace.max(1)), SpanId::from(next().max(1)))
    })
}

/// The SDK's `TraceIdRatioBased` rule (so that every service of a trace decides alike),
/// with its bound worked out once instead of per request: a trace is recorded when its id's
/// low 63 bits fall below `ratio` of their range.
#[derive(Debug, Clone, Copy)]
struct Ratio {
    /// `None` when every trace is recorded.
    below: Option<u64>,
}

impl Ratio {
    fn new(ratio: f64) -> Self {
        // Written as the SDK tests it, so that even a NaN decides alike (never recorded).
        if ratio >= 1.0 { Self { below: None } } else { Self { below: Some((ratio.max(0.0) * (1u64 << 63) as f64) as u64) } }
    }

    fn records(self, trace_id: TraceId) -> bool {
        let Some(below) = self.below else { return true };
        // The id's low eight bytes, read big-endian as the SDK reads them.
        let low = u128::from_be_bytes(trace_id.to_bytes()) as u64;
        (low >> 1) < below
    }
}

/// Whether `headers` has `name`: a look at each name, which costs a request less than a
/// hashed lookup of a name that is not a standard one (requests carry few headers). Inlined,
/// so that each look compares with a constant's length and bytes.
#[inline(always)]
fn has(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers.keys().any(|present| present == name)
}

fn protocol_version(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// A request's server span: what its child spans start from.
#[derive(Clone)]
pub struct SpanParent(Parent);

#[derive(Clone)]
enum Parent {
    /// A trace begun here and not recorded: its ids only (nothing to drop).
    Unrecorded { trace_id: TraceId, span_id: SpanId },
    /// The SDK's span: recorded, or continuing a caller's trace that is not. Boxed, so that
    /// the unrecorded (most requests) move and keep a few words, not the SDK's tracer.
    Span(Box<SdkParent>),
}

#[derive(Clone)]
struct SdkParent {
    cx: Context,
    tracer: SdkTracer,
    /// The request's method, when the trace is recorded (to name the span once routed).
    method: Option<Method>,
}

impl std::fmt::Debug for SpanParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.with_span_context(|span| f.debug_struct("SpanParent").field("span", span).finish_non_exhaustive())
    }
}

impl SpanParent {
    /// `f` of the server span's context: its ids, flags and trace state.
    fn with_span_context<R>(&self, f: impl FnOnce(&SpanContext) -> R) -> R {
        match &self.0 {
            Parent::Unrecorded { trace_id, span_id } => {
                f(&SpanContext::new(*trace_id, *span_id, TraceFlags::default(), false, TraceState::NONE))
            }
            Parent::Span(sdk) => f(sdk.cx.span().span_context()),
        }
    }

    /// The SDK's span when the trace is recorded: its context, tracer and request method.
    fn recorded(&self) -> Option<(&Context, &SdkTracer, &Method)> {
        match &self.0 {
            Parent::Span(sdk) => Some((&sdk.cx, &sdk.tracer, sdk.method.as_ref()?)),
            _ => None,
        }
    }

    /// The trace's id.
    pub fn trace_id(&self) -> [u8; 16] {
        match &self.0 {
            Parent::Unrecorded { trace_id, .. } => trace_id.to_bytes(),
            Parent::Span(sdk) => sdk.cx.span().span_context().trace_id().to_bytes(),
        }
    }

    /// A child span for a call of a policy, when the trace is recorded.
    pub fn policy(&self, name: &str, digest: &str, phase: &'static str) -> Option<ChildSpan> {
        let (cx, tracer, _) = self.recorded()?;
        let mut span = tracer.span_builder(format!("policy {name}")).start_with_context(tracer, cx);
        span.set_attributes([
            KeyValue::new("portico.policy.name", name.to_owned()),
            KeyValue::new("portico.policy.digest", digest.to_owned()),
            KeyValue::new("portico.policy.phase", phase),
        ]);
        Some(ChildSpan(cx.with_span(span)))
    }

    /// The upstream call's span, when the trace is recorded; its context (else the server
    /// span's) goes into the upstream request's `headers`.
    pub fn upstream(&self, method: &Method, path: &str, headers: &mut HeaderMap) -> Option<ChildSpan> {
        if let Some((cx, tracer, _)) = self.recorded() {
            return Some(upstream_span(cx, tracer, method, path, headers));
        }
        match &self.0 {
            Parent::Unrecorded { trace_id, span_id } => inject(*trace_id, *span_id, false, None, headers),
            Parent::Span(sdk) => inject_context(sdk.cx.span().span_context(), headers),
        }
        None
    }

    /// End the server span: the request was answered `status`, matched the `route`
    /// template (when it did); `attributes` are added. Both are asked for only when the
    /// trace is recorded.
    pub fn finish<'a>(self, status: u16, route: impl FnOnce() -> Option<&'a str>, attributes: impl FnOnce() -> Vec<KeyValue>) {
        if let Parent::Span(sdk) = self.0 {
            end_sdk_span(sdk, status, route, attributes);
        }
    }

    /// The span's context as a W3C `traceparent`, for another process to continue.
    pub fn traceparent(&self) -> Option<String> {
        let mut headers = HeaderMap::new();
        self.with_span_context(|span| inject_context(span, &mut headers));
        headers.get(TRACEPARENT).and_then(|value| value.to_str().ok()).map(str::to_owned)
    }
}

/// [`SpanParent::finish`] of the SDK's span, out of line as [`Traces::sdk_span`] is.
#[cold]
#[inline(never)]
#[expect(
    clippy::boxed_local,
    reason = "the box is freed here, so that `finish`, on every request's path, neither moves the span out of it nor frees it"
)]
fn end_sdk_span<'a>(sdk: Box<SdkParent>, status: u16, route: impl FnOnce() -> Option<&'a str>, attributes: impl FnOnce() -> Vec<KeyValue>) {
    let SdkParent { cx, method, .. } = *sdk;
    let span = cx.span();
    if let Some(method) = &method {
        span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
        match route() {
            Some(route) => {
                span.update_name(format!("{method} {route}"));
                span.set_attribute(KeyValue::new("http.route", route.to_owned()));
            }
            None => span.update_name(method.to_string()),
        }
        span.set_attributes(attributes());
        if status >= 500 {
            span.set_status(Status::error(""));
            span.set_attribute(KeyValue::new("error.type", status.to_string()));
        }
    }
    span.end();
}

/// The upstream call's span in a recorded trace, its context put into `headers` (out of
/// line, as [`Traces::sdk_span`] is).
#[cold]
#[inline(never)]
fn upstream_span(cx: &Context, tracer: &SdkTracer, method: &Method, path: &str, headers: &mut HeaderMap) -> ChildSpan {
    let name: Cow<'static, str> = Cow::Owned(method.as_str().to_owned());
    let mut span = tracer.span_builder(name).with_kind(SpanKind::Client).start_with_context(tracer, cx);
    span.set_attributes([KeyValue::new("http.request.method", method.to_string()), KeyValue::new("url.path", path.to_owned())]);
    let cx = cx.with_span(span);
    inject_context(cx.span().span_context(), headers);
    ChildSpan(cx)
}

/// The W3C trace context's header.
pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Put `span` into `headers` as W3C trace context (nothing when it is not valid).
fn inject_context(span: &SpanContext, headers: &mut HeaderMap) {
    if span.is_valid() {
        let state = Some(span.trace_state()).filter(|state| **state != TraceState::NONE);
        inject(span.trace_id(), span.span_id(), span.is_sampled(), state, headers);
    }
}

/// Put a span into `headers` as W3C trace context: `traceparent`, and `tracestate` when the
/// trace has one (replacing what the client sent). Written on the stack rather than by the
/// SDK's propagator, whose formatting cost as much as the rest of an unsampled trace.
fn inject(trace_id: TraceId, span_id: SpanId, sampled: bool, state: Option<&TraceState>, headers: &mut HeaderMap) {
    let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
    text[3..35].copy_from_slice(&hex::encode_u128(u128::from_be_bytes(trace_id.to_bytes())));
    text[36..52].copy_from_slice(&hex::encode_u64(u64::from_be_bytes(span_id.to_bytes())));
    if sampled {
        text[54] = b'1';
    }
    if let Ok(value) = HeaderValue::from_bytes(&text) {
        headers.insert(TRACEPARENT, value);
    }
    // Most traces have no state, and most clients send none: nothing more to do.
    if state.is_some() || has(headers, &TRACESTATE) {
        replace_state(state, headers);
    }
}

/// Set `tracestate` to `state`, or remove it when there is none (an empty one is not sent).
/// Out of line and cold, as few requests need it: its code would otherwise take lines of
/// the instruction cache on every request.
#[cold]
#[inline(never)]
fn replace_state(state: Option<&TraceState>, headers: &mut HeaderMap) {
    if let Some(state) = state {
        let state = state.header();
        if let Ok(value) = HeaderValue::from_str(&state)
            && !state.is_empty()
        {
            headers.insert(TRACESTATE, value);
            return;
        }
    }
    headers.remove(TRACESTATE);
}

/// A policy call's or the upstream call's span, ended by [`ChildSpan::end`] (or when dropped).
pub struct ChildSpan(Context);

impl ChildSpan {
    /// End it with what happened: `outcome` (a policy's `continue` or `respond`, the
    /// upstream's status), or the error.
    pub fn end(self, outcome: Result<KeyValue, String>) {
        let span = self.0.span();
        match outcome {
            Ok(attribute) => span.set_attribute(attribute),
            Err(error) => {
                span.set_attribute(KeyValue::new("error.type", error.clone()));
                span.set_status(Status::error(error));
            }
        }
        span.end();
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanId, TraceId};
    use opentelemetry_http::HeaderInjector;

    use super::*;

    #[test]
    fn trace_context_goes_out_as_the_sdk_s_propagator_writes_it() {
        let (trace, span) = (TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(), SpanId::from_hex("00f067aa0ba902b7").unwrap());
        let state = TraceState::from_key_value([("vendor", "x")]).unwrap();
        for (flags, state) in [(TraceFlags::SAMPLED, state), (TraceFlags::default(), TraceState::default())] {
            let context = SpanContext::new(trace, span, flags, true, state.clone());
            let mut ours = HeaderMap::new();
            ours.insert(TRACESTATE, HeaderValue::from_static("client=1"));
            inject_context(&context, &mut ours);
            let mut theirs = HeaderMap::new();
            let cx = Context::new().with_remote_span_context(context);
            TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(&mut theirs));
            assert_eq!(ours[TRACEPARENT], theirs[TRACEPARENT]);
            let sampled = if flags.is_sampled() { "01" } else { "00" };
            assert_eq!(ours[TRACEPARENT], format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{sampled}"));
            // The client's tracestate is replaced by the trace's, or removed when it has none.
            assert_eq!(ours.get(TRACESTATE).map(|v| v.to_str().unwrap()), (!state.header().is_empty()).then_some("vendor=x"));
        }
        let mut headers = HeaderMap::new();
        inject_context(&SpanContext::empty_context(), &mut headers);
        assert!(headers.is_empty(), "an invalid context is not sent");
    }

    #[test]
    fn ids_of_traces_begun_here_are_unique_and_evenly_spread() {
        let here: Vec<(TraceId, SpanId)> = (0..10_000).map(|_| new_ids()).collect();
        let there: Vec<(TraceId, SpanId)> = std::thread::spawn(|| (0..10_000).map(|_| new_ids()).collect()).join().unwrap();
        let traces: std::collections::HashSet<TraceId> = here.iter().chain(&there).map(|ids| ids.0).collect();
        let spans: std::collections::HashSet<SpanId> = here.iter().chain(&there).map(|ids| ids.1).collect();
        assert_eq!((traces.len(), spans.len()), (20_000, 20_000), "every id differs, on each thread");
        // Each half of the range gets half of them (the ratio reads the low bits, the log shows
        // all): 5,000 ± 250 is five standard deviations.
        let low = here.iter().filter(|ids| Ratio::new(0.5).records(ids.0)).count();
        let high = here.iter().filter(|ids| u128::from_be_bytes(ids.0.to_bytes()) >> 127 == 1).count();
        assert!((4_750..5_250).contains(&low) && (4_750..5_250).contains(&high), "{low} {high}");
    }

    #[test]
    fn a_trace_begun_here_is_recorded_as_the_sdk_s_ratio_sampler_decides() {
        use opentelemetry_sdk::trace::{SamplingDecision, ShouldSample};
        // Random ids, and those at the edges of each bound.
        let mut trace_ids: Vec<TraceId> = (0..2_000).map(|_| new_ids().0).collect();
        for ratio in [0.0, 0.01, 0.5, 0.999_999, 1.0] {
            let below = (ratio * (1u64 << 63) as f64) as u64;
            for low in [below.saturating_sub(1), below, below.saturating_add(1)] {
                trace_ids.extend([low << 1, (low << 1) | 1].map(|low| TraceId::from(u128::from(low) | (7 << 64))));
            }
        }
        for ratio in [0.0, 0.01, 0.5, 0.999_999, 1.0, -1.0, 2.0, f64::NAN] {
            let sdk = Sampler::TraceIdRatioBased(ratio);
            for &trace_id in &trace_ids {
                let decision = sdk.should_sample(None, trace_id, "HTTP", &SpanKind::Server, &[], &[]).decision;
                assert_eq!(Ratio::new(ratio).records(trace_id), decision != SamplingDecision::Drop, "{ratio} {trace_id}");
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_trace_begun_here_is_recorded_at_the_ratio_and_always_sent_upstream() {
        for (ratio, recorded) in [(0.0, false), (1.0, true)] {
            let config =
                TracesConfig { endpoint: "http://127.0.0.1:9/v1/traces".into(), sampling_ratio: ratio, resource: Default::default() };
            let traces = Traces::start(&config).unwrap();
            let parent = traces.server_span(&Request::get("/x").body(()).unwrap(), None, false);
            assert_ne!(parent.trace_id(), [0; 16]);
            assert_eq!(parent.policy("stamp", "ab", "request").is_some(), recorded);
            let mut headers = HeaderMap::new();
            assert_eq!(parent.upstream(&Method::GET, "/x", &mut headers).is_some(), recorded);
            let sent = headers[TRACEPARENT].to_str().unwrap();
            let flags = if recorded { "-01" } else { "-00" };
            assert!(sent.starts_with(&format!("00-{}-", hex::encode(&parent.trace_id()))) && sent.ends_with(flags), "{sent}");
            assert_eq!(parent.traceparent().unwrap().len(), 55);
            parent.finish(200, || Some("/x"), Vec::new);
            traces.shutdown().await;
        }
    }
}
