//! What a control plane checks with the gateway's own code before it accepts a change, so
//! that whatever it accepts, its gateways serve: operations compile with the gateway's
//! router, contexts are paths it normalises to themselves, endpoints parse as its upstreams
//! do, networks as its blocking does, and policy components fit the world and accept their
//! configuration in their own `init`. The rest of the gateway is not the control plane's.

use std::path::Path;
use std::sync::Arc;

pub use crate::policy::builtin::{self, Builtin};
pub use crate::policy::{CompiledPolicy, LoadError, MAX_COMPONENT_BYTES, PolicyCeilings, WIT_PACKAGE};

use crate::contract::Problem;
use crate::contract::environment::UpstreamNetworks;
use crate::contract::environment::{Attachment, ClientCertificate, Environment, JwtIssuer};
use crate::counters::LocalCounters;
use crate::keys::{KeyStore, Providers};
use crate::metrics::PolicyStats;
use crate::network::{Network, UpstreamRule};
use crate::policy::{AttachmentSettings, PolicyEngine, Services};
use crate::router::{ApiRoutes, OperationRoute, RouteError, RouteTable, normalize_path};

/// The problems a gateway would find in a JWT issuer's settings (located as in an
/// environment whose only issuer it is: `jwt_issuers[0]...`); nothing is fetched.
pub fn jwt_issuer(issuer: &JwtIssuer) -> Vec<Problem> {
    let environment = Environment { jwt_issuers: vec![issuer.clone()], ..Environment::default() };
    KeyStore::for_gateway(&environment, Path::new("."), &Providers::checking_only()).err().unwrap_or_default()
}

/// Whether the OpenID provider of `issuer` (its discovery settings) takes `client_id` and
/// `client_secret` as the credentials of one of its clients: proof that whoever gives them
/// holds that client. Asks the provider's token endpoint.
pub async fn openid_client(issuer: &JwtIssuer, client_id: &str, client_secret: &str) -> Result<bool, String> {
    let discovery = issuer.discovery.clone().unwrap_or_default();
    let provider = crate::keys::Provider::new(&issuer.issuer, &discovery, &[])?;
    provider.accepts_client(client_id, client_secret).await
}

/// Whether `url` is an upstream endpoint the gateway can call; the reason when not.
pub fn endpoint(url: &str) -> Result<(), String> {
    crate::upstream::parse_endpoint(url).map(|_| ())
}

/// Whether `pem` holds CA certificates an upstream's certificate can be verified against;
/// the reason when not.
pub fn upstream_ca(pem: &str) -> Result<(), String> {
    crate::tls::client_config(crate::tls::Trust::Pem(pem)).map(drop)
}

/// The DER of the one certificate in `pem` (no key, no chain), parsed as a mutual-TLS
/// listener parses a client's; the reason says what is wrong. Listeners and consumers know
/// it by [`crate::contract::hex::sha256`] of this DER.
pub fn client_certificate(pem: &str) -> Result<Vec<u8>, String> {
    crate::tls::client_certificate(pem).map(|der| der.as_ref().to_vec())
}

/// Whether `signature` over `message` was made with the private key of certificate `der`:
/// a proof that whoever registers a certificate holds its key.
pub fn signed_with_key_of(der: &[u8], message: &[u8], signature: &[u8]) -> bool {
    crate::tls::signed_with_key_of(der, message, signature)
}

/// Whether an upstream client certificate can be presented: both parse, and the key is
/// the certificate's. The reason names the part (`key: ...`).
pub fn upstream_client_certificate(certificate: &ClientCertificate) -> Result<(), String> {
    crate::tls::client_config_presenting_nothing_trusted(certificate).map(drop)
}

/// Whether `networks` parse as the gateway's upstream rule; the reason names the entry
/// (`allow[1]: ...`).
pub fn upstream_networks(networks: &UpstreamNetworks) -> Result<(), String> {
    UpstreamRule::new(networks).map(drop)
}

/// Whether an environment with `networks` calls `endpoint`: an endpoint written as an IP
/// address is checked here, as the gateway checks it when it loads the API (a host name is
/// checked by each gateway as it resolves it).
pub fn upstream_allowed(networks: &UpstreamNetworks, endpoint: &str) -> Result<(), String> {
    match crate::upstream::literal_address(endpoint) {
        Some(ip) => UpstreamRule::new(networks)?.check(ip),
        None => Ok(()),
    }
}

/// Whether `text` is an IP address or a network (`198.51.100.0/24`) blocking can match.
pub fn network(text: &str) -> Result<(), String> {
    Network::parse(text).map(|_| ())
}

/// Whether `path` is what the gateway makes of it: no empty, `.` or `..` segments, no
/// spaces, percent-escapes in upper case.
pub fn is_normalised(path: &str) -> bool {
    normalize_path(path).is_ok_and(|normal| normal == path)
}

/// Why a list of operations does not route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteProblem {
    /// Operation `index`'s path is not a template.
    InvalidTemplate {
        /// Which operation.
        index: usize,
        /// Why.
        reason: String,
    },
    /// Operation `index` is the same route as an earlier one.
    Repeated {
        /// Which operation.
        index: usize,
    },
}

