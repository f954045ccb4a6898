//! What the host gives a policy instance: the request-scoped resources (request,
//! response, context) backed by the exchange in flight, and the imports (keys,
//! counters, log, clock). The keys, counters and clock are trait objects, so that a
//! policy can also run outside a gateway against mocked services (`portico policy test`).

use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Instant;

use bytes::Bytes;
use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};
use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{ResourceLimiter, Result};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{ContextHandle, RequestHandle, ResponseHandle, clock, counters, keys, log, types};
use crate::calendar;
use crate::counters::CounterStore;
use crate::exchange::{BodyState, Exchange};
use crate::keys::{Identity, KeyError, KeyStore, VerifiedToken};

/// The services behind the host imports, shared by every instance of a snapshot.
pub struct Services {
    /// API keys and JWT issuers (a snapshot's [`KeyStore`]).
    pub keys: Arc<dyn KeyService>,
    /// Rate counters (they outlive snapshots).
    pub counters: Arc<dyn CounterStore>,
}

/// What the `keys` import asks of the host. The gateway's is the snapshot's [`KeyStore`];
/// a policy test harness answers from its fixtures.
pub trait KeyService: Send + Sync + 'static {
    /// The identity of the holder of an API key.
    fn lookup_api_key(&self, key: &str) -> std::result::Result<Identity, KeyError>;
    /// The identity of the application that registered the client certificate of `sha256`.
    fn lookup_client_certificate(&self, sha256: &str) -> std::result::Result<Identity, KeyError>;
    /// Verify a JWT (compact serialisation, without `Bearer `).
    fn verify_jwt(&self, token: &str) -> std::result::Result<Arc<VerifiedToken>, KeyError>;
}

impl KeyService for KeyStore {
    fn lookup_api_key(&self, key: &str) -> std::result::Result<Identity, KeyError> {
        KeyStore::lookup_api_key(self, key)
    }

    fn lookup_client_certificate(&self, sha256: &str) -> std::result::Result<Identity, KeyError> {
        KeyStore::lookup_client_certificate(self, sha256)
    }

    fn verify_jwt(&self, token: &str) -> std::result::Result<Arc<VerifiedToken>, KeyError> {
        KeyStore::verify_jwt(self, token)
    }
}

/// The time the `clock` import reports, one for the whole engine.
pub trait Clock: Send + Sync + 'static {
    /// Wall-clock milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// Nanoseconds on a monotonic clock (for measuring durations).
    fn monotonic_ns(&self) -> u64;
}

/// The machine's clocks: what a gateway uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        now.as_millis() as u64
    }

    fn monotonic_ns(&self) -> u64 {
        monotonic_origin().elapsed().as_nanos() as u64
    }
}

/// The data of one instance's store.
pub struct HostState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limits: MemoryLimit,
    /// The request being handled, present only during a call.
    pub(super) exchange: Option<Box<Exchange>>,
    pub(super) services: Arc<Services>,
    pub(super) clock: Arc<dyn Clock>,
    /// The policy's name, for its log records and its counters' namespace.
    pub(super) policy: Arc<str>,
    /// Whether it is built into the gateway (its counter keys are not namespaced).
    pub(super) builtin: bool,
    pub(super) header_names: HeaderNames,
}

/// The header names this instance's policy has set or removed, parsed once. A name outside
/// HTTP's standard set (`ratelimit-remaining`, `x-request-id`) costs an allocation and a
/// copy on every `HeaderName::from_bytes`; a policy uses the same few names on every call.
#[derive(Default)]
pub struct HeaderNames(Vec<(Box<str>, HeaderName)>);

impl HeaderNames {
    /// Enough for any real policy; a policy that makes names up per request just parses them.
    const KEPT: usize = 16;
    /// Longer names are parsed every time, so that what an instance keeps outside its
    /// memory limit stays small.
    const LONGEST_KEPT: usize = 64;

