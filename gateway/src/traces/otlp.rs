//! Spans sent to the collector over OTLP/HTTP: each batch encoded here, in one pass, as the
//! protobuf of `ExportTraceServiceRequest` (opentelemetry-proto's `collector/trace/v1`), and
//! posted by a hyper client on a runtime of its own. The SDK's OTLP exporter first built
//! OTLP's message types from each span and then encoded those, which took two thirds of what
//! a recorded request costs (docs/benchmarks.md).

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::GaiResolver;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

use crate::tls;

/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest collector answer read.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// What the SDK's batch thread hands its batches to.
#[derive(Debug)]
pub(super) struct Exporter {
    endpoint: Uri,
    /// Where the client runs, whatever thread exports (the SDK's batch thread has no
    /// runtime): one thread of its own rather than the process's runtime, so that nothing
    /// of an export (its connection's buffers above all) is allocated by a request worker.
    /// On the workers' heaps those buffers cost every request ~1,000 instructions, in the
    /// allocator's pages being returned and taken again (docs/benchmarks.md).
    runtime: tokio::runtime::Handle,
    /// That thread's runtime.
    _thread: ExportThread,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// The spans' resource, encoded once (the fields of a `Resource` message).
    resource: Vec<u8>,
    /// Its schema's URL, if any.
    schema_url: String,
}

impl Exporter {
    /// An exporter to the collector at `endpoint`.
    pub(super) fn new(endpoint: &str) -> anyhow::Result<Self> {
        let uri: Uri = endpoint.parse().map_err(|e| anyhow::anyhow!("traces.endpoint: `{endpoint}` is not a URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("https") => Some(tls::client_config(tls::Trust::System).map_err(|e| anyhow::anyhow!("traces.endpoint: {e}"))?),
            Some("http") => None,
            _ => anyhow::bail!("traces.endpoint: `{endpoint}` must be an http:// or https:// URL"),
        };
        let connector =
            tls::connector(tls, Duration::from_secs(5), GaiResolver::new()).map_err(|e| anyhow::anyhow!("traces.endpoint: {e}"))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-export")
            .enable_all()
            .build()
            .map_err(|e| anyhow::anyhow!("traces: no thread for the exports: {e}"))?;
        let (runtime, _thread) = (runtime.handle().clone(), ExportThread(Some(runtime)));
        let client = Client::builder(TokioExecutor::new()).timer(TokioTimer::new()).pool_timer(TokioTimer::new()).build(connector);
        Ok(Self { endpoint: uri, runtime, _thread, client, resource: Vec::new(), schema_url: String::new() })
    }
}

impl SpanExporter for Exporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let body = encode(&self.resource, &self.schema_url, &batch);
        let request = Request::post(self.endpoint.clone())
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| OTelSdkError::InternalFailure(e.to_string()))?;
        let client = self.client.clone();
        let sent = self.runtime.spawn(async move {
            let response = tokio::time::timeout(EXPORT_TIMEOUT, client.request(request))
                .await
                .map_err(|_| format!("no answer within {EXPORT_TIMEOUT:?}"))?
                .map_err(|e| e.to_string())?;
            let status = response.status();
            // Read whole, so that the connection is kept for the next batch.
            let answer = Limited::new(response.into_body(), MAX_ANSWER_BYTES).collect().await.map_err(|e| e.to_string())?.to_bytes();
            if status.is_success() { Ok(()) } else { Err(format!("the collector answered {status}: {}", String::from_utf8_lossy(&answer))) }
        });
        match sent.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(OTelSdkError::InternalFailure(error)),
            Err(error) => Err(OTelSdkError::InternalFailure(error.to_string())),
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource_fields(resource);
        self.schema_url = resource.schema_url().unwrap_or_default().to_owned();
    }
}

/// The exports' runtime, stopped without waiting when the exporter is dropped (which may
/// happen on a runtime's thread, where waiting is not allowed).
#[derive(Debug)]
struct ExportThread(Option<tokio::runtime::Runtime>);

