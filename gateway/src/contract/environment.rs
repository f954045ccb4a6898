//! The environment document: what a gateway environment runs, as a control plane sends it
//! and as the non-process part of a configuration file says it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::counters::CountersConfig;
use super::defaults;
use super::units::{ByteSize, Duration};

/// What a gateway environment runs: its APIs with their policies, the policy modules by
/// name, the credentials it accepts and the blocking conditions. The wire document a
/// control plane sends, and the part of a configuration file that is not about the process.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Environment {
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
    /// Applications whose tokens issued before a second (Unix time) are refused: one deleted,
    /// or whose subscriptions changed, so that what its tokens say no longer holds.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub revoked_before: BTreeMap<String, u64>,
    /// API keys revoked while their consumer is still listed, by digest (hex, as in
    /// `api_key_hashes`), sorted: refused, and sent to running gateways as revocations
    /// rather than as a new environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked_api_keys: Vec<String>,
    /// Blocking conditions: matching requests are answered 403.
    #[serde(default, skip_serializing_if = "Blocked::is_empty")]
    pub blocked: Blocked,
    /// The networks upstream addresses may be in.
    #[serde(default)]
    pub upstream_networks: UpstreamNetworks,
    /// Where rate counters live: in each gateway (the default), or in a Redis that the
    /// environment's gateways share.
    #[serde(default, skip_serializing_if = "CountersConfig::is_local")]
    pub counters: CountersConfig,
}

impl Environment {
    /// Its version: the first 8 bytes of the sha256 of its canonical JSON, in hex. A control
    /// plane and the gateways it feeds compute it the same way, so a gateway's
    /// acknowledgement names exactly what it runs.
    pub fn version(&self) -> String {
        use sha2::Digest;
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        let digest = sha2::Sha256::digest(&canonical);
        super::hex::encode(&digest[..8])
    }

    /// The version it would have without its revocations (`revoked_tokens`,
    /// `revoked_before`, `revoked_api_keys`): two environments with the same one differ in
    /// revocations only, and a gateway running one takes the other without a rebuild.
    pub fn version_but_revocations(&self) -> String {
        Environment { revoked_tokens: Vec::new(), revoked_before: BTreeMap::new(), revoked_api_keys: Vec::new(), ..self.clone() }.version()
    }
}

/// The networks upstream addresses may be in: an address in an `allow` network is
/// accepted, else one in a `deny` network is refused (an endpoint written as such an IP
/// makes its API fail to load; a host name resolving only to such addresses fails the
/// request with 502), else it is accepted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamNetworks {
    /// Networks allowed even when `deny` lists them (`127.0.0.1`, `10.0.0.0/8`).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Networks refused; by default loopback, link-local and cloud metadata addresses.
    #[serde(default = "denied_upstream_networks")]
    pub deny: Vec<String>,
}

impl Default for UpstreamNetworks {
    fn default() -> Self {
        Self { allow: Vec::new(), deny: denied_upstream_networks() }
    }
}

