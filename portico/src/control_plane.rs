//! The control-plane profile: the management API, the OAuth2 endpoints and the fleet
//! endpoints gateways connect to, on SQLite or PostgreSQL; and the key-manager profile:
//! the OAuth2 endpoints alone, on the control plane's PostgreSQL (WSO2 patterns 4 and 5).
//! Several nodes on one PostgreSQL tell each other about changes (LISTEN/NOTIFY), so each
//! pushes every change, wherever it was made, to the gateways connected to it. Nodes serve
//! HTTPS with `--tls-cert` and `--tls-key`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use portico_control_plane::db::Db;
use portico_control_plane::replication::Replication;
use portico_control_plane::secrets::{self, SealingKey};
use portico_control_plane::{AppState, ClientCertified, Layers, Settings, app, auth, expiry, fleet};
use portico_gateway::check::PolicyCeilings;
use portico_gateway::connection::{self, Idle};
use portico_gateway::contract::defaults;
use portico_gateway::contract::units::{ByteSize, Duration};
use portico_gateway::settings::{CertificateConfig, Limits, TlsConfig, TracesConfig};
use portico_gateway::tls::{self, ServedTls};
use portico_gateway::traces::Traces;
use tokio::net::TcpListener;

use tokio::sync::{Semaphore, watch};

/// How long requests in flight may take to finish at shutdown.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What every control-plane and key-manager node is given: its database and sealing key,
/// its TLS certificate, its public URL and where its traces go.
#[derive(Debug, Clone, clap::Args)]
#[group(skip)]
pub struct Node {
    /// Database URL (postgres://… for several nodes); without one, the control plane uses
    /// the embedded SQLite file in `--data-dir`. A key manager needs the control plane's
    /// PostgreSQL.
    #[arg(long, env = "PORTICO_DATABASE_URL")]
    pub database_url: Option<String>,
    /// File holding the key (64 hex digits) that seals signing keys and the API-key HMAC
    /// secret in the database; or give the key itself in PORTICO_SECRETS_KEY. Without
    /// either, the control plane makes `<data-dir>/secrets.key` at first start (a key
    /// manager needs one of the two). Nodes of one cluster must share it.
    #[arg(long, env = "PORTICO_SECRETS_KEY_FILE")]
    pub secrets_key_file: Option<PathBuf>,
    /// PEM certificate chain to serve HTTPS with (HTTP/2 and HTTP/1.1); with `--tls-key`.
    #[arg(long, env = "PORTICO_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "PORTICO_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// This node's public URL, its load balancer's (for the key manager, the OAuth2
    /// issuer); `https://<api address>` with TLS, `http://<api address>` without, by
    /// default. Nodes of one cluster must share it.
    #[arg(long)]
    pub public_url: Option<String>,
    /// Export OpenTelemetry traces of this node's requests to this OTLP/HTTP traces
    /// endpoint (`http://127.0.0.1:4318/v1/traces`); none by default.
    #[arg(long, env = "PORTICO_TRACES_ENDPOINT")]
    pub traces_endpoint: Option<String>,
    /// The share of the traces started here that are recorded, from 0 to 1 (a caller's
    /// sampled `traceparent` is followed whatever it is).
    #[arg(long, env = "PORTICO_TRACES_SAMPLING_RATIO", default_value_t = 1.0)]
    pub traces_sampling_ratio: f64,
}