    fn parse(&mut self, name: &str) -> Result<HeaderName, types::HeaderError> {
        if let Some((_, parsed)) = self.0.iter().find(|(seen, _)| **seen == *name) {
            return Ok(parsed.clone());
        }
        let parsed = header_name(name)?;
        if self.0.len() < Self::KEPT && name.len() <= Self::LONGEST_KEPT {
            self.0.push((name.into(), parsed.clone()));
        }
        Ok(parsed)
    }
}

/// The memory budget of one instance; remembers whether the guest ran into it, so a
/// failure can be reported as what it is.
pub struct MemoryLimit {
    max_bytes: usize,
    hit: bool,
    /// Linear memory the instance holds, all its memories together.
    bytes: usize,
}

impl MemoryLimit {
    /// A budget of `max_bytes` of linear memory in all.
    pub fn new(max_bytes: usize) -> Self {
        Self { max_bytes, hit: false, bytes: 0 }
    }

    /// Linear memory the instance holds now, in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl ResourceLimiter for MemoryLimit {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> Result<bool> {
        if desired > self.max_bytes {
            self.hit = true;
            wasmtime::bail!("memory limit of {} bytes exceeded", self.max_bytes);
        }
        // Also called when a memory is created (from 0), so this sums every memory.
        self.bytes += desired.saturating_sub(current);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> Result<bool> {
        // Tables hold function references; a million is far beyond any real policy.
        Ok(desired <= 1_000_000)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl HostState {
    /// Whether the instance ran into its memory limit.
    pub(super) fn limits_hit(&self) -> bool {
        self.limits.hit
    }

    fn exchange(&mut self) -> Result<&mut Exchange> {
        // Guests only receive these resources as borrows inside a call, and the exchange
        // is in place for every call, so this fails only on a host bug.
        self.exchange.as_deref_mut().ok_or_else(|| wasmtime::format_err!("no request in flight"))
    }
}

/// Headers a policy may not change: framing and connection management belong to the
/// gateway, and changing them would open the door to request smuggling.
fn forbidden(name: &HeaderName) -> bool {
    matches!(
        *name,
        header::HOST
            | header::CONTENT_LENGTH
            | header::TRANSFER_ENCODING
            | header::CONNECTION
            | header::TE
            | header::TRAILER
            | header::UPGRADE
    ) || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

fn header_name(name: &str) -> Result<HeaderName, types::HeaderError> {
    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| types::HeaderError::InvalidName)?;
    if forbidden(&name) { Err(types::HeaderError::Forbidden) } else { Ok(name) }
}

/// What policies may keep on the host for one request, outside their instance's memory
/// limit: headers (per request or response; a `HeaderMap` cannot hold more than 32k and
/// would panic), the size of one header value, attributes and their sizes. Past these the
/// host refuses (a header error, or a failed call for an attribute), never panics.
const MAX_HEADERS_HELD: usize = 512;
const MAX_HEADER_VALUE_BYTES: usize = 16 * 1024;
const MAX_ATTRIBUTES: usize = 256;
const MAX_ATTRIBUTE_KEY_BYTES: usize = 256;
const MAX_ATTRIBUTE_VALUE_BYTES: usize = 16 * 1024;

/// Takes the guest's string as it is, without copying it again.
fn header_value(value: String) -> Result<HeaderValue, types::HeaderError> {
    if value.len() > MAX_HEADER_VALUE_BYTES {
        return Err(types::HeaderError::InvalidValue);
    }
    HeaderValue::from_maybe_shared(Bytes::from(value)).map_err(|_| types::HeaderError::InvalidValue)
}

/// The response headers of `context.report-quota`, as the built-in throttle has always sent them;
/// made at compile time (`from_static` checks its name when called).
const RATELIMIT_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("ratelimit-limit"),
    HeaderName::from_static("ratelimit-remaining"),
    HeaderName::from_static("ratelimit-reset"),
];

/// Set a header for the response a request will get, replacing one of the same name.
fn set_early_response_header(exchange: &mut Exchange, name: HeaderName, value: HeaderValue) -> Result<(), types::HeaderError> {
    exchange.response_headers.retain(|(n, _)| *n != name);
    if exchange.response_headers.len() >= MAX_HEADERS_HELD {
        return Err(types::HeaderError::Forbidden);
    }
    exchange.response_headers.push((name, value));
    Ok(())
}

fn first_header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn all_headers(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect()
}

fn set_header(
    headers: &mut HeaderMap,
    name: Result<HeaderName, types::HeaderError>,
    value: String,
    append: bool,
) -> Result<(), types::HeaderError> {
    let (name, value) = (name?, header_value(value)?);
    // No room for one more entry: refused as a header the gateway manages.
    if headers.len() >= MAX_HEADERS_HELD && (append || !headers.contains_key(&name)) {
        return Err(types::HeaderError::Forbidden);
    }
    if append {
        headers.append(name, value);
    } else {
        headers.insert(name, value);
    }
    Ok(())
}

fn remove_header(headers: &mut HeaderMap, name: Result<HeaderName, types::HeaderError>) -> Result<(), types::HeaderError> {
    headers.remove(name?);
    Ok(())
}

fn read_body(body: &BodyState) -> Result<Vec<u8>, types::BodyError> {
    match body {
        BodyState::Buffered(bytes) => Ok(bytes.to_vec()),
        BodyState::Streaming => Err(types::BodyError::NotBuffered),
        BodyState::TooLarge => Err(types::BodyError::TooLarge),
    }
}

fn replace_body(body: &mut BodyState, new: Vec<u8>) -> Result<(), types::BodyError> {
    match body {
        BodyState::Buffered(bytes) => {
            *bytes = Bytes::from(new);
            Ok(())
        }
        BodyState::Streaming => Err(types::BodyError::NotBuffered),
        BodyState::TooLarge => Err(types::BodyError::TooLarge),
    }
}

impl types::Host for HostState {}

impl types::HostRequest for HostState {
    fn method(&mut self, _: Resource<RequestHandle>) -> Result<String> {
        Ok(self.exchange()?.request.method.as_str().to_owned())
    }