/// Compile `operations` (method, or `None` for any; path template) into the gateway's
/// route table, as one API would: the first that does not route, and why.
pub fn operations(operations: &[(Option<http::Method>, &str)]) -> Result<(), RouteProblem> {
    let compile = |operations: &[(Option<http::Method>, &str)]| {
        let routes = operations
            .iter()
            .enumerate()
            .map(|(i, (method, template))| OperationRoute { method: method.clone(), template: (*template).to_owned(), value: i })
            .collect();
        RouteTable::new(vec![ApiRoutes { hosts: Vec::new(), context: "/".to_owned(), operations: routes }]).map(|_| ())
    };
    for (index, operation) in operations.iter().enumerate() {
        if let Err(error) = compile(std::slice::from_ref(operation)) {
            let reason = match error {
                RouteError::InvalidTemplate { reason, .. } => reason.to_string(),
                other => other.to_string(),
            };
            return Err(RouteProblem::InvalidTemplate { index, reason });
        }
    }
    if compile(operations).is_err() {
        // Each compiles alone: only a repeated route is left. Name the first that repeats.
        let index = (1..operations.len()).find(|&n| compile(&operations[..=n]).is_err()).unwrap_or(0);
        return Err(RouteProblem::Repeated { index });
    }
    Ok(())
}

/// Compiles policy components and runs their `init` on a configuration, as a gateway
/// does when it loads an attachment, with no credentials and no counters behind it.
pub struct PolicyChecker {
    engine: PolicyEngine,
    services: Arc<Services>,
}

impl PolicyChecker {
    /// A checker with its own engine (and epoch ticker).
    pub fn new() -> anyhow::Result<Self> {
        let keys = KeyStore::from_config(&[], &[], Path::new(".")).map_err(|_| anyhow::anyhow!("an empty key store"))?;
        let services = Arc::new(Services { keys: Arc::new(keys), counters: Arc::new(LocalCounters::new()) });
        Ok(Self { engine: PolicyEngine::new()?, services })
    }

    /// Compile a component under `name` and check it against the world (kept by digest:
    /// the second call is free). Slow: call it off the async threads.
    pub fn compile(&self, name: &str, component: &[u8]) -> Result<Arc<CompiledPolicy>, LoadError> {
        self.engine.compile(name, component, None)
    }

    /// The component compiled earlier with this sha256, if it still is.
    pub fn cached(&self, digest: &str) -> Option<Arc<CompiledPolicy>> {
        self.engine.cached(digest)
    }

    /// Attach the policy as a gateway under `ceilings` would (`attachment.policy` is not
    /// read: `policy` is what it names): within its `timeout` and `memory`, run its `init`
    /// on its configuration. A refusal is [`LoadError::Config`]. Slow: call it off the async
    /// threads.
    pub fn init(&self, policy: Arc<CompiledPolicy>, attachment: &Attachment, ceilings: &PolicyCeilings) -> Result<(), LoadError> {
        let settings = AttachmentSettings::new(attachment, ceilings);
        self.engine.attach(policy, settings, self.services.clone(), Arc::new(PolicyStats::default())).map(|_| ())
    }
}

/// A connector for `http://` and `https://` URLs (trusting the system's roots) that reaches
/// only the addresses `networks` accept, host names checked as they resolve, as a gateway
/// reaches its upstreams: what a control plane fetches for a publisher goes through it
/// (with [`upstream_allowed`] for a URL written with an IP address).
pub fn upstream_connector(
    networks: &UpstreamNetworks,
    connect_timeout: std::time::Duration,
) -> Result<impl hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static, String> {
    let rule = Arc::new(UpstreamRule::new(networks)?);
    let trust = crate::tls::client_config(crate::tls::Trust::System).ok();
    crate::tls::connector(trust, connect_timeout, crate::upstream::CheckedResolver::new(rule))
}

/// Whether the gateways' blocking conditions refuse requests from `ip` (as they match it).
pub fn client_blocked(blocked: &crate::contract::environment::Blocked, ip: std::net::IpAddr) -> bool {
    crate::blocking::Blocking::new(blocked).client_blocked(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_name_the_first_that_does_not_route() {
        assert_eq!(operations(&[(Some(http::Method::GET), "/a"), (None, "/b/{id}")]), Ok(()));
        assert!(matches!(operations(&[(None, "/a"), (None, "/b/{")]), Err(RouteProblem::InvalidTemplate { index: 1, .. })));
        assert_eq!(operations(&[(None, "/a"), (None, "/b"), (None, "/a")]), Err(RouteProblem::Repeated { index: 2 }));
        assert!(is_normalised("/pets") && !is_normalised("/a//b") && !is_normalised("/a/../b"));
        assert!(endpoint("http://127.0.0.1:9/").is_ok() && endpoint("nope").is_err());
        assert!(network("198.51.100.0/24").is_ok() && network("10.0.0.0/99").is_err());
    }
}