/// Where the control plane keeps its data and listens.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "control_plane_options")]
pub struct Options {
    /// What every node is given.
    #[command(flatten)]
    pub node: Node,
    /// Folder for the embedded database.
    #[arg(long, default_value = ".portico")]
    pub data_dir: PathBuf,
    /// Where the control plane serves its REST API, OAuth2 and fleet endpoints.
    #[arg(long, default_value = "127.0.0.1:9080")]
    pub api: String,
    /// PEM CA certificates that gateways' client certificates must chain to: the fleet
    /// endpoints then require one (mutual TLS) besides the gateway token. Needs `--tls-cert`.
    #[arg(long, env = "PORTICO_FLEET_CLIENT_CA", requires = "tls_cert")]
    pub fleet_client_ca: Option<PathBuf>,
    /// The public URL of a key-manager layer apart (the `key-manager` profile's
    /// `--public-url`, WSO2 patterns 4 and 5): tokens are issued there, gateways trust that
    /// issuer, and this control plane serves no OAuth2 endpoint. By default the control
    /// plane is its own key manager.
    #[arg(long, env = "PORTICO_KEY_MANAGER_URL")]
    pub key_manager_url: Option<String>,
    /// The most CPU time a policy attachment may ask for per call (`timeout`); an
    /// attachment over it is refused. Give gateways the same `limits.max_policy_timeout`.
    #[arg(long, env = "PORTICO_MAX_POLICY_TIMEOUT", default_value_t = Duration(defaults::POLICY_TIMEOUT_CEILING))]
    pub max_policy_timeout: Duration,
    /// The most linear memory a policy attachment may ask for (`memory`); an attachment
    /// over it is refused. Give gateways the same `limits.max_policy_memory`.
    #[arg(long, env = "PORTICO_MAX_POLICY_MEMORY", default_value_t = ByteSize(defaults::POLICY_MEMORY_CEILING))]
    pub max_policy_memory: ByteSize,
    /// How long the usage analytics gateways report are kept (`90d`); older minutes are
    /// deleted every hour.
    #[arg(long, env = "PORTICO_ANALYTICS_RETENTION", default_value = "90d")]
    pub analytics_retention: Duration,
    /// This region's name, for active-active replication with another region
    /// (multi-datacenter; PostgreSQL only): the changes made here are logged for the
    /// region at `--peer-database-url`, and its changes are applied here.
    #[arg(long, env = "PORTICO_REGION", requires = "peer_database_url")]
    pub region: Option<String>,
    /// The other region's PostgreSQL database, whose log of changes this region reads.
    #[arg(long, env = "PORTICO_PEER_DATABASE_URL", requires = "region")]
    pub peer_database_url: Option<String>,
}

impl Options {
    /// The ceilings on policy attachments these options set.
    pub fn policy_ceilings(&self) -> PolicyCeilings {
        PolicyCeilings { timeout: self.max_policy_timeout.0, memory_bytes: self.max_policy_memory.0 }
    }
}

/// Where a key-manager node listens; its database is the control plane's PostgreSQL.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "key_manager_options")]
pub struct KeyManagerOptions {
    /// What every node is given; the database and the sealing key are the control plane's.
    #[command(flatten)]
    pub node: Node,
    /// Where the key manager serves its OAuth2 endpoints, `/healthz`, `/readyz` and
    /// `/metrics`.
    #[arg(long, default_value = "127.0.0.1:9443")]
    pub api: String,
}

/// A node serving requests.
pub struct Started {
    /// Its state.
    pub state: AppState,
    /// The server; it ends when `stopped` turns true.
    pub task: tokio::task::JoinHandle<()>,
}