    fn path(&mut self, _: Resource<RequestHandle>) -> Result<String> {
        Ok(self.exchange()?.request.uri.path().to_owned())
    }

    fn query(&mut self, _: Resource<RequestHandle>) -> Result<Option<String>> {
        Ok(self.exchange()?.request.uri.query().map(str::to_owned))
    }

    fn query_param(&mut self, _: Resource<RequestHandle>, name: String) -> Result<Option<String>> {
        let Some(query) = self.exchange()?.request.uri.query() else { return Ok(None) };
        Ok(crate::exchange::query_param(query, &name))
    }

    fn set_query(&mut self, _: Resource<RequestHandle>, query: Option<String>) -> Result<()> {
        let exchange = self.exchange()?;
        let path = exchange.request.uri.path();
        let path_and_query = match query.as_deref() {
            Some(q) if !q.is_empty() => format!("{path}?{q}"),
            _ => path.to_owned(),
        };
        // An invalid query is ignored rather than trapping: the policy sees no change.
        if let Ok(uri) = http::Uri::try_from(path_and_query) {
            exchange.request.uri = uri;
        }
        Ok(())
    }

    fn header(&mut self, _: Resource<RequestHandle>, name: String) -> Result<Option<String>> {
        Ok(first_header(&self.exchange()?.request.headers, &name))
    }

    fn header_all(&mut self, _: Resource<RequestHandle>, name: String) -> Result<Vec<String>> {
        Ok(all_headers(&self.exchange()?.request.headers, &name))
    }

    fn set_header(&mut self, _: Resource<RequestHandle>, name: String, value: String) -> Result<Result<(), types::HeaderError>> {
        let name = self.header_names.parse(&name);
        Ok(set_header(&mut self.exchange()?.request.headers, name, value, false))
    }

