//! What a policy costs in each language: the same small policy (allow a request with
//! `x-allow: yes`, else answer 403) built in Rust, Python (componentize-py) and JavaScript
//! (componentize-js), run on the gateway's engine. Measured: a call on a warm instance, a
//! fresh instance (instantiate and `init`, the compiled component cached), the compile
//! itself, and the memory an instance holds. A no-op Rust policy is the reference call.
//!
//! `cargo bench -p portico-tests --bench policy_languages` (the Python and JavaScript
//! toolchains are installed on first use under `target/policy-toolchains`).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use portico::policy_tool::{BuildOptions, Project};
use portico_gateway::contract::environment::FailureMode;
use portico_gateway::counters::LocalCounters;
use portico_gateway::exchange::{BodyState, Exchange, RouteInfo};
use portico_gateway::keys::KeyStore;
use portico_gateway::metrics::PolicyStats;
use portico_gateway::policy::{AttachedPolicy, AttachmentSettings, CompiledPolicy, Decision, PolicyEngine, Services};
use portico_tests::policy_builds::{output_dir, toolchains};
use portico_tests::{policies, workspace_root};

const LANGUAGES: [&str; 3] = ["rust", "python", "js"];

fn main() {
    report();
    divan::main();
}

/// The engine and the compiled policy of each language, made once.
struct Bench {
    engine: PolicyEngine,
    services: Arc<Services>,
    compiled: Vec<(&'static str, Arc<CompiledPolicy>, Duration, usize)>,
    noop: Arc<CompiledPolicy>,
}

fn bench() -> &'static Bench {
    static BENCH: OnceLock<Bench> = OnceLock::new();
    BENCH.get_or_init(|| {
        let engine = PolicyEngine::new().expect("engine");
        let keys = KeyStore::from_config(&[], &[], Path::new(".")).expect("key store");
        let services = Arc::new(Services { keys: Arc::new(keys), counters: Arc::new(LocalCounters::new()) });
        let compiled = LANGUAGES
            .iter()
            .map(|&language| {
                let bytes = component(language);
                let started = Instant::now();
                let policy = engine.compile(&format!("allow-header-{language}"), &bytes, None).expect("compile");
                (language, policy, started.elapsed(), bytes.len())
            })
            .collect();
        let noop = engine.compile("noop", &std::fs::read(policies::NOOP).unwrap(), None).expect("compile");
        Bench { engine, services, compiled, noop }
    })
}

/// The component of `language`: Rust from the tests' build script, the others built now.
fn component(language: &str) -> Vec<u8> {
    let dir = match language {
        "rust" => return std::fs::read(policies::ALLOW_HEADER).unwrap(),
        "python" => "tests/policies/allow-header-py",
        _ => "tests/policies/allow-header-js",
    };
    let project = Project::open(&workspace_root().join(dir)).unwrap();
    let out = output_dir().join(format!("allow-header-{language}.wasm"));
    let options = BuildOptions { toolchains: toolchains(), out: Some(out), cargo_target_dir: None };
    let built = portico::policy_tool::build(&project, &options).unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("built {} with {} in {:.1}s", project.name, built.toolchain, built.elapsed.as_secs_f64());
    built.bytes
}

fn attach(policy: &Arc<CompiledPolicy>) -> AttachedPolicy {
    let settings = AttachmentSettings {
        name: policy.name().to_owned(),
        config_json: "{}".to_owned(),
        timeout: Duration::from_millis(50),
        startup_timeout: Duration::from_secs(1),
        memory_bytes: 64 << 20,
        on_failure: FailureMode::Closed,
    };
    let bench = bench();
    bench.engine.attach(policy.clone(), settings, bench.services.clone(), Arc::new(PolicyStats::default())).expect("attach")
}

fn policy(language: &str) -> &'static Arc<CompiledPolicy> {
    &bench().compiled.iter().find(|(l, ..)| *l == language).expect("a language").1
}

fn exchange(allow: &str) -> Box<Exchange> {
    let (head, ()) = http::Request::builder().uri("/shop/v1/items/7").header("x-allow", allow).body(()).unwrap().into_parts();
    Box::new(Exchange {
        request: head,
        request_body: BodyState::Streaming,
        request_body_replaced: false,
        client_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
        client_certificate: None,
        route: Arc::new(RouteInfo::new("shop".into(), "v1".into(), "GET /items/{id}".into())),
        identity: None,
        attributes: Vec::new(),
        response_headers: Vec::new(),
        quota_remaining: None,
        response: None,
        policy_time: Default::default(),
        upstream_time: None,
    })
}

/// Resident memory of this process, in bytes.
fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm.split_whitespace().nth(1).and_then(|pages| pages.parse::<usize>().ok()).unwrap_or(0) * 4096
}

/// The figures divan does not measure: compile time, component size, memory per instance.
fn report() {
    const INSTANCES: usize = 20;
    let bench = bench();
    eprintln!("language | component | compile | linear memory / instance | resident memory / instance");
    for (language, policy, compile, size) in &bench.compiled {
        let before = resident_bytes();
        let attachments: Vec<AttachedPolicy> = (0..INSTANCES).map(|_| attach(policy)).collect();
        let per_instance = resident_bytes().saturating_sub(before) / INSTANCES;
        eprintln!(
            "{language:8} | {:6.2} MB | {:5.2} s | {:7.2} MiB | {:7.2} MiB",
            *size as f64 / 1e6,
            compile.as_secs_f64(),
            attachments[0].instance_memory_bytes() as f64 / (1 << 20) as f64,
            per_instance as f64 / (1 << 20) as f64
        );
    }
}

fn bench_calls(bencher: divan::Bencher, attachment: &AttachedPolicy, allow: &str, allowed: bool) {
    let mut slot = Some(exchange(allow));
    bencher.bench_local(|| {
        let (back, result) = attachment.on_request(slot.take().expect("exchange"));
        assert_eq!(matches!(result, Ok(Decision::Continue)), allowed);
        slot = Some(back);
    });
}

/// The reference: a call into a Rust policy that does nothing.
#[divan::bench]
fn noop_rust_call(bencher: divan::Bencher) {
    let attachment = attach(&bench().noop);
    bench_calls(bencher, &attachment, "yes", true);
}

/// A call on a warm instance that looks up the header and continues.
#[divan::bench(args = LANGUAGES)]
fn allowed_call(bencher: divan::Bencher, language: &str) {
    let attachment = attach(policy(language));
    bench_calls(bencher, &attachment, "yes", true);
}

/// A call on a warm instance that looks up the header and answers 403.
#[divan::bench(args = LANGUAGES)]
fn denied_call(bencher: divan::Bencher, language: &str) {
    let attachment = attach(policy(language));
    bench_calls(bencher, &attachment, "no", false);
}

/// A fresh instance: instantiate the compiled component and run `init` (what a request
/// would pay if instances were not pooled).
#[divan::bench(args = LANGUAGES, sample_count = 30, sample_size = 5)]
fn fresh_instance(bencher: divan::Bencher, language: &str) {
    let policy = policy(language);
    bencher.bench_local(|| divan::black_box(attach(policy)));
}