/// Open the database (bootstrapping the first admin), bind and serve the control plane;
/// the address is logged as `control plane listening`.
pub async fn start(options: &Options, stopped: watch::Receiver<bool>) -> anyhow::Result<Started> {
    std::fs::create_dir_all(&options.data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create the data folder {}: {e}", options.data_dir.display()))?;
    let url = match &options.node.database_url {
        Some(url) => url.clone(),
        None => format!("sqlite://{}?mode=rwc", options.data_dir.join("portico.db").display()),
    };
    let sealing = match sealing_key(&options.node)? {
        Some(key) => key,
        None => SealingKey::from_file_or_new(&options.data_dir.join("secrets.key"))?,
    };
    let db = Db::connect(&url, sealing).await?;
    if let Some(password) = auth::bootstrap_admin(&db).await? {
        // Only its hash is stored; the password goes to a file only this user can read, not
        // to a log or a terminal others may see.
        let file = options.data_dir.join("initial-admin-password");
        secrets::write_private(&file, &format!("{password}\n"))
            .map_err(|e| anyhow::anyhow!("cannot write the first admin's password to {}: {e}", file.display()))?;
        println!("First start: created the user `admin`; its password is in {} (readable by you only).", file.display());
        println!("Log in, change it, then delete that file. (Set PORTICO_ADMIN_PASSWORD before the first start to choose it.)");
    }
    // Made now rather than at first use, so that a copy of this database (a second
    // region's, active-active) has the same one.
    portico_control_plane::devportal::api_key_hmac_secret(&db).await?;
    let ceilings = options.policy_ceilings();
    if let Err((field, reason)) = ceilings.check_self() {
        anyhow::bail!("--max-policy-{field} {reason}");
    }
    let bound = Bound::bind(&options.node, &options.api, options.fleet_client_ca.as_ref()).await?;
    let (issuer, layers) = match &options.key_manager_url {
        Some(url) => (trimmed_url(url, "--key-manager-url")?, Layers::ControlPlane),
        None => (bound.public_url.clone(), Layers::ControlPlaneAndKeyManager),
    };
    let settings = Settings {
        public_url: bound.public_url.clone(),
        issuer,
        policy_ceilings: ceilings,
        fleet_client_certificates: options.fleet_client_ca.is_some(),
    };
    let mut state = AppState::new(db, settings);
    state.traces = traces(&options.node, "portico-control-plane")?;
    // Capture first: nothing written from here on is missed by the other region.
    if let (Some(region), Some(peer)) = (&options.region, &options.peer_database_url) {
        let replication = Replication::install(&state.db, region).await.map_err(|e| anyhow::anyhow!("--region: {e}"))?;
        tokio::spawn(replication.follow(state.clone(), peer.clone()));
    }
    tokio::spawn(expiry::every_hour(state.db.clone(), Some(options.analytics_retention.0)));
    Ok(bound.serve(state, layers, "control plane listening", stopped))
}

/// Open the control plane's PostgreSQL database, bind and serve the key manager's OAuth2
/// endpoints; the address is logged as `key manager listening`.
pub async fn start_key_manager(options: &KeyManagerOptions, stopped: watch::Receiver<bool>) -> anyhow::Result<Started> {
    let shared = "a key manager works on the control plane's PostgreSQL database, where the control plane hears of its revocations";
    let url = match &options.node.database_url {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => url.clone(),
        Some(_) => anyhow::bail!("--database-url must be a postgres:// URL: {shared}"),
        None => anyhow::bail!("--database-url (or PORTICO_DATABASE_URL) is missing: {shared}"),
    };
    let Some(sealing) = sealing_key(&options.node)? else {
        anyhow::bail!(
            "--secrets-key-file (or PORTICO_SECRETS_KEY) is missing: a key manager needs the control plane's key to open the signing keys"
        );
    };
    let db = Db::connect(&url, sealing).await?;
    let bound = Bound::bind(&options.node, &options.api, None).await?;
    let settings = Settings {
        public_url: bound.public_url.clone(),
        issuer: bound.public_url.clone(),
        policy_ceilings: PolicyCeilings::default(),
        fleet_client_certificates: false,
    };
    let mut state = AppState::new(db, settings);
    state.traces = traces(&options.node, "portico-key-manager")?;
    tokio::spawn(expiry::every_hour(state.db.clone(), None));
    Ok(bound.serve(state, Layers::KeyManager, "key manager listening", stopped))
}

/// The sealing key given by `--secrets-key-file` or PORTICO_SECRETS_KEY, if any.
fn sealing_key(node: &Node) -> anyhow::Result<Option<SealingKey>> {
    Ok(match (&node.secrets_key_file, std::env::var("PORTICO_SECRETS_KEY")) {
        (Some(file), _) => {
            let text =
                std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("cannot read --secrets-key-file {}: {e}", file.display()))?;
            Some(SealingKey::from_hex(&text).map_err(|e| anyhow::anyhow!("--secrets-key-file {}: {e}", file.display()))?)
        }
        (None, Ok(hex)) => Some(SealingKey::from_hex(&hex).map_err(|e| anyhow::anyhow!("PORTICO_SECRETS_KEY: {e}"))?),
        (None, Err(_)) => None,
    })
}