    fn append_header(&mut self, _: Resource<RequestHandle>, name: String, value: String) -> Result<Result<(), types::HeaderError>> {
        let name = self.header_names.parse(&name);
        Ok(set_header(&mut self.exchange()?.request.headers, name, value, true))
    }

    fn remove_header(&mut self, _: Resource<RequestHandle>, name: String) -> Result<Result<(), types::HeaderError>> {
        let name = self.header_names.parse(&name);
        Ok(remove_header(&mut self.exchange()?.request.headers, name))
    }

    fn client_addr(&mut self, _: Resource<RequestHandle>) -> Result<String> {
        Ok(self.exchange()?.client_addr.to_string())
    }

    fn client_certificate(&mut self, _: Resource<RequestHandle>) -> Result<Option<String>> {
        Ok(self.exchange()?.client_certificate.as_deref().map(str::to_owned))
    }

    fn body(&mut self, _: Resource<RequestHandle>) -> Result<Result<Vec<u8>, types::BodyError>> {
        Ok(read_body(&self.exchange()?.request_body))
    }

    fn set_body(&mut self, _: Resource<RequestHandle>, body: Vec<u8>) -> Result<Result<(), types::BodyError>> {
        let exchange = self.exchange()?;
        let result = replace_body(&mut exchange.request_body, body);
        exchange.request_body_replaced |= result.is_ok();
        Ok(result)
    }

    fn drop(&mut self, _: Resource<RequestHandle>) -> Result<()> {
        Ok(())
    }
}

impl HostState {
    fn response(&mut self) -> Result<&mut crate::exchange::ResponseState> {
        self.exchange()?.response.as_mut().ok_or_else(|| wasmtime::format_err!("no response in flight"))
    }
}

impl types::HostResponse for HostState {
    fn status(&mut self, _: Resource<ResponseHandle>) -> Result<u16> {
        Ok(self.response()?.head.status.as_u16())
    }

    fn set_status(&mut self, _: Resource<ResponseHandle>, status: u16) -> Result<()> {
        if let Ok(status) = http::StatusCode::from_u16(status) {
            self.response()?.head.status = status;
        }
        Ok(())
    }

    fn header(&mut self, _: Resource<ResponseHandle>, name: String) -> Result<Option<String>> {
        Ok(first_header(&self.response()?.head.headers, &name))
    }

    fn header_all(&mut self, _: Resource<ResponseHandle>, name: String) -> Result<Vec<String>> {
        Ok(all_headers(&self.response()?.head.headers, &name))
    }

    fn set_header(&mut self, _: Resource<ResponseHandle>, name: String, value: String) -> Result<Result<(), types::HeaderError>> {
        let name = self.header_names.parse(&name);
        Ok(set_header(&mut self.response()?.head.headers, name, value, false))
    }

    fn append_header(&mut self, _: Resource<ResponseHandle>, name: String, value: String) -> Result<Result<(), types::HeaderError>> {
        let name = self.header_names.parse(&name);
        Ok(set_header(&mut self.response()?.head.headers, name, value, true))
    }

    fn remove_header(&mut self, _: Resource<ResponseHandle>, name: String) -> Result<Result<(), types::HeaderError>> {
        let name = self.header_names.parse(&name);
        Ok(remove_header(&mut self.response()?.head.headers, name))
    }

    fn body(&mut self, _: Resource<ResponseHandle>) -> Result<Result<Vec<u8>, types::BodyError>> {
        Ok(read_body(&self.response()?.body))
    }

    fn set_body(&mut self, _: Resource<ResponseHandle>, body: Vec<u8>) -> Result<Result<(), types::BodyError>> {
        let response = self.response()?;
        let result = replace_body(&mut response.body, body);
        response.body_replaced |= result.is_ok();
        Ok(result)
    }

