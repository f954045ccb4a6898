//! What every gateway process does, whatever feeds it: open the listeners of its
//! [`Settings`], drop idle rate counters, and drain on SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::records::{Recorder, access_log};
use crate::settings::Settings;
use crate::{Gateway, admin, listener, tls};

/// How often idle rate counters are dropped.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// How long a stopping gateway tries to hand its last usage analytics over.
const FINAL_REPORT_WAIT: Duration = Duration::from_secs(5);

/// Serving listeners: their tasks, and the API listeners' bound addresses.
#[derive(Debug)]
pub struct Listening {
    /// The listeners' tasks (the admin listener's too).
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Each API listener's address as bound, and whether it takes TLS.
    pub addresses: Vec<(SocketAddr, bool)>,
}

/// Start the records thread (the access log of `settings`, usage analytics), then bind and serve its listeners and admin listener
/// (their addresses are logged as `listening` / `admin listening`, then `serving` once all
/// are bound; files are relative to `base_dir`); they stop when `stopped` turns true.
pub async fn start_listeners(
    gateway: &Arc<Gateway>,
    settings: &Settings,
    base_dir: &Path,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<Listening> {
    let problems = settings.problems();
    if !problems.is_empty() {
        anyhow::bail!("{}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"));
    }
    let log = access_log::open(&settings.access_log, base_dir)?;
    let usage = gateway.reporter().map(|reporter| reporter.usage().clone());
    if let Some(recorder) = Recorder::start(log, usage, settings.access_log.queue, gateway.metrics.access_log_dropped.clone())? {
        gateway.set_recorder(recorder);
    }
    let (mut tasks, mut addresses) = (Vec::new(), Vec::new());
    for (i, spec) in settings.listeners.iter().enumerate() {
        let tls = match &spec.tls {
            Some(tls) => Some(tls::serve_config(tls, base_dir, &format!("listeners[{i}].tls")).map_err(|p| anyhow::anyhow!("{p}"))?),
            None => None,
        };
        let (socket, address) = listener::bind(&spec.address).await?;
        tracing::info!(%address, tls = tls.is_some(), "listening");
        addresses.push((address, tls.is_some()));
        let (limits, logged) = (settings.limits.clone(), spec.access_log);
        tasks.push(tokio::spawn(listener::serve(gateway.clone(), socket, tls, limits, logged, stopped.clone())));
    }
    if let Some(admin_spec) = &settings.admin {
        let (socket, address) = listener::bind(&admin_spec.address).await?;
        tracing::info!(%address, "admin listening");
        tasks.push(tokio::spawn(admin::serve(gateway.clone(), socket, settings.limits.clone(), stopped.clone())));
    }
    if tasks.is_empty() {
        anyhow::bail!("no listeners configured");
    }
    tracing::info!(listeners = settings.listeners.len(), admin = settings.admin.is_some(), "serving");
    Ok(Listening { tasks, addresses })
}

/// Wait for SIGTERM or SIGINT; then, when the process runs a gateway, have its `/readyz`
/// answer 503 and go on serving for `drain_delay` (or until a second signal), so that load
/// balancers stop sending it traffic first; then tell every task to stop (`stop`) and wait
/// for them to drain.
pub async fn serve_until_signal(
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    gateway: Option<(&Gateway, Duration)>,
) -> anyhow::Result<()> {
    // Listening from here on, so that a second signal sent during the delay is not missed.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut signalled = async || {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    };
    signalled().await;
    if let Some((gateway, drain_delay)) = gateway {
        gateway.begin_shutdown();
        if !drain_delay.is_zero() {
            tracing::info!(drain_delay = %crate::contract::units::Duration(drain_delay), "shutting down; not ready, still serving");
            tokio::select! {
                _ = tokio::time::sleep(drain_delay) => {}
                _ = signalled() => {}
            }
        }
    }
    tracing::info!("shutting down; draining connections");
    let _ = stop.send(true);
    for task in tasks {
        let _ = task.await;
    }
    if let Some((gateway, _)) = gateway {
        if let Some(recorder) = gateway.recorder().cloned() {
            let _ = tokio::task::spawn_blocking(move || recorder.stop()).await;
        }
        // The last requests' usage, tallied once the records thread stopped.
        if let Some(reporter) = gateway.reporter()
            && tokio::time::timeout(FINAL_REPORT_WAIT, reporter.flush()).await.is_err()
        {
            tracing::warn!("the last usage analytics were not taken in time; they are lost");
        }
        if let Some(traces) = gateway.traces() {
            traces.shutdown().await;
        }
    }
    Ok(())
}

/// Drop idle rate counters every few seconds, for as long as the gateway runs.
pub async fn sweep_counters(gateway: Arc<Gateway>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tick.tick().await;
        gateway.counters().sweep(crate::counters::now_ms());
    }
}
