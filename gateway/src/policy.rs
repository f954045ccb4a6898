//! The policy engine: compiles each policy component once (by digest, off the request
//! path), keeps a pool of warm instances per attachment, and calls them synchronously
//! with an epoch deadline and a memory limit. A trapped instance is dropped, never reused.

mod bindings;
pub mod builtin;
mod host;
mod wasi;

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use wasmtime::component::{Component, Linker, Resource};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

use bindings::{ContextHandle, RequestHandle, ResponseHandle};
pub use bindings::{Decision, ImmediateResponse, Needs};
use bindings::{PolicyWorld, PolicyWorldPre};
use host::HostState;
pub use host::{Clock, KeyService, Services, SystemClock};

use crate::contract::environment::{Attachment, FailureMode};
use crate::exchange::Exchange;
use crate::metrics::{CompileCounts, PolicyStats};
pub use crate::settings::PolicyCeilings;

/// The WIT package version policies must target.
pub const WIT_PACKAGE: &str = "portico:policy@0.1.1";
/// The export every policy has.
pub const POLICY_EXPORT: &str = "portico:policy/policy@0.1.1";
/// The largest component compiled. A compile cannot be stopped once started, and its time
/// grows with the component's size: this bounds what one upload costs every plane that
/// compiles it.
pub const MAX_COMPONENT_BYTES: usize = 32 << 20;

/// How often the epoch ticks; deadlines are whole ticks.
const EPOCH_TICK: Duration = Duration::from_millis(1);
/// Warm instances kept per attachment; more are created under load and dropped after.
const POOL_SIZE: usize = 64;
/// Wasm stack limit per call (recursion beyond it traps).
const MAX_WASM_STACK: usize = 512 * 1024;

/// Why a module could not become a policy.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not a WebAssembly component (a core module, or not Wasm at all).
    #[error("policy `{name}` ({digest}) is not a valid WebAssembly component: {reason}")]
    NotAComponent { name: String, digest: String, reason: String },
    /// A component, but not one of the `portico:policy` world this gateway runs.
    #[error("policy `{name}` ({digest}) does not fit the {WIT_PACKAGE} world: {reason}")]
    WrongWorld { name: String, digest: String, reason: String },
    /// Larger than [`MAX_COMPONENT_BYTES`].
    #[error("policy `{name}` is {bytes} bytes; the largest component compiled is {MAX_COMPONENT_BYTES}")]
    TooLarge { name: String, bytes: usize },
    /// The module's digest is not the pinned one.
    #[error("policy `{name}` has sha256 {actual}, expected {expected}")]
    DigestMismatch { name: String, expected: String, actual: String },
    /// `init` refused the attachment's configuration.
    #[error("policy `{name}` refused its configuration: {reason}")]
    Config { name: String, reason: String },
    /// Instantiation or `init` trapped.
    #[error("policy `{name}` failed to start: {reason}")]
    Start { name: String, reason: String },
}

/// How a call into a policy failed. The instance that failed is dropped.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallFailure {
    /// The call ran past its deadline.
    #[error("deadline exceeded")]
    Deadline,
    /// The instance hit its memory limit.
    #[error("memory limit exceeded")]
    Memory,
    /// The guest trapped (a panic, `unreachable`, a stack overflow, ...).
    #[error("trap: {0}")]
    Trap(String),
    /// A new instance could not be made to replace a dropped one.
    #[error("no instance: {0}")]
    Start(String),
}

/// The Wasm engine shared by every snapshot: compilation settings, the host functions,
/// the epoch ticker, the clock policies read and the cache of compiled components (in
/// memory, and on disk when the engine has a folder for them).
pub struct PolicyEngine {
    engine: Engine,
    linker: Linker<HostState>,
    compiled: Mutex<HashMap<String, Arc<CompiledPolicy>>>,
    on_disk: Option<wasmtime::Cache>,
    /// Components made from their bytes: compiled, or read back from `on_disk`.
    made: AtomicU64,
    ticker_stop: Arc<AtomicBool>,
    clock: Arc<dyn Clock>,
}

impl PolicyEngine {
    /// Make the engine on the machine's clock and start its epoch ticker thread.
    pub fn new() -> anyhow::Result<Self> {
        Self::make(Arc::new(SystemClock), None)
    }

    /// Make the engine with the clock its policies read (a test harness fixes the time;
    /// deadlines still run on the epoch ticker).
    pub fn with_clock(clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        Self::make(clock, None)
    }

