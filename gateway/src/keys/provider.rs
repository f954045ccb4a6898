//! Outside OpenID providers as key managers. A provider's discovery document and keys are
//! fetched by the gateway from the issuer's own well-known address (never from a URL a
//! token names), again on a schedule and, at most once per interval, for a `kid` not seen
//! yet; they are kept through the provider's outages. Its opaque tokens are asked about at its
//! introspection endpoint (RFC 7662), and the answers cached: a fresh one for the configured
//! time, an active one past it, until the token expires, only while the provider does not
//! answer. A token is never accepted for want of an answer. A gateway with a cache folder
//! keeps each provider's last keys there, to start with them while the provider is away.
//!
//! Verification is synchronous (a policy's host call), so a fetch or a question that it must
//! wait for blocks its thread, handing the thread's other tasks to the runtime meanwhile;
//! that happens once per new key or per token and cache time, not per request.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::GaiResolver;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::JwkSet;
use quick_cache::sync::Cache;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::KeyError;
use super::claims::numeric_date;
use super::verification_key::{VerificationKey, knows_kid, provider_keys};
use crate::contract::environment::Discovery;
use crate::error::causes;
use crate::tls;

/// Time allowed for one fetch or question, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a request waits for the provider, whatever it waits for.
const WAIT_LIMIT: Duration = Duration::from_secs(5);
/// The largest discovery document, JWKS or introspection answer read.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// Introspection answers kept, per provider: as many, and at most as many bytes.
const ANSWERS_KEPT: usize = 100_000;
const ANSWERS_BYTES: u64 = 32 << 20;
/// Questions to a provider in flight at once; a token that would make one more is refused
/// (a flood of made-up tokens must not hold every thread).
const QUESTIONS_IN_FLIGHT: usize = 64;

thread_local! {
    /// How long this thread has waited for providers since it was last asked (see
    /// [`take_time_waited`]).
    static WAITED: std::cell::Cell<Duration> = const { std::cell::Cell::new(Duration::ZERO) };
}

/// How long the calling thread waited for OpenID providers since the last call: a policy
/// whose host call waited gets that time back on its deadline.
pub fn take_time_waited() -> Duration {
    WAITED.replace(Duration::ZERO)
}

/// The providers a gateway keeps up with, shared by its snapshots: a provider's keys and
/// answers outlive a change of configuration that keeps it as it was.
pub struct Providers {
    live: Mutex<HashMap<String, Weak<Provider>>>,
    /// Where providers fetch their keys on schedule: the runtime this was made on (snapshots
    /// are built on threads of their own). Without one, keys are fetched only when a token
    /// needs them.
    runtime: Option<tokio::runtime::Handle>,
    /// Whether providers are only made to check their settings, never kept nor fetched from.
    checking_only: bool,
    /// The folder where each provider's last fetched keys are kept, for a gateway that
    /// restarts while its provider is away.
    kept_in: Mutex<Option<PathBuf>>,
}

impl Default for Providers {
    fn default() -> Self {
        Providers {
            live: Mutex::default(),
            runtime: tokio::runtime::Handle::try_current().ok(),
            checking_only: false,
            kept_in: Mutex::default(),
        }
    }
}

impl Providers {
    /// Providers made only to check their settings (a control plane's check).
    pub fn checking_only() -> Providers {
        Providers { runtime: None, checking_only: true, ..Providers::default() }
    }

    /// Keep each provider's last fetched keys in `dir` (made for its owner only), and start
    /// providers from what is kept there.
    pub fn keep_keys_in(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        *self.kept_in.lock().unwrap_or_else(PoisonError::into_inner) = Some(dir.to_owned());
        Ok(())
    }

    /// The provider of `issuer` configured by `discovery`, verifying `algorithms`: the live
    /// one when its configuration is the same, else a new one, which starts fetching its keys.
    pub(super) fn get(&self, issuer: &str, discovery: &Discovery, algorithms: &[Algorithm]) -> Result<Arc<Provider>, String> {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(provider) = live.get(issuer).and_then(Weak::upgrade)
            && provider.discovery == *discovery
            && provider.algorithms == algorithms
        {
            return Ok(provider);
        }
        let mut provider = Provider::new(issuer, discovery, algorithms)?;
        if self.checking_only {
            return Ok(Arc::new(provider));
        }
        if let Some(dir) = self.kept_in.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
            let digest: [u8; 32] = Sha256::digest(issuer.as_bytes()).into();
            provider.kept = Some(dir.join(format!("{}.json", crate::contract::hex::encode(&digest))));
            provider.restore();
        }
        let provider = Arc::new(provider);
        live.retain(|_, provider| provider.strong_count() > 0);
        live.insert(issuer.to_owned(), Arc::downgrade(&provider));
        if let Some(runtime) = &self.runtime {
            runtime.spawn(keep_up(Arc::downgrade(&provider)));
        }
        Ok(provider)
    }
}