    fn drop(&mut self, _: Resource<ResponseHandle>) -> Result<()> {
        Ok(())
    }
}

fn to_wit_identity(identity: &Identity) -> types::Identity {
    types::Identity {
        method: identity.method.to_owned(),
        application: identity.application.clone(),
        subscription: identity.subscription.clone(),
        tier: identity.tier.clone(),
        user: identity.user.clone(),
        scopes: identity.scopes.clone(),
    }
}

fn from_wit_identity(identity: types::Identity) -> Identity {
    Identity {
        method: crate::keys::method_name(&identity.method),
        application: identity.application,
        subscription: identity.subscription,
        tier: identity.tier,
        user: identity.user,
        scopes: identity.scopes,
        subscriptions: None,
    }
}

impl types::HostContext for HostState {
    fn api_name(&mut self, _: Resource<ContextHandle>) -> Result<String> {
        Ok(self.exchange()?.route.api_name.clone())
    }

    fn api_version(&mut self, _: Resource<ContextHandle>) -> Result<String> {
        Ok(self.exchange()?.route.api_version.clone())
    }

    fn operation(&mut self, _: Resource<ContextHandle>) -> Result<String> {
        Ok(self.exchange()?.route.operation.clone())
    }

    fn identity(&mut self, _: Resource<ContextHandle>) -> Result<Option<types::Identity>> {
        Ok(self.exchange()?.identity.as_ref().map(to_wit_identity))
    }

    fn set_identity(&mut self, _: Resource<ContextHandle>, identity: types::Identity) -> Result<()> {
        self.exchange()?.identity = Some(from_wit_identity(identity));
        Ok(())
    }

    fn get(&mut self, _: Resource<ContextHandle>, key: String) -> Result<Option<String>> {
        Ok(self.exchange()?.attribute(&key).map(str::to_owned))
    }

    fn set(&mut self, _: Resource<ContextHandle>, key: String, value: String) -> Result<()> {
        if key.len() > MAX_ATTRIBUTE_KEY_BYTES || value.len() > MAX_ATTRIBUTE_VALUE_BYTES {
            wasmtime::bail!(
                "attribute `{}`: keys are at most {MAX_ATTRIBUTE_KEY_BYTES} bytes, values {MAX_ATTRIBUTE_VALUE_BYTES}",
                key.chars().take(64).collect::<String>()
            );
        }
        let exchange = self.exchange()?;
        if exchange.attribute(&key).is_none() && exchange.attributes.len() >= MAX_ATTRIBUTES {
            wasmtime::bail!("a request holds at most {MAX_ATTRIBUTES} attributes");
        }
        exchange.set_attribute(key, value);
        Ok(())
    }

    fn set_response_header(&mut self, _: Resource<ContextHandle>, name: String, value: String) -> Result<Result<(), types::HeaderError>> {
        let name = self.header_names.parse(&name);
        let exchange = self.exchange()?;
        match (name, header_value(value)) {
            (Ok(name), Ok(value)) => Ok(set_early_response_header(exchange, name, value)),
            (Err(error), _) | (_, Err(error)) => Ok(Err(error)),
        }
    }

    fn report_quota(&mut self, _: Resource<ContextHandle>, limit: u64, remaining: u64, reset_ms: u64) -> Result<()> {
        let exchange = self.exchange()?;
        if exchange.quota_remaining.is_some_and(|tightest| tightest < remaining) {
            return Ok(());
        }
        exchange.quota_remaining = Some(remaining);
        let [limit_name, remaining_name, reset_name] = RATELIMIT_HEADERS;
        for (name, value) in [(limit_name, limit), (remaining_name, remaining), (reset_name, reset_ms.div_ceil(1_000))] {
            // Only a policy that filled the response with MAX_HEADERS_HELD headers of its own
            // finds no room; what it set stays.
            let _ = set_early_response_header(exchange, name, HeaderValue::from(value));
        }
        Ok(())
    }

