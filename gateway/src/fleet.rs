//! Gateways fed by a control plane: [`follow`] is the one loop that takes snapshots from a
//! [`EnvironmentSource`] (a control plane over the network, WSO2 pattern 2, or the one in the
//! same process, all-in-one): each snapshot offered is checked, its modules fetched by
//! digest and verified, compiled off the request path, swapped in atomically, cached, and
//! acknowledged. A network gateway starts from its last-known-good cache when there is one,
//! so it serves even while the control plane is away (across its own restarts too).

pub mod cache;
pub mod client;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use tokio::sync::watch;

use self::cache::Cache;
use self::client::{ClientError, ControlPlane, EventStream};
use crate::contract::environment::Environment;
use crate::contract::fleet::{
    Ack, ENVIRONMENT_EVENT, EnvironmentMessage, PROTOCOL_VERSION, REVOCATIONS_EVENT, Refusal, RevocationsMessage,
};
use crate::settings::Settings;
use crate::{Gateway, OnFailedApi, process};

/// The longest wait between two attempts to reach the control plane.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Where, in its cache folder, a gateway keeps the keys its OpenID providers last published.
const PROVIDERS_DIR: &str = "providers";

/// Where, in its cache or data folder, a gateway keeps the policies it compiled, unless its
/// settings say `compiled_cache`.
pub const COMPILED_DIR: &str = "compiled";

/// How a fleet gateway is started.
#[derive(Debug, Clone)]
pub struct Options {
    /// The control plane's URL (`https://host:port`; `http://` for loopback and tests).
    pub control_plane: String,
    /// A PEM file of the CA certificates the control plane's certificate must chain to (or
    /// that certificate itself, pinned); the system's roots when absent.
    pub control_plane_ca: Option<PathBuf>,
    /// The certificate (and key) this gateway presents to a control plane that asks for
    /// one (mutual TLS, on top of the token).
    pub client_certificate: Option<crate::settings::CertificateConfig>,
    /// The environment whose snapshot this gateway runs.
    pub environment: String,
    /// The gateway token of that environment.
    pub token: String,
    /// The gateway's id; by default one made up at its first start and kept in the cache.
    pub id: Option<String>,
    /// The last-known-good cache folder.
    pub cache_dir: PathBuf,
    /// Where the gateway listens (with TLS, when its settings say so), and its limits.
    pub settings: Settings,
    /// The folder the settings' relative paths (certificates) start from.
    pub settings_dir: PathBuf,
}

/// Run until SIGTERM or SIGINT.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let cache =
        Cache::open(&options.cache_dir).map_err(|e| anyhow::anyhow!("cannot use the cache folder {}: {e}", options.cache_dir.display()))?;
    let id = match &options.id {
        Some(id) => id.clone(),
        None => cache.gateway_id().map_err(|e| anyhow::anyhow!("cannot keep the gateway id in {}: {e}", options.cache_dir.display()))?,
    };
    let control_plane = ControlPlane::new(
        &options.control_plane,
        options.control_plane_ca.as_deref(),
        options.client_certificate.as_ref(),
        &options.environment,
        &options.token,
        &id,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let compiled = options.settings.compiled_dir(&options.settings_dir, Some(cache.dir().join(COMPILED_DIR)));
    let gateway = Gateway::new(&options.settings, compiled.as_deref())?;
    let providers = cache.dir().join(PROVIDERS_DIR);
    gateway
        .keep_provider_keys_in(&providers)
        .map_err(|e| anyhow::anyhow!("cannot keep OpenID providers' keys in {}: {e}", providers.display()))?;
    start_from_cache(&gateway, &cache, &options.environment).await;

    gateway.report_usage(control_plane.clone(), &id, &options.settings);
    let (stop, stopped) = watch::channel(false);
    let listening = process::start_listeners(&gateway, &options.settings, &options.settings_dir, stopped).await?;
    tokio::spawn(process::sweep_counters(gateway.clone()));
    let source = Network { control_plane, id, connected: None, last: None };
    tokio::spawn(follow(gateway.clone(), source, cache, options.environment.clone()));
    process::serve_until_signal(stop, listening.tasks, Some((&gateway, options.settings.drain_delay.0))).await
}

/// Apply the cached snapshot, if there is a good one.
async fn start_from_cache(gateway: &Arc<Gateway>, cache: &Cache, environment: &str) {
    match cache.load() {
        Ok(None) => tracing::info!("no cached snapshot; waiting for the control plane"),
        Ok(Some(message)) if message.environment != environment => tracing::error!(
            cached = %message.environment,
            environment,
            "last-known-good cache refused: it holds another environment's snapshot; waiting for the control plane"
        ),
        Ok(Some(message)) => match gateway.apply(message.content, cache.dir().to_owned(), OnFailedApi::Isolate).await {
            Ok(version) => tracing::info!(version, "serving the last-known-good snapshot from the cache"),
            Err(error) => tracing::error!(error = %error, "last-known-good cache refused; waiting for the control plane"),
        },
        Err(error) => tracing::error!(error = %error, "last-known-good cache refused; waiting for the control plane"),
    }
}

