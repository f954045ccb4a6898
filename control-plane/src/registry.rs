//! The policy components the control plane knows. For now these are the gateway's built-in
//! policies. An attachment's configuration is checked the way a gateway would check it:
//! the policy's own `init` runs on it, so the publisher gets the policy's message at once,
//! not a refused deployment later.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use portico_gateway::config::{Attachment, FailureMode};
use portico_gateway::counters::LocalCounters;
use portico_gateway::keys::KeyStore;
use portico_gateway::metrics::PolicyStats;
use portico_gateway::policy::{AttachmentSettings, LoadError, PolicyEngine, Services, builtin};

use crate::error::{ApiError, ApiResult};

/// The known policies.
#[derive(Debug, Default)]
pub struct Registry {}

/// The engine configurations are checked with: one per process, made on first use, so
/// each policy is compiled once however many registries there are.
static CHECKER: OnceLock<Result<(PolicyEngine, Arc<Services>), String>> = OnceLock::new();

impl Registry {
    /// Check `attachments` (each with the field path it came from) by running each policy's
    /// `init` on its configuration. Blocking: compiles a policy the first time it is seen.
    pub fn check(&self, attachments: &[(String, Attachment)]) -> ApiResult<()> {
        if attachments.is_empty() {
            return Ok(());
        }
        let (engine, services) = CHECKER
            .get_or_init(|| {
                let keys = KeyStore::from_config(&[], &[], Path::new(".")).map_err(|_| "an empty key store".to_owned())?;
                let services = Arc::new(Services { keys: Arc::new(keys), counters: Arc::new(LocalCounters::new()) });
                PolicyEngine::new().map(|engine| (engine, services)).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| ApiError::Internal(format!("policy engine: {e}")))?;
        for (field, attachment) in attachments {
            let Some(policy) = builtin::find(&attachment.policy) else {
                return Err(ApiError::invalid(format!("{field}.policy"), format!("`{}` is not a known policy", attachment.policy)));
            };
            let compiled = engine.compile(policy.name, policy.component, None).map_err(|e| ApiError::Internal(e.to_string()))?;
            let settings = AttachmentSettings {
                config_json: attachment.config.to_string(),
                timeout: Duration::from_secs(1),
                memory_bytes: 64 << 20,
                on_failure: FailureMode::Closed,
            };
            match engine.attach(compiled, settings, services.clone(), Arc::new(PolicyStats::default())) {
                Ok(_) => {}
                Err(LoadError::Config { reason, .. }) => return Err(ApiError::invalid(format!("{field}.config"), reason)),
                Err(other) => return Err(ApiError::invalid(format!("{field}.config"), other.to_string())),
            }
        }
        Ok(())
    }
}
