//! The fixture file `portico policy test` reads (YAML, or JSON, which is YAML too): the
//! policy's configuration, the host services mocked (API keys, JWTs, rate counters, the
//! clock), and cases of a request in with what should come out. `docs/policies.md` shows
//! the format; unknown fields are refused, with their path.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use anyhow::Context as _;
use portico_gateway::contract::units::{ByteSize, Duration};
use serde::{Deserialize, Deserializer};

/// A whole fixture file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixtures {
    /// The name the policy is tested under (default: the project's or the file's).
    #[serde(default)]
    pub policy: Option<String>,
    /// The configuration of every case that gives none (default `{}`).
    #[serde(default = "empty_object")]
    pub config: serde_json::Value,
    /// CPU budget of one call (default 50ms, as in a gateway).
    #[serde(default)]
    pub timeout: Option<Duration>,
    /// Memory limit of one instance (default 64MiB, as in a gateway).
    #[serde(default)]
    pub memory: Option<ByteSize>,
    /// Where the requests are routed (the context's API, version and operation).
    #[serde(default)]
    pub route: Route,
    /// Host services for every case; a case's own `mocks` add to these.
    #[serde(default)]
    pub mocks: Mocks,
    /// The cases, run in order.
    pub cases: Vec<Case>,
}

impl Fixtures {
    /// Read and parse a fixture file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read fixtures {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("fixtures {}", path.display()))
    }

    /// Parse fixtures from text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let deserializer = serde_norway::Deserializer::from_str(text);
        serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let path = error.path().to_string();
            anyhow::anyhow!("at `{path}`: {}", error.into_inner())
        })
    }
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// Where a request was routed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The API's name.
    #[serde(default = "default_api")]
    pub api: String,
    /// The API's version.
    #[serde(default = "default_version")]
    pub version: String,
    /// The operation, `METHOD /template` (default: the request's method and path).
    #[serde(default)]
    pub operation: Option<String>,
}

impl Default for Route {
    fn default() -> Self {
        Self { api: default_api(), version: default_version(), operation: None }
    }
}

fn default_api() -> String {
    "api".to_owned()
}

fn default_version() -> String {
    "v1".to_owned()
}

/// The host services as a fixture sets them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mocks {
    /// What `clock.now-ms` answers (default 1704067200000, 2024-01-01T00:00:00Z);
    /// `monotonic-ns` answers the same instant in nanoseconds.
    #[serde(default)]
    pub clock_ms: Option<u64>,
    /// API keys `keys.lookup-api-key` knows, with the identity of their holder; any other
    /// key is `unknown`.
    #[serde(default)]
    pub api_keys: BTreeMap<String, Identity>,
    /// Client certificates `keys.lookup-client-certificate` knows, by sha256 (hex), with the
    /// identity of the application that registered them; any other is `unknown`.
    #[serde(default)]
    pub client_certificates: BTreeMap<String, Identity>,
    /// JWTs `keys.verify-jwt` knows: a verified token, or `{error: …}`; any other token is
    /// `unknown`.
    #[serde(default)]
    pub jwts: BTreeMap<String, Jwt>,
    /// Pinned answers of `counters.hit` by key; other keys are counted for real (a sliding
    /// window at the fixture's clock, fresh for each case).
    #[serde(default)]
    pub counters: BTreeMap<String, PinnedHit>,
}

impl Mocks {
    /// These mocks with `case`'s added (a case's entry wins over the file's).
    pub fn merged(&self, case: &Mocks) -> Mocks {
        let mut merged = self.clone();
        merged.clock_ms = case.clock_ms.or(self.clock_ms);
        merged.api_keys.extend(case.api_keys.clone());
        merged.client_certificates.extend(case.client_certificates.clone());
        merged.jwts.extend(case.jwts.clone());
        merged.counters.extend(case.counters.clone());
        merged
    }
}

/// A caller's identity (the WIT `identity` record).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// `api-key`, `jwt` or a custom method (default: `api-key` for API keys and requests,
    /// `jwt` for tokens).
    #[serde(default)]
    pub method: Option<String>,
    /// The application.
    #[serde(default)]
    pub application: Option<String>,
    /// The subscription.
    #[serde(default)]
    pub subscription: Option<String>,
    /// The tier.
    #[serde(default)]
    pub tier: Option<String>,
    /// The end user.
    #[serde(default)]
    pub user: Option<String>,
    /// OAuth2 scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// A JWT as `keys.verify-jwt` sees it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jwt {
    /// Refuse the token with this error instead.
    #[serde(default)]
    pub error: Option<KeyError>,
    /// `iss` (default `https://issuer.test`).
    #[serde(default)]
    pub issuer: Option<String>,
    /// `sub`.
    #[serde(default)]
    pub subject: Option<String>,
    /// `exp` in Unix seconds (default: an hour after the fixture's clock).
    #[serde(default)]
    pub expires_at: Option<u64>,
    /// The caller the token maps to.
    #[serde(default)]
    pub identity: Identity,
    /// The whole payload (default `{}`).
    #[serde(default)]
    pub claims: Option<serde_json::Value>,
}