/// One OpenID provider: what it was last seen to publish, and its answers about tokens.
pub(crate) struct Provider {
    issuer: String,
    discovery: Discovery,
    algorithms: Vec<Algorithm>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// The keys and endpoints of the last fetch that succeeded.
    published: ArcSwapOption<Published>,
    /// The file they are kept in, if they are.
    kept: Option<PathBuf>,
    /// When the last fetch began; held while fetching, so that who needs one waits for the
    /// fetch in flight rather than starting another.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    /// `Basic` credentials for the introspection endpoint.
    introspection_credentials: Option<HeaderValue>,
    /// Answers, by the sha256 of the token (the token itself is not kept).
    answers: Cache<[u8; 32], Arc<Answer>, AnswerWeight>,
    questions: tokio::sync::Semaphore,
    complaint: Complaint,
}

/// What a provider publishes: its keys, and where it introspects.
pub(super) struct Published {
    pub(super) keys: Vec<VerificationKey>,
    introspection_endpoint: Option<String>,
}

/// A provider's keys as kept on disk.
#[derive(Serialize, Deserialize)]
struct Kept {
    issuer: String,
    jwks: JwkSet,
    introspection_endpoint: Option<String>,
}

/// The fields of a discovery document used here.
#[derive(Deserialize)]
struct DiscoveryDocument {
    issuer: String,
    jwks_uri: String,
    #[serde(default)]
    introspection_endpoint: Option<String>,
    #[serde(default)]
    token_endpoint: Option<String>,
}

/// A provider's answer about one token.
pub(super) struct Answer {
    received: Instant,
    /// The answer's members when the token is active.
    active: Option<(Map<String, Value>, String)>,
}

impl Provider {
    pub(crate) fn new(issuer: &str, discovery: &Discovery, algorithms: &[Algorithm]) -> Result<Provider, String> {
        let tls = if check_endpoint(issuer)?.scheme_str() == Some("https") {
            let trust = discovery.ca.as_deref().map_or(tls::Trust::System, tls::Trust::Pem);
            Some(tls::client_config(trust).map_err(|e| format!("the provider's CA certificates: {e}"))?)
        } else {
            None
        };
        let connector = tls::connector(tls, REQUEST_TIMEOUT, GaiResolver::new())?;
        let client = Client::builder(TokioExecutor::new()).timer(TokioTimer::new()).pool_timer(TokioTimer::new()).build(connector);
        let introspection_credentials =
            discovery.introspection.as_ref().map(|introspection| basic(&introspection.client_id, &introspection.client_secret));
        Ok(Provider {
            issuer: issuer.to_owned(),
            discovery: discovery.clone(),
            algorithms: algorithms.to_vec(),
            client,
            published: ArcSwapOption::empty(),
            kept: None,
            last_fetch: tokio::sync::Mutex::new(None),
            introspection_credentials,
            answers: Cache::with_weighter(ANSWERS_KEPT, ANSWERS_BYTES, AnswerWeight),
            questions: tokio::sync::Semaphore::new(QUESTIONS_IN_FLIGHT),
            complaint: Complaint::default(),
        })
    }

    /// What the provider was last seen to publish, if it ever answered.
    pub(super) fn keys(&self) -> Option<Arc<Published>> {
        self.published.load_full()
    }

    /// [`Self::keys`], fetched again first when they do not have `kid` and the last fetch is
    /// older than the interval allowed.
    pub(super) fn keys_knowing(&self, kid: &str) -> Option<Arc<Published>> {
        let published = self.keys();
        if published.as_ref().is_some_and(|published| knows_kid(&published.keys, kid)) {
            return published;
        }
        block_on(self.fetch_unless_recent());
        self.keys()
    }

    /// Whether opaque tokens are asked about here.
    pub(super) fn introspects(&self) -> bool {
        self.introspection_credentials.is_some()
    }

