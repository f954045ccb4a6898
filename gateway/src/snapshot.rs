//! A snapshot is everything a request needs, built from one environment and never
//! changed: the route table, each operation's policy chain with its compiled policies,
//! the upstreams and the key store. A new configuration builds a new snapshot off the
//! request path; it replaces the live one atomically, or is refused whole.

mod validate;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::blocking::Blocking;
use crate::contract::Problem;
use crate::contract::environment::{Attachment, Environment, OperationConfig};
use crate::counters::CounterStore;
use crate::exchange::RouteInfo;
use crate::keys::KeyStore;
use crate::metrics::{ApiStats, Metrics};
use crate::policy::{AttachedPolicy, AttachmentSettings, CompiledPolicy, PolicyEngine, Services, builtin};
use crate::router::{ApiRoutes, OperationRoute, RouteTable};
use crate::upstream::{Clients, Upstream, parse_endpoint};

/// One operation as served: where it belongs, its chain and its upstream.
pub struct ServedOperation {
    /// API and operation names, for policies and logs.
    pub route: Arc<RouteInfo>,
    /// Global, then API, then operation policies, in order.
    pub chain: Vec<Arc<AttachedPolicy>>,
    /// Whether a policy of the chain reads the request body (so it is buffered).
    pub needs_request_body: bool,
    /// Whether a policy of the chain has a response phase.
    pub needs_response_phase: bool,
    /// Where requests go.
    pub upstream: Arc<Upstream>,
    /// Request counters of the API.
    pub stats: Arc<ApiStats>,
    /// Whether a blocking condition names the API.
    pub blocked: bool,
}

/// An immutable, complete gateway state.
pub struct Snapshot {
    /// An identifier of the configuration it was built from (sha256 of its canonical form).
    pub version: String,
    /// Host + path + method → operation.
    pub routes: RouteTable<Arc<ServedOperation>>,
    /// Digests of the policy components it runs.
    pub digests: Vec<String>,
    /// Blocked clients, applications and users.
    pub blocking: Blocking,
}

/// What the builder needs from the gateway: long-lived parts that snapshots share.
pub struct Shared<'a> {
    /// Compiles and instantiates policies.
    pub engine: &'a PolicyEngine,
    /// Rate counters.
    pub counters: Arc<dyn CounterStore>,
    /// Upstream clients.
    pub clients: &'a Clients,
    /// Metrics registry.
    pub metrics: &'a Metrics,
}

/// A configuration that could not become a snapshot.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct BuildError {
    /// Every problem found.
    pub problems: Vec<Problem>,
}

