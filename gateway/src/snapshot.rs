//! A snapshot is everything a request needs, built from one environment and never
//! changed: the route table, each operation's policy chain with its compiled policies,
//! the upstreams and the key store. A new configuration builds a new snapshot off the
//! request path; it replaces the live one atomically, or is refused whole. An API that
//! cannot be loaded fails alone (it answers 503), unless the caller wants all or nothing.

pub(crate) mod validate;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::blocking::Blocking;
use crate::contract::Problem;
use crate::contract::environment::{ApiConfig, Attachment, Environment, OperationConfig};
use crate::contract::fleet::FailedApi;
use crate::counters::Counting;
use crate::exchange::RouteInfo;
use crate::keys::{KeyStore, Providers};
use crate::metrics::{ApiStats, Metrics};
use crate::policy::{AttachedPolicy, AttachmentSettings, CompiledPolicy, PolicyCeilings, PolicyEngine, Services, builtin};
use crate::router::{ApiRoutes, OperationRoute, RouteError, RouteTable};
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
    /// Whether the API could not be loaded: it answers 503.
    pub unavailable: bool,
}

/// An immutable, complete gateway state.
pub struct Snapshot {
    /// An identifier of the configuration it was built from (sha256 of its canonical form).
    pub version: String,
    /// That configuration's [`Environment::version_but_revocations`].
    pub base: String,
    /// Host + path + method → operation.
    pub routes: Arc<RouteTable<Arc<ServedOperation>>>,
    /// The credentials its policies check, revocations included.
    pub keys: Arc<KeyStore>,
    /// Digests of the policy components it runs.
    pub digests: Vec<String>,
    /// Blocked clients, applications and users.
    pub blocking: Arc<Blocking>,
    /// The APIs that could not be loaded, and why: each answers 503 where it can be
    /// routed at all.
    pub failed: Vec<FailedApi>,
    /// Where its policies count.
    pub(crate) counting: Counting,
}

/// What the builder needs from the gateway: long-lived parts that snapshots share.
pub struct Shared<'a> {
    /// Compiles and instantiates policies.
    pub engine: &'a PolicyEngine,
    /// Where policies count.
    pub(crate) counting: Counting,
    /// Upstream clients.
    pub clients: &'a Clients,
    /// Metrics registry.
    pub metrics: &'a Metrics,
    /// What attachments may ask for.
    pub ceilings: PolicyCeilings,
    /// The OpenID providers whose keys the gateway keeps.
    pub providers: &'a Providers,
}

/// A configuration that could not become a snapshot.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct BuildError {
    /// Every problem found.
    pub problems: Vec<Problem>,
}

/// What a configuration with an API that cannot be loaded becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailedApi {
    /// Refused whole: a file its operator edits, who wants every mistake at once.
    Refuse,
    /// Served without that API, which answers 503: an environment many publishers share,
    /// where one API must not hold back the rest (revocations and blocks included).
    Isolate,
}