    /// The provider's answer about `token`: the cached one while fresh, else a new one; when
    /// none comes, an active cached one whose token has not expired at `now`. Unknown when
    /// there is neither.
    pub(super) fn introspect(&self, token: &str, now: u64) -> Result<Arc<Answer>, KeyError> {
        let ttl = self.discovery.introspection.as_ref().map_or(Duration::ZERO, |introspection| introspection.cache_ttl.0);
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let cached = self.answers.get(&digest);
        if let Some(answer) = &cached
            && answer.received.elapsed() < ttl
        {
            return Ok(answer.clone());
        }
        match block_on(self.ask(token)) {
            Some(Ok(answer)) => {
                let answer = Arc::new(answer);
                self.answers.insert(digest, answer.clone());
                Ok(answer)
            }
            failure => {
                let reason = match failure {
                    Some(Err(reason)) => reason,
                    _ => "no runtime to ask from".to_owned(),
                };
                let still_valid = cached.filter(|answer| answer.expires_at().is_some_and(|exp| exp >= now));
                match still_valid {
                    Some(answer) => {
                        tracing::debug!(issuer = %self.issuer, %reason, "introspection failed; the cached answer stands until the token expires");
                        Ok(answer)
                    }
                    None => {
                        if self.complaint.due() {
                            tracing::warn!(issuer = %self.issuer, %reason, "introspection failed; the token is refused");
                        }
                        Err(KeyError::Unknown)
                    }
                }
            }
        }
    }