impl Drop for ExportThread {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// The fields of `resource` as a `Resource` message: its attributes.
fn resource_fields(resource: &Resource) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in resource.iter() {
        message(&mut out, 1, |out| key_value(out, key.as_str(), value));
    }
    out
}

/// `spans` as an `ExportTraceServiceRequest`: one `ResourceSpans` of `resource` (a
/// `Resource`'s fields), with a `ScopeSpans` per instrumentation scope.
fn encode(resource: &[u8], schema_url: &str, spans: &[SpanData]) -> Vec<u8> {
    let mut scopes: Vec<&InstrumentationScope> = Vec::new();
    for span in spans {
        if !scopes.contains(&&span.instrumentation_scope) {
            scopes.push(&span.instrumentation_scope);
        }
    }
    let mut out = Vec::with_capacity(512 * spans.len() + resource.len() + 64);
    message(&mut out, 1, |out| {
        message(out, 1, |out| out.extend_from_slice(resource));
        for scope in scopes {
            message(out, 2, |out| {
                message(out, 1, |out| {
                    string(out, 1, scope.name());
                    string(out, 2, scope.version().unwrap_or_default());
                    for attribute in scope.attributes() {
                        message(out, 3, |out| key_value(out, attribute.key.as_str(), &attribute.value));
                    }
                });
                for span in spans.iter().filter(|span| span.instrumentation_scope == *scope) {
                    message(out, 2, |out| encode_span(out, span));
                }
                string(out, 3, scope.schema_url().unwrap_or_default());
            });
        }
        string(out, 3, schema_url);
    });
    out
}

/// A `Span`'s fields.
fn encode_span(out: &mut Vec<u8>, span: &SpanData) {
    let context = &span.span_context;
    context_ids(out, context);
    if span.parent_span_id != SpanId::INVALID {
        bytes(out, 4, &span.parent_span_id.to_bytes());
    }
    string(out, 5, &span.name);
    let kind = match span.span_kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    };
    uint(out, 6, kind);
    fixed64(out, 7, nanos(span.start_time));
    fixed64(out, 8, nanos(span.end_time));
    attributes(out, 9, &span.attributes);
    uint(out, 10, u64::from(span.dropped_attributes_count));
    for event in span.events.iter() {
        message(out, 11, |out| {
            fixed64(out, 1, nanos(event.timestamp));
            string(out, 2, &event.name);
            attributes(out, 3, &event.attributes);
            uint(out, 4, u64::from(event.dropped_attributes_count));
        });
    }
    uint(out, 12, u64::from(span.events.dropped_count));
    for link in span.links.iter() {
        message(out, 13, |out| {
            context_ids(out, &link.span_context);
            attributes(out, 4, &link.attributes);
            uint(out, 5, u64::from(link.dropped_attributes_count));
            fixed32(out, 6, flags(&link.span_context, link.span_context.is_remote()));
        });
    }
    uint(out, 14, u64::from(span.links.dropped_count));
    message(out, 15, |out| match &span.status {
        Status::Unset => {}
        Status::Ok => uint(out, 3, 1),
        Status::Error { description } => {
            string(out, 2, description);
            uint(out, 3, 2);
        }
    });
    fixed32(out, 16, flags(context, span.parent_span_is_remote));
}

/// The trace id, span id and trace state fields (1 to 3) of a span or a link.
fn context_ids(out: &mut Vec<u8>, context: &SpanContext) {
    bytes(out, 1, &context.trace_id().to_bytes());
    bytes(out, 2, &context.span_id().to_bytes());
    string(out, 3, &context.trace_state().header());
}

/// OTLP's span flags: the W3C trace flags, and whether the parent (or the linked span) is
/// known to be in another process.
fn flags(context: &SpanContext, remote: bool) -> u32 {
    const HAS_IS_REMOTE: u32 = 0x100;
    const IS_REMOTE: u32 = 0x200;
    u32::from(context.trace_flags().to_u8()) | HAS_IS_REMOTE | if remote { IS_REMOTE } else { 0 }
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |since| u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
}

/// Each of `list` as a `KeyValue` in `field`.
fn attributes(out: &mut Vec<u8>, field: u32, list: &[KeyValue]) {
    for attribute in list {
        message(out, field, |out| key_value(out, attribute.key.as_str(), &attribute.value));
    }
}