    /// Make the engine on the machine's clock, keeping every component it compiles in
    /// `dir` too, keyed by its bytes and the engine's settings: a restart, a rollback or a
    /// re-deploy reads it back instead of compiling it again.
    pub fn keeping_compiled_in(dir: &Path) -> anyhow::Result<Self> {
        Self::make(Arc::new(SystemClock), Some(dir))
    }

    fn make(clock: Arc<dyn Clock>, compiled_dir: Option<&Path>) -> anyhow::Result<Self> {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.max_wasm_stack(MAX_WASM_STACK);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        // Compiling a new snapshot's components on every core starves the requests being
        // served meanwhile; one thread keeps the rest of the machine for traffic.
        config.parallel_compilation(false);
        let on_disk = compiled_dir.map(compiled_cache).transpose()?;
        config.cache(on_disk.clone());
        let engine = Engine::new(&config)?;

        let mut linker = Linker::new(&engine);
        wasi::add_to_linker(&mut linker)?;
        PolicyWorld::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(&mut linker, |s| s)?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let stop = ticker_stop.clone();
        let ticking = engine.weak();
        std::thread::Builder::new().name("portico-epoch".into()).spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                match ticking.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })?;
        Ok(Self { engine, linker, compiled: Mutex::new(HashMap::new()), on_disk, made: AtomicU64::new(0), ticker_stop, clock })
    }

    /// How many components were compiled, and how many read back from disk.
    pub fn compile_counts(&self) -> CompileCounts {
        let from_disk = self.on_disk.as_ref().map_or(0, |cache| cache.cache_hits() as u64);
        CompileCounts { compiled: self.made.load(Ordering::Relaxed).saturating_sub(from_disk), from_disk }
    }

    /// Compile a component (or take it from the cache by digest) and check that it is a
    /// policy of this gateway's world. Slow for large components: call it off the request
    /// path.
    pub fn compile(&self, name: &str, bytes: &[u8], expected_sha256: Option<&str>) -> Result<Arc<CompiledPolicy>, LoadError> {
        let digest = crate::contract::hex::sha256(bytes);
        if let Some(expected) = expected_sha256
            && !expected.eq_ignore_ascii_case(&digest)
        {
            return Err(LoadError::DigestMismatch { name: name.to_owned(), expected: expected.to_owned(), actual: digest });
        }
        if let Some(hit) = self.compiled.lock().unwrap_or_else(|e| e.into_inner()).get(&digest) {
            return Ok(hit.clone());
        }
        if bytes.len() > MAX_COMPONENT_BYTES {
            return Err(LoadError::TooLarge { name: name.to_owned(), bytes: bytes.len() });
        }
        let started = Instant::now();
        let disk_counts = || self.on_disk.as_ref().map_or((0, 0), |cache| (cache.cache_hits(), cache.cache_misses()));
        let (hits_before, misses_before) = disk_counts();
        let component = Component::new(&self.engine, bytes).map_err(|e| LoadError::NotAComponent {
            name: name.to_owned(),
            digest: digest.clone(),
            reason: format!("{e:#}"),
        })?;
        self.made.fetch_add(1, Ordering::Relaxed);
        let (hits, misses) = disk_counts();
        if let Some(on_disk) = &self.on_disk
            && hits == hits_before
            && misses == misses_before
        {
            tracing::warn!(policy = name, folder = %on_disk.directory().display(), "compiled policy not kept on disk (the folder cannot be written?); the next start compiles it again");
        }
        let how = if hits > hits_before { "read back compiled" } else { "compiled" };
        tracing::info!(policy = name, %digest, bytes = bytes.len(), ms = started.elapsed().as_millis() as u64, "policy {how}");
        let wrong_world = |reason: String| LoadError::WrongWorld { name: name.to_owned(), digest: digest.clone(), reason };
        if component.get_export_index(None, POLICY_EXPORT).is_none() {
            return Err(wrong_world(format!("it has no export `{POLICY_EXPORT}`{}", other_versions(&component))));
        }
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| wrong_world(format!("{e:#}")))?;
        let pre = PolicyWorldPre::new(instance_pre).map_err(|e| wrong_world(format!("{e:#}")))?;
        let compiled = Arc::new(CompiledPolicy { name: name.to_owned(), digest: digest.clone(), pre });
        self.compiled.lock().unwrap_or_else(|e| e.into_inner()).insert(digest, compiled.clone());
        Ok(compiled)
    }

    /// The component with this digest, if it was compiled and is still kept.
    pub fn cached(&self, digest: &str) -> Option<Arc<CompiledPolicy>> {
        self.compiled.lock().unwrap_or_else(|e| e.into_inner()).get(digest).cloned()
    }

    /// Forget compiled components that no live snapshot uses.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.compiled.lock().unwrap_or_else(|e| e.into_inner()).retain(|digest, _| keep(digest));
    }

    /// Attach a compiled policy with its settings: makes the first instance and runs its
    /// `init`, so a bad configuration is refused here, not on a request.
    pub fn attach(
        &self,
        policy: Arc<CompiledPolicy>,
        settings: AttachmentSettings,
        services: Arc<Services>,
        stats: Arc<PolicyStats>,
    ) -> Result<AttachedPolicy, LoadError> {
        let attachment = AttachedPolicy {
            engine: self.engine.clone(),
            policy,
            settings,
            services,
            clock: self.clock.clone(),
            pool: ArrayQueue::new(POOL_SIZE),
            needs: Needs::empty(),
            instance_memory: 0,
            stats,
        };
        let (instance, needs) = attachment.instantiate().map_err(|failure| match failure {
            StartFailure::Config(reason) => LoadError::Config { name: attachment.settings.name.clone(), reason },
            StartFailure::Trap(reason) => LoadError::Start { name: attachment.settings.name.clone(), reason },
        })?;
        let instance_memory = instance.store.data().limits.bytes();
        let _ = attachment.pool.push(instance);
        Ok(AttachedPolicy { needs, instance_memory, ..attachment })
    }
}