    /// Fetch the keys unless a fetch began within the interval allowed for unknown `kid`s
    /// (waiting for one in flight).
    async fn fetch_unless_recent(&self) {
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|began| began.elapsed() < self.discovery.unknown_kid_interval.0) {
            return;
        }
        *last = Some(Instant::now());
        self.fetch().await;
    }

    /// Fetch the discovery document and the keys; on failure keep what was published
    /// before. Whether the fetch succeeded.
    async fn fetch(&self) -> bool {
        match self.published_now().await {
            Ok((published, jwks)) => {
                tracing::info!(issuer = %self.issuer, keys = published.keys.len(), "OpenID provider's keys fetched");
                self.keep(&jwks, published.introspection_endpoint.as_deref());
                self.published.store(Some(Arc::new(published)));
                true
            }
            Err(reason) => {
                let kept = self.published.load().as_ref().map_or(0, |published| published.keys.len());
                tracing::warn!(issuer = %self.issuer, %reason, kept, "OpenID provider's keys not fetched; those fetched before are kept");
                false
            }
        }
    }

    /// What the provider publishes now, and its JWKS as it came.
    async fn published_now(&self) -> Result<(Published, JwkSet), String> {
        let document = self.discovery_document().await?;
        let jwks: JwkSet = self.get_json(&document.jwks_uri).await?;
        let (keys, problems) = provider_keys(&jwks, &self.algorithms);
        for problem in problems {
            tracing::warn!(issuer = %self.issuer, %problem, "a key of the OpenID provider is left out");
        }
        if keys.is_empty() {
            return Err(format!("{} has no key for the allowed algorithms", document.jwks_uri));
        }
        Ok((Published { keys, introspection_endpoint: document.introspection_endpoint }, jwks))
    }

    /// Write what was fetched to the provider's file (to a temporary name, synced, then
    /// renamed: a crash leaves the old file or the new one). A failure is only logged.
    fn keep(&self, jwks: &JwkSet, introspection_endpoint: Option<&str>) {
        let Some(file) = &self.kept else { return };
        let kept =
            Kept { issuer: self.issuer.clone(), jwks: jwks.clone(), introspection_endpoint: introspection_endpoint.map(str::to_owned) };
        let written = serde_json::to_vec(&kept).map_err(std::io::Error::other).and_then(|text| {
            let temporary = file.with_extension("json.tmp");
            let mut out = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temporary)?;
            out.write_all(&text)?;
            out.sync_all()?;
            std::fs::rename(&temporary, file)
        });
        if let Err(e) = written {
            tracing::warn!(issuer = %self.issuer, file = %file.display(), error = %e, "cannot keep the OpenID provider's keys");
        }
    }

    /// Start from the keys kept in the provider's file, if there are usable ones.
    fn restore(&self) {
        let Some(file) = &self.kept else { return };
        let Ok(text) = std::fs::read(file) else { return };
        let kept = match serde_json::from_slice::<Kept>(&text) {
            Ok(kept) if kept.issuer == self.issuer => kept,
            _ => {
                tracing::warn!(issuer = %self.issuer, file = %file.display(), "the kept keys of the OpenID provider do not read; ignored");
                return;
            }
        };
        let (keys, _) = provider_keys(&kept.jwks, &self.algorithms);
        if !keys.is_empty() {
            tracing::info!(issuer = %self.issuer, keys = keys.len(), "OpenID provider's keys as kept at the last fetch");
            self.published.store(Some(Arc::new(Published { keys, introspection_endpoint: kept.introspection_endpoint })));
        }
    }

    /// The provider's discovery document: its own (OpenID Connect Discovery §4.3), and every
    /// endpoint it names one that may carry keys, tokens or secrets.
    async fn discovery_document(&self) -> Result<DiscoveryDocument, String> {
        let url = format!("{}/.well-known/openid-configuration", self.issuer.trim_end_matches('/'));
        let document: DiscoveryDocument = self.get_json(&url).await?;
        if document.issuer != self.issuer {
            return Err(format!("{url} names the issuer `{}`", document.issuer));
        }
        let endpoints = [Some(&document.jwks_uri), document.introspection_endpoint.as_ref(), document.token_endpoint.as_ref()];
        for endpoint in endpoints.into_iter().flatten() {
            check_endpoint(endpoint)?;
        }
        Ok(document)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        let request = Request::get(url)
            .header(ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|_| format!("`{url}` is not a URL"))?;
        let body = self.send(request).await?;
        serde_json::from_slice(&body).map_err(|e| format!("{url}: not the JSON expected: {e}"))
    }

    /// Ask the introspection endpoint about `token`.
    async fn ask(&self, token: &str) -> Result<Answer, String> {
        let Some(credentials) = &self.introspection_credentials else { return Err("no introspection configured".to_owned()) };
        let endpoint = match self.keys().and_then(|published| published.introspection_endpoint.clone()) {
            Some(endpoint) => endpoint,
            None => {
                // Never fetched yet (or it names none): one fetch, within the interval rule.
                self.fetch_unless_recent().await;
                self.keys()
                    .and_then(|published| published.introspection_endpoint.clone())
                    .ok_or("the provider names no introspection endpoint")?
            }
        };
        let _place = self.questions.try_acquire().map_err(|_| format!("{QUESTIONS_IN_FLIGHT} questions in flight already"))?;
        let body = format!("token={}&token_type_hint=access_token", form_encoded(token));
        let request = Request::builder()
            .method(Method::POST)
            .uri(&endpoint)
            .header(AUTHORIZATION, credentials)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| format!("`{endpoint}` is not a URL"))?;
        let body = self.send(request).await?;
        let text = String::from_utf8(body.to_vec()).map_err(|_| format!("{endpoint}: the answer is not UTF-8"))?;
        let members: Map<String, Value> = serde_json::from_str(&text).map_err(|e| format!("{endpoint}: not a JSON object: {e}"))?;
        let active = match members.get("active") {
            Some(Value::Bool(active)) => *active,
            _ => return Err(format!("{endpoint}: the answer has no boolean `active`")),
        };
        Ok(Answer { received: Instant::now(), active: active.then_some((members, text)) })
    }

    /// Whether the provider takes `client_id` and `client_secret` as a client's credentials:
    /// its token endpoint grants them a client-credentials token, or refuses them the grant
    /// only (`unauthorized_client`: authenticated, RFC 6749 §5.2).
    pub(crate) async fn accepts_client(&self, client_id: &str, client_secret: &str) -> Result<bool, String> {
        let document = self.discovery_document().await?;
        let endpoint = document.token_endpoint.ok_or_else(|| format!("{} names no token endpoint", self.issuer))?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(&endpoint)
            .header(AUTHORIZATION, basic(client_id, client_secret))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .body(Full::new(Bytes::from_static(b"grant_type=client_credentials")))
            .map_err(|_| format!("`{endpoint}` is not a URL"))?;
        let (status, body) = self.exchange(request).await?;
        if status == StatusCode::OK {
            return Ok(true);
        }
        let error =
            serde_json::from_slice::<Map<String, Value>>(&body).ok().and_then(|members| members.get("error")?.as_str().map(str::to_owned));
        match error.as_deref() {
            // Anything short of a token proves nothing: a provider may answer a public
            // client's grant error without checking any secret.
            Some(_) if status.is_client_error() => Ok(false),
            _ => Err(format!("{endpoint} answered {status}")),
        }
    }

    /// Send `request`; the body of its 200 answer.
    async fn send(&self, request: Request<Full<Bytes>>) -> Result<Bytes, String> {
        let url = request.uri().to_string();
        let (status, body) = self.exchange(request).await?;
        if status != StatusCode::OK {
            return Err(format!("{url} answered {status}"));
        }
        Ok(body)
    }

    /// Send `request`; its answer's status and body.
    async fn exchange(&self, request: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), String> {
        let url = request.uri().to_string();
        let response = tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| format!("{url}: no answer within {} s", REQUEST_TIMEOUT.as_secs()))?
            .map_err(|e| format!("{url}: {}", causes(&e)))?;
        let status = response.status();
        let body = tokio::time::timeout(REQUEST_TIMEOUT, Limited::new(response.into_body(), MAX_DOCUMENT_BYTES).collect())
            .await
            .map_err(|_| format!("{url}: the body did not arrive within {} s", REQUEST_TIMEOUT.as_secs()))?
            .map_err(|e| format!("{url}: {e}"))?
            .to_bytes();
        Ok((status, body))
    }
}

