//! Declarative (DB-less) mode: the gateway runs from a YAML file, reloads it on SIGHUP
//! and when the file or one of its modules changes, and refuses a bad one while the
//! old snapshot keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::config::{self, LoadedConfig};
use crate::snapshot::BuildError;
use crate::{Gateway, admin, listener};

/// How often the files are checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// How often idle rate counters are dropped.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Run the gateway from `file` until SIGTERM or SIGINT.
pub async fn run(file: PathBuf) -> anyhow::Result<()> {
    let loaded = config::load(&file).map_err(|e| anyhow::anyhow!("{e}"))?;
    let gateway = Gateway::new()?;
    let version = gateway.apply(loaded.clone()).await.map_err(|e| anyhow::anyhow!("{}", located(&file, &e)))?;
    tracing::info!(version, file = %file.display(), "configuration applied");

    let (stop, stopped) = watch::channel(false);
    let tasks = start_listeners(&gateway, &loaded, stopped).await.map_err(|e| anyhow::anyhow!("{}: {e:#}", file.display()))?;
    tokio::spawn(watch_and_reload(gateway.clone(), file, loaded));
    tokio::spawn(sweep_counters(gateway.clone()));
    serve_until_signal(stop, tasks).await
}

/// Wait for SIGTERM or SIGINT, then tell every task to stop (`stop`) and wait for them to
/// drain.
pub async fn serve_until_signal(stop: watch::Sender<bool>, tasks: Vec<tokio::task::JoinHandle<()>>) -> anyhow::Result<()> {
    shutdown_signal().await?;
    tracing::info!("shutting down; draining connections");
    let _ = stop.send(true);
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}

/// Bind and serve the configuration's listeners and admin listener (their addresses are
/// logged as `listening` / `admin listening`); they stop when `stopped` turns true.
pub async fn start_listeners(
    gateway: &Arc<Gateway>,
    loaded: &LoadedConfig,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let limits = loaded.config.limits.clone();
    let mut tasks = Vec::new();
    for (i, spec) in loaded.config.listeners.iter().enumerate() {
        let tls = match &spec.tls {
            Some(tls) => {
                Some(listener::tls_config(tls, &loaded.base_dir, &format!("listeners[{i}].tls")).map_err(|p| anyhow::anyhow!("{p}"))?)
            }
            None => None,
        };
        let (socket, address) = listener::bind(&spec.address).await?;
        tracing::info!(%address, tls = tls.is_some(), "listening");
        tasks.push(tokio::spawn(listener::serve(gateway.clone(), socket, tls, limits.clone(), stopped.clone())));
    }
    if let Some(admin_spec) = &loaded.config.admin {
        let (socket, address) = listener::bind(&admin_spec.address).await?;
        tracing::info!(%address, "admin listening");
        tasks.push(tokio::spawn(admin::serve(gateway.clone(), socket, stopped.clone())));
    }
    if tasks.is_empty() {
        anyhow::bail!("no listeners configured");
    }
    Ok(tasks)
}

/// Wait for SIGTERM or SIGINT.
pub async fn shutdown_signal() -> anyhow::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

/// Check a file without running it: parse, validate, build the snapshot (compiling and
/// initialising every policy). Returns every problem found.
pub fn check(file: &Path) -> Result<String, String> {
    let loaded = config::load(file).map_err(|e| e.to_string())?;
    let gateway = Gateway::new().map_err(|e| e.to_string())?;
    let snapshot = gateway.build(&loaded).map_err(|e| located(file, &e))?;
    for (i, listener) in loaded.config.listeners.iter().enumerate() {
        if let Some(tls) = &listener.tls {
            listener::tls_config(tls, &loaded.base_dir, &format!("listeners[{i}].tls")).map_err(|p| format!("{}: {p}", file.display()))?;
        }
    }
    Ok(snapshot.version)
}

/// Every problem of a refused build, one line each, located in `file`.
fn located(file: &Path, error: &BuildError) -> String {
    error.problems.iter().map(|p| format!("{}: {p}", file.display())).collect::<Vec<_>>().join("\n")
}

/// The files whose change triggers a reload: the configuration and its modules.
fn watched_files(loaded: &LoadedConfig) -> Vec<PathBuf> {
    let mut files = vec![loaded.file.clone()];
    files.extend(loaded.config.modules.values().map(|m| loaded.module_file(m)));
    files
}

fn stamp(files: &[PathBuf]) -> Vec<Option<(SystemTime, u64)>> {
    files.iter().map(|f| std::fs::metadata(f).ok().and_then(|m| Some((m.modified().ok()?, m.len())))).collect()
}

async fn watch_and_reload(gateway: Arc<Gateway>, file: PathBuf, mut loaded: LoadedConfig) {
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot listen for SIGHUP; reload on file change only");
        return;
    };
    let mut files = watched_files(&loaded);
    let mut last = stamp(&files);
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    loop {
        let reason = tokio::select! {
            _ = hangup.recv() => "SIGHUP",
            _ = tick.tick() => {
                let now = stamp(&files);
                if now == last { continue }
                last = now;
                "file changed"
            }
        };
        match config::load(&file) {
            Err(error) => tracing::error!(reason, error = %error, "configuration refused; the previous one keeps serving"),
            Ok(next) => match gateway.apply(next.clone()).await {
                Ok(version) => {
                    tracing::info!(reason, version, "configuration applied");
                    loaded = next;
                    files = watched_files(&loaded);
                    last = stamp(&files);
                }
                Err(error) => tracing::error!(reason, error = %error, "configuration refused; the previous one keeps serving"),
            },
        }
    }
}

/// Drop idle rate counters every few seconds, for as long as the gateway runs.
pub async fn sweep_counters(gateway: Arc<Gateway>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tick.tick().await;
        gateway.counters().sweep(crate::counters::now_ms());
    }
}
