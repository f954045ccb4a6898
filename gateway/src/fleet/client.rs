//! The gateway's HTTP client for its control plane: the event stream, modules by digest
//! and acknowledgements, each request carrying the gateway's token, id, environment and
//! protocol version.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::GaiResolver;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::analytics::UsageSink;
use crate::contract::fleet::{
    ACK_PATH, ANALYTICS_PATH, Ack, ENVIRONMENT_HEADER, EventReader, GATEWAY_HEADER, MODULES_PATH, PROTOCOL_HEADER, PROTOCOL_VERSION,
    SILENCE, STREAM_PATH, UsageReport,
};
use crate::error::causes;
use crate::settings::CertificateConfig;
use crate::tls;

/// The largest module a gateway downloads: the largest it compiles.
pub const MAX_MODULE_BYTES: usize = crate::policy::MAX_COMPONENT_BYTES;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A failed exchange with the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer (connection refused, reset, timed out).
    #[error("control plane unreachable: {0}")]
    Unreachable(String),
    /// An answer other than success; `detail` is the problem's detail when there was one.
    #[error("control plane answered {status}: {detail}")]
    Refused {
        /// The status.
        status: StatusCode,
        /// What it said.
        detail: String,
    },
}

/// Talks to one control plane for one gateway.
#[derive(Clone)]
pub struct ControlPlane {
    base: String,
    authorization: HeaderValue,
    gateway: HeaderValue,
    environment: HeaderValue,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl ControlPlane {
    /// A client for the control plane at `url`: `https://host:port`, verified against the
    /// CA certificates of the PEM file `ca` (or the system's roots), or `http://host:port`
    /// (for loopback and tests: the environment carries secrets). With `certificate`, the
    /// gateway presents it to a control plane that asks (mutual TLS).
    pub fn new(
        url: &str,
        ca: Option<&Path>,
        certificate: Option<&CertificateConfig>,
        environment: &str,
        token: &str,
        gateway_id: &str,
    ) -> Result<Self, String> {
        let uri: Uri = url.parse().map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        let Some(host) = uri.host() else {
            return Err(format!("`{url}`: the control plane URL must be https://host:port or http://host:port"));
        };
        let tls = match uri.scheme_str() {
            Some("https") => {
                let trust = ca.map_or(tls::Trust::System, tls::Trust::File);
                Some(match certificate {
                    None => tls::client_config(trust).map_err(|e| format!("the control plane's CA: {e}"))?,
                    Some(certificate) => tls::client_config_with_certificate(trust, certificate)
                        .map_err(|e| format!("the control plane's CA or this gateway's client certificate: {e}"))?,
                })
            }
            Some("http") if ca.is_some() || certificate.is_some() => {
                return Err(format!("`{url}`: CA files and client certificates are for an https:// control plane"));
            }
            Some("http") => {
                if !crate::network::is_loopback_host(host) {
                    tracing::warn!(url, "the control plane is reached over plain HTTP: environments carry key material; use https://");
                }
                None
            }
            _ => return Err(format!("`{url}`: the control plane URL must be https://host:port or http://host:port")),
        };
        let header = |what: &str, value: &str| HeaderValue::from_str(value).map_err(|_| format!("the {what} is not a valid header value"));
        let connector = tls::connector(tls, Duration::from_secs(5), GaiResolver::new())?;
        let client = Client::builder(TokioExecutor::new()).timer(TokioTimer::new()).pool_timer(TokioTimer::new()).build(connector);
        Ok(Self {
            base: url.trim_end_matches('/').to_owned(),
            authorization: header("token", &format!("Bearer {token}"))?,
            gateway: header("gateway id", gateway_id)?,
            environment: header("environment", environment)?,
            client,
        })
    }

    fn request(&self, method: Method, path: &str, body: Bytes) -> Result<Request<Full<Bytes>>, ClientError> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .body(Full::new(body))
            .map_err(|e| ClientError::Unreachable(e.to_string()))?;
        let headers = request.headers_mut();
        headers.insert(AUTHORIZATION, self.authorization.clone());
        headers.insert(GATEWAY_HEADER, self.gateway.clone());
        headers.insert(ENVIRONMENT_HEADER, self.environment.clone());
        headers.insert(PROTOCOL_HEADER, HeaderValue::from(PROTOCOL_VERSION));
        Ok(request)
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> Result<http::Response<Incoming>, ClientError> {
        let response = tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| ClientError::Unreachable("no answer within 30 s".into()))?
            .map_err(|e| ClientError::Unreachable(causes(&e)))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = Limited::new(response.into_body(), 64 * 1024).collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let detail = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|problem| problem.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        Err(ClientError::Refused { status, detail })
    }

    /// Open the event stream.
    pub async fn stream(&self) -> Result<EventStream, ClientError> {
        let mut request = self.request(Method::GET, STREAM_PATH, Bytes::new())?;
        request.headers_mut().insert(http::header::ACCEPT, HeaderValue::from_static("text/event-stream"));
        let response = self.send(request).await?;
        Ok(EventStream { body: response.into_body(), reader: EventReader::default(), ready: Vec::new() })
    }

    /// Download a module by digest (the caller checks the digest).
    pub async fn module(&self, sha256: &str) -> Result<Bytes, ClientError> {
        let response = self.send(self.request(Method::GET, &format!("{MODULES_PATH}/{sha256}"), Bytes::new())?).await?;
        Limited::new(response.into_body(), MAX_MODULE_BYTES)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| ClientError::Unreachable(format!("reading module {sha256}: {e}")))
    }

    /// Report what the gateway runs.
    pub async fn ack(&self, ack: &Ack) -> Result<(), ClientError> {
        self.post(ACK_PATH, ack).await
    }

    async fn post(&self, path: &str, body: &impl serde::Serialize) -> Result<(), ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Unreachable(e.to_string()))?;
        let mut request = self.request(Method::POST, path, body.into())?;
        request.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        self.send(request).await.map(drop)
    }
}

#[async_trait::async_trait]
impl UsageSink for ControlPlane {
    async fn deliver(&self, report: &UsageReport) -> Result<(), String> {
        self.post(ANALYTICS_PATH, report).await.map_err(|e| e.to_string())
    }
}

/// The events of an open stream.
pub struct EventStream {
    body: Incoming,
    reader: EventReader,
    ready: Vec<(String, String)>,
}

impl EventStream {
    /// The next event as (name, data); `None` when the control plane closed the stream.
    /// A stream silent for [`SILENCE`] is an error (the control plane is gone without a word).
    pub async fn next(&mut self) -> Result<Option<(String, String)>, ClientError> {
        loop {
            if !self.ready.is_empty() {
                return Ok(Some(self.ready.remove(0)));
            }
            let frame = tokio::time::timeout(SILENCE, self.body.frame())
                .await
                .map_err(|_| ClientError::Unreachable(format!("the stream was silent for {} s", SILENCE.as_secs())))?;
            match frame {
                None => return Ok(None),
                Some(Err(error)) => return Err(ClientError::Unreachable(format!("stream broken: {error}"))),
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        self.ready = self.reader.push(data).map_err(|e| ClientError::Unreachable(format!("stream refused: {e}")))?;
                    }
                }
            }
        }
    }
}
