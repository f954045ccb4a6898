//! The all-in-one profile (WSO2 pattern 0): the control plane and a gateway in one process
//! on embedded SQLite. The gateway is fed in-process with the configuration of one
//! environment, built from the database, and fed again after every change the control
//! plane announces (a deploy, a subscription, a key, a revocation), without a restart.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use portico_control_plane::db::Db;
use portico_control_plane::{AppState, Settings, app, auth, snapshot};
use portico_gateway::Gateway;
use portico_gateway::config::{AdminConfig, ListenerConfig, LoadedConfig};
use portico_gateway::file_mode;
use tokio::sync::watch;

/// Changes closer together than this are applied together.
const COALESCE: Duration = Duration::from_millis(25);

/// Where the all-in-one process keeps its data and listens.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Folder for the embedded database.
    #[arg(long, default_value = ".portico")]
    pub data_dir: PathBuf,
    /// Database URL instead of the embedded SQLite file (e.g. postgres://… for HA).
    #[arg(long, env = "PORTICO_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Where the gateway serves API traffic.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub gateway: String,
    /// Where the control plane serves its REST API and OAuth2 endpoints.
    #[arg(long, default_value = "127.0.0.1:9080")]
    pub api: String,
    /// Where the gateway's admin endpoints (`/healthz`, `/readyz`, `/metrics`) listen.
    #[arg(long, default_value = "127.0.0.1:9901")]
    pub admin: String,
    /// The control plane's public URL (the OAuth2 issuer); `http://<api address>` by default.
    #[arg(long)]
    pub public_url: Option<String>,
    /// The gateway environment this gateway serves.
    #[arg(long, default_value = "default")]
    pub environment: String,
}

/// Run until SIGTERM or SIGINT.
pub async fn run(options: Options) -> anyhow::Result<()> {
    std::fs::create_dir_all(&options.data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create the data folder {}: {e}", options.data_dir.display()))?;
    let url = match &options.database_url {
        Some(url) => url.clone(),
        None => format!("sqlite://{}?mode=rwc", options.data_dir.join("portico.db").display()),
    };
    let db = Db::connect(&url).await?;
    if let Some(password) = auth::bootstrap_admin(&db).await? {
        // Shown once: only its hash is stored.
        println!("First start: created the user `admin` with password {password}");
        println!("(set PORTICO_ADMIN_PASSWORD before the first start to choose it)");
    }
    let api_listener = tokio::net::TcpListener::bind(&options.api).await.map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", options.api))?;
    let api_address = api_listener.local_addr()?;
    let public_url = options.public_url.clone().unwrap_or_else(|| format!("http://{api_address}"));
    let state = AppState::new(db, Settings { public_url });

    let gateway = Gateway::new()?;
    let first = feed(&gateway, &state, &options).await?;
    let (stop, stopped) = watch::channel(false);
    let mut tasks = file_mode::start_listeners(&gateway, &first, stopped.clone()).await?;
    tokio::spawn(file_mode::sweep_counters(gateway.clone()));
    tokio::spawn(follow_changes(gateway.clone(), state.clone(), options.clone()));

    tracing::info!(address = %api_address, "control plane listening");
    let mut api_stopped = stopped.clone();
    tasks.push(tokio::spawn(async move {
        let server = axum::serve(api_listener, app(state)).with_graceful_shutdown(async move {
            let _ = api_stopped.changed().await;
        });
        if let Err(error) = server.await {
            tracing::error!(error = %error, "control plane server failed");
        }
    }));
    file_mode::shutdown_signal().await?;
    tracing::info!("shutting down; draining connections");
    let _ = stop.send(true);
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}

/// Build the environment's configuration and apply it; returns what was applied.
async fn feed(gateway: &Arc<Gateway>, state: &AppState, options: &Options) -> anyhow::Result<LoadedConfig> {
    let mut config = snapshot::for_environment(&state.db, &state.settings, &options.environment)
        .await
        .map_err(|e| anyhow::anyhow!("building the gateway configuration: {e}"))?;
    config.listeners = vec![ListenerConfig { address: options.gateway.clone(), tls: None }];
    config.admin = Some(AdminConfig { address: options.admin.clone() });
    let loaded = LoadedConfig { config, base_dir: options.data_dir.clone(), file: options.data_dir.join("(control plane)") };
    let version = gateway.apply(loaded.clone()).await.map_err(|e| anyhow::anyhow!("the gateway refused the configuration: {e}"))?;
    tracing::info!(version, environment = %options.environment, "configuration applied");
    Ok(loaded)
}

/// Apply a new configuration after every announced change; a refused one is logged and
/// the previous one keeps serving.
async fn follow_changes(gateway: Arc<Gateway>, state: AppState, options: Options) {
    let mut changes = state.changes.subscribe();
    while changes.changed().await.is_ok() {
        tokio::time::sleep(COALESCE).await;
        changes.borrow_and_update();
        if let Err(error) = feed(&gateway, &state, &options).await {
            tracing::error!(error = %format!("{error:#}"), "configuration not applied; the previous one keeps serving");
        }
    }
}
