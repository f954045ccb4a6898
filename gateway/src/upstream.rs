//! Upstream services: endpoints chosen round robin, a pooled HTTP client, connect and
//! response timeouts, and failover to the next endpoint when a connection cannot be made.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::Body;
use crate::contract::environment::ClientCertificate;
use crate::error::ProxyError;
use crate::error::causes;
use crate::network::UpstreamRule;
use crate::tls;

/// One upstream base URL.
#[derive(Debug, Clone)]
pub struct Endpoint {
    scheme: Scheme,
    authority: Authority,
    /// Path prefix without a trailing slash (empty for `/`).
    base_path: String,
    host: HeaderValue,
}

/// Parse `http://host:port/base`; the reason names what is wrong.
pub fn parse_endpoint(text: &str) -> Result<Endpoint, String> {
    let uri: Uri = text.parse().map_err(|e| format!("`{text}` is not a URL: {e}"))?;
    let scheme = uri.scheme().cloned().ok_or_else(|| format!("`{text}` has no scheme (write http://...)"))?;
    if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
        return Err(format!("`{text}`: an upstream is http:// or https://"));
    }
    let authority = uri.authority().cloned().ok_or_else(|| format!("`{text}` has no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!("`{text}`: credentials in the URL are not allowed"));
    }
    if uri.query().is_some() {
        return Err(format!("`{text}`: an endpoint cannot have a query"));
    }
    let host = HeaderValue::from_str(authority.as_str()).map_err(|_| format!("`{text}` has an invalid host"))?;
    let base_path = uri.path().trim_end_matches('/').to_owned();
    Ok(Endpoint { scheme, authority, base_path, host })
}

/// The IP address an endpoint is written with, if it is (`http://[::1]:80` gives `::1`):
/// such an address is checked when the snapshot is built, since no resolver sees it.
pub fn literal_address(text: &str) -> Option<std::net::IpAddr> {
    let uri: Uri = text.parse().ok()?;
    let host = uri.host()?;
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host).parse().ok()
}

/// Resolves upstream host names and keeps the addresses the environment's
/// [`UpstreamRule`] accepts: a name that resolves only to denied addresses fails to connect,
/// whatever the name, so a publisher's DNS cannot point the gateway at its own host.
#[derive(Clone)]
pub struct CheckedResolver {
    rule: Arc<UpstreamRule>,
}

impl CheckedResolver {
    /// A resolver keeping the addresses `rule` accepts.
    pub fn new(rule: Arc<UpstreamRule>) -> Self {
        Self { rule }
    }
}

impl tower_service::Service<Name> for CheckedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let rule = self.rule.clone();
        Box::pin(async move {
            let mut refused = None;
            let allowed: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|address| rule.check(address.ip()).map_err(|reason| refused.get_or_insert(reason)).is_ok())
                .collect();
            if allowed.is_empty() {
                let reason = refused.unwrap_or_else(|| "no address".to_owned());
                return Err(io::Error::new(io::ErrorKind::PermissionDenied, format!("`{}` resolves to {reason}", name.as_str())));
            }
            Ok(allowed.into_iter())
        })
    }
}

/// The HTTP client of an upstream: `http://` and `https://` (HTTP/1.1), pooled.
pub type UpstreamClient = Client<HttpsConnector<HttpConnector<CheckedResolver>>, Body>;

/// HTTP clients shared by every snapshot, one per connect timeout, trust (the system's
/// roots, or an API's CA certificates) and upstream rule, so that connection pools survive
/// reloads.
#[derive(Default)]
pub struct Clients {
    by_settings: Mutex<HashMap<ClientSettings, UpstreamClient>>,
}

/// What tells upstream clients apart: connect timeout, CA certificates, client
/// certificate, upstream rule.
type ClientSettings = (Duration, Option<String>, Option<ClientCertificate>, Arc<UpstreamRule>);

impl Clients {
    /// The client for this connect timeout, these CA certificates (PEM; the system's roots
    /// when `None`), this client certificate and this rule, made on first use; an error
    /// says why `ca` or the certificate cannot be used.
    pub fn get(
        &self,
        connect_timeout: Duration,
        ca: Option<&str>,
        certificate: Option<&ClientCertificate>,
        rule: &Arc<UpstreamRule>,
    ) -> Result<UpstreamClient, String> {
        let mut clients = self.by_settings.lock().unwrap_or_else(|e| e.into_inner());
        let key = (connect_timeout, ca.map(str::to_owned), certificate.cloned(), rule.clone());
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let trust = match ca {
            Some(pem) => Some(tls::client_config_presenting(tls::Trust::Pem(pem), certificate)?),
            // Without roots, https:// endpoints fail when called (and say why); http:// ones work.
            None => tls::client_config_presenting(tls::Trust::System, certificate)
                .map_err(|e| tracing::warn!(error = %e, "https:// upstreams cannot be verified"))
                .ok(),
        };
        let connector = tls::connector(trust, connect_timeout, CheckedResolver::new(rule.clone()))?;
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(connector);
        clients.insert(key, client.clone());
        Ok(client)
    }
}

/// The upstream of one API.
pub struct Upstream {
    endpoints: Vec<Endpoint>,
    next: AtomicUsize,
    timeout: Duration,
    client: UpstreamClient,
}

/// What is forwarded besides the exchange's request head.
pub struct Forward<'a> {
    /// The path below the API context (starts with `/`).
    pub rest: &'a str,
    /// The client's IP, added to `X-Forwarded-For`.
    pub client_ip: &'a HeaderValue,
    /// Whether the client came over TLS.
    pub tls: bool,
}

