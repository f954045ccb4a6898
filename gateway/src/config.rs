//! The declarative gateway configuration: what a `portico.yaml` file says, and what the
//! control plane sends a gateway. Both planes share these types; `snapshot` turns one into
//! a running snapshot.

mod units;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use units::{ByteSize, Duration};

/// What a configuration may leave out, named once for both planes (the control plane
/// builds snapshots with these, `portico policy test` runs fixtures with them).
pub mod defaults {
    use std::time::Duration;

    /// CPU time budget of one policy call.
    pub const POLICY_TIMEOUT: Duration = Duration::from_millis(50);
    /// Linear memory of one policy instance.
    pub const POLICY_MEMORY_BYTES: u64 = 64 << 20;
    /// Time allowed to connect to an upstream.
    pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Time allowed for an upstream's response head.
    pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);
    /// Clock skew tolerated on a JWT's `exp` and `nbf`.
    pub const JWT_LEEWAY: Duration = Duration::from_secs(30);
    /// Largest request head.
    pub const MAX_HEADER_BYTES: u64 = 32 << 10;
    /// Most request headers.
    pub const MAX_HEADERS: usize = 100;
    /// Largest body accepted or buffered.
    pub const MAX_BODY_BYTES: u64 = 10 << 20;
    /// Time allowed to receive a request head.
    pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
}

/// Version of the configuration format; bumped on a breaking change.
pub const FORMAT_VERSION: u32 = 1;

/// A whole gateway configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Format version; `1` when omitted.
    #[serde(default = "format_version")]
    pub version: u32,
    /// Where the gateway accepts API traffic.
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// Request limits applied before routing.
    #[serde(default)]
    pub limits: Limits,
    /// Policy modules besides the built-in ones, by the name attachments use.
    #[serde(default)]
    pub modules: BTreeMap<String, ModuleSource>,
    /// Policies run for every API, before the API's own.
    #[serde(default)]
    pub global_policies: Vec<Attachment>,
    /// The APIs this gateway serves.
    #[serde(default)]
    pub apis: Vec<ApiConfig>,
    /// Applications (or people) that call with API keys.
    #[serde(default)]
    pub consumers: Vec<Consumer>,
    /// Issuers whose JWT access tokens are accepted.
    #[serde(default)]
    pub jwt_issuers: Vec<JwtIssuer>,
    /// When set (hex), `api_key_hashes` are HMAC-SHA256 digests under this key rather than
    /// plain sha256: what the control plane sends, so that its database alone gives away
    /// nothing to test guesses against.
    #[serde(default)]
    pub api_key_hmac_secret: Option<String>,
    /// Access tokens revoked before they expire, by `jti`.
    #[serde(default)]
    pub revoked_tokens: Vec<RevokedToken>,
    /// Blocking conditions: matching requests are answered 403.
    #[serde(default, skip_serializing_if = "Blocked::is_empty")]
    pub blocked: Blocked,
}

/// Blocking conditions (WSO2's, pushed by a control plane or written in a file). Client
/// addresses and APIs are refused before any policy runs; applications and users right
/// after the request chain authenticated them, before the upstream is called.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Blocked {
    /// Client addresses: an IP (`192.0.2.7`) or a network (`198.51.100.0/24`, `2001:db8::/32`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    /// APIs, by context as served (e.g. `/pets/v1`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apis: Vec<String>,
    /// Applications, as their credentials name them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applications: Vec<String>,
    /// End users, as their credentials name them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
}

impl Blocked {
    /// Whether nothing is blocked.
    pub fn is_empty(&self) -> bool {
        self.ips.is_empty() && self.apis.is_empty() && self.applications.is_empty() && self.users.is_empty()
    }
}

/// A revoked access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RevokedToken {
    /// Its `jti`.
    pub jti: String,
    /// Its `exp` (Unix seconds); after it the entry can be forgotten.
    pub expires_at: u64,
}

fn format_version() -> u32 {
    FORMAT_VERSION
}

impl Default for GatewayConfig {
    /// An empty configuration of the current format: no listeners, no APIs.
    fn default() -> Self {
        Self {
            version: FORMAT_VERSION,
            listeners: Vec::new(),
            admin: None,
            limits: Limits::default(),
            modules: BTreeMap::new(),
            global_policies: Vec::new(),
            apis: Vec::new(),
            consumers: Vec::new(),
            jwt_issuers: Vec::new(),
            api_key_hmac_secret: None,
            revoked_tokens: Vec::new(),
            blocked: Blocked::default(),
        }
    }
}

/// One listening socket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// `host:port`; port 0 picks a free port (it is logged).
    pub address: String,
    /// Serve HTTPS (HTTP/1.1 and HTTP/2 by ALPN); plain HTTP/1.1 and h2c when absent.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// Certificates of a TLS listener; with several, the one matching SNI is chosen and the
/// first is the default.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chains with their private keys.
    pub certificates: Vec<CertificateConfig>,
}

/// One certificate chain and its key, as PEM files.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// PEM file with the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Host names (SNI) this certificate is chosen for; the first certificate is also
    /// the default for any other name.
    #[serde(default)]
    pub server_names: Vec<String>,
}

