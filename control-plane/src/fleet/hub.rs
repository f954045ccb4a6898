//! The event hub: per environment, the snapshot message gateways are sent, rebuilt after
//! every change the control plane announces (deployments, lifecycle changes, revocations,
//! subscriptions, keys, blocking conditions; from this node or, through the database, from
//! another) and at least every 30 s. Gateways' streams watch it; a rebuild that changes
//! nothing sends nothing.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use portico_gateway::contract::environment::Environment;
use portico_gateway::contract::fleet::{
    ENVIRONMENT_EVENT, EnvironmentMessage, PROTOCOL_VERSION, REVOCATIONS_EVENT, RevocationsMessage, event,
};
use tokio::sync::watch;

use crate::AppState;
use crate::error::ApiResult;

/// Changes closer together than this are built once.
const COALESCE: Duration = Duration::from_millis(20);
/// A rebuild at least this often, whatever was announced.
const REBUILD_EVERY: Duration = Duration::from_secs(30);

/// One environment's snapshot as sent.
#[derive(Debug)]
pub struct Published {
    /// The message.
    pub message: EnvironmentMessage,
    /// The message as a stream event, serialised once for every gateway.
    pub event: Bytes,
    /// When only revocations changed since the previous snapshot: that snapshot's version,
    /// and the [`RevocationsMessage`] event that a gateway sent it needs instead of `event`.
    pub revocations: Option<(String, Bytes)>,
    /// When it was built.
    pub built_at: Instant,
    /// The gateways that acknowledged it on this node, so that each one's rollout lag is
    /// counted once.
    acknowledged: Mutex<HashSet<String>>,
}

impl Published {
    /// Whether this is the first acknowledgement of `gateway` for this snapshot.
    pub fn first_acknowledgement(&self, gateway: &str) -> bool {
        self.acknowledged.lock().unwrap_or_else(|e| e.into_inner()).insert(gateway.to_owned())
    }
}

/// Builds the configuration an environment runs from the database; given to the hub by
/// the crate root (it is `crate::environment`'s), so that the fleet depends on no business area.
pub type Builder = for<'a> fn(&'a AppState, &'a str) -> Pin<Box<dyn Future<Output = ApiResult<Environment>> + Send + 'a>>;

/// The latest snapshot of each environment gateways follow.
pub struct Hub {
    build: Builder,
    environments: Mutex<HashMap<String, watch::Receiver<Option<Arc<Published>>>>>,
    /// The W3C trace context of the change committed last here, when it was traced: the
    /// snapshots it makes carry it to the gateways.
    change_trace: Mutex<Option<String>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

/// Build what `environment` runs now, from the database.
pub async fn publish(state: &AppState, environment: &str) -> ApiResult<Published> {
    let built_at = Instant::now();
    let built = (state.hub.build)(state, environment).await;
    state.metrics.snapshot_built(environment, built.is_ok(), built_at.elapsed());
    let content = built?;
    let traceparent = state.hub.change_trace.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let message = EnvironmentMessage {
        protocol: PROTOCOL_VERSION,
        environment: environment.to_owned(),
        version: content.version(),
        content,
        traceparent,
    };
    let data = serde_json::to_string(&message).map_err(|e| crate::error::ApiError::Internal(e.to_string()))?;
    Ok(Published {
        event: Bytes::from(event(ENVIRONMENT_EVENT, &data)),
        message,
        revocations: None,
        built_at,
        acknowledged: Mutex::default(),
    })
}

/// `published`, with the revocations event that takes a gateway from `previous` to it when
/// that is all that changed.
fn with_revocations(mut published: Published, previous: Option<&Published>) -> Published {
    let delta = previous.and_then(|previous| RevocationsMessage::between(&previous.message, &published.message));
    published.revocations = delta.and_then(|delta| {
        let data = serde_json::to_string(&delta).ok()?;
        Some((delta.base, Bytes::from(event(REVOCATIONS_EVENT, &data))))
    });
    published
}

impl Hub {
    /// A hub whose snapshots `build` makes.
    pub fn new(build: Builder) -> Self {
        Self { build, environments: Mutex::default(), change_trace: Mutex::default() }
    }

    /// Remember the trace of the change being committed (none for an untraced one).
    pub(crate) fn set_change_trace(&self, traceparent: Option<String>) {
        *self.change_trace.lock().unwrap_or_else(|e| e.into_inner()) = traceparent;
    }

    /// The latest snapshot of each environment this node's gateways follow.
    pub fn followed(&self) -> Vec<(String, Arc<Published>)> {
        let environments = self.environments.lock().unwrap_or_else(|e| e.into_inner());
        environments.iter().filter_map(|(name, receiver)| Some((name.clone(), receiver.borrow().clone()?))).collect()
    }

    /// The latest snapshot of `environment`, if this node's gateways follow it.
    pub fn latest(&self, environment: &str) -> Option<Arc<Published>> {
        self.environments.lock().unwrap_or_else(|e| e.into_inner()).get(environment)?.borrow().clone()
    }

    /// Follow `environment`: the receiver holds its latest snapshot (`None` until the
    /// first is built). The first follower of an environment starts its builder.
    pub fn follow(&self, state: &AppState, environment: &str) -> watch::Receiver<Option<Arc<Published>>> {
        let mut environments = self.environments.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(receiver) = environments.get(environment) {
            return receiver.clone();
        }
        let (sender, receiver) = watch::channel(None);
        environments.insert(environment.to_owned(), receiver.clone());
        tokio::spawn(build(state.clone(), environment.to_owned(), sender));
        receiver
    }
}

async fn build(state: AppState, environment: String, sender: watch::Sender<Option<Arc<Published>>>) {
    let mut changes = state.changes.subscribe();
    loop {
        match publish(&state, &environment).await {
            Ok(published) => {
                let previous = sender.borrow().clone();
                if previous.as_ref().is_none_or(|p| p.message.version != published.message.version) {
                    let published = with_revocations(published, previous.as_deref());
                    let what = if published.revocations.is_some() { "revocations only" } else { "whole" };
                    tracing::info!(environment = %environment, version = %published.message.version, what, "new snapshot");
                    sender.send_replace(Some(Arc::new(published)));
                }
            }
            Err(error) => {
                tracing::error!(environment = %environment, error = %error, "cannot build the snapshot; gateways keep the previous one")
            }
        }
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                tokio::time::sleep(COALESCE).await;
                changes.borrow_and_update();
            }
            _ = tokio::time::sleep(REBUILD_EVERY) => {}
        }
    }
}