/// A `KeyValue`'s fields.
fn key_value(out: &mut Vec<u8>, key: &str, value: &Value) {
    string(out, 1, key);
    message(out, 2, |out| any_value(out, value));
}

/// An `AnyValue`'s field: its one `value`, written even when it is the type's default.
fn any_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::String(text) => any_string(out, text),
        Value::Bool(flag) => any_bool(out, *flag),
        Value::I64(number) => any_int(out, *number),
        Value::F64(number) => any_double(out, *number),
        Value::Array(array) => message(out, 5, |out| match array {
            Array::Bool(values) => values.iter().for_each(|v| message(out, 1, |out| any_bool(out, *v))),
            Array::I64(values) => values.iter().for_each(|v| message(out, 1, |out| any_int(out, *v))),
            Array::F64(values) => values.iter().for_each(|v| message(out, 1, |out| any_double(out, *v))),
            Array::String(values) => values.iter().for_each(|v| message(out, 1, |out| any_string(out, v))),
            // A kind of array this encoder does not know (the API may add some): its text.
            other => message(out, 1, |out| any_string(out, &StringValue::from(other.to_string()))),
        }),
        other => any_string(out, &StringValue::from(other.to_string())),
    }
}

fn any_string(out: &mut Vec<u8>, text: &StringValue) {
    tag(out, 1, LEN);
    length_delimited(out, text.as_str().as_bytes());
}

fn any_bool(out: &mut Vec<u8>, flag: bool) {
    tag(out, 2, VARINT);
    varint(out, u64::from(flag));
}

fn any_int(out: &mut Vec<u8>, number: i64) {
    tag(out, 3, VARINT);
    // int64: a negative number is its two's complement, ten bytes long.
    varint(out, number as u64);
}

fn any_double(out: &mut Vec<u8>, number: f64) {
    tag(out, 4, I64);
    out.extend_from_slice(&number.to_le_bytes());
}

// Protobuf's wire types.
const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const I32: u8 = 5;

fn tag(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, u64::from(field << 3 | u32::from(wire)));
}

fn varint(out: &mut Vec<u8>, value: u64) {
    let (bytes, size) = varint_bytes(value);
    out.extend_from_slice(&bytes[..size]);
}

/// `value` as a varint: its bytes and how many of them there are.
fn varint_bytes(mut value: u64) -> ([u8; 10], usize) {
    let (mut bytes, mut size) = ([0u8; 10], 0);
    while value >= 0x80 {
        bytes[size] = value as u8 | 0x80;
        value >>= 7;
        size += 1;
    }
    bytes[size] = value as u8;
    (bytes, size + 1)
}

fn length_delimited(out: &mut Vec<u8>, bytes: &[u8]) {
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A nested message in `field`: `body` writes its fields, then its length is put before them.
fn message(out: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) {
    tag(out, field, LEN);
    let start = out.len();
    body(out);
    let (length, size) = varint_bytes((out.len() - start) as u64);
    out.splice(start..start, length[..size].iter().copied());
}

// Scalar fields, left out when they hold their type's default (as proto3 encodes them).

fn bytes(out: &mut Vec<u8>, field: u32, value: &[u8]) {
    if !value.is_empty() {
        tag(out, field, LEN);
        length_delimited(out, value);
    }
}

fn string(out: &mut Vec<u8>, field: u32, value: &str) {
    bytes(out, field, value.as_bytes());
}

fn uint(out: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        tag(out, field, VARINT);
        varint(out, value);
    }
}