fn denied_upstream_networks() -> Vec<String> {
    defaults::DENIED_UPSTREAM_NETWORKS.iter().map(|n| (*n).to_owned()).collect()
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

impl RevokedToken {
    /// The order `revoked_tokens` are listed in (by expiry, then `jti`), so that the same
    /// revocations always make the same version.
    pub fn canonical_order(a: &Self, b: &Self) -> std::cmp::Ordering {
        (a.expires_at, &a.jti).cmp(&(b.expires_at, &b.jti))
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

impl ModuleSource {
    /// Its file: `path` relative to `base_dir`, or its place in the module store there.
    pub fn file(&self, base_dir: &Path) -> PathBuf {
        match (&self.path, &self.sha256) {
            (Some(path), _) => base_dir.join(path),
            (None, Some(sha256)) => base_dir.join(stored_module_path(sha256)),
            (None, None) => base_dir.join("modules/(unknown)"),
        }
    }
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

impl OperationConfig {
    /// How policies know the operation a request was routed to (`GET /pets/{id}`), and how
    /// a control plane names it in a policy's configuration (key-auth's `operation_scopes`).
    pub fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
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
    /// PEM CA certificates that `https://` endpoints' certificates must chain to (or the
    /// endpoint's own certificate, pinned), instead of the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// The client certificate presented to `https://` endpoints that ask for one (mutual
    /// TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<ClientCertificate>,
}

/// A client certificate and its private key, in PEM.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct ClientCertificate {
    /// The certificate, then any intermediates.
    pub certificate: String,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
}

impl std::fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertificate").field("certificate", &self.certificate).field("key", &"(hidden)").finish()
    }
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
    /// Client certificates (mutual TLS on a listener with `client_ca`) that identify this
    /// consumer, as the hex sha256 of their DER (what `openssl x509 -noout -fingerprint
    /// -sha256` prints, without the colons).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_certificates: Vec<String>,
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
    /// The header `typ` tokens must have, e.g. `at+jwt` (RFC 9068 access tokens; compared
    /// without case, with or without `application/`), so that another kind of JWT signed
    /// with the same keys (an ID token) is not taken for an access token. Any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    /// Whether tokens must carry a `jti`: one without could not be revoked.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_jti: bool,
    /// An OpenID provider's: its keys (and introspection endpoint) fetched by the gateway
    /// from `{issuer}/.well-known/openid-configuration`, instead of configured keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<Discovery>,
    /// The applications of the issuer's OAuth2 clients, by client id (the claim the
    /// `claims.application` mapping names): a token of a client not listed is refused, and
    /// one of a listed client acts for its application, at its tier, with its subscriptions.
    /// Absent, the claims say who calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<BTreeMap<String, ClientApplication>>,
}

/// How a gateway keeps up with an OpenID provider (RFC 8414 / OpenID Connect Discovery).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Discovery {
    /// How often the keys are fetched again; kept as they were while the provider does
    /// not answer.
    #[serde(default = "default_keys_refresh")]
    pub refresh: Duration,
    /// A token naming a `kid` the gateway does not know makes it fetch the keys at once, at
    /// most once per this interval.
    #[serde(default = "default_unknown_kid_interval")]
    pub unknown_kid_interval: Duration,
    /// CA certificates (PEM) the provider's TLS certificate is verified against; the
    /// system's roots when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// Opaque (non-JWT) tokens are asked about at the provider's introspection endpoint
    /// (RFC 7662) with these credentials; without it, only JWTs are accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub introspection: Option<Introspection>,
}

impl Default for Discovery {
    fn default() -> Self {
        Self { refresh: default_keys_refresh(), unknown_kid_interval: default_unknown_kid_interval(), ca: None, introspection: None }
    }
}

fn default_keys_refresh() -> Duration {
    Duration(defaults::PROVIDER_KEYS_REFRESH)
}

fn default_unknown_kid_interval() -> Duration {
    Duration(defaults::PROVIDER_UNKNOWN_KID_INTERVAL)
}

/// The gateway's credentials at a provider's introspection endpoint, and how long an
/// answer is kept.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Introspection {
    /// The gateway's client id at the provider.
    pub client_id: String,
    /// Its secret (`client_secret_basic`).
    pub client_secret: String,
    /// How long an answer is used before the provider is asked again: a token revoked at
    /// the provider is refused within this time. An active token's answer is used past it,
    /// until the token expires, only while the provider does not answer.
    #[serde(default = "default_introspection_ttl")]
    pub cache_ttl: Duration,
}

impl std::fmt::Debug for Introspection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspection")
            .field("client_id", &self.client_id)
            .field("client_secret", &"(hidden)")
            .field("cache_ttl", &self.cache_ttl)
            .finish()
    }
}

fn default_introspection_ttl() -> Duration {
    Duration(defaults::INTROSPECTION_CACHE_TTL)
}

/// The application an OAuth2 client of an outside provider belongs to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientApplication {
    /// The application.
    pub application: String,
    /// Its throttling tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Who acts when the token names no end user: the application's owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The APIs it may call (`name@version` → subscription tier).
    #[serde(default)]
    pub subscriptions: BTreeMap<String, String>,
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
