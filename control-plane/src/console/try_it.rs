//! The developer portal's try-it panel: a call through an API's gateway, made by the
//! control plane for the visitor to one of the gateway URLs the catalogue gives for that
//! API (no other address), with the key or token the visitor gives, and its answer shown.

use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::GaiResolver;
use hyper_util::rt::TokioExecutor;
use portico_gateway::contract::environment::Blocked;
use portico_gateway::tls::{self, Trust};

use crate::devportal::CatalogueApi;
use crate::error::ApiError;

/// How long a call may take, connecting and reading the answer included.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How much of an answer's body is shown.
const SHOWN_BODY: usize = 64 * 1024;
/// The methods the panel sends.
pub(super) const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector<GaiResolver>>, Full<Bytes>>;

/// One client for every call: gateways are trusted by the system's roots.
fn client() -> Result<&'static HttpsClient, ApiError> {
    static CLIENT: OnceLock<Result<HttpsClient, String>> = OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        let config = tls::client_config(Trust::System)?;
        let connector = tls::connector(Some(config), TIMEOUT, GaiResolver::new())?;
        Ok(Client::builder(TokioExecutor::new()).build(connector))
    });
    client.as_ref().map_err(|e| ApiError::Internal(format!("no HTTP client for the try-it panel: {e}")))
}

/// What the visitor asks for (the form's fields).
#[derive(Debug, Default)]
pub(super) struct Call {
    pub gateway_url: String,
    pub method: String,
    pub path: String,
    pub api_key: String,
    pub token: String,
    pub body: String,
}

/// What the gateway answered.
#[derive(Debug)]
pub(super) struct Answer {
    /// `200 OK`.
    pub status: String,
    /// Its headers, one per line.
    pub headers: String,
    /// Its body as text (its first 64 KiB).
    pub body: String,
    /// Whether the body was longer.
    pub truncated: bool,
    /// Milliseconds the call took.
    pub took_ms: u128,
}

/// The request `call` describes, if it may be sent for `api`.
fn request(api: &CatalogueApi, call: &Call) -> Result<http::Request<Full<Bytes>>, ApiError> {
    if !api.gateway_urls.contains(&call.gateway_url) {
        return Err(ApiError::invalid("gateway_url", "one of the gateway URLs listed for this API"));
    }
    if !METHODS.contains(&call.method.as_str()) {
        return Err(ApiError::invalid("method", format!("one of {}", METHODS.join(", "))));
    }
    let path_ok = call.path.starts_with('/') && call.path.len() <= 2000 && !call.path.chars().any(|c| c.is_whitespace() || c.is_control());
    let uri: http::Uri = format!("{}{}", call.gateway_url, call.path)
        .parse()
        .ok()
        .filter(|_| path_ok)
        .ok_or_else(|| ApiError::invalid("path", "a path below the API's URL, starting with `/`, without spaces"))?;
    let mut request = http::Request::builder().method(call.method.as_str()).uri(uri);
    let header =
        |field: &str, value: &str| http::HeaderValue::from_str(value).map_err(|_| ApiError::invalid(field, "printable characters only"));
    if !call.api_key.is_empty() {
        request = request.header("apikey", header("api_key", call.api_key.trim())?);
    }
    if !call.token.is_empty() {
        request = request.header(http::header::AUTHORIZATION, header("token", &format!("Bearer {}", call.token.trim()))?);
    }
    if !call.body.is_empty() {
        request = request.header(http::header::CONTENT_TYPE, "application/json");
    }
    request.body(Full::new(Bytes::from(call.body.clone()))).map_err(|e| ApiError::invalid("path", e.to_string()))
}