    fn drop(&mut self, _: Resource<ContextHandle>) -> Result<()> {
        Ok(())
    }
}

fn to_wit_key_error(error: KeyError) -> keys::KeyError {
    match error {
        KeyError::Unknown => keys::KeyError::Unknown,
        KeyError::BadSignature(why) => keys::KeyError::BadSignature(why),
        KeyError::Expired => keys::KeyError::Expired,
        KeyError::NotYetValid => keys::KeyError::NotYetValid,
        KeyError::InvalidClaims(why) => keys::KeyError::InvalidClaims(why),
        KeyError::Revoked => keys::KeyError::Revoked,
    }
}

impl HostState {
    /// A credential's identity as seen by the API being called: with its subscription to
    /// that API and the subscription's tier. The application's own tier is kept in the
    /// context attribute `application.tier`, for application-level throttling.
    fn identity_for_route(&mut self, identity: &Identity) -> Result<types::Identity> {
        let exchange = self.exchange()?;
        if let Some(tier) = &identity.tier {
            exchange.set_attribute("application.tier".to_owned(), tier.clone());
        }
        // Built straight from the stored identity: one copy of its strings, not two.
        let mut wit = to_wit_identity(identity);
        if let Some(subscription) = identity.subscription_to(&exchange.route.api_name, &exchange.route.api_version) {
            if let Some((_, tier)) = &subscription {
                wit.tier = Some((*tier).to_owned());
            }
            wit.subscription = subscription.map(|(key, _)| key);
        }
        Ok(wit)
    }
}

impl keys::Host for HostState {
    fn lookup_api_key(&mut self, key: String) -> Result<Result<types::Identity, keys::KeyError>> {
        match self.services.keys.lookup_api_key(&key) {
            Ok(identity) => Ok(Ok(self.identity_for_route(&identity)?)),
            Err(error) => Ok(Err(to_wit_key_error(error))),
        }
    }

    fn lookup_client_certificate(&mut self, sha256: String) -> Result<Result<types::Identity, keys::KeyError>> {
        match self.services.keys.lookup_client_certificate(&sha256) {
            Ok(identity) => Ok(Ok(self.identity_for_route(&identity)?)),
            Err(error) => Ok(Err(to_wit_key_error(error))),
        }
    }

    fn verify_jwt(&mut self, token: String) -> Result<Result<keys::VerifiedToken, keys::KeyError>> {
        match self.services.keys.verify_jwt(&token) {
            Ok(token) => Ok(Ok(keys::VerifiedToken {
                issuer: token.issuer.clone(),
                subject: token.subject.clone(),
                expires_at: token.expires_at,
                identity: self.identity_for_route(&token.identity)?,
                claims: token.claims.clone(),
            })),
            Err(error) => Ok(Err(to_wit_key_error(error))),
        }
    }
}

impl counters::Host for HostState {
    fn hit(&mut self, key: String, limit: u64, window_ms: u64, cost: u32) -> Result<counters::HitResult> {
        Ok(to_wit_hit(self.count(&key, |store, key| store.hit(key, limit, window_ms, cost))?))
    }