impl Snapshot {
    /// Build a snapshot: load and compile the policy modules, run every attachment's
    /// `init`, build routes and upstreams. Blocking and possibly slow (compilation). A
    /// problem of the environment as a whole refuses it; an API's own problems fail that
    /// API only (see [`OnFailedApi`]).
    pub fn build(config: &Environment, base_dir: &Path, shared: &Shared<'_>, on_failed_api: OnFailedApi) -> Result<Snapshot, BuildError> {
        let validation = validate::validate(config, &shared.ceilings);
        let upstream_rule = Arc::new(validation.upstream_rule);
        let mut problems = validation.global;
        let keys = match KeyStore::for_gateway(config, base_dir, shared.providers) {
            Ok(keys) => Some(Arc::new(keys)),
            Err(more) => {
                problems.extend(more);
                None
            }
        };
        if !problems.is_empty() {
            return Err(BuildError { problems });
        }
        let keys = keys.expect("no problems means keys were built");
        let services = Arc::new(Services { keys: keys.clone(), counters: shared.counting.store.clone() });

        let mut modules = ModuleLoader { environment: config, base_dir, engine: shared.engine, loaded: HashMap::new() };
        let mut attach = |path: String, list: &[Attachment], problems: &mut Vec<Problem>| -> Vec<Arc<AttachedPolicy>> {
            let mut chain = Vec::new();
            for (i, attachment) in list.iter().enumerate() {
                let at = format!("{path}[{i}]");
                let compiled = match modules.get(&attachment.policy) {
                    Ok(compiled) => compiled,
                    Err(reason) => {
                        problems.push(Problem { path: format!("{at}.policy"), reason });
                        continue;
                    }
                };
                let stats = Arc::new(shared.metrics.policy(compiled.name()));
                match shared.engine.attach(compiled, AttachmentSettings::new(attachment, &shared.ceilings), services.clone(), stats) {
                    Ok(attached) => chain.push(Arc::new(attached)),
                    Err(error) => problems.push(Problem { path: at, reason: error.to_string() }),
                }
            }
            chain
        };

        let global = attach("global_policies".into(), &config.global_policies, &mut problems);
        if !problems.is_empty() {
            return Err(BuildError { problems });
        }
        // Each API's routes, with the index of the API in `config.apis`.
        let mut api_routes = Vec::with_capacity(config.apis.len());
        let mut failed: Vec<(usize, Vec<Problem>)> = Vec::new();
        for ((i, api), mut api_problems) in config.apis.iter().enumerate().zip(validation.apis) {
            let at = format!("apis[{i}]");
            let stats = shared.metrics.api(&api.name, &api.version);
            let blocked = is_blocked(config, api);
            let mut routes = Vec::new();
            let upstream_config = &api.upstream;
            let client = shared.clients.get(
                upstream_config.connect_timeout.0,
                upstream_config.ca.as_deref(),
                upstream_config.client_certificate.as_ref(),
                &upstream_rule,
            );
            if let (true, Err(reason)) = (api_problems.is_empty(), &client) {
                api_problems.push(Problem { path: format!("{at}.upstream.ca"), reason: reason.clone() });
            }
            if let (true, Ok(client)) = (api_problems.is_empty(), client) {
                let api_chain = attach(format!("{at}.policies"), &api.policies, &mut api_problems);
                let endpoints = api.upstream.endpoints.iter().filter_map(|e| parse_endpoint(e).ok()).collect();
                let upstream = Arc::new(Upstream::new(endpoints, api.upstream.timeout.0, client));
                let default_operation = [OperationConfig { method: "ANY".into(), path: "/*".into(), policies: Vec::new() }];
                let operations = if api.operations.is_empty() { &default_operation[..] } else { &api.operations[..] };
                for (j, operation) in operations.iter().enumerate() {
                    let op_chain = attach(format!("{at}.operations[{j}].policies"), &operation.policies, &mut api_problems);
                    let chain: Vec<Arc<AttachedPolicy>> = global.iter().chain(&api_chain).chain(&op_chain).cloned().collect();
                    let method = (operation.method != "ANY").then(|| http::Method::from_bytes(operation.method.as_bytes()).ok()).flatten();
                    routes.push(OperationRoute {
                        method,
                        template: operation.path.clone(),
                        value: Arc::new(ServedOperation {
                            route: route_info(api, &operation.name()),
                            needs_request_body: chain.iter().any(|a| a.needs_request_body()),
                            needs_response_phase: chain.iter().any(|a| a.needs_response_phase()),
                            chain,
                            upstream: upstream.clone(),
                            stats: stats.clone(),
                            blocked,
                            unavailable: false,
                        }),
                    });
                }
            }
            if !api_problems.is_empty() {
                routes = unavailable(api, stats, blocked, shared).into_iter().collect();
                failed.push((i, api_problems));
            }
            api_routes.push((i, ApiRoutes { hosts: api.hosts.clone(), context: context_of(&api.context), operations: routes }));
        }
        let routes = loop {
            let error = match RouteTable::new(api_routes.iter().map(|(_, routes)| routes.clone()).collect()) {
                Ok(table) => break table,
                Err(error) => error,
            };
            // An API that does not route fails alone: its operations give way to a 503
            // stand-in, and if even that does not route (its context or hosts), it is left out.
            let k = error.api();
            let i = api_routes[k].0;
            let problem = route_problem(&error, i, |first| api_routes[first].0);
            let stand_in = failed.iter().any(|(f, _)| *f == i);
            match failed.iter_mut().find(|(f, _)| *f == i) {
                Some((_, problems)) => problems.push(problem),
                None => failed.push((i, vec![problem])),
            }
            let api = &config.apis[i];
            if stand_in
                || matches!(error, RouteError::InvalidHost { .. } | RouteError::InvalidContext { .. } | RouteError::DuplicateContext { .. })
            {
                api_routes.remove(k);
            } else {
                let operation = unavailable(api, shared.metrics.api(&api.name, &api.version), is_blocked(config, api), shared);
                api_routes[k].1.operations = operation.into_iter().collect();
            }
        };
        failed.sort_by_key(|(i, _)| *i);
        if on_failed_api == OnFailedApi::Refuse && !failed.is_empty() {
            return Err(BuildError { problems: failed.into_iter().flat_map(|(_, problems)| problems).collect() });
        }
        let failed = failed
            .into_iter()
            .map(|(i, problems)| FailedApi {
                name: config.apis[i].name.clone(),
                version: config.apis[i].version.clone(),
                problems: problems.iter().map(ToString::to_string).collect(),
            })
            .collect();
        let digests = modules.loaded.values().filter_map(|loaded| loaded.as_ref().ok()).map(|c| c.digest().to_owned()).collect();
        Ok(Snapshot {
            version: config.version(),
            base: config.version_but_revocations(),
            routes: Arc::new(routes),
            keys,
            digests,
            blocking: Arc::new(Blocking::new(&config.blocked)),
            failed,
            counting: shared.counting.clone(),
        })
    }