fn fixed64(out: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        tag(out, field, I64);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

fn fixed32(out: &mut Vec<u8>, field: u32, value: u32) {
    if value != 0 {
        tag(out, field, I32);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::time::Duration;

    use opentelemetry::trace::{Event, Link, SpanContext, TraceFlags, TraceId, TraceState};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use prost::Message;

    use super::*;

    fn context(trace: u128, span: u64, flags: TraceFlags, state: &str, remote: bool) -> SpanContext {
        SpanContext::new(TraceId::from(trace), SpanId::from(span), flags, remote, state.parse::<TraceState>().unwrap())
    }

    fn span(scope: &InstrumentationScope, name: &'static str, parent: u64, kind: SpanKind, status: Status) -> SpanData {
        let start = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        SpanData {
            span_context: context(
                0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
                0x00f0_67aa_0ba9_02b7 + parent,
                TraceFlags::SAMPLED,
                "",
                false,
            ),
            parent_span_id: SpanId::from(parent),
            parent_span_is_remote: parent == 7,
            span_kind: kind,
            name: Cow::Borrowed(name),
            start_time: start,
            end_time: start + Duration::from_micros(1_250),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: scope.clone(),
        }
    }

    /// What we send is what the SDK's OTLP types, filled by opentelemetry-proto from the same
    /// spans, decode to: every field, value type and flag, and a scope per instrumentation
    /// scope in the order first met.
    #[test]
    fn a_batch_is_the_otlp_message_opentelemetry_proto_makes_of_it() {
        let gateway = InstrumentationScope::builder("portico-gateway").build();
        let other = InstrumentationScope::builder("other")
            .with_version("1.2.3")
            .with_schema_url("https://opentelemetry.io/schemas/1.26.0")
            .with_attributes([KeyValue::new("scope.attribute", true)])
            .build();
        let mut server = span(&gateway, "GET /pets/{id}", 7, SpanKind::Server, Status::Unset);
        server.attributes = vec![
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("empty", ""),
            KeyValue::new("http.response.status_code", 200_i64),
            KeyValue::new("negative", -3_i64),
            KeyValue::new("zero", 0_i64),
            KeyValue::new("ratio", 0.25),
            KeyValue::new("no", false),
            KeyValue::new("flags", Value::Array(Array::Bool(vec![true, false]))),
            KeyValue::new("numbers", Value::Array(Array::I64(vec![0, -1, i64::MAX]))),
            KeyValue::new("reals", Value::Array(Array::F64(vec![1.5, 0.0]))),
            KeyValue::new("names", Value::Array(Array::String(vec!["a".into(), "".into()]))),
            KeyValue::new("long", "x".repeat(300)),
        ];
        server.dropped_attributes_count = 2;
        server.span_context =
            context(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736, 0x0102_0304_0506_0708, TraceFlags::SAMPLED, "vendor=x", false);
        server.events.events =
            vec![Event::new("retry", server.start_time + Duration::from_micros(5), vec![KeyValue::new("attempt", 2_i64)], 1)];
        server.events.dropped_count = 3;
        server.links.links = vec![Link::new(context(9, 10, TraceFlags::default(), "a=b", true), vec![KeyValue::new("why", "batch")], 4)];
        server.links.dropped_count = 5;
        let upstream = span(&gateway, "GET", 0x0102_0304_0506_0708, SpanKind::Client, Status::error("connection refused"));
        let policy = span(&other, "policy stamp", 1, SpanKind::Internal, Status::Ok);
        let mut root = span(&gateway, "HTTP", 0, SpanKind::Producer, Status::Unset);
        root.span_kind = SpanKind::Consumer;
        root.start_time = SystemTime::UNIX_EPOCH;
        let resource = Resource::builder_empty()
            .with_attributes([KeyValue::new("service.name", "portico-gateway"), KeyValue::new("deployment.environment", "test")])
            .with_schema_url([], "https://opentelemetry.io/schemas/1.25.0")
            .build();
        let batch = vec![server, policy, upstream, root];

        let ours = encode(&resource_fields(&resource), resource.schema_url().unwrap(), &batch);
        let theirs = ExportTraceServiceRequest { resource_spans: group_spans_by_resource_and_scope(batch, &(&resource).into()) };
        let decoded = ExportTraceServiceRequest::decode(ours.as_slice()).unwrap();
        assert_eq!(decoded, theirs);
        assert_eq!(theirs.resource_spans[0].scope_spans.len(), 2, "{theirs:?}");
        assert_eq!(ours, theirs.encode_to_vec(), "field for field, in the same order");
    }
}
