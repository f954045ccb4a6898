//! TLS with rustls, both ways: what a listener serves (certificates from PEM files, chosen
//! by SNI) and what a client trusts (a CA bundle, or the system's roots) when it calls a
//! control plane or an upstream over `https://`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::contract::Problem;
use crate::contract::environment::ClientCertificate;
use crate::settings::{CertificateConfig, TlsConfig};

/// How often certificate files are checked for a change.
const CERTIFICATE_CHECK: Duration = Duration::from_secs(2);

/// The algorithms a proof of possession may be signed with (as TLS 1.2 and 1.3 clients sign).
const POSSESSION_ALGORITHMS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
    webpki::aws_lc_rs::ECDSA_P256_SHA256,
    webpki::aws_lc_rs::ECDSA_P256_SHA384,
    webpki::aws_lc_rs::ECDSA_P384_SHA256,
    webpki::aws_lc_rs::ECDSA_P384_SHA384,
    webpki::aws_lc_rs::ED25519,
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA384,
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA512,
    webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
    webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
];

/// The one certificate of a PEM text (an application's client certificate) as DER, parsed
/// as a listener's verifier parses a client's; the error says what is wrong.
pub(crate) fn client_certificate(pem: &str) -> Result<CertificateDer<'static>, String> {
    if pem.contains("PRIVATE KEY-----") {
        return Err("holds a private key: give the certificate only, and keep its key with the client".to_owned());
    }
    let mut certificates = CertificateDer::pem_slice_iter(pem.as_bytes());
    let first = match certificates.next() {
        Some(Ok(certificate)) => certificate,
        Some(Err(error)) => return Err(format!("not a PEM certificate: {error}")),
        None => return Err("no PEM certificate (`-----BEGIN CERTIFICATE-----`) found".to_owned()),
    };
    if certificates.next().is_some() {
        return Err("holds more than one certificate: give the client's own certificate only".to_owned());
    }
    webpki::EndEntityCert::try_from(&first).map_err(|error| format!("not a usable X.509 certificate: {error}"))?;
    Ok(first)
}

/// Whether `signature` over `message` verifies with the public key of certificate `der`,
/// by one of [`POSSESSION_ALGORITHMS`].
pub(crate) fn signed_with_key_of(der: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let der = CertificateDer::from(der);
    let Ok(certificate) = webpki::EndEntityCert::try_from(&der) else { return false };
    POSSESSION_ALGORITHMS.iter().any(|algorithm| certificate.verify_signature(*algorithm, message, signature).is_ok())
}

/// The rustls configuration of a TLS listener (HTTP/2 and HTTP/1.1 by ALPN, the
/// certificate by SNI); paths are relative to `base_dir`, problems are located at `at`.
/// The files are read once: [`serve_config`] is the one that follows them.
pub fn server_config(tls: &TlsConfig, base_dir: &Path, at: &str) -> Result<Arc<ServerConfig>, Problem> {
    with_resolver(tls, base_dir, Arc::new(sni_resolver(tls, base_dir, at)?), at)
}

/// A serving listener's TLS configuration, following its files: the certificates, their
/// keys and the client CA are checked every few seconds, and the configuration is built
/// again when one changes (a renewal or a new client CA takes effect without a restart, for
/// new connections). Files that cannot be used are logged and the configuration in use kept.
pub struct ServedTls {
    current: ArcSwap<ServerConfig>,
}

impl ServedTls {
    /// What accepts the next connection, with the configuration in force now.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }
}