    /// This snapshot with the revocations of `config`, which differs from the configuration
    /// it was built from in its revocations only (`base` is the same): nothing is built
    /// again, and requests on this snapshot see the revocations too.
    pub fn revoked(&self, config: &Environment) -> Snapshot {
        self.keys.set_revocations(config);
        Snapshot {
            version: config.version(),
            base: self.base.clone(),
            routes: self.routes.clone(),
            keys: self.keys.clone(),
            digests: self.digests.clone(),
            blocking: self.blocking.clone(),
            failed: self.failed.clone(),
            counting: self.counting.clone(),
        }
    }
}

fn route_info(api: &ApiConfig, operation: &str) -> Arc<RouteInfo> {
    Arc::new(RouteInfo::new(api.name.clone(), api.version.clone(), operation.to_owned()))
}

/// Whether a blocking condition names the API (by its context).
fn is_blocked(config: &Environment, api: &ApiConfig) -> bool {
    config.blocked.apis.iter().any(|context| context.trim_end_matches('/') == api.context.trim_end_matches('/'))
}

fn context_of(context: &str) -> String {
    if context == "/" { "/".to_owned() } else { context.trim_end_matches('/').to_owned() }
}

/// The one operation of an API that could not be loaded: every path under its context
/// answers 503 (none when even a client without TLS trust cannot be made: it is not routed).
fn unavailable(api: &ApiConfig, stats: Arc<ApiStats>, blocked: bool, shared: &Shared<'_>) -> Option<OperationRoute<Arc<ServedOperation>>> {
    // It has no endpoint: the rule is never asked.
    let client = shared.clients.get(api.upstream.connect_timeout.0, None, None, &Arc::default()).ok()?;
    Some(OperationRoute {
        method: None,
        template: "/*".into(),
        value: Arc::new(ServedOperation {
            route: route_info(api, "ANY /*"),
            chain: Vec::new(),
            needs_request_body: false,
            needs_response_phase: false,
            upstream: Arc::new(Upstream::new(Vec::new(), api.upstream.timeout.0, client)),
            stats,
            blocked,
            unavailable: true,
        }),
    })
}