/// Where a gateway's environments come from.
#[async_trait::async_trait]
pub trait EnvironmentSource: Send {
    /// The next environment offered, waiting for it (and reconnecting, for a remote
    /// source); `Err` names why what was offered is not an environment message. `None`: no
    /// more, ever.
    async fn next(&mut self) -> Option<Result<EnvironmentMessage, String>>;
    /// The bytes of the policy component with this sha256.
    async fn module(&self, sha256: &str) -> Result<Vec<u8>, String>;
    /// Report what the gateway runs now, and what it refused.
    async fn acknowledge(&self, ack: Ack);
}

/// Apply every snapshot the source offers and acknowledge each; a refused one is reported
/// and the current one keeps serving.
pub async fn follow(gateway: Arc<Gateway>, mut source: impl EnvironmentSource, cache: Cache, environment: String) {
    while let Some(offered) = source.next().await {
        let ack = offer(&gateway, &source, &cache, &environment, offered).await;
        source.acknowledge(ack).await;
    }
}

/// Apply one offered snapshot; the acknowledgement says what runs now, which of its APIs
/// failed, and, if the offer was refused, why.
pub async fn offer(
    gateway: &Arc<Gateway>,
    source: &impl EnvironmentSource,
    cache: &Cache,
    environment: &str,
    offered: Result<EnvironmentMessage, String>,
) -> Ack {
    let ack = |refused: Option<Refusal>| {
        let snapshot = gateway.snapshot();
        Ack {
            running: snapshot.as_ref().map(|s| s.version.clone()),
            refused,
            failed_apis: snapshot.map(|s| s.failed.clone()).unwrap_or_default(),
        }
    };
    let message = match offered {
        Ok(message) => message,
        Err(reason) => {
            tracing::error!(reason, "snapshot refused; the current one keeps serving");
            return ack(Some(Refusal { version: String::new(), reason }));
        }
    };
    // The same version again is applied again only if some of its APIs failed: a module
    // that could not be fetched then may be had now.
    if gateway.snapshot().is_some_and(|s| s.version == message.version && s.failed.is_empty()) {
        return ack(None);
    }
    let version = message.version.clone();
    // Applying it joins the trace of the change that made it, when both planes trace.
    let span = message.traceparent.as_deref().zip(gateway.traces()).and_then(|(traceparent, traces)| {
        let attributes =
            vec![KeyValue::new("portico.environment", environment.to_owned()), KeyValue::new("portico.snapshot.version", version.clone())];
        traces.child_of_remote(traceparent, "apply snapshot", attributes)
    });
    let applied = apply(gateway, source, cache, environment, message).await;
    if let Some(span) = span {
        span.end(applied.clone().map(|()| KeyValue::new("portico.outcome", "applied")));
    }
    match applied {
        Ok(()) => {
            tracing::info!(version, environment, "snapshot applied");
            ack(None)
        }
        Err(reason) => {
            tracing::error!(version, reason, "snapshot refused; the current one keeps serving");
            ack(Some(Refusal { version, reason }))
        }
    }
}

async fn apply(
    gateway: &Arc<Gateway>,
    source: &impl EnvironmentSource,
    cache: &Cache,
    environment: &str,
    message: EnvironmentMessage,
) -> Result<(), String> {
    if message.protocol != PROTOCOL_VERSION {
        return Err(format!("protocol {} (this gateway speaks {PROTOCOL_VERSION})", message.protocol));
    }
    if message.environment != environment {
        return Err(format!("it is for environment `{}`, this gateway serves `{environment}`", message.environment));
    }
    // Hashing a large environment, reading and hashing modules and syncing files to disk
    // take milliseconds: not on a thread that serves requests.
    let checking = cache.clone();
    let (message, content, missing) = crate::off_the_request_path(move || missing_modules(&checking, message)).await??;
    for (name, sha256) in missing {
        // A module that cannot be had fails the APIs that attach it, not the environment.
        match source.module(&sha256).await {
            Ok(bytes) => {
                let storing = cache.clone();
                let stored = crate::off_the_request_path(move || storing.store_module(&sha256, &bytes)).await?;
                stored.map_err(|e| format!("module `{name}`: {e}"))?
            }
            Err(error) => tracing::error!(module = name, sha256, error, "cannot fetch a policy module; the APIs that attach it answer 503"),
        }
    }
    gateway.apply(content, cache.dir().to_owned(), OnFailedApi::Isolate).await.map_err(|e| e.to_string())?;
    let saving = cache.clone();
    if let Err(error) = crate::off_the_request_path(move || saving.save(&message).map_err(|e| e.to_string())).await? {
        tracing::error!(error = %error, "the applied snapshot could not be cached; a restart without the control plane would start from an older one");
    }
    Ok(())
}