impl Answer {
    /// The token's `exp`, when it is active and says.
    pub(super) fn expires_at(&self) -> Option<u64> {
        self.active.as_ref().and_then(|(members, _)| numeric_date(members.get("exp")))
    }

    /// The answer's members (and their JSON text) when the token is active.
    pub(super) fn active(&self) -> Option<(&Map<String, Value>, &str)> {
        self.active.as_ref().map(|(members, text)| (members, text.as_str()))
    }
}

/// Fetch the provider's keys at once, then every `refresh`; after a failure, again after the
/// interval allowed for unknown `kid`s. Ends when no snapshot uses the provider.
async fn keep_up(provider: Weak<Provider>) {
    loop {
        let Some(live) = provider.upgrade() else { return };
        let fetched = {
            let mut last = live.last_fetch.lock().await;
            *last = Some(Instant::now());
            live.fetch().await
        };
        let wait = if fetched { live.discovery.refresh.0 } else { live.discovery.unknown_kid_interval.0.min(live.discovery.refresh.0) };
        drop(live);
        tokio::time::sleep(wait).await;
    }
}

/// Run `future` to its end from synchronous code on a multi-threaded runtime's thread,
/// handing the thread's other tasks over meanwhile; `None` where that cannot be done.
/// At most [`WAIT_LIMIT`]; the time is added to what [`take_time_waited`] tells.
fn block_on<T>(future: impl Future<Output = T>) -> Option<T> {
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    if runtime.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return None;
    }
    let started = Instant::now();
    let done = tokio::task::block_in_place(|| runtime.block_on(tokio::time::timeout(WAIT_LIMIT, future)));
    WAITED.set(WAITED.get() + started.elapsed());
    done.ok()
}

/// What an answer weighs in the cache: its text, and a fixed overhead.
#[derive(Clone)]
struct AnswerWeight;

impl quick_cache::Weighter<[u8; 32], Arc<Answer>> for AnswerWeight {
    fn weight(&self, _: &[u8; 32], answer: &Arc<Answer>) -> u64 {
        256 + answer.active.as_ref().map_or(0, |(_, text)| 2 * text.len() as u64)
    }
}

/// A warning said at most once a second (a provider down, or a flood of tokens, would
/// otherwise write one per request).
#[derive(Default)]
struct Complaint {
    last: std::sync::atomic::AtomicU64,
}

impl Complaint {
    fn due(&self) -> bool {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.last.swap(now, std::sync::atomic::Ordering::Relaxed) != now
    }
}

/// `Basic` credentials of a client (RFC 6749 §2.3.1: each part form-encoded first), marked
/// sensitive.
fn basic(client_id: &str, client_secret: &str) -> HeaderValue {
    let credentials = format!("{}:{}", form_encoded(client_id), form_encoded(client_secret));
    let mut value = HeaderValue::from_str(&format!("Basic {}", STANDARD.encode(credentials))).expect("base64 is a header value");
    value.set_sensitive(true);
    value
}

/// What `application/x-www-form-urlencoded` encodes: all but letters, digits and `*-._`
/// (a space as `%20`, which decoders take as `+`).
const FORM: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC.remove(b'*').remove(b'-').remove(b'.').remove(b'_');

/// `url` parsed, if it may carry keys, tokens or secrets: `https://`, or `http://` on a
/// loopback address.
fn check_endpoint(url: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("`{url}` is not a URL"))?;
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if crate::network::is_loopback_host(uri.host().unwrap_or_default()) => Ok(uri),
        _ => Err(format!("`{url}` must be an https:// URL (http:// only on a loopback address)")),
    }
}

/// `text` encoded for `application/x-www-form-urlencoded`.
fn form_encoded(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, FORM).to_string()
}

#[cfg(test)]
mod tests;