/// [`server_config`] for a listener that serves: a [`ServedTls`] that follows the files.
/// Needs a Tokio runtime; the check stops when the result is dropped.
pub fn serve_config(tls: &TlsConfig, base_dir: &Path, at: &str) -> Result<Arc<ServedTls>, Problem> {
    let served = Arc::new(ServedTls { current: ArcSwap::new(server_config(tls, base_dir, at)?) });
    let weak = Arc::downgrade(&served);
    let (tls, base_dir, at) = (tls.clone(), base_dir.to_owned(), at.to_owned());
    tokio::spawn(async move {
        let mut seen = stamps(&tls, &base_dir);
        loop {
            tokio::time::sleep(CERTIFICATE_CHECK).await;
            let Some(served) = weak.upgrade() else { return };
            let now = stamps(&tls, &base_dir);
            if now == seen {
                continue;
            }
            seen = now;
            match server_config(&tls, &base_dir, &at) {
                Ok(config) => {
                    served.current.store(config);
                    tracing::info!(at, "certificates reloaded");
                }
                Err(problem) => {
                    tracing::error!(%problem, "certificate files changed but cannot be used; the previous ones are kept")
                }
            }
        }
    });
    Ok(served)
}

fn with_resolver(tls: &TlsConfig, base_dir: &Path, resolver: Arc<dyn ResolvesServerCert>, at: &str) -> Result<Arc<ServerConfig>, Problem> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Problem { path: at.to_owned(), reason: e.to_string() })?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(file) => {
            let problem = |reason: String| Problem { path: format!("{at}.client_ca"), reason };
            let path = base_dir.join(file);
            let pem = std::fs::read(&path).map_err(|e| problem(format!("cannot read CA certificates from {}: {e}", path.display())))?;
            let roots = roots(&pem).map_err(|e| problem(format!("{}: {e}", path.display())))?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if tls.client_certificate_optional { verifier.allow_unauthenticated() } else { verifier };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| problem(e.to_string()))?)
        }
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn sni_resolver(tls: &TlsConfig, base_dir: &Path, at: &str) -> Result<SniResolver, Problem> {
    let mut resolver = SniResolver { default: None, by_name: HashMap::new() };
    for (i, certificate) in tls.certificates.iter().enumerate() {
        let key = certified_key(certificate, base_dir).map_err(|reason| Problem { path: format!("{at}.certificates[{i}]"), reason })?;
        for name in &certificate.server_names {
            resolver.by_name.insert(name.to_ascii_lowercase(), key.clone());
        }
        resolver.default.get_or_insert(key);
    }
    if resolver.default.is_none() {
        return Err(Problem { path: format!("{at}.certificates"), reason: "at least one certificate is needed".into() });
    }
    Ok(resolver)
}

/// What tells one version of the certificate files from the next: each file's modification
/// time and length (`None` for a file that cannot be read now).
fn stamps(tls: &TlsConfig, base_dir: &Path) -> Vec<Option<(std::time::SystemTime, u64)>> {
    let stamp = |path: &Path| std::fs::metadata(base_dir.join(path)).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
    let certificates = tls.certificates.iter().flat_map(|c| [stamp(&c.cert), stamp(&c.key)]);
    certificates.chain(tls.client_ca.as_deref().map(stamp)).collect()
}