/// Why a mocked credential is refused (the WIT `key-error`): `unknown`, `expired`,
/// `not_yet_valid`, `revoked`, or `{bad_signature: why}`, `{invalid_claims: why}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "KeyErrorForm")]
pub enum KeyError {
    /// Not known.
    Unknown,
    /// The signature does not verify.
    BadSignature(String),
    /// Expired.
    Expired,
    /// Not yet valid.
    NotYetValid,
    /// Claims refused.
    InvalidClaims(String),
    /// Revoked.
    Revoked,
}

/// How a fixture writes a [`KeyError`]: a name, or a one-entry map of a name to a detail.
#[derive(Deserialize)]
#[serde(untagged)]
enum KeyErrorForm {
    Name(String),
    WithDetail(BTreeMap<String, String>),
}

impl TryFrom<KeyErrorForm> for KeyError {
    type Error = String;

    fn try_from(form: KeyErrorForm) -> Result<Self, String> {
        let (name, detail) = match form {
            KeyErrorForm::Name(name) => (name, String::new()),
            KeyErrorForm::WithDetail(map) if map.len() == 1 => map.into_iter().next().unwrap_or_default(),
            KeyErrorForm::WithDetail(_) => return Err("a key error is a name or a map of one name to a detail".to_owned()),
        };
        Ok(match name.as_str() {
            "unknown" => KeyError::Unknown,
            "expired" => KeyError::Expired,
            "not_yet_valid" => KeyError::NotYetValid,
            "revoked" => KeyError::Revoked,
            "bad_signature" => KeyError::BadSignature(detail),
            "invalid_claims" => KeyError::InvalidClaims(detail),
            other => {
                return Err(format!(
                    "unknown key error `{other}`: expected unknown, expired, not_yet_valid, revoked, bad_signature or invalid_claims"
                ));
            }
        })
    }
}

/// A pinned answer of `counters.hit` (its `limit` is the one the policy asked for).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedHit {
    /// Whether the hit is allowed.
    pub allowed: bool,
    /// Units left in the window.
    #[serde(default)]
    pub remaining: u64,
    /// Milliseconds until the window is whole again.
    #[serde(default)]
    pub reset_ms: u64,
    /// Milliseconds until a refused hit could fit.
    #[serde(default)]
    pub retry_after_ms: u64,
}

/// One case: a request in, what should come out.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// What the case shows, printed with its outcome.
    pub name: String,
    /// This case's configuration, instead of the file's.
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    /// This case's route, instead of the file's.
    #[serde(default)]
    pub route: Option<Route>,
    /// Mocks added to the file's for this case.
    #[serde(default)]
    pub mocks: Mocks,
    /// The client's request.
    #[serde(default)]
    pub request: RequestFixture,
    /// What the upstream answers when the request is forwarded (default: 200, no body).
    #[serde(default)]
    pub upstream: UpstreamFixture,
    /// What should come out.
    #[serde(default)]
    pub expect: Expect,
}

/// Header values: one, or several in order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum HeaderValues {
    /// One value.
    One(String),
    /// Several values, in order.
    Many(Vec<String>),
}

impl HeaderValues {
    /// The values, in order.
    pub fn values(&self) -> Vec<&str> {
        match self {
            HeaderValues::One(value) => vec![value.as_str()],
            HeaderValues::Many(values) => values.iter().map(String::as_str).collect(),
        }
    }
}

/// The client's request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestFixture {
    /// The method (default `GET`).
    #[serde(default = "default_method")]
    pub method: String,
    /// The path, as routed (default `/`).
    #[serde(default = "default_path")]
    pub path: String,
    /// The query string, without `?`.
    #[serde(default)]
    pub query: Option<String>,
    /// Headers by name.
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderValues>,
    /// The body as text.
    #[serde(default)]
    pub body: Option<String>,
    /// The body as JSON (sets `content-type: application/json` unless a header says otherwise).
    #[serde(default)]
    pub json: Option<serde_json::Value>,
    /// The client's address (default 127.0.0.1).
    #[serde(default)]
    pub client_addr: Option<IpAddr>,
    /// The sha256 (hex) of the client's TLS certificate, for a client that presented one.
    #[serde(default)]
    pub client_certificate: Option<String>,
    /// The caller, as an earlier policy (`key-auth`) authenticated it.
    #[serde(default)]
    pub identity: Option<Identity>,
    /// Attributes set by earlier policies.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

impl Default for RequestFixture {
    fn default() -> Self {
        Self {
            method: default_method(),
            path: default_path(),
            query: None,
            headers: BTreeMap::new(),
            body: None,
            json: None,
            client_addr: None,
            client_certificate: None,
            identity: None,
            attributes: BTreeMap::new(),
        }
    }
}

fn default_method() -> String {
    "GET".to_owned()
}

fn default_path() -> String {
    "/".to_owned()
}

