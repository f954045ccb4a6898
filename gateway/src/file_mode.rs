//! Declarative (DB-less) mode: the gateway runs from a YAML file, reloads it on SIGHUP
//! and when the file or one of its modules changes, and refuses a bad one while the
//! old snapshot keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::analytics::UsageSink;
use crate::config;
use crate::contract::Problem;
use crate::contract::fleet::UsageReport;
use crate::settings::{AccessLogTarget, Settings};
use crate::{Gateway, OnFailedApi, process, tls};

/// How often the files are checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Run the gateway from `file` until SIGTERM or SIGINT, with its access log going to
/// `access_log` when given (instead of the file's `access_log.to`).
pub async fn run(file: PathBuf, access_log: Option<AccessLogTarget>) -> anyhow::Result<()> {
    let loaded = config::load(&file).map_err(|e| anyhow::anyhow!("{e}"))?;
    let compiled = loaded.settings.compiled_dir(&loaded.base_dir, None);
    let gateway = Gateway::new(&loaded.settings, compiled.as_deref())?;
    // The environment is the gateway's once applied: the parsed file (10,000 consumers are
    // megabytes) is not kept beside the snapshot built from it.
    let files = loaded.files();
    let version = gateway
        .apply(loaded.environment, loaded.base_dir.clone(), OnFailedApi::Refuse)
        .await
        .map_err(|e| anyhow::anyhow!("{}", located(&file, &e.problems)))?;
    tracing::info!(version, file = %file.display(), "configuration applied");

    // Without a control plane, usage goes to the log, when the file asks for it.
    if loaded.settings.analytics.is_some() {
        gateway.report_usage(LoggedUsage, "file", &loaded.settings);
    }
    let (stop, stopped) = watch::channel(false);
    let listening = process::start_listeners(&gateway, &loaded.settings.clone().with_access_log(access_log), &loaded.base_dir, stopped)
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e:#}", file.display()))?;
    let drain_delay = loaded.settings.drain_delay.0;
    tokio::spawn(watch_and_reload(gateway.clone(), file, loaded.settings, files));
    tokio::spawn(process::sweep_counters(gateway.clone()));
    process::serve_until_signal(stop, listening.tasks, Some((&gateway, drain_delay))).await
}

/// Usage reports written to the process's log, one line each (`usage`, with the report).
struct LoggedUsage;

#[async_trait::async_trait]
impl UsageSink for LoggedUsage {
    async fn deliver(&self, report: &UsageReport) -> Result<(), String> {
        tracing::info!(report = %serde_json::to_string(report).map_err(|e| e.to_string())?, "usage");
        Ok(())
    }
}

/// Check a file without running it: parse, validate, build the snapshot (compiling and
/// initialising every policy). Returns every problem found.
pub fn check(file: &Path) -> Result<String, String> {
    let loaded = config::load(file).map_err(|e| e.to_string())?;
    let mut problems = loaded.settings.problems();
    let gateway = Gateway::new(&loaded.settings, None).map_err(|e| e.to_string())?;
    let built = gateway.build(&loaded.environment, &loaded.base_dir, OnFailedApi::Refuse);
    if let Err(error) = &built {
        problems.extend(error.problems.iter().cloned());
    }
    for (i, listener) in loaded.settings.listeners.iter().enumerate() {
        if let Some(tls) = &listener.tls
            && let Err(problem) = tls::server_config(tls, &loaded.base_dir, &format!("listeners[{i}].tls"))
        {
            problems.push(problem);
        }
    }
    match built {
        Ok(snapshot) if problems.is_empty() => Ok(snapshot.version),
        _ => Err(located(file, &problems)),
    }
}

/// Every problem, one line each, located in `file`.
fn located(file: &Path, problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("{}: {p}", file.display())).collect::<Vec<_>>().join("\n")
}

fn stamp(files: &[PathBuf]) -> Vec<Option<(SystemTime, u64)>> {
    files.iter().map(|f| std::fs::metadata(f).ok().and_then(|m| Some((m.modified().ok()?, m.len())))).collect()
}

/// Reload `file` on SIGHUP or when one of `files` changes; `settings` are those the process
/// started with (they take effect at the next start).
async fn watch_and_reload(gateway: Arc<Gateway>, file: PathBuf, settings: Settings, mut files: Vec<PathBuf>) {
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot listen for SIGHUP; reload on file change only");
        return;
    };
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
        // A large file takes milliseconds to parse: not on a thread that serves requests.
        let reading = file.clone();
        let read = crate::off_the_request_path(move || config::load(&reading)).await;
        match read.and_then(|read| read.map_err(|e| e.to_string())) {
            Err(error) => tracing::error!(reason, error = %error, "configuration refused; the previous one keeps serving"),
            Ok(next) => {
                let next_files = next.files();
                match gateway.apply(next.environment, next.base_dir, OnFailedApi::Refuse).await {
                    Ok(version) => {
                        tracing::info!(reason, version, "configuration applied");
                        if next.settings != settings {
                            tracing::warn!(
                                reason,
                                "listeners, admin, limits, compiled_cache, drain_delay or access_log changed: they take effect at the next start"
                            );
                        }
                        files = next_files;
                        last = stamp(&files);
                    }
                    Err(error) => tracing::error!(reason, error = %error, "configuration refused; the previous one keeps serving"),
                }
            }
        }
    }
}