impl Snapshot {
    /// Build a snapshot: load and compile the policy modules, run every attachment's
    /// `init`, build routes and upstreams. Blocking and possibly slow (compilation).
    pub fn build(config: &Environment, base_dir: &Path, shared: &Shared<'_>) -> Result<Snapshot, BuildError> {
        let mut problems = validate::validate(config);
        let keys = match KeyStore::for_gateway(config, base_dir) {
            Ok(keys) => Some(Arc::new(keys)),
            Err(more) => {
                problems.extend(more);
                None
            }
        };
        if !problems.is_empty() {
            return Err(BuildError { problems });
        }
        let services = Arc::new(Services { keys: keys.expect("no problems means keys were built"), counters: shared.counters.clone() });

        let mut modules =
            ModuleLoader { environment: config, base_dir, engine: shared.engine, compiled: HashMap::new(), problems: Vec::new() };
        let mut attach = |path: String, list: &[Attachment], problems: &mut Vec<Problem>| -> Vec<Arc<AttachedPolicy>> {
            let mut chain = Vec::new();
            for (i, attachment) in list.iter().enumerate() {
                let at = format!("{path}[{i}]");
                let Some(compiled) = modules.get(&attachment.policy, &at) else { continue };
                let settings = AttachmentSettings {
                    config_json: attachment.config.to_string(),
                    timeout: attachment.timeout.0,
                    memory_bytes: usize::try_from(attachment.memory.0).unwrap_or(usize::MAX),
                    on_failure: attachment.on_failure,
                };
                let stats = shared.metrics.policy(compiled.name());
                match shared.engine.attach(compiled, settings, services.clone(), stats) {
                    Ok(attached) => chain.push(Arc::new(attached)),
                    Err(error) => problems.push(Problem { path: at, reason: error.to_string() }),
                }
            }
            chain
        };

        let global = attach("global_policies".into(), &config.global_policies, &mut problems);
        let mut api_routes = Vec::new();
        for (i, api) in config.apis.iter().enumerate() {
            let at = format!("apis[{i}]");
            let api_chain = attach(format!("{at}.policies"), &api.policies, &mut problems);
            let endpoints = api.upstream.endpoints.iter().filter_map(|e| parse_endpoint(e).ok()).collect();
            let upstream = Arc::new(Upstream::new(endpoints, api.upstream.timeout.0, shared.clients.get(api.upstream.connect_timeout.0)));
            let stats = shared.metrics.api(&api.name, &api.version);
            let default_operation = [OperationConfig { method: "ANY".into(), path: "/*".into(), policies: Vec::new() }];
            let operations = if api.operations.is_empty() { &default_operation[..] } else { &api.operations[..] };
            let blocked = config.blocked.apis.iter().any(|context| context.trim_end_matches('/') == api.context.trim_end_matches('/'));
            let mut routes = Vec::new();
            for (j, operation) in operations.iter().enumerate() {
                let op_chain = attach(format!("{at}.operations[{j}].policies"), &operation.policies, &mut problems);
                let chain: Vec<Arc<AttachedPolicy>> = global.iter().chain(&api_chain).chain(&op_chain).cloned().collect();
                let method = (operation.method != "ANY").then(|| http::Method::from_bytes(operation.method.as_bytes()).ok()).flatten();
                routes.push(OperationRoute {
                    method,
                    template: operation.path.clone(),
                    value: Arc::new(ServedOperation {
                        route: Arc::new(RouteInfo {
                            api_name: api.name.clone(),
                            api_version: api.version.clone(),
                            operation: format!("{} {}", operation.method, operation.path),
                        }),
                        needs_request_body: chain.iter().any(|a| a.needs_request_body()),
                        needs_response_phase: chain.iter().any(|a| a.needs_response_phase()),
                        chain,
                        upstream: upstream.clone(),
                        stats: stats.clone(),
                        blocked,
                    }),
                });
            }
            let context = if api.context == "/" { "/".to_owned() } else { api.context.trim_end_matches('/').to_owned() };
            api_routes.push(ApiRoutes { hosts: api.hosts.clone(), context, operations: routes });
        }
        problems.append(&mut modules.problems);
        let routes = match RouteTable::new(api_routes) {
            Ok(routes) => Some(routes),
            Err(error) => {
                problems.push(Problem { path: "apis".into(), reason: error.to_string() });
                None
            }
        };
        if !problems.is_empty() {
            return Err(BuildError { problems });
        }
        let digests = modules.compiled.values().map(|c| c.digest().to_owned()).collect();
        Ok(Snapshot {
            version: config.version(),
            routes: routes.expect("no problems means routes were built"),
            digests,
            blocking: Blocking::new(&config.blocked),
        })
    }
}

/// Loads each module once per build, by attachment name.
struct ModuleLoader<'a> {
    environment: &'a Environment,
    base_dir: &'a Path,
    engine: &'a PolicyEngine,
    compiled: HashMap<String, Arc<CompiledPolicy>>,
    problems: Vec<Problem>,
}

impl ModuleLoader<'_> {
    fn get(&mut self, name: &str, at: &str) -> Option<Arc<CompiledPolicy>> {
        if let Some(compiled) = self.compiled.get(name) {
            return Some(compiled.clone());
        }
        let result = if let Some(builtin) = builtin::find(name) {
            self.engine.compile(name, builtin.component, None).map_err(|e| e.to_string())
        } else if let Some(source) = self.environment.modules.get(name) {
            let path = source.file(self.base_dir);
            std::fs::read(&path)
                .map_err(|e| format!("cannot read policy module {}: {e}", path.display()))
                .and_then(|bytes| self.engine.compile(name, &bytes, source.sha256.as_deref()).map_err(|e| e.to_string()))
        } else {
            Err(format!("unknown policy `{name}`"))
        };
        match result {
            Ok(compiled) => {
                self.compiled.insert(name.to_owned(), compiled.clone());
                Some(compiled)
            }
            Err(reason) => {
                let path = if self.environment.modules.contains_key(name) { format!("modules.{name}") } else { at.to_owned() };
                if !self.problems.iter().any(|p| p.path == path) {
                    self.problems.push(Problem { path, reason });
                }
                None
            }
        }
    }
}