    fn try_hit(
        &mut self,
        key: String,
        limit: u64,
        window_ms: u64,
        cost: u32,
    ) -> Result<Result<counters::HitResult, counters::CounterError>> {
        let hit = self.count(&key, |store, key| store.try_hit(key, limit, window_ms, cost))?;
        Ok(hit.map(to_wit_hit).ok_or(counters::CounterError::Unavailable))
    }
}

impl HostState {
    /// Count under `key` as this policy may: an uploaded policy in its own namespace, the
    /// policy's name and the API's name and version, so that it cannot touch the built-in
    /// throttle's keys (`app:<id>`, guessable), another policy's, or its own on another
    /// publisher's API. The built-ins, part of the gateway, count under their keys as they
    /// are (no request can put a NUL in one; their keys name the API where they should).
    fn count<T>(&self, key: &str, count: impl FnOnce(&dyn CounterStore, &str) -> T) -> Result<T> {
        if self.builtin {
            return Ok(count(&*self.services.counters, key));
        }
        let exchange = self.exchange.as_deref().ok_or_else(|| wasmtime::format_err!("counters count requests: none is in flight"))?;
        let route = &exchange.route;
        let mut namespaced = String::with_capacity(self.policy.len() + route.api_name.len() + route.api_version.len() + 3 + key.len());
        for part in [&*self.policy, &route.api_name, &route.api_version] {
            namespaced.push_str(part);
            namespaced.push('\0');
        }
        namespaced.push_str(key);
        Ok(count(&*self.services.counters, &namespaced))
    }
}

fn to_wit_hit(hit: crate::counters::HitResult) -> counters::HitResult {
    counters::HitResult {
        allowed: hit.allowed,
        limit: hit.limit,
        remaining: hit.remaining,
        reset_ms: hit.reset_ms,
        retry_after_ms: hit.retry_after_ms,
    }
}

impl log::Host for HostState {
    fn write(&mut self, level: log::Level, message: String, fields: Vec<(String, String)>) -> Result<()> {
        let policy = &*self.policy;
        // Fields are rendered as one `key=value` list: tracing needs field names at compile time.
        let fields = fields.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
        match level {
            log::Level::Trace => tracing::trace!(target: "portico::policy", policy, fields, "{message}"),
            log::Level::Debug => tracing::debug!(target: "portico::policy", policy, fields, "{message}"),
            log::Level::Info => tracing::info!(target: "portico::policy", policy, fields, "{message}"),
            log::Level::Warn => tracing::warn!(target: "portico::policy", policy, fields, "{message}"),
            log::Level::Error => tracing::error!(target: "portico::policy", policy, fields, "{message}"),
        }
        Ok(())
    }
}

fn monotonic_origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

impl clock::Host for HostState {
    fn now_ms(&mut self) -> Result<u64> {
        Ok(self.clock.now_ms())
    }

    fn monotonic_ns(&mut self) -> Result<u64> {
        Ok(self.clock.monotonic_ns())
    }

    fn calendar_period(&mut self, period: clock::Period, zone: String) -> Result<Result<clock::Span, String>> {
        let period = match period {
            clock::Period::Day => calendar::Period::Day,
            clock::Period::Month => calendar::Period::Month,
        };
        Ok(calendar::period(self.clock.now_ms(), period, &zone).map(|(start_ms, end_ms)| clock::Span { start_ms, end_ms }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_are_checked_once_and_then_kept() {
        let mut names = HeaderNames::default();
        let first = names.parse("RateLimit-Remaining").unwrap();
        assert_eq!(first.as_str(), "ratelimit-remaining");
        assert_eq!(names.parse("RateLimit-Remaining").unwrap(), first);
        assert_eq!(names.0.len(), 1);
        assert_eq!(names.parse("Transfer-Encoding").unwrap_err(), types::HeaderError::Forbidden);
        assert_eq!(names.parse("keep-alive").unwrap_err(), types::HeaderError::Forbidden);
        assert_eq!(names.parse("bad name").unwrap_err(), types::HeaderError::InvalidName);
        assert_eq!(names.0.len(), 1, "refused names are not kept");
        let long = format!("x-{}", "a".repeat(HeaderNames::LONGEST_KEPT));
        assert_eq!(names.parse(&long).unwrap().as_str(), long);
        assert_eq!(names.0.len(), 1, "long names are not kept");
        for i in 0..40 {
            assert_eq!(names.parse(&format!("x-made-up-{i}")).unwrap().as_str(), format!("x-made-up-{i}"));
        }
        assert_eq!(names.0.len(), HeaderNames::KEPT);
    }

    #[test]
    fn header_values_are_checked() {
        assert_eq!(header_value("a value".into()).unwrap(), "a value");
        assert_eq!(header_value("line\nbreak".into()).unwrap_err(), types::HeaderError::InvalidValue);
    }
}