impl Drop for PolicyEngine {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// The on-disk cache of compiled components in `dir`, kept by wasmtime in `dir/artifacts`
/// (its cleanup deletes whatever it did not write in its folder, so it gets one of its own).
/// Those files are machine code the gateway runs outside the sandbox, so the folder is
/// trusted like the gateway's own files: it is made for its owner only, and refused when
/// another user may write to it, or when every user may write to a folder above it (a sticky
/// folder such as /tmp excepted, where others cannot rename what is ours).
fn compiled_cache(dir: &Path) -> anyhow::Result<wasmtime::Cache> {
    let artifacts = dir.join("artifacts");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&artifacts)
        .map_err(|e| anyhow::anyhow!("cannot make the folder of compiled policies {}: {e}", artifacts.display()))?;
    let artifacts =
        artifacts.canonicalize().map_err(|e| anyhow::anyhow!("cannot use the folder of compiled policies {}: {e}", dir.display()))?;
    for folder in artifacts.ancestors() {
        trusted(folder, folder == artifacts)
            .map_err(|reason| anyhow::anyhow!("the folder of compiled policies {} is refused: {reason}", dir.display()))?;
    }
    let mut config = wasmtime::CacheConfig::new();
    config.with_directory(&artifacts);
    // wasmtime would recompress a component read back often at zstd level 20, tens of
    // seconds of a core for a large one, on the gateway's machine: never worth it here.
    config.with_optimized_compression_usage_counter_threshold(u64::MAX);
    wasmtime::Cache::new(config).map_err(|e| anyhow::anyhow!("cannot keep compiled policies in {}: {e:#}", artifacts.display()))
}

