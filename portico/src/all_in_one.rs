//! The all-in-one profile (WSO2 pattern 0; pattern 1 when two nodes share a PostgreSQL):
//! the control plane and a gateway in one process. The gateway follows its environment's
//! snapshots from the control plane's event hub in process, through the same loop and
//! checks as a remote gateway ([`fleet::follow`]), and acknowledges them like one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use portico_control_plane::fleet::Published;
use portico_control_plane::{AppState, analytics, publisher, registry};
use portico_gateway::analytics::UsageSink;
use portico_gateway::contract::fleet::{Ack, EnvironmentMessage, KEEPALIVE, UsageReport};
use portico_gateway::contract::units;
use portico_gateway::fleet::cache::Cache;
use portico_gateway::fleet::{self, EnvironmentSource};
use portico_gateway::settings::{AccessLogTarget, Settings};
use portico_gateway::{Gateway, process};
use tokio::sync::watch;

use crate::control_plane;

/// How long the first snapshot may take to build.
const FIRST_SNAPSHOT: Duration = Duration::from_secs(60);

/// Where the all-in-one process keeps its data and listens.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The control plane's options.
    #[command(flatten)]
    pub control_plane: control_plane::Options,
    /// Where the gateway serves API traffic (plain HTTP; for TLS, use `--settings`).
    #[arg(long, default_value = "127.0.0.1:8080", conflicts_with = "settings")]
    pub gateway: String,
    /// Where the gateway's admin endpoints (`/healthz`, `/readyz`, `/metrics`) listen.
    #[arg(long, default_value = "127.0.0.1:9901", conflicts_with = "settings")]
    pub admin: String,
    /// How long the gateway goes on serving after SIGTERM or SIGINT with its `/readyz`
    /// answering 503, so that a load balancer sees it leave first (`10s`); a second signal
    /// ends it. In a settings file, `drain_delay`.
    #[arg(long, default_value = "0s", conflicts_with = "settings")]
    pub drain_delay: units::Duration,
    /// The gateway's own settings file (YAML: `listeners` with their TLS certificates,
    /// `admin`, `limits`, `compiled_cache`, `drain_delay`), instead of `--gateway`, `--admin`
    /// and `--drain-delay`. Its policy ceilings are the control plane's
    /// (`--max-policy-timeout`, `--max-policy-memory`).
    #[arg(long)]
    pub settings: Option<PathBuf>,
    /// The gateway environment this gateway serves.
    #[arg(long, default_value = "default")]
    pub environment: String,
    /// The in-process gateway's id in the fleet; `all-in-one-<gateway address>` by default.
    #[arg(long)]
    pub gateway_id: Option<String>,
}