/// Send `call` for `api`, asked by a visitor at `source`, and read the answer; a gateway
/// that does not answer is a problem shown next to the gateway URL. The gateways see the
/// control plane's address, not the visitor's: a visitor whose address the blocking
/// conditions refuse is refused here, as the gateways would.
pub(super) async fn send(api: &CatalogueApi, call: &Call, source: IpAddr, blocked: &Blocked) -> Result<Answer, ApiError> {
    if portico_gateway::check::client_blocked(blocked, source) {
        return Err(ApiError::Forbidden("requests from your address are blocked".into()));
    }
    let request = request(api, call)?;
    let client = client()?;
    let Ok(_turn) = CALLS.try_acquire() else {
        return Err(ApiError::TooManyRequests(format!("{MAX_CALLS} try-it calls are under way; try again in a moment")));
    };
    let started = Instant::now();
    tokio::time::timeout(TIMEOUT, exchange(client, request, started))
        .await
        .unwrap_or_else(|_| Err(ApiError::invalid("gateway_url", format!("the gateway did not answer within {} s", TIMEOUT.as_secs()))))
}

/// Calls under way at most, from all visitors.
const MAX_CALLS: usize = 16;
static CALLS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_CALLS);

async fn exchange(client: &HttpsClient, request: http::Request<Full<Bytes>>, started: Instant) -> Result<Answer, ApiError> {
    let unreachable = |e: String| ApiError::invalid("gateway_url", format!("the gateway did not answer: {e}"));
    let response = client.request(request).await.map_err(|e| unreachable(e.to_string()))?;
    let status = response.status();
    let headers =
        response.headers().iter().map(|(name, value)| format!("{name}: {}", String::from_utf8_lossy(value.as_bytes()))).collect::<Vec<_>>();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    let mut truncated = false;
    while let Some(frame) = body.frame().await {
        let Ok(Some(data)) = frame.map(|f| f.into_data().ok()) else { break };
        bytes.extend_from_slice(&data);
        if bytes.len() > SHOWN_BODY {
            bytes.truncate(SHOWN_BODY);
            truncated = true;
            break;
        }
    }
    Ok(Answer {
        status: format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or("")),
        headers: headers.join("\n"),
        body: String::from_utf8_lossy(&bytes).into_owned(),
        truncated,
        took_ms: started.elapsed().as_millis(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api() -> CatalogueApi {
        CatalogueApi {
            id: "a".into(),
            name: "Pets".into(),
            version: "v1".into(),
            context: "/pets".into(),
            description: String::new(),
            tags: Vec::new(),
            tiers: Vec::new(),
            status: "PUBLISHED".into(),
            operations: Vec::new(),
            gateway_urls: vec!["http://192.0.2.1:9/pets/v1".into()],
            documentation: None,
        }
    }

    fn call(path: &str) -> Call {
        Call { gateway_url: "http://192.0.2.1:9/pets/v1".into(), method: "GET".into(), path: path.into(), ..Call::default() }
    }

    #[tokio::test]
    async fn a_blocked_address_is_refused_as_the_gateways_would() {
        let blocked = Blocked { ips: vec!["198.51.100.0/24".into()], ..Blocked::default() };
        let refused = send(&api(), &call("/x"), "198.51.100.7".parse().unwrap(), &blocked).await.unwrap_err();
        assert!(matches!(refused, ApiError::Forbidden(_)), "{refused:?}");
    }

    #[test]
    fn only_the_api_s_gateways_with_a_path_below_them() {
        let api = api();
        let mut elsewhere = call("/x");
        elsewhere.gateway_url = "http://169.254.169.254".into();
        for (call, field) in [(elsewhere, "gateway_url"), (call("x"), "path"), (call("/a b"), "path"), (call("/\u{7f}"), "path")] {
            match request(&api, &call) {
                Err(ApiError::Validation { field: named, .. }) => assert_eq!(named, field),
                other => panic!("{other:?}"),
            }
        }
        let mut header = call("/x");
        header.api_key = "k\r\nx-evil: 1".into();
        assert!(matches!(request(&api, &header), Err(ApiError::Validation { field, .. }) if field == "api_key"));
        let sent = request(&api, &call("/items/1?q=2")).unwrap();
        assert_eq!(sent.uri(), "http://192.0.2.1:9/pets/v1/items/1?q=2");
    }
}