impl Upstream {
    /// An upstream over these endpoints (at least one).
    pub fn new(endpoints: Vec<Endpoint>, timeout: Duration, client: UpstreamClient) -> Self {
        Self { endpoints, next: AtomicUsize::new(0), timeout, client }
    }

    /// Send the request to an endpoint and wait for the response head. A connection
    /// failure moves on to the next endpoint when the body can be sent again (it is
    /// empty or buffered); nothing is retried once a request has been sent. `headers` are
    /// the request's (moved in, or a copy when a response-phase policy still needs them);
    /// the ones in `head` are not read.
    pub async fn send(
        &self,
        head: &http::request::Parts,
        mut headers: HeaderMap,
        body: Body,
        forward: Forward<'_>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let replayable = match &body {
            Body::Empty | Body::Full(_) => true,
            other => other.is_end_stream(),
        };
        let mut body = Some(if replayable && !matches!(body, Body::Full(_)) { Body::Empty } else { body });
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let attempts = if replayable { self.endpoints.len() } else { 1 };
        let mut last_error = None;
        for attempt in 0..attempts {
            let endpoint = &self.endpoints[(start + attempt) % self.endpoints.len()];
            let this_body = match (&body, replayable) {
                (Some(Body::Full(full)), true) => Body::Full(full.clone()),
                (Some(Body::Empty), true) => Body::Empty,
                _ => body.take().unwrap_or(Body::Empty),
            };
            let headers = if attempt + 1 < attempts { headers.clone() } else { std::mem::take(&mut headers) };
            let request = build_request(head, headers, endpoint, &forward, this_body)?;
            match tokio::time::timeout(self.timeout, self.client.request(request)).await {
                Err(_) => return Err(ProxyError::UpstreamTimeout),
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(error)) if error.is_connect() => {
                    tracing::warn!(endpoint = %endpoint.authority, error = %causes(&error), "upstream connect failed");
                    last_error = Some(error);
                }
                Ok(Err(error)) => return Err(upstream_error(error)),
            }
        }
        Err(ProxyError::UpstreamUnavailable(last_error.map(|e| causes(&e)).unwrap_or_default()))
    }
}

fn upstream_error(error: hyper_util::client::legacy::Error) -> ProxyError {
    use std::error::Error as _;
    if let Some(source) = error.source()
        && crate::body::is_too_large(source)
    {
        return ProxyError::PayloadTooLarge;
    }
    ProxyError::UpstreamFailed(causes(&error))
}

fn build_request(
    head: &http::request::Parts,
    headers: HeaderMap,
    endpoint: &Endpoint,
    forward: &Forward<'_>,
    body: Body,
) -> Result<Request<Body>, ProxyError> {
    let rest = forward.rest;
    let query = head.uri.query();
    let mut path_and_query = String::with_capacity(endpoint.base_path.len() + rest.len() + query.map_or(0, |q| q.len() + 1));
    path_and_query.push_str(&endpoint.base_path);
    path_and_query.push_str(rest);
    if let Some(query) = query {
        path_and_query.push('?');
        path_and_query.push_str(query);
    }
    let uri = Uri::builder()
        .scheme(endpoint.scheme.clone())
        .authority(endpoint.authority.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|e| ProxyError::Internal(format!("upstream URI: {e}")))?;
    let mut request = Request::new(body);
    *request.method_mut() = head.method.clone();
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    prepare_headers(request.headers_mut(), forward.client_ip, forward.tls);
    request.headers_mut().insert(header::HOST, endpoint.host.clone());
    Ok(request)
}

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    KEEP_ALIVE,
    PROXY_CONNECTION,
];

/// Remove hop-by-hop headers (RFC 9110 §7.6.1), including those named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: a look at each name costs less than a removal (a hashed
    // lookup) of each of the eight, twice per request.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The headers forwarded: the client's hop-by-hop headers were stripped before the
/// request chain (policies cannot add any), so these are the gateway's own.
fn prepare_headers(headers: &mut HeaderMap, client_ip: &HeaderValue, tls: bool) {
    // Never the client's own `X-Forwarded-Host`: the host the request was routed on, or none.
    match headers.get(header::HOST).cloned() {
        Some(host) => headers.insert(X_FORWARDED_HOST, host),
        None => headers.remove(X_FORWARDED_HOST),
    };
    let forwarded_for = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(earlier) => HeaderValue::try_from(format!("{earlier}, {}", client_ip.to_str().unwrap_or_default())).ok(),
        None => Some(client_ip.clone()),
    };
    if let Some(value) = forwarded_for {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(if tls { "https" } else { "http" }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_checked() {
        let endpoint = parse_endpoint("http://127.0.0.1:9000/base/").unwrap();
        assert_eq!(endpoint.base_path, "/base");
        assert_eq!(endpoint.authority.as_str(), "127.0.0.1:9000");
        assert!(parse_endpoint("ftp://x").unwrap_err().contains("http:// or https://"));
        assert_eq!(parse_endpoint("https://api.example.com/v2").unwrap().scheme, Scheme::HTTPS);
        assert!(parse_endpoint("127.0.0.1:80").is_err());
        assert!(parse_endpoint("http://u:p@host/").unwrap_err().contains("credentials"));
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("close, x-secret"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-kept"));

        // A header named in `Connection` goes with it, whichever it is; without any
        // hop-by-hop header, nothing is removed.
        let mut headers = HeaderMap::new();
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 2);
        headers.insert(KEEP_ALIVE, HeaderValue::from_static("timeout=5"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 2, "keep-alive is removed");
        assert!(!headers.contains_key(KEEP_ALIVE));
    }
}
