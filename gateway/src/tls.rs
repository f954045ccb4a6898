//! TLS with rustls, both ways: what a listener serves (certificates from PEM files, chosen
//! by SNI) and what a client trusts (a CA bundle, or the system's roots) when it calls a
//! control plane or an upstream over `https://`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::contract::Problem;
use crate::settings::{CertificateConfig, TlsConfig};

/// The rustls configuration of a TLS listener (HTTP/2 and HTTP/1.1 by ALPN, the
/// certificate by SNI); paths are relative to `base_dir`, problems are located at `at`.
pub fn server_config(tls: &TlsConfig, base_dir: &Path, at: &str) -> Result<Arc<ServerConfig>, Problem> {
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
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Problem { path: at.to_owned(), reason: e.to_string() })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn certified_key(certificate: &CertificateConfig, base_dir: &Path) -> Result<Arc<CertifiedKey>, String> {
    let cert_path = base_dir.join(&certificate.cert);
    let key_path = base_dir.join(&certificate.key);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| format!("cannot read certificates from {}: {e}", cert_path.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no certificate", cert_path.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| format!("cannot read a private key from {}: {e}", key_path.display()))?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| format!("{}: {e}", key_path.display()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|e| format!("{} does not match {}: {e}", key_path.display(), cert_path.display()))?;
    Ok(Arc::new(certified))
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

/// A client configuration that trusts what `trust` names; an error when that is nothing
/// usable.
pub fn client_config(trust: Trust<'_>) -> Result<ClientConfig, String> {
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
    trusting(roots)
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

fn trusting(roots: RootCertStore) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A connector for `http://` and `https://` URLs (HTTP/1.1), TLS as `config` says, the
/// server name (SNI, and what its certificate must name) from the URL's host. Without a
/// configuration it trusts nothing: every `https://` URL fails.
pub fn connector(config: Option<ClientConfig>, connect_timeout: Duration) -> Result<HttpsConnector<HttpConnector>, String> {
    let config = match config {
        Some(config) => config,
        None => trusting(RootCertStore::empty())?,
    };
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    Ok(HttpsConnectorBuilder::new().with_tls_config(config).https_or_http().enable_http1().wrap_connector(http))
}
