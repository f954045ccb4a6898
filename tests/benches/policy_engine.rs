//! Micro-benchmarks of the policy engine: one call into a policy that does nothing, the
//! built-in key-auth (API key; JWT on a cache hit) and throttle, a JWT verification that
//! misses the cache, and routing among 1,000 APIs.
//!
//! `cargo bench -p portico-tests --bench policy_engine`

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use portico_gateway::contract::environment::{Consumer, FailureMode, JwtIssuer, JwtKey};
use portico_gateway::counters::LocalCounters;
use portico_gateway::exchange::{BodyState, Exchange, RouteInfo};
use portico_gateway::keys::{Identity, KeyStore};
use portico_gateway::metrics::PolicyStats;
use portico_gateway::policy::{AttachedPolicy, AttachmentSettings, PolicyEngine, Services, builtin};
use portico_tests::{TestIssuer, policies};

fn main() {
    divan::main();
}

struct Fixture {
    engine: PolicyEngine,
    services: Arc<Services>,
    issuer: TestIssuer,
}

impl Fixture {
    fn new() -> Self {
        let issuer = TestIssuer::new("https://idp.bench");
        let consumers = vec![Consumer {
            name: "bench-app".into(),
            application: None,
            tier: Some("Gold".into()),
            user: None,
            scopes: vec![],
            api_keys: vec!["bench-key-0001".into()],
            api_key_hashes: vec![],
            client_certificates: vec![],
            subscriptions: None,
        }];
        let issuers: Vec<JwtIssuer> = vec![
            serde_json::from_value(serde_json::json!({
                "issuer": issuer.issuer, "audiences": ["portico"], "algorithms": ["ES256"],
            }))
            .map(|mut i: JwtIssuer| {
                i.keys = vec![JwtKey { kid: None, pem: Some(issuer.public_pem.clone()), pem_file: None }];
                i
            })
            .unwrap(),
        ];
        let keys = KeyStore::from_config(&consumers, &issuers, std::path::Path::new(".")).expect("key store");
        let services = Arc::new(Services { keys: Arc::new(keys), counters: Arc::new(LocalCounters::new()) });
        Self { engine: PolicyEngine::new().expect("engine"), services, issuer }
    }

    fn attach(&self, name: &str, component: &[u8], config: &str) -> AttachedPolicy {
        let compiled = self.engine.compile(name, component, None).expect("compile");
        let settings = AttachmentSettings {
            name: name.to_owned(),
            config_json: config.to_owned(),
            timeout: Duration::from_millis(50),
            startup_timeout: Duration::from_secs(1),
            memory_bytes: 64 << 20,
            on_failure: FailureMode::Closed,
        };
        self.engine.attach(compiled, settings, self.services.clone(), Arc::new(PolicyStats::default())).expect("attach")
    }
}

fn exchange(headers: &[(&str, &str)], identity: Option<Identity>) -> Box<Exchange> {
    let mut request = http::Request::builder().method("GET").uri("/bench/v1/items/7?page=2");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (head, ()) = request.body(()).unwrap().into_parts();
    Box::new(Exchange {
        request: head,
        request_body: BodyState::Streaming,
        request_body_replaced: false,
        client_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
        client_certificate: None,
        route: Arc::new(RouteInfo::new("bench".into(), "v1".into(), "GET /items/{id}".into())),
        identity,
        attributes: Vec::new(),
        response_headers: Vec::new(),
        quota_remaining: None,
        response: None,
        policy_time: Default::default(),
        upstream_time: None,
    })
}

fn bench_calls(bencher: divan::Bencher, attachment: &AttachedPolicy, template: Box<Exchange>) {
    let mut slot = Some(template);
    bencher.bench_local(|| {
        let (back, result) = attachment.on_request(slot.take().expect("exchange"));
        assert!(result.is_ok());
        let mut back = back;
        back.identity = None;
        back.attributes.clear();
        slot = Some(back);
    });
}

/// A1: one call into a policy whose body does nothing.
#[divan::bench]
fn noop_policy_call(bencher: divan::Bencher) {
    let fixture = Fixture::new();
    let noop = std::fs::read(policies::NOOP).unwrap();
    let attachment = fixture.attach("noop", &noop, "{}");
    bench_calls(bencher, &attachment, exchange(&[], None));
}

/// key-auth with an API key in a header (hash + map lookup on the host).
#[divan::bench]
fn key_auth_api_key(bencher: divan::Bencher) {
    let fixture = Fixture::new();
    let attachment = fixture.attach("key-auth", builtin::find("key-auth").unwrap().component, "{}");
    bench_calls(bencher, &attachment, exchange(&[("apikey", "bench-key-0001")], None));
}

/// key-auth with a bearer JWT that the host has verified before (cache hit).
#[divan::bench]
fn key_auth_jwt_cached(bencher: divan::Bencher) {
    let fixture = Fixture::new();
    let attachment = fixture.attach("key-auth", builtin::find("key-auth").unwrap().component, "{}");
    let token = fixture.issuer.sign(&fixture.issuer.claims("portico"));
    let bearer = format!("Bearer {token}");
    bench_calls(bencher, &attachment, exchange(&[("authorization", &bearer)], None));
}

/// JWT verification that misses the cache: the ES256 signature check itself.
#[divan::bench(sample_count = 20, sample_size = 10)]
fn jwt_verify_uncached(bencher: divan::Bencher) {
    let fixture = Fixture::new();
    let mut claims = fixture.issuer.claims("portico");
    let tokens: Vec<String> = (0..2_000)
        .map(|i| {
            claims["jti"] = i.into();
            fixture.issuer.sign(&claims)
        })
        .collect();
    let mut next = 0;
    bencher.bench_local(|| {
        let token = &tokens[next % tokens.len()];
        next += 1;
        divan::black_box(fixture.services.keys.verify_jwt(token).is_ok())
    });
}

/// throttle with an identity set (one counter hit on the host).
#[divan::bench]
fn throttle_hit(bencher: divan::Bencher) {
    let fixture = Fixture::new();
    let config = r#"{"limits": [{"requests": 1000000000, "per": "1h"}]}"#;
    let attachment = fixture.attach("throttle", builtin::find("throttle").unwrap().component, config);
    let identity = Identity {
        method: "api-key",
        application: Some("bench-app".into()),
        subscription: None,
        tier: None,
        user: None,
        scopes: vec![],
        subscriptions: None,
    };
    bench_calls(bencher, &attachment, exchange(&[], Some(identity)));
}