/// A route error as a problem of `apis[i]`; `original(n)` maps the router's API index to
/// the environment's.
fn route_problem(error: &RouteError, i: usize, original: impl Fn(usize) -> usize) -> Problem {
    let at = format!("apis[{i}]");
    match error {
        RouteError::InvalidHost { host, .. } => {
            Problem { path: format!("{at}.hosts"), reason: format!("`{host}` is not a host name or `*.domain` (without a port)") }
        }
        RouteError::InvalidContext { context, .. } => {
            Problem { path: format!("{at}.context"), reason: format!("`{context}` is not a normalised path") }
        }
        RouteError::DuplicateContext { first, context, host, .. } => Problem {
            path: format!("{at}.context"),
            reason: format!("`{context}` on {host} is already the context of apis[{}]", original(*first)),
        },
        RouteError::InvalidTemplate { template, reason, .. } => {
            Problem { path: format!("{at}.operations"), reason: format!("template `{template}` is invalid: {reason}") }
        }
        RouteError::DuplicateOperation { method, first, second, .. } => {
            Problem { path: format!("{at}.operations"), reason: format!("templates `{first}` and `{second}` are the same for {method}") }
        }
    }
}

/// Loads each module once per build, by attachment name; a module that cannot be loaded
/// fails every attachment of it, with the same reason.
struct ModuleLoader<'a> {
    environment: &'a Environment,
    base_dir: &'a Path,
    engine: &'a PolicyEngine,
    loaded: HashMap<String, Result<Arc<CompiledPolicy>, String>>,
}