/// The upstream's response.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFixture {
    /// Status (default 200).
    #[serde(default = "default_status")]
    pub status: u16,
    /// Headers by name.
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderValues>,
    /// The body as text.
    #[serde(default)]
    pub body: Option<String>,
    /// The body as JSON (sets `content-type: application/json` unless a header says otherwise).
    #[serde(default)]
    pub json: Option<serde_json::Value>,
}

impl Default for UpstreamFixture {
    fn default() -> Self {
        Self { status: default_status(), headers: BTreeMap::new(), body: None, json: None }
    }
}

fn default_status() -> u16 {
    200
}

/// What the request phase decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// Forward to the upstream.
    Continue,
    /// Answer the client at once.
    Respond,
}

/// What should come out of a case. Only what is given is checked.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The request phase's decision.
    #[serde(default)]
    pub decision: Option<DecisionKind>,
    /// The status the client gets.
    #[serde(default)]
    pub status: Option<u16>,
    /// Headers the client gets; `null` means absent. Others are not checked.
    #[serde(default)]
    pub headers: BTreeMap<String, Option<HeaderValues>>,
    /// The body the client gets, exactly.
    #[serde(default)]
    pub body: Option<String>,
    /// The body the client gets, as JSON (compared as JSON).
    #[serde(default)]
    pub json: Option<serde_json::Value>,
    /// Text the client's body contains.
    #[serde(default)]
    pub body_contains: Option<String>,
    /// The request as the upstream sees it (the case fails if it was not forwarded).
    #[serde(default)]
    pub upstream: Option<ExpectUpstream>,
    /// The caller in the context after the request phase; `null` means none.
    #[serde(default, deserialize_with = "present")]
    pub identity: Option<Option<Identity>>,
    /// Context attributes after the request phase; `null` means unset.
    #[serde(default)]
    pub attributes: BTreeMap<String, Option<String>>,
    /// The `counters.hit` calls made, in order.
    #[serde(default)]
    pub hits: Option<Vec<ExpectHit>>,
    /// Text of the failure expected instead of an outcome: `init` refusing the
    /// configuration, or a trap, deadline or memory overrun.
    #[serde(default)]
    pub failure: Option<String>,
}

/// The request as the upstream should see it. Only what is given is checked.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectUpstream {
    /// The method.
    #[serde(default)]
    pub method: Option<String>,
    /// The path.
    #[serde(default)]
    pub path: Option<String>,
    /// The query; `null` means none.
    #[serde(default, deserialize_with = "present")]
    pub query: Option<Option<String>>,
    /// Headers; `null` means absent. Others are not checked.
    #[serde(default)]
    pub headers: BTreeMap<String, Option<HeaderValues>>,
    /// The body, exactly.
    #[serde(default)]
    pub body: Option<String>,
    /// The body as JSON.
    #[serde(default)]
    pub json: Option<serde_json::Value>,
}

/// One expected `counters.hit`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectHit {
    /// The counter's key.
    pub key: String,
    /// The limit asked for.
    #[serde(default)]
    pub limit: Option<u64>,
    /// The window asked for, in milliseconds.
    #[serde(default)]
    pub window_ms: Option<u64>,
    /// The cost asked for.
    #[serde(default)]
    pub cost: Option<u32>,
}

/// A field that may be given as `null`: absent is `None`, `null` is `Some(None)`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_case_parses() {
        let fixtures = Fixtures::parse(
            r#"
config: {header: x-tenant}
mocks:
  clock_ms: 1000
  api_keys: {k1: {application: shop, tier: Gold}}
  jwts:
    good: {issuer: "https://idp", identity: {application: app}, claims: {scope: read}}
    old: {error: expired}
    forged: {error: {bad_signature: "wrong key"}}
  counters: {"shop": {allowed: false, retry_after_ms: 900}}
cases:
  - name: with a tenant
    request:
      method: POST
      path: /orders
      headers: {x-tenant: acme, accept: [a, b]}
      json: {sku: A-1}
      identity: {application: shop}
    upstream: {status: 201, json: {id: 7}}
    expect:
      decision: continue
      status: 201
      headers: {x-upstream: null, x-tenant: acme}
      upstream: {headers: {x-tenant: acme}, query: null}
      identity: null
      hits: [{key: shop, limit: 3}]
"#,
        )
        .unwrap();
        let case = &fixtures.cases[0];
        assert_eq!(case.request.headers["accept"].values(), vec!["a", "b"]);
        assert_eq!(case.expect.headers["x-upstream"], None);
        assert_eq!(case.expect.identity, Some(None));
        assert_eq!(case.expect.upstream.as_ref().unwrap().query, Some(None));
        assert!(matches!(fixtures.mocks.jwts["forged"].error, Some(KeyError::BadSignature(_))));
        assert!(matches!(fixtures.mocks.jwts["old"].error, Some(KeyError::Expired)));
    }

    #[test]
    fn unknown_fields_are_refused_with_their_path() {
        let error = Fixtures::parse("cases:\n  - name: x\n    expect: {stauts: 200}\n").unwrap_err();
        let text = format!("{error:#}");
        assert!(text.contains("cases[0].expect"), "{text}");
        assert!(text.contains("stauts"), "{text}");
    }
}