/// Run until SIGTERM or SIGINT, with the gateway's access log going to `access_log` when
/// given (instead of its settings').
pub async fn run(options: Options, access_log: Option<AccessLogTarget>) -> anyhow::Result<()> {
    let (stop, stopped) = watch::channel(false);
    let started = control_plane::start(&options.control_plane, stopped.clone()).await?;
    let state = started.state;
    let data_dir = &options.control_plane.data_dir;
    let cache = Cache::open(data_dir).map_err(|e| anyhow::anyhow!("cannot use {}: {e}", data_dir.display()))?;
    let (settings, settings_dir) = match &options.settings {
        Some(file) => (Settings::load(file).map_err(|e| anyhow::anyhow!("{e}"))?, file.parent().map(Path::to_path_buf).unwrap_or_default()),
        None => (Settings::plain(&options.gateway, Some(&options.admin), options.drain_delay), PathBuf::from(".")),
    };
    let mut settings = settings.with_access_log(access_log);
    let first_listener = settings.listeners.first().map_or("none", |l| l.address.as_str()).to_owned();
    let id = options.gateway_id.clone().unwrap_or_else(|| format!("all-in-one-{first_listener}"));

    settings.limits.max_policy_timeout = options.control_plane.max_policy_timeout;
    settings.limits.max_policy_memory = options.control_plane.max_policy_memory;
    let compiled = settings.compiled_dir(&settings_dir, Some(data_dir.join(fleet::COMPILED_DIR)));
    let gateway = Gateway::new(&settings, compiled.as_deref())?;
    let mut snapshots = state.hub.follow(&state, &options.environment);
    // The snapshot already built, if any, counts as offered.
    snapshots.mark_changed();
    let mut source = InProcess { state: state.clone(), id: id.clone(), environment: options.environment.clone(), snapshots };
    // The first snapshot is applied before the listeners open: a refusal stops the start.
    let first = tokio::time::timeout(FIRST_SNAPSHOT, source.next())
        .await
        .map_err(|_| {
            anyhow::anyhow!("the first snapshot of `{}` was not built within {} s", options.environment, FIRST_SNAPSHOT.as_secs())
        })?
        .ok_or_else(|| anyhow::anyhow!("the event hub stopped"))?;
    let ack = fleet::offer(&gateway, &source, &cache, &options.environment, first).await;
    if let Some(refused) = &ack.refused {
        anyhow::bail!("the gateway refused the configuration: {}", refused.reason);
    }
    source.acknowledge(ack).await;

    let analytics = InProcessAnalytics { state: state.clone(), id: id.clone(), environment: options.environment.clone() };
    gateway.report_usage(analytics, &id, &settings);
    let listening = process::start_listeners(&gateway, &settings, &settings_dir, stopped.clone()).await?;
    if let Some(url) = listening.addresses.first().map(|(address, tls)| gateway_url(*address, *tls)) {
        publisher::offer_gateway_url(&state.db, &options.environment, &url)
            .await
            .map_err(|e| anyhow::anyhow!("cannot record the gateway's URL {url}: {e}"))?;
    }
    let mut tasks = listening.tasks;
    tasks.push(started.task);
    tokio::spawn(process::sweep_counters(gateway.clone()));
    tokio::spawn(heartbeat(state.clone(), id, options.environment.clone()));
    tokio::spawn(fleet::follow(gateway.clone(), source, cache, options.environment.clone()));
    // The gateway in this process follows its environment from this node like a connected one.
    let _connected = state.metrics.gateway_connected(&options.environment);

    process::serve_until_signal(stop, tasks, Some((&gateway, settings.drain_delay.0))).await?;
    control_plane::export_last_traces(&state).await;
    Ok(())
}

/// The URL this process's gateway is reached at from this machine, offered to the developer
/// portal as its environment's until an admin says another (an unspecified address is
/// reached on loopback).
fn gateway_url(address: std::net::SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    let ip = match address.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("{scheme}://{}", std::net::SocketAddr::new(ip, address.port()))
}

/// The control plane in this process: its hub's snapshots, its registry's modules, and
/// acknowledgements recorded straight into its database.
struct InProcess {
    state: AppState,
    id: String,
    environment: String,
    snapshots: watch::Receiver<Option<Arc<Published>>>,
}

#[async_trait::async_trait]
impl EnvironmentSource for InProcess {
    async fn next(&mut self) -> Option<Result<EnvironmentMessage, String>> {
        loop {
            self.snapshots.changed().await.ok()?;
            if let Some(published) = self.snapshots.borrow_and_update().clone() {
                return Some(Ok(published.message.clone()));
            }
        }
    }

    async fn module(&self, sha256: &str) -> Result<Vec<u8>, String> {
        match registry::component(&self.state.db, sha256).await {
            Ok(Some(bytes)) => Ok(bytes),
            Ok(None) => Err("not in the registry".into()),
            Err(error) => Err(error.to_string()),
        }
    }

    async fn acknowledge(&self, ack: Ack) {
        if let Err(error) = portico_control_plane::fleet::record(&self.state, &self.id, &self.environment, &ack).await {
            tracing::warn!(error = %error, "cannot record the gateway's acknowledgement");
        }
    }
}

/// Usage reports stored straight into this process's database.
struct InProcessAnalytics {
    state: AppState,
    id: String,
    environment: String,
}

#[async_trait::async_trait]
impl UsageSink for InProcessAnalytics {
    async fn deliver(&self, report: &UsageReport) -> Result<(), String> {
        analytics::store(&self.state.db, &self.environment, &self.id, report).await.map_err(|e| e.to_string())
    }
}

async fn heartbeat(state: AppState, id: String, environment: String) {
    let mut tick = tokio::time::interval(KEEPALIVE);
    loop {
        tick.tick().await;
        if let Err(error) = portico_control_plane::fleet::seen(&state.db, &id, &environment).await {
            tracing::warn!(error = %error, "cannot record the gateway's heartbeat");
        }
    }
}