impl ModuleLoader<'_> {
    fn get(&mut self, name: &str) -> Result<Arc<CompiledPolicy>, String> {
        if let Some(loaded) = self.loaded.get(name) {
            return loaded.clone();
        }
        let loaded = if let Some(builtin) = builtin::find(name) {
            self.engine.compile(name, builtin.component, None).map_err(|e| e.to_string())
        } else if let Some(source) = self.environment.modules.get(name) {
            let path = source.file(self.base_dir);
            std::fs::read(&path)
                .map_err(|e| format!("cannot read policy module `{name}` from {}: {e}", path.display()))
                .and_then(|bytes| self.engine.compile(name, &bytes, source.sha256.as_deref()).map_err(|e| e.to_string()))
        } else {
            Err(format!("unknown policy `{name}`"))
        };
        self.loaded.insert(name.to_owned(), loaded.clone());
        loaded
    }
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;
    use crate::Gateway;
    use crate::router::RouteMatch;
    use crate::settings::Settings;

    fn environment(apis: &str) -> Environment {
        serde_norway::from_str(&format!("apis:\n{apis}")).expect("an environment")
    }

    fn api(name: &str, context: &str, extra: &str) -> String {
        // TEST-NET-1: never called here, and in no network denied by default.
        format!("  - name: {name}\n    context: {context}\n    upstream: {{endpoints: [\"http://192.0.2.1:9\"]}}\n{extra}")
    }

    fn served(snapshot: &Snapshot, path: &str) -> Option<bool> {
        match snapshot.routes.route(None, &Method::GET, path) {
            RouteMatch::Found { value, .. } => Some(value.unavailable),
            _ => None,
        }
    }

    #[test]
    fn a_component_too_large_to_compile_is_refused_unread_by_the_compiler() {
        let gateway = Gateway::new(&Settings::default(), None).unwrap();
        let dir = std::env::temp_dir().join(format!("portico-big-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("big.wasm"), vec![0u8; crate::policy::MAX_COMPONENT_BYTES + 1]).unwrap();
        let mut config = environment(&api("big", "/big", "    policies: [{policy: big}]\n"));
        config.modules.insert("big".into(), crate::contract::environment::ModuleSource { path: Some("big.wasm".into()), sha256: None });
        let snapshot = gateway.build(&config, &dir, OnFailedApi::Isolate).expect("built without the API");
        std::fs::remove_dir_all(&dir).unwrap();
        let problem = &snapshot.failed[0].problems[0];
        assert!(problem.contains("the largest component compiled is 33554432"), "{problem}");
    }

    #[test]
    fn a_policy_compiled_once_is_read_back_by_the_next_gateway_and_a_damaged_copy_compiled_again() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("portico-compiled-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = environment(&api("ok", "/ok", "    policies: [{policy: headers}]\n"));
        // Each gateway builds the snapshot (which instantiates the policy and runs its
        // `init`) and says how it made the component.
        let made = || {
            let gateway = Gateway::new(&Settings::default(), Some(&dir)).unwrap();
            let snapshot = gateway.build(&config, Path::new("."), OnFailedApi::Refuse).expect("built");
            assert_eq!(served(&snapshot, "/ok/x"), Some(false));
            let counts = gateway.engine.compile_counts();
            let metrics = gateway.render_metrics();
            assert!(metrics.contains(&format!("portico_policy_compiles_total {}\n", counts.compiled)), "{metrics}");
            assert!(metrics.contains(&format!("portico_policy_compiled_reads_total {}\n", counts.from_disk)), "{metrics}");
            (counts.compiled, counts.from_disk)
        };
        assert_eq!(made(), (1, 0));
        assert_eq!(std::fs::metadata(dir.join("artifacts")).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(made(), (0, 1));

        let mut files = Vec::new();
        let mut folders = vec![dir.clone()];
        while let Some(folder) = folders.pop() {
            for entry in std::fs::read_dir(folder).unwrap().map(Result::unwrap) {
                if entry.file_type().unwrap().is_dir() { folders.push(entry.path()) } else { files.push(entry.path()) }
            }
        }
        assert!(!files.is_empty());
        for file in &files {
            std::fs::write(file, b"\x28\xb5\x2f\xfd not what was kept").unwrap();
        }
        assert_eq!(made(), (1, 0), "a damaged copy is compiled again");
        assert_eq!(made(), (0, 1), "and kept again");

        // A folder others may write to, or one above it, is refused: its files are machine code.
        for (folder, mode) in [(dir.join("artifacts"), 0o770), (dir.clone(), 0o777)] {
            std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(mode)).unwrap();
            let refused = Gateway::new(&Settings::default(), Some(&dir)).err().expect("refused").to_string();
            assert!(refused.contains(&format!("can be written by other users (mode {mode:o})")), "{refused}");
            std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        // Files beside its own folder are not wasmtime's to clean up.
        std::fs::write(dir.join("beside"), b"kept").unwrap();
        assert_eq!(made(), (0, 1));
        assert_eq!(std::fs::read(dir.join("beside")).unwrap(), b"kept");
        // wasmtime's cache worker may still be writing its statistics beside the artifacts
        // after the last gateway is gone; cleaning up the temporary folder is best effort.
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn revocations_alone_are_taken_without_a_rebuild() {
        let gateway = Arc::new(Gateway::new(&Settings::default(), None).unwrap());
        let mut config = environment(&api("ok", "/ok", "    policies: [{policy: headers}]\n"));
        gateway.apply(config.clone(), ".".into(), OnFailedApi::Refuse).await.unwrap();
        let before = gateway.snapshot().unwrap();
        config.revoked_tokens.push(crate::contract::environment::RevokedToken { jti: "t-1".into(), expires_at: u64::MAX });
        let version = gateway.apply(config.clone(), ".".into(), OnFailedApi::Refuse).await.unwrap();
        let after = gateway.snapshot().unwrap();
        assert_eq!((version.as_str(), after.base.as_str()), (config.version().as_str(), before.base.as_str()));
        assert!(Arc::ptr_eq(&before.routes, &after.routes) && Arc::ptr_eq(&before.keys, &after.keys), "nothing built again");
        assert_eq!(gateway.metrics.reloads.get(), 1);

        // Any other change builds a new snapshot.
        config.blocked.users.push("mallory".into());
        gateway.apply(config, ".".into(), OnFailedApi::Refuse).await.unwrap();
        assert!(!Arc::ptr_eq(&after.routes, &gateway.snapshot().unwrap().routes));
    }

    #[test]
    fn an_api_that_cannot_be_loaded_fails_alone_or_refuses_all() {
        let gateway = Gateway::new(&Settings::default(), None).unwrap();
        let config = environment(
            &[
                api("ok", "/ok", ""),
                api("greedy", "/greedy", "    policies: [{policy: headers, timeout: 2s}]\n"),
                api("unknown", "/unknown", "    policies: [{policy: nowhere}]\n"),
                api("template", "/template", "    operations: [{method: GET, path: \"/{\"}]\n"),
                api("twin", "/ok", ""),
                "  - name: metadata\n    context: /metadata\n    upstream: {endpoints: [\"http://169.254.169.254/latest\"]}\n".into(),
            ]
            .concat(),
        );
        let snapshot = gateway.build(&config, Path::new("."), OnFailedApi::Isolate).expect("built without the failed APIs");
        assert_eq!(served(&snapshot, "/ok/x"), Some(false));
        // Those that route answer 503; the one whose context another API holds is left out.
        for path in ["/greedy/x", "/unknown/x", "/template/x", "/metadata/x"] {
            assert_eq!(served(&snapshot, path), Some(true), "{path}");
        }
        let failed: Vec<(&str, &str)> =
            snapshot.failed.iter().map(|f| (f.name.as_str(), f.problems[0].split(':').next().unwrap())).collect();
        assert_eq!(
            failed,
            [
                ("greedy", "apis[1].policies[0].timeout"),
                ("unknown", "apis[2].policies[0].policy"),
                ("template", "apis[3].operations"),
                ("twin", "apis[4].context"),
                ("metadata", "apis[5].upstream.endpoints[0]")
            ]
        );
        assert!(
            snapshot.failed[4].problems[0].contains("169.254.169.254 is in a denied upstream network (169.254.0.0/16)"),
            "{:?}",
            snapshot.failed[4]
        );
        assert!(snapshot.failed[3].problems[0].contains("already the context of apis[0]"), "{:?}", snapshot.failed[3]);

        let refused = gateway.build(&config, Path::new("."), OnFailedApi::Refuse).err().expect("refused whole");
        assert_eq!(refused.problems.len(), 5, "{refused}");

        // Allowed by the environment, the same endpoint loads.
        let mut allowed = config.clone();
        allowed.upstream_networks.allow.push("169.254.169.254".into());
        let snapshot = gateway.build(&allowed, Path::new("."), OnFailedApi::Isolate).expect("built");
        assert_eq!(served(&snapshot, "/metadata/x"), Some(false));
    }

    #[test]
    fn shared_counters_are_checked_by_path() {
        let gateway = Gateway::new(&Settings::default(), None).unwrap();
        let problems = |yaml: &str| -> Vec<String> {
            let config: Environment = serde_norway::from_str(yaml).expect("an environment");
            match gateway.build(&config, Path::new("."), OnFailedApi::Refuse) {
                Ok(_) => Vec::new(),
                Err(error) => error.problems.iter().map(ToString::to_string).collect(),
            }
        };
        assert!(problems("counters: {redis: {url: 'redis://127.0.0.1:6379/', mode: exact, fleet_size: 3}}").is_empty());
        let found = problems("counters: {redis: {url: 'http://nowhere', timeout: 5s, fleet_size: 0}}");
        for path in ["counters.redis.url", "counters.redis.timeout", "counters.redis.fleet_size"] {
            assert!(found.iter().any(|p| p.starts_with(path)), "{path}: {found:?}");
        }
        assert!(problems("counters: {redis: {sentinel: {nodes: ['redis://127.0.0.1:26379'], master: portico}}}").is_empty());
        for (yaml, path) in [
            ("counters: {redis: {}}", "counters.redis.url: give `url` (one server) or `sentinel`"),
            ("counters: {redis: {url: 'redis://x/', sentinel: {nodes: ['redis://y/'], master: m}}}", "counters.redis.url: give `url`"),
            ("counters: {redis: {sentinel: {nodes: [], master: m}}}", "counters.redis.sentinel.nodes: name at least one"),
            ("counters: {redis: {sentinel: {nodes: ['http://y'], master: m}}}", "counters.redis.sentinel.nodes: not Redis URLs"),
        ] {
            let found = problems(yaml);
            assert!(found.iter().any(|p| p.starts_with(path)), "{yaml}: {found:?}");
        }
        let unknown = serde_norway::from_str::<Environment>("counters: {redis: {url: 'redis://x/', mode: sometimes}}").unwrap_err();
        assert!(unknown.to_string().contains("unknown variant `sometimes`"), "{unknown}");
    }
}