fn certified_key(certificate: &CertificateConfig, base_dir: &Path) -> Result<Arc<CertifiedKey>, String> {
    let (chain, key) = chain_and_key(certificate, base_dir)?;
    let key_path = base_dir.join(&certificate.key);
    let signing_key = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key).map_err(|e| format!("{}: {e}", key_path.display()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified
        .keys_match()
        .map_err(|e| format!("{} does not match {}: {e}", key_path.display(), base_dir.join(&certificate.cert).display()))?;
    Ok(Arc::new(certified))
}

/// The certificate chain and private key of PEM files.
fn chain_and_key(
    certificate: &CertificateConfig,
    base_dir: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let cert_path = base_dir.join(&certificate.cert);
    let key_path = base_dir.join(&certificate.key);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| format!("cannot read certificates from {}: {e}", cert_path.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no certificate", cert_path.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| format!("cannot read a private key from {}: {e}", key_path.display()))?;
    Ok((chain, key))
}

/// Picks the certificate by SNI; the first certificate is the default.
#[derive(Debug)]
struct SniResolver {
    default: Option<Arc<CertifiedKey>>,
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        hello.server_name().and_then(|name| self.by_name.get(&name.to_ascii_lowercase())).or(self.default.as_ref()).cloned()
    }
}

/// What a client trusts to verify a server's certificate.
#[derive(Debug, Clone, Copy)]
pub enum Trust<'a> {
    /// The CA certificates of a PEM file (a bundle, or the server's own certificate to pin it).
    File(&'a Path),
    /// The CA certificates of PEM text.
    Pem(&'a str),
    /// The system's roots.
    System,
}

/// [`client_config`] that also presents a certificate (PEM files of a chain and its key)
/// to servers that ask for one (mutual TLS).
pub fn client_config_with_certificate(trust: Trust<'_>, certificate: &CertificateConfig) -> Result<ClientConfig, String> {
    let identity = chain_and_key(certificate, Path::new("."))?;
    presenting(trusted_roots(trust)?, Some(identity)).map_err(|e| format!("{}: {e}", certificate.key.display()))
}

/// [`client_config`] that presents `certificate` (PEM text) to servers that ask for one,
/// when there is one: an API's upstream client.
pub fn client_config_presenting(trust: Trust<'_>, certificate: Option<&ClientCertificate>) -> Result<ClientConfig, String> {
    let identity = certificate.map(pem_chain_and_key).transpose()?;
    presenting(trusted_roots(trust)?, identity)
}

/// A client configuration presenting `certificate` and trusting nothing: to check the
/// certificate alone.
pub(crate) fn client_config_presenting_nothing_trusted(certificate: &ClientCertificate) -> Result<ClientConfig, String> {
    presenting(RootCertStore::empty(), Some(pem_chain_and_key(certificate)?))
}

/// The chain and key of a client certificate in PEM text; an error says which is wrong.
fn pem_chain_and_key(certificate: &ClientCertificate) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(certificate.certificate.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate: not PEM certificates: {e}"))?;
    if chain.is_empty() {
        return Err("certificate: no certificate in it".into());
    }
    let key = PrivateKeyDer::from_pem_slice(certificate.key.as_bytes()).map_err(|e| format!("key: not a PEM private key: {e}"))?;
    Ok((chain, key))
}

/// A client configuration that trusts what `trust` names; an error when that is nothing
/// usable.
pub fn client_config(trust: Trust<'_>) -> Result<ClientConfig, String> {
    presenting(trusted_roots(trust)?, None)
}

fn trusted_roots(trust: Trust<'_>) -> Result<RootCertStore, String> {
    let roots = match trust {
        Trust::File(file) => {
            let pem = std::fs::read(file).map_err(|e| format!("cannot read CA certificates from {}: {e}", file.display()))?;
            roots(&pem).map_err(|e| format!("{}: {e}", file.display()))?
        }
        Trust::Pem(pem) => roots(pem.as_bytes())?,
        Trust::System => {
            let roots = system_roots();
            if roots.is_empty() {
                return Err("the system has no usable CA certificate; give a CA file".into());
            }
            roots.clone()
        }
    };
    Ok(roots)
}

/// The CA certificates of PEM text, as trust roots.
fn roots(pem: &[u8]) -> Result<RootCertStore, String> {
    let certificates: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pem).collect::<Result<_, _>>().map_err(|e| format!("not PEM certificates: {e}"))?;
    if certificates.is_empty() {
        return Err("no certificate in it".into());
    }
    let mut roots = RootCertStore::empty();
    for certificate in certificates {
        roots.add(certificate).map_err(|e| format!("a certificate cannot be a trust root: {e}"))?;
    }
    Ok(roots)
}

/// The system's roots, read once. One the system holds but rustls cannot use is skipped,
/// as browsers do.
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let native = rustls_native_certs::load_native_certs();
        if !native.errors.is_empty() {
            tracing::warn!(errors = ?native.errors, "some of the system's CA certificates could not be read");
        }
        let mut roots = RootCertStore::empty();
        for certificate in native.certs {
            let _ = roots.add(certificate);
        }
        roots
    })
}