/// The admin listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `host:port`; keep it on a private address.
    pub address: String,
}

/// Limits that protect the gateway and the upstreams from oversized or slow requests.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request head (request line and headers); larger gets 431.
    pub max_header_bytes: ByteSize,
    /// Most request headers; more gets 431.
    pub max_headers: usize,
    /// Largest request or response body a policy may buffer, and largest request body
    /// accepted; larger gets 413.
    pub max_body_bytes: ByteSize,
    /// Time allowed to receive a request head; slower connections are closed.
    pub header_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: ByteSize(defaults::MAX_HEADER_BYTES),
            max_headers: defaults::MAX_HEADERS,
            max_body_bytes: ByteSize(defaults::MAX_BODY_BYTES),
            header_read_timeout: Duration(defaults::HEADER_READ_TIMEOUT),
        }
    }
}

/// Where a policy module comes from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModuleSource {
    /// Path of the `.wasm` component, relative to the configuration file. Without it, the
    /// module is `modules/<sha256>.wasm` in the gateway's module store (where modules from
    /// a control plane are kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Expected sha256 of the file (hex); the module is refused when it differs.
    #[serde(default)]
    pub sha256: Option<String>,
}

/// Where a module with no `path` is kept, relative to the configuration's folder.
pub fn stored_module_path(sha256: &str) -> PathBuf {
    Path::new("modules").join(format!("{}.wasm", sha256.to_ascii_lowercase()))
}

/// A policy attached to the global chain, an API or an operation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    /// A built-in policy (`key-auth`, `throttle`, `headers`) or a name from `modules`.
    pub policy: String,
    /// The policy's configuration, handed to its `init` as JSON.
    #[serde(default = "empty_object")]
    pub config: serde_json::Value,
    /// What to do when the policy fails (trap, deadline, memory): `closed` answers 500,
    /// `open` skips the policy.
    #[serde(default)]
    pub on_failure: FailureMode,
    /// CPU time budget of one call.
    #[serde(default = "default_policy_timeout")]
    pub timeout: Duration,
    /// Linear memory limit of one instance.
    #[serde(default = "default_policy_memory")]
    pub memory: ByteSize,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

fn default_policy_timeout() -> Duration {
    Duration(defaults::POLICY_TIMEOUT)
}

fn default_policy_memory() -> ByteSize {
    ByteSize(defaults::POLICY_MEMORY_BYTES)
}

/// Behaviour when a policy fails.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum FailureMode {
    /// Answer 500 (the default: a failing auth policy must never let a request through).
    #[default]
    Closed,
    /// Skip the policy and go on.
    Open,
}

/// One API: a context path on some hosts, its operations, its upstream and its policies.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Name, unique with `version`.
    pub name: String,
    /// Version label, e.g. `v1`.
    #[serde(default = "default_version")]
    pub version: String,
    /// Path prefix, e.g. `/pets/v1`; stripped before forwarding.
    pub context: String,
    /// Host names (`api.example.com`, `*.example.com`); any host when empty.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Where requests go.
    pub upstream: UpstreamConfig,
    /// Policies for every operation of this API, after the global ones.
    #[serde(default)]
    pub policies: Vec<Attachment>,
    /// The operations; a single `ANY /*` operation when empty.
    #[serde(default)]
    pub operations: Vec<OperationConfig>,
}

fn default_version() -> String {
    "v1".to_owned()
}

/// One operation of an API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OperationConfig {
    /// HTTP method, or `ANY`.
    #[serde(default = "any_method")]
    pub method: String,
    /// Path template below the context: `/pets`, `/pets/{id}`, `/files/*`.
    pub path: String,
    /// Policies for this operation, after the API's.
    #[serde(default)]
    pub policies: Vec<Attachment>,
}

fn any_method() -> String {
    "ANY".to_owned()
}

/// The upstream service of an API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URLs (`http://host:port/base`), used round robin; a connect failure tries the
    /// next one.
    pub endpoints: Vec<String>,
    /// Time allowed to connect.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    /// Time allowed for the response head after the request was sent.
    #[serde(default = "default_upstream_timeout")]
    pub timeout: Duration,
}

fn default_connect_timeout() -> Duration {
    Duration(defaults::UPSTREAM_CONNECT_TIMEOUT)
}

fn default_upstream_timeout() -> Duration {
    Duration(defaults::UPSTREAM_TIMEOUT)
}

/// An application (or person) holding API keys.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    /// Unique name; the application's name when `application` is absent.
    pub name: String,
    /// The application the keys belong to.
    #[serde(default)]
    pub application: Option<String>,
    /// Throttling tier.
    #[serde(default)]
    pub tier: Option<String>,
    /// End user, if the keys act for one.
    #[serde(default)]
    pub user: Option<String>,
    /// Scopes granted to these keys.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// API keys in plain text (file mode).
    #[serde(default)]
    pub api_keys: Vec<String>,
    /// API keys as hex digests: sha256, or HMAC-SHA256 when `api_key_hmac_secret` is set.
    #[serde(default)]
    pub api_key_hashes: Vec<String>,
    /// When present, the APIs these keys may call (`name@version` → subscription tier); the
    /// identity then carries the subscription and its tier for the API being called.
    #[serde(default)]
    pub subscriptions: Option<BTreeMap<String, String>>,
}