/// `url` without its trailing slash, if it is an http(s) URL.
fn trimmed_url(url: &str, option: &str) -> anyhow::Result<String> {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        anyhow::bail!("{option} must be an http:// or https:// URL, not {url:?}");
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// The tracer of a node that traces its requests, as `service`.
fn traces(node: &Node, service: &str) -> anyhow::Result<Option<Arc<Traces>>> {
    let Some(endpoint) = &node.traces_endpoint else { return Ok(None) };
    if !(0.0..=1.0).contains(&node.traces_sampling_ratio) {
        anyhow::bail!("--traces-sampling-ratio must be from 0 to 1");
    }
    let resource = [("service.name".to_owned(), service.to_owned())].into();
    let config = TracesConfig { endpoint: endpoint.clone(), sampling_ratio: node.traces_sampling_ratio, resource };
    Ok(Some(Arc::new(Traces::start(&config).map_err(|e| anyhow::anyhow!("--traces-endpoint: {e}"))?)))
}

/// A node's bound listener, its TLS and its public URL.
struct Bound {
    listener: TcpListener,
    tls: Option<Arc<ServedTls>>,
    public_url: String,
}

impl Bound {
    /// Bind `api`, serving TLS when the node has a certificate (asking for client
    /// certificates that chain to `client_ca`, which only the fleet endpoints require).
    async fn bind(node: &Node, api: &str, client_ca: Option<&PathBuf>) -> anyhow::Result<Bound> {
        let listener = TcpListener::bind(api).await.map_err(|e| anyhow::anyhow!("cannot listen on {api}: {e}"))?;
        let address = listener.local_addr()?;
        let tls = match (&node.tls_cert, &node.tls_key) {
            (Some(cert), Some(key)) => {
                let certificate = CertificateConfig { cert: cert.clone(), key: key.clone(), server_names: Vec::new() };
                let config = TlsConfig {
                    certificates: vec![certificate],
                    client_ca: client_ca.cloned(),
                    // Browsers and API clients have none: only the fleet endpoints require one.
                    client_certificate_optional: true,
                };
                let config =
                    tls::serve_config(&config, Path::new("."), "--tls-cert").map_err(|problem| anyhow::anyhow!("{}", problem.reason))?;
                Some(config)
            }
            _ => None,
        };
        if tls.is_none() && !address.ip().is_loopback() {
            tracing::warn!(%address, "this node serves plain HTTP on a non-loopback address: logins, OAuth2 tokens and the environments gateways receive travel in clear; give --tls-cert and --tls-key");
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        let public_url = match &node.public_url {
            Some(url) => trimmed_url(url, "--public-url")?,
            None => format!("{scheme}://{address}"),
        };
        Ok(Bound { listener, tls, public_url })
    }

    /// Serve `layers` over `state`, telling the other nodes of the changes made here and
    /// hearing of theirs; `listening` is logged with the address.
    fn serve(self, state: AppState, layers: Layers, listening: &'static str, stopped: watch::Receiver<bool>) -> Started {
        fleet::notify::start(&state);
        let address = self.listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        tracing::info!(%address, scheme, "{listening}");
        let router = app(state.clone(), layers);
        let task = tokio::spawn(serve(self.listener, self.tls, router, stopped));
        Started { state, task }
    }
}

/// Serve `router` (over TLS when configured) until `stopped` turns true, then let requests
/// in flight finish (for up to 10 s). Connections follow the gateway's default limits (a
/// TLS handshake, a request head and a connection's first byte have 10 s; idle connections
/// close after 60 s; at most 10,000 at once), so a slow or silent client is cut off rather
/// than held.
async fn serve(listener: TcpListener, tls: Option<Arc<ServedTls>>, router: axum::Router, stopped: watch::Receiver<bool>) {
    let limits = Limits::default();
    let builder = Arc::new(connection::builder(&limits));
    let idle = Idle::of(&limits);
    let max_connections = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let connections = Arc::new(Semaphore::new(max_connections as usize));
    let mut stopping = stopped.clone();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopping.changed() => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::debug!(%peer, max_connections, "connection refused: too many open");
            continue;
        };
        // The peer's address, for what is counted per source (failed logins), and whether it
        // presented a client certificate the TLS verifier accepted.
        let router = router.clone().layer(axum::Extension(axum::extract::ConnectInfo(peer)));
        let service = move |certified: bool| TowerToHyperService::new(router.layer(axum::Extension(ClientCertified(certified))));
        let acceptor = tls.as_ref().map(|tls| tls.acceptor());
        let (builder, stopped) = (builder.clone(), stopped.clone());
        let handshake_timeout = limits.header_read_timeout.0;
        tokio::spawn(async move {
            let _permit = permit;
            let result = match acceptor {
                None => connection::serve(&builder, TokioIo::new(tcp), connection::counted(service(false)), idle, stopped).await,
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => return tracing::debug!(%error, "TLS handshake failed"),
                        Err(_) => return tracing::debug!("TLS handshake timed out"),
                    };
                    let certified = stream.get_ref().1.peer_certificates().is_some_and(|chain| !chain.is_empty());
                    connection::serve(&builder, TokioIo::new(stream), connection::counted(service(certified)), idle, stopped).await
                }
            };
            if let Err(error) = result {
                tracing::debug!(error = %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, connections.acquire_many(max_connections)).await.is_err() {
        tracing::warn!("requests still running after 10 s were cut off");
    }
}

/// Run the control plane until SIGTERM or SIGINT.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let (stop, stopped) = watch::channel(false);
    let started = start(&options, stopped).await?;
    serve_until_signal(stop, started).await
}

/// Run a key-manager node until SIGTERM or SIGINT.
pub async fn run_key_manager(options: KeyManagerOptions) -> anyhow::Result<()> {
    let (stop, stopped) = watch::channel(false);
    let started = start_key_manager(&options, stopped).await?;
    serve_until_signal(stop, started).await
}

async fn serve_until_signal(stop: watch::Sender<bool>, started: Started) -> anyhow::Result<()> {
    portico_gateway::process::serve_until_signal(stop, vec![started.task], None).await?;
    export_last_traces(&started.state).await;
    Ok(())
}

/// Export the spans of the last requests (a node that traces them), once it has stopped.
pub async fn export_last_traces(state: &AppState) {
    if let Some(traces) = &state.traces {
        traces.shutdown().await;
    }
}
