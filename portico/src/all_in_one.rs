//! The all-in-one profile (WSO2 pattern 0; pattern 1 when two nodes share a PostgreSQL):
//! the control plane and a gateway in one process. The gateway follows its environment's
//! snapshots from the control plane's event hub in process, the same snapshots remote
//! gateways receive, and acknowledges them like a remote gateway would.

use std::sync::Arc;
use std::time::Duration;

use portico_control_plane::fleet::{self, Published};
use portico_control_plane::{AppState, registry};
use portico_gateway::Gateway;
use portico_gateway::config::LoadedConfig;
use portico_gateway::file_mode;
use portico_gateway::fleet::cache::Cache;
use portico_gateway::fleet::protocol::{Ack, KEEPALIVE, Refusal};
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
    /// Where the gateway serves API traffic.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub gateway: String,
    /// Where the gateway's admin endpoints (`/healthz`, `/readyz`, `/metrics`) listen.
    #[arg(long, default_value = "127.0.0.1:9901")]
    pub admin: String,
    /// The gateway environment this gateway serves.
    #[arg(long, default_value = "default")]
    pub environment: String,
    /// The in-process gateway's id in the fleet; `all-in-one-<gateway address>` by default.
    #[arg(long)]
    pub gateway_id: Option<String>,
}

/// Run until SIGTERM or SIGINT.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let (stop, stopped) = watch::channel(false);
    let started = control_plane::start(&options.control_plane, stopped.clone()).await?;
    let state = started.state;
    let data_dir = &options.control_plane.data_dir;
    let modules = Cache::open(data_dir).map_err(|e| anyhow::anyhow!("cannot use {}: {e}", data_dir.display()))?;
    let id = options.gateway_id.clone().unwrap_or_else(|| format!("all-in-one-{}", options.gateway));

    let gateway = Gateway::new()?;
    let mut snapshots = state.hub.follow(&state, &options.environment);
    let first = tokio::time::timeout(FIRST_SNAPSHOT, snapshots.wait_for(Option::is_some))
        .await
        .map_err(|_| {
            anyhow::anyhow!("the first snapshot of `{}` was not built within {} s", options.environment, FIRST_SNAPSHOT.as_secs())
        })?
        .map_err(|_| anyhow::anyhow!("the event hub stopped"))?
        .clone()
        .expect("waited for a snapshot");
    apply(&gateway, &state, &modules, &first).await.map_err(|e| anyhow::anyhow!("the gateway refused the configuration: {e}"))?;
    acknowledge(&state, &gateway, &id, &options.environment, None).await;

    let listeners = portico_gateway::fleet::listeners_only(&options.gateway, Some(&options.admin), data_dir);
    let mut tasks = file_mode::start_listeners(&gateway, &listeners, stopped.clone()).await?;
    tasks.push(started.task);
    tokio::spawn(file_mode::sweep_counters(gateway.clone()));
    tokio::spawn(follow(gateway.clone(), state.clone(), modules, snapshots, id.clone(), options.environment.clone()));
    tokio::spawn(heartbeat(state.clone(), id, options.environment.clone()));

    file_mode::serve_until_signal(stop, tasks).await
}

/// Put the snapshot's modules in the module store (from the registry) and apply it.
async fn apply(gateway: &Arc<Gateway>, state: &AppState, modules: &Cache, published: &Published) -> anyhow::Result<String> {
    let config = &published.message.config;
    for (name, module) in &config.modules {
        let sha256 = module.sha256.as_deref().ok_or_else(|| anyhow::anyhow!("module `{name}` has no sha256"))?;
        if modules.module_ok(sha256)? {
            continue;
        }
        let bytes = registry::component(&state.db, sha256)
            .await?
            .ok_or_else(|| anyhow::anyhow!("module `{name}` ({sha256}) is not in the registry"))?;
        modules.store_module(sha256, &bytes)?;
    }
    let loaded = LoadedConfig { config: config.clone(), base_dir: modules.dir().to_owned(), file: modules.dir().join("(control plane)") };
    let version = gateway.apply(loaded).await?;
    tracing::info!(version, environment = %published.message.environment, "configuration applied");
    Ok(version)
}

async fn acknowledge(state: &AppState, gateway: &Gateway, id: &str, environment: &str, refused: Option<Refusal>) {
    let ack = Ack { running: gateway.snapshot().map(|s| s.version.clone()), refused };
    if let Err(error) = fleet::record(state, id, environment, &ack).await {
        tracing::warn!(error = %error, "cannot record the gateway's acknowledgement");
    }
}

/// Apply every new snapshot; a refused one is logged and reported, and the previous one
/// keeps serving.
async fn follow(
    gateway: Arc<Gateway>,
    state: AppState,
    modules: Cache,
    mut snapshots: watch::Receiver<Option<Arc<Published>>>,
    id: String,
    environment: String,
) {
    while snapshots.changed().await.is_ok() {
        let Some(published) = snapshots.borrow_and_update().clone() else { continue };
        let refused = match apply(&gateway, &state, &modules, &published).await {
            Ok(_) => None,
            Err(error) => {
                let reason = format!("{error:#}");
                tracing::error!(error = %reason, "configuration not applied; the previous one keeps serving");
                Some(Refusal { version: published.message.version.clone(), reason })
            }
        };
        acknowledge(&state, &gateway, &id, &environment, refused).await;
    }
}

async fn heartbeat(state: AppState, id: String, environment: String) {
    let mut tick = tokio::time::interval(KEEPALIVE);
    loop {
        tick.tick().await;
        if let Err(error) = fleet::seen(&state.db, &id, &environment).await {
            tracing::warn!(error = %error, "cannot record the gateway's heartbeat");
        }
    }
}