/// An issuer of JWT access tokens and the keys its tokens are verified with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwtIssuer {
    /// Expected `iss`.
    pub issuer: String,
    /// Accepted `aud` values; a token must name at least one.
    pub audiences: Vec<String>,
    /// Allowed algorithms (`RS256`, `RS384`, `RS512`, `PS256`, `ES256`, `ES384`, `EdDSA`);
    /// HMAC and `none` are never accepted.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Verification keys as PEM public keys.
    #[serde(default)]
    pub keys: Vec<JwtKey>,
    /// Verification keys as a JWKS document (inline JSON).
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
    /// Verification keys as a JWKS file, relative to the configuration file.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Which claims carry the identity.
    #[serde(default)]
    pub claims: ClaimMapping,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(default = "default_leeway")]
    pub leeway: Duration,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".to_owned(), "ES256".to_owned()]
}

fn default_leeway() -> Duration {
    Duration(defaults::JWT_LEEWAY)
}

/// One PEM verification key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwtKey {
    /// Key id; a token that names a `kid` is checked only against the keys with that id.
    #[serde(default)]
    pub kid: Option<String>,
    /// The public key in PEM (SubjectPublicKeyInfo).
    #[serde(default)]
    pub pem: Option<String>,
    /// A file with the PEM public key, relative to the configuration file.
    #[serde(default)]
    pub pem_file: Option<PathBuf>,
}

/// Names of the claims that carry the caller's identity.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimMapping {
    /// Application (OAuth2 client); `azp`, then `client_id` when absent.
    pub application: String,
    /// Subscription.
    pub subscription: String,
    /// Throttling tier.
    pub tier: String,
    /// End user.
    pub user: String,
    /// Scopes: a space-separated string or an array.
    pub scopes: String,
    /// Subscriptions: an object from `name@version` to the subscription tier.
    pub subscriptions: String,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        Self {
            application: "azp".to_owned(),
            subscription: "subscription".to_owned(),
            tier: "tier".to_owned(),
            user: "sub".to_owned(),
            scopes: "scope".to_owned(),
            subscriptions: "subscriptions".to_owned(),
        }
    }
}

/// One thing wrong with a configuration, located by its path in the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path into the document, e.g. `apis[1].upstream.endpoints[0]`.
    pub path: String,
    /// What is wrong, in words.
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// A configuration that cannot be used, with every problem found.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file, when the configuration came from one.
    pub file: Option<PathBuf>,
    /// Every problem, in document order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.as_deref().map(Path::display);
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match &file {
                Some(file) => write!(f, "{file}: {problem}")?,
                None => write!(f, "{problem}")?,
            }
        }
        Ok(())
    }
}

impl ConfigError {
    fn single(file: &Path, path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { file: Some(file.to_owned()), problems: vec![Problem { path: path.into(), reason: reason.into() }] }
    }
}

/// A configuration read from a file, with the folder its relative paths start from.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The configuration.
    pub config: GatewayConfig,
    /// The folder of the file.
    pub base_dir: PathBuf,
    /// The file.
    pub file: PathBuf,
}

impl LoadedConfig {
    /// Resolve a path from the configuration against the file's folder.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.base_dir.join(path)
    }

    /// The file of a module: its `path`, or its place in the module store.
    pub fn module_file(&self, source: &ModuleSource) -> PathBuf {
        match (&source.path, &source.sha256) {
            (Some(path), _) => self.resolve(path),
            (None, Some(sha256)) => self.resolve(&stored_module_path(sha256)),
            (None, None) => self.resolve(Path::new("modules/(unknown)")),
        }
    }
}

/// Read and parse a YAML (or JSON) configuration file. What it says is checked when a
/// snapshot is built from it.
pub fn load(file: &Path) -> Result<LoadedConfig, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|e| ConfigError::single(file, "(file)", format!("cannot read: {e}")))?;
    let config = parse(&text).map_err(|problem| ConfigError { file: Some(file.to_owned()), problems: vec![problem] })?;
    let base_dir = file.parent().map(Path::to_owned).unwrap_or_default();
    Ok(LoadedConfig { config, base_dir, file: file.to_owned() })
}

/// The version of a configuration: the first 8 bytes of the sha256 of its canonical JSON,
/// in hex. A control plane and the gateways it feeds compute it the same way, so a
/// gateway's acknowledgement names exactly what it runs.
pub fn version(config: &GatewayConfig) -> String {
    use sha2::Digest;
    let canonical = serde_json::to_vec(config).unwrap_or_default();
    let digest = sha2::Sha256::digest(&canonical);
    crate::hex::encode(&digest[..8])
}

/// Parse YAML text; the problem names the path where parsing stopped.
pub fn parse(text: &str) -> Result<GatewayConfig, Problem> {
    let deserializer = serde_norway::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        Problem { path: if path == "." { "(document)".to_owned() } else { path }, reason: inner.to_string() }
    })
}