/// A client configuration trusting `roots`, presenting `identity` (a chain and its key)
/// when there is one; an error when the key does not fit the certificate.
fn presenting(
    roots: RootCertStore,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some((chain, key)) => {
            let config = builder.with_client_auth_cert(chain, key).map_err(|e| format!("key: {e}"))?;
            Ok(config)
        }
    }
}

/// A connector for `http://` and `https://` URLs (HTTP/1.1), TLS as `config` says, the
/// server name (SNI, and what its certificate must name) from the URL's host. Without a
/// configuration it trusts nothing: every `https://` URL fails. Host names are resolved by
/// `resolver` (`GaiResolver` for the system's).
pub fn connector<R>(
    config: Option<ClientConfig>,
    connect_timeout: Duration,
    resolver: R,
) -> Result<HttpsConnector<HttpConnector<R>>, String> {
    let config = match config {
        Some(config) => config,
        None => presenting(RootCertStore::empty(), None)?,
    };
    let mut http = HttpConnector::new_with_resolver(resolver);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    Ok(HttpsConnectorBuilder::new().with_tls_config(config).https_or_http().enable_http1().wrap_connector(http))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `name`, written as `<stem>.pem` and `<stem>.key` in `dir`.
    fn certificate(dir: &Path, stem: &str, name: &str, server_names: &[&str]) -> (CertificateConfig, CertificateDer<'static>) {
        let certified = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        std::fs::write(dir.join(format!("{stem}.pem")), certified.cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{stem}.key")), certified.signing_key.serialize_pem()).unwrap();
        let config = CertificateConfig {
            cert: format!("{stem}.pem").into(),
            key: format!("{stem}.key").into(),
            server_names: server_names.iter().map(|n| (*n).to_owned()).collect(),
        };
        (config, certified.cert.der().clone())
    }

    /// The certificate a client asking for `name` (SNI) is shown, when the handshake
    /// succeeds for a client trusting `trusted` (which checks that it names `name`).
    async fn served(
        config: Arc<ServerConfig>,
        trusted: &[&CertificateDer<'static>],
        name: &str,
    ) -> Result<CertificateDer<'static>, String> {
        let mut roots = RootCertStore::empty();
        for der in trusted {
            roots.add((*der).clone()).unwrap();
        }
        let client = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move { tokio_rustls::TlsAcceptor::from(config).accept(server_io).await.map(drop) });
        let name = rustls_pki_types::ServerName::try_from(name.to_owned()).unwrap();
        let connected = tokio_rustls::TlsConnector::from(Arc::new(client)).connect(name, client_io).await.map_err(|e| e.to_string());
        let shown = connected.map(|tls| tls.get_ref().1.peer_certificates().unwrap()[0].clone());
        drop(server.await);
        shown
    }

    /// With several certificates, a client is shown the one whose `server_names` hold the
    /// name it asks for (in any case), and the first one for any other name.
    #[tokio::test]
    async fn a_listener_shows_the_certificate_named_for_the_client_s_server_name() {
        let dir = std::env::temp_dir().join(format!("portico-sni-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (default, default_der) = certificate(&dir, "default", "localhost", &[]);
        let (api, api_der) = certificate(&dir, "api", "api.example.test", &["API.example.test"]);
        let tls = TlsConfig { certificates: vec![default, api], client_ca: None, client_certificate_optional: false };
        let config = server_config(&tls, &dir, "listeners[0].tls").unwrap();
        let both = [&default_der, &api_der];
        assert_eq!(served(config.clone(), &both, "api.example.test").await, Ok(api_der.clone()));
        assert_eq!(served(config.clone(), &both, "localhost").await, Ok(default_der.clone()));
        let unnamed = served(config, &both, "other.example.test").await;
        assert!(unnamed.is_err_and(|e| e.contains("certificate")), "the default certificate does not name it");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
