//! The state of one request as it moves through the policy chain: the request head, the
//! bodies once buffered, the response, the caller's identity and the attributes policies
//! pass along. Policies see it through the host resources of the WIT contract.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;

use crate::keys::Identity;

/// Where a request was routed, shared by every request of the operation.
pub struct RouteInfo {
    /// The API's name.
    pub api_name: String,
    /// The API's version.
    pub api_version: String,
    /// The operation, as `METHOD /template`.
    pub operation: String,
    /// The three as the access log's JSON members (`,"api":…,"operation":"…"`), written
    /// once here rather than escaped again on every line; also what routes hash and compare
    /// by, as it says all three.
    log_members: Box<[u8]>,
    /// A hash of `log_members`, worked out once: routes are hashed per request (the usage
    /// tallies' key).
    hash: u64,
}

impl RouteInfo {
    /// The route to `operation` (`METHOD /template`) of API `api_name` `api_version`.
    pub fn new(api_name: String, api_version: String, operation: String) -> Self {
        let mut members = Vec::new();
        for (key, value) in
            [(&b",\"api\":\""[..], &api_name), (b"\",\"api_version\":\"", &api_version), (b"\",\"operation\":\"", &operation)]
        {
            members.extend_from_slice(key);
            crate::json_string::write(&mut members, value);
        }
        members.push(b'"');
        // The standard library's hasher with its fixed keys: the same bytes, the same hash.
        let mut hasher = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(&members, &mut hasher);
        let hash = std::hash::Hasher::finish(&hasher);
        Self { api_name, api_version, operation, log_members: members.into(), hash }
    }

    /// The route as the access log's JSON members, each after a comma.
    pub(crate) fn log_members(&self) -> &[u8] {
        &self.log_members
    }
}

impl std::fmt::Debug for RouteInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteInfo")
            .field("api_name", &self.api_name)
            .field("api_version", &self.api_version)
            .field("operation", &self.operation)
            .finish_non_exhaustive()
    }
}

impl PartialEq for RouteInfo {
    fn eq(&self, other: &Self) -> bool {
        // Requests of one operation share its route: most comparisons end at the address.
        std::ptr::eq(self, other) || self.log_members == other.log_members
    }
}

impl Eq for RouteInfo {}

impl std::hash::Hash for RouteInfo {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// A body as the policies see it.
#[derive(Debug, Default, Clone)]
pub enum BodyState {
    /// Not buffered: it streams from client to upstream (or back) untouched.
    #[default]
    Streaming,
    /// Buffered in full (a policy of the chain asked for it).
    Buffered(Bytes),
    /// Larger than the configured limit.
    TooLarge,
}

/// The response part of an exchange, present in the response phase.
#[derive(Debug)]
pub struct ResponseState {
    /// Status and headers.
    pub head: http::response::Parts,
    /// The body, when buffered.
    pub body: BodyState,
    /// Whether a policy replaced the body (so `content-length` must be recomputed).
    pub body_replaced: bool,
}

/// One request in flight.
#[derive(Debug)]
pub struct Exchange {
    /// The request head; its URI holds the normalised path and the query, as forwarded.
    pub request: http::request::Parts,
    /// The request body, when buffered.
    pub request_body: BodyState,
    /// Whether a policy replaced the request body.
    pub request_body_replaced: bool,
    /// The client's address.
    pub client_addr: IpAddr,
    /// The sha256 (lower-case hex) of the client's verified TLS certificate, if it gave one.
    pub client_certificate: Option<Arc<str>>,
    /// Where the request was routed.
    pub route: Arc<RouteInfo>,
    /// The authenticated caller.
    pub identity: Option<Identity>,
    /// Attributes set by policies, in the order they were first set.
    pub attributes: Vec<(String, String)>,
    /// Headers policies set for the response during the request phase.
    pub response_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// The units remaining of the tightest rate-limit quota reported so far, whose
    /// `RateLimit-*` headers are among `response_headers`.
    pub quota_remaining: Option<u64>,
    /// The response, once there is one.
    pub response: Option<ResponseState>,
    /// Time spent in policy calls so far.
    pub policy_time: std::time::Duration,
    /// From sending the request upstream to the upstream's response head, once it answered.
    pub upstream_time: Option<std::time::Duration>,
}

impl Exchange {
    /// The value of an attribute.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Set an attribute, replacing an earlier value.
    pub fn set_attribute(&mut self, key: String, value: String) {
        match self.attributes.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.attributes.push((key, value)),
        }
    }
}

/// What a policy call can change in an exchange, kept before a call whose failure must
/// leave no trace (a fail-open attachment): the request's target, headers and body, the
/// identity, the attributes, the response headers set early (and the quota among them) and the
/// response.
pub(crate) struct Checkpoint {
    uri: http::Uri,
    headers: http::HeaderMap,
    request_body: BodyState,
    request_body_replaced: bool,
    identity: Option<Identity>,
    attributes: Vec<(String, String)>,
    response_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    quota_remaining: Option<u64>,
    response: Option<(http::StatusCode, http::HeaderMap, BodyState, bool)>,
}

impl Exchange {
    /// Keep what a policy call can change.
    pub(crate) fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            uri: self.request.uri.clone(),
            headers: self.request.headers.clone(),
            request_body: self.request_body.clone(),
            request_body_replaced: self.request_body_replaced,
            identity: self.identity.clone(),
            attributes: self.attributes.clone(),
            response_headers: self.response_headers.clone(),
            quota_remaining: self.quota_remaining,
            response: self.response.as_ref().map(|r| (r.head.status, r.head.headers.clone(), r.body.clone(), r.body_replaced)),
        }
    }

    /// Put back what was kept: the exchange is as it was before the call.
    pub(crate) fn restore(&mut self, checkpoint: Checkpoint) {
        self.request.uri = checkpoint.uri;
        self.request.headers = checkpoint.headers;
        self.request_body = checkpoint.request_body;
        self.request_body_replaced = checkpoint.request_body_replaced;
        self.identity = checkpoint.identity;
        self.attributes = checkpoint.attributes;
        self.response_headers = checkpoint.response_headers;
        self.quota_remaining = checkpoint.quota_remaining;
        if let (Some(response), Some((status, headers, body, body_replaced))) = (&mut self.response, checkpoint.response) {
            response.head.status = status;
            response.head.headers = headers;
            response.body = body;
            response.body_replaced = body_replaced;
        }
    }
}

/// The first value of a query parameter, percent-decoded (`+` as space).
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode_component(key) == name).then(|| decode_component(value))
    })
}

fn decode_component(text: &str) -> String {
    let text = text.replace('+', " ");
    percent_encoding::percent_decode_str(&text).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::query_param;

    #[test]
    fn query_params_are_decoded() {
        assert_eq!(query_param("a=1&apikey=x%20y&b", "apikey").as_deref(), Some("x y"));
        assert_eq!(query_param("a=1&b", "b").as_deref(), Some(""));
        assert_eq!(query_param("a=1", "c"), None);
        assert_eq!(query_param("q=a+b", "q").as_deref(), Some("a b"));
    }
}