/// A message checked by [`missing_modules`], a copy of its environment to apply, and the
/// modules it names that the cache does not hold yet (name, sha256).
type Checked = (EnvironmentMessage, Environment, Vec<(String, String)>);

/// Check `message` against its version and find the modules the cache lacks.
fn missing_modules(cache: &Cache, message: EnvironmentMessage) -> Result<Checked, String> {
    let computed = message.content.version();
    if computed != message.version {
        return Err(format!("its configuration has version {computed}, the message says {}", message.version));
    }
    let mut missing = Vec::new();
    for (name, module) in &message.content.modules {
        if module.path.is_some() {
            return Err(format!("module `{name}` names a file; a control plane may only name modules by sha256"));
        }
        let Some(sha256) = module.sha256.as_deref() else {
            return Err(format!("module `{name}` has no sha256"));
        };
        if !cache.module_ok(sha256).map_err(|e| format!("module `{name}`: {e}"))? {
            missing.push((name.clone(), sha256.to_owned()));
        }
    }
    let content = message.content.clone();
    Ok((message, content, missing))
}

/// A control plane over the network: the event stream, kept open and reopened with a
/// growing pause while the control plane is away.
struct Network {
    control_plane: ControlPlane,
    id: String,
    connected: Option<EventStream>,
    /// The last environment message received on this stream: what revocations apply to.
    last: Option<EnvironmentMessage>,
}

#[async_trait::async_trait]
impl EnvironmentSource for Network {
    async fn next(&mut self) -> Option<Result<EnvironmentMessage, String>> {
        let mut backoff = Duration::from_millis(200);
        let mut unreachable_logged = false;
        loop {
            if let Some(stream) = &mut self.connected {
                match stream.next().await {
                    // Parsing a large environment, or applying revocations to one (a copy
                    // and a hash), takes milliseconds: not on a thread that serves requests.
                    // Each read also makes the copy kept as `last`, what revocations apply to.
                    Ok(Some((name, data))) if name == ENVIRONMENT_EVENT => {
                        let read = crate::off_the_request_path(move || {
                            serde_json::from_str::<EnvironmentMessage>(&data)
                                .map(|message| (message.clone(), message))
                                .map_err(|e| format!("not an environment message: {e}"))
                        });
                        return Some(match read.await.and_then(|read| read) {
                            Ok((message, last)) => {
                                self.last = Some(last);
                                Ok(message)
                            }
                            Err(reason) => {
                                self.last = None;
                                Err(reason)
                            }
                        });
                    }
                    Ok(Some((name, data))) if name == REVOCATIONS_EVENT => {
                        // Taken: on any failure the stream reconnects and starts again with
                        // the whole environment.
                        let last = self.last.take();
                        let read = crate::off_the_request_path(move || {
                            let revocations =
                                serde_json::from_str::<RevocationsMessage>(&data).map_err(|e| format!("not a revocations message: {e}"))?;
                            let last = last.ok_or("revocations before any environment")?;
                            let (revoked, forgotten) = (revocations.revoked.len(), revocations.forgotten.len());
                            tracing::info!(revoked, forgotten, version = %revocations.version, "revocations received");
                            revocations.apply(&last).map(|message| (message.clone(), message))
                        });
                        match read.await.and_then(|read| read) {
                            Ok((message, last)) => {
                                self.last = Some(last);
                                return Some(Ok(message));
                            }
                            // The stream and this gateway disagree: a new stream starts with the whole environment.
                            Err(reason) => tracing::warn!(reason, "revocations not applicable; reconnecting for the whole environment"),
                        }
                    }
                    Ok(Some(_)) => continue,
                    Ok(None) => tracing::warn!("the control plane closed the stream; reconnecting"),
                    Err(error) => tracing::warn!(error = %error, "lost the control plane; serving the current snapshot, reconnecting"),
                }
                self.connected = None;
                self.last = None;
            }
            match self.control_plane.stream().await {
                Ok(stream) => {
                    tracing::info!(gateway = %self.id, "connected to the control plane");
                    self.connected = Some(stream);
                    continue;
                }
                Err(ClientError::Refused { status, detail }) => {
                    tracing::error!(status = status.as_u16(), detail = %detail, "the control plane refused this gateway; serving the current snapshot");
                    backoff = MAX_BACKOFF;
                }
                Err(error) => {
                    if !unreachable_logged {
                        tracing::warn!(error = %error, "control plane unreachable; serving the current snapshot, retrying");
                        unreachable_logged = true;
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn module(&self, sha256: &str) -> Result<Vec<u8>, String> {
        self.control_plane.module(sha256).await.map(|bytes| bytes.to_vec()).map_err(|e| e.to_string())
    }

    async fn acknowledge(&self, ack: Ack) {
        if let Err(error) = self.control_plane.ack(&ack).await {
            tracing::warn!(error = %error, "acknowledgement not delivered");
        }
    }
}