/// Whether only this user (or root, for the folders above `own`) can change what `folder`
/// holds; `own` is the folder the gateway writes itself.
fn trusted(folder: &Path, own: bool) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(folder).map_err(|e| format!("cannot read {}: {e}", folder.display()))?;
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me && (own || meta.uid() != 0) {
        return Err(format!("{} belongs to user {}, not to this one ({me})", folder.display(), meta.uid()));
    }
    // Above its own folder, a group that may write is allowed: where every user has a group
    // of their own (umask 002), their folders are group-writable.
    let others = if own { 0o022 } else { 0o002 };
    let sticky = meta.mode() & 0o1000 != 0;
    if meta.mode() & others != 0 && (own || !sticky) {
        return Err(format!(
            "{} can be written by other users (mode {:o}), who would choose the machine code the gateway runs; \
             make it writable by its owner only, after emptying it",
            folder.display(),
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Lists the `portico:policy` versions a component does export, for the error message.
fn other_versions(component: &Component) -> String {
    let ty = component.component_type();
    let engine = component.engine();
    let found: Vec<String> =
        ty.exports(engine).map(|(name, _)| name.to_owned()).filter(|name| name.starts_with("portico:policy/")).collect();
    if found.is_empty() { String::new() } else { format!(" (it exports {})", found.join(", ")) }
}

/// A component compiled and checked against the world, ready to instantiate.
pub struct CompiledPolicy {
    name: String,
    digest: String,
    pre: PolicyWorldPre<HostState>,
}

impl CompiledPolicy {
    /// The name it was loaded under.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Hex sha256 of the component's bytes.
    pub fn digest(&self) -> &str {
        &self.digest
    }
}

/// What an attachment says about running its policy.
#[derive(Debug, Clone)]
pub struct AttachmentSettings {
    /// The policy as the attachment names it (`key-auth`, `validate-json@1.0.0`, a file's
    /// module name): what its log records say, and its counters' namespace. Two names for
    /// the same component are two policies.
    pub name: String,
    /// The configuration handed to `init`, as JSON.
    pub config_json: String,
    /// CPU budget of one call.
    pub timeout: Duration,
    /// CPU budget of instantiation and `init` (runtimes start slower than a call runs).
    pub startup_timeout: Duration,
    /// Memory limit of one instance, in bytes.
    pub memory_bytes: usize,
    /// What a failure does.
    pub on_failure: FailureMode,
}

impl AttachmentSettings {
    /// How a gateway runs `attachment` under `ceilings` (checked with [`PolicyCeilings::check`]
    /// first): its own timeout and memory, and the ceiling's timeout to start.
    pub fn new(attachment: &Attachment, ceilings: &PolicyCeilings) -> Self {
        Self {
            name: attachment.policy.clone(),
            config_json: attachment.config.to_string(),
            timeout: attachment.timeout.0,
            startup_timeout: ceilings.timeout.max(attachment.timeout.0),
            memory_bytes: usize::try_from(attachment.memory.0).unwrap_or(usize::MAX),
            on_failure: attachment.on_failure,
        }
    }
}

/// A policy attached somewhere in a chain: its settings and its warm instances.
pub struct AttachedPolicy {
    engine: Engine,
    policy: Arc<CompiledPolicy>,
    settings: AttachmentSettings,
    services: Arc<Services>,
    clock: Arc<dyn Clock>,
    pool: ArrayQueue<Instance>,
    needs: Needs,
    /// Linear memory of the first instance once `init` returned.
    instance_memory: usize,
    stats: Arc<PolicyStats>,
}

struct Instance {
    store: Store<HostState>,
    bindings: PolicyWorld,
}

enum StartFailure {
    Config(String),
    Trap(String),
}

impl AttachedPolicy {
    /// The policy.
    pub fn policy(&self) -> &CompiledPolicy {
        &self.policy
    }

    /// Its counters.
    pub fn stats(&self) -> &PolicyStats {
        &self.stats
    }

    /// What to do when a call fails.
    pub fn on_failure(&self) -> FailureMode {
        self.settings.on_failure
    }

    /// Whether the policy reads or replaces the request body.
    pub fn needs_request_body(&self) -> bool {
        self.needs.contains(Needs::REQUEST_BODY)
    }

    /// Whether the policy reads or replaces the response body.
    pub fn needs_response_body(&self) -> bool {
        self.needs.contains(Needs::RESPONSE_BODY)
    }

    /// Whether the policy has a response phase.
    pub fn needs_response_phase(&self) -> bool {
        self.needs.contains(Needs::RESPONSE_PHASE)
    }

    /// The linear memory, in bytes, an instance of this attachment held once its `init`
    /// returned (the first one; what each warm instance costs at least).
    pub fn instance_memory_bytes(&self) -> usize {
        self.instance_memory
    }

    fn instantiate(&self) -> Result<(Instance, Needs), StartFailure> {
        self.stats.instantiations.inc();
        let policy_name: Arc<str> = Arc::from(self.settings.name.as_str());
        let state = HostState {
            wasi: wasi::context(&policy_name),
            table: wasmtime::component::ResourceTable::new(),
            limits: host::MemoryLimit::new(self.settings.memory_bytes),
            exchange: None,
            services: self.services.clone(),
            clock: self.clock.clone(),
            builtin: builtin::find(&policy_name).is_some(),
            policy: policy_name,
            header_names: host::HeaderNames::default(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        // A host call that waited for an OpenID provider gives that time back: the deadline
        // bounds the guest's own work.
        store.epoch_deadline_callback(|_| {
            let waited = crate::keys::take_time_waited();
            Ok(if waited.is_zero() { UpdateDeadline::Interrupt } else { UpdateDeadline::Continue(ticks(waited)) })
        });
        // Instantiation and `init` run the guest's start-up code, on a request thread when
        // the pool is dry: their budget is the operator's ceiling.
        store.set_epoch_deadline(ticks(self.settings.startup_timeout));
        let bindings = self.policy.pre.instantiate(&mut store).map_err(|e| StartFailure::Trap(describe(&e)))?;
        let needs = bindings
            .portico_policy_policy()
            .call_init(&mut store, &self.settings.config_json)
            .map_err(|e| StartFailure::Trap(describe(&e)))?
            .map_err(StartFailure::Config)?;
        Ok((Instance { store, bindings }, needs))
    }

    fn checkout(&self) -> Result<Instance, CallFailure> {
        if let Some(instance) = self.pool.pop() {
            return Ok(instance);
        }
        self.instantiate().map(|(instance, _)| instance).map_err(|failure| match failure {
            StartFailure::Config(reason) | StartFailure::Trap(reason) => CallFailure::Start(reason),
        })
    }

    /// Run the request phase. The exchange goes into the instance's store for the call
    /// and comes back, whatever happens.
    pub fn on_request(&self, exchange: Box<Exchange>) -> (Box<Exchange>, Result<Decision, CallFailure>) {
        self.call(exchange, |bindings, store| {
            let request = Resource::<RequestHandle>::new_borrow(0);
            let context = Resource::<ContextHandle>::new_borrow(0);
            bindings.portico_policy_policy().call_on_request(store, request, context)
        })
    }

    /// Run the response phase (the exchange must hold a response).
    pub fn on_response(&self, exchange: Box<Exchange>) -> (Box<Exchange>, Result<(), CallFailure>) {
        self.call(exchange, |bindings, store| {
            let request = Resource::<RequestHandle>::new_borrow(0);
            let response = Resource::<ResponseHandle>::new_borrow(0);
            let context = Resource::<ContextHandle>::new_borrow(0);
            bindings.portico_policy_policy().call_on_response(store, request, response, context)
        })
    }

    fn call<R>(
        &self,
        exchange: Box<Exchange>,
        f: impl FnOnce(&PolicyWorld, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> (Box<Exchange>, Result<R, CallFailure>) {
        let mut instance = match self.checkout() {
            Ok(instance) => instance,
            Err(failure) => {
                self.stats.failures.inc();
                return (exchange, Err(failure));
            }
        };
        // A failed call leaves no trace: fail closed, its 500 replaces whatever it did;
        // fail open, what it changed is put back (the one copy a fail-open call costs).
        let checkpoint = (self.settings.on_failure == FailureMode::Open).then(|| exchange.checkpoint());
        let started = Instant::now();
        instance.store.data_mut().exchange = Some(exchange);
        crate::keys::take_time_waited();
        instance.store.set_epoch_deadline(ticks(self.settings.timeout));
        let result = f(&instance.bindings, &mut instance.store);
        let mut exchange = instance.store.data_mut().exchange.take().expect("the exchange stays in the store during a call");
        let elapsed = started.elapsed();
        self.stats.duration.observe(elapsed);
        exchange.policy_time += elapsed;
        match result {
            Ok(value) => {
                // A full pool means load has dropped since it grew: let this instance go.
                let _ = self.pool.push(instance);
                (exchange, Ok(value))
            }
            Err(error) => {
                self.stats.failures.inc();
                let failure = classify(&error, &instance.store);
                tracing::warn!(
                    target: "portico::policy",
                    policy = %self.settings.name,
                    digest = %self.policy.digest,
                    error = %failure,
                    "policy call failed; instance dropped"
                );
                if let Some(checkpoint) = checkpoint {
                    exchange.restore(checkpoint);
                }
                (exchange, Err(failure))
            }
        }
    }
}

fn ticks(timeout: Duration) -> u64 {
    (timeout.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64
}

fn classify(error: &wasmtime::Error, store: &Store<HostState>) -> CallFailure {
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => CallFailure::Deadline,
        _ if store.data().limits_hit() => CallFailure::Memory,
        _ => CallFailure::Trap(describe(error)),
    }
}

fn describe(error: &wasmtime::Error) -> String {
    // The trap (or the host error at the root) says what happened; the wasm backtrace
    // around it goes to debug logs.
    tracing::debug!(target: "portico::policy", "{error:?}");
    match error.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string().trim_start_matches("wasm trap: ").to_owned(),
        None => error.root_cause().to_string(),
    }
}
