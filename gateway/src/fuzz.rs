//! Fuzzing on stable Rust: each parser the network or a publisher feeds (the path
//! normaliser, the router, the environment document and its checks, JWTs, the fleet event
//! reader) gets seeds mutated by a small deterministic generator, and must never panic,
//! and must keep its invariants. `PORTICO_FUZZ_ITERATIONS` (default 20,000 per target, under
//! a second in CI) sets a longer campaign; `PORTICO_FUZZ_SEED` replays one.

use std::path::Path;

use http::Method;

use crate::contract::environment::{ClaimMapping, Environment, JwtIssuer, JwtKey};
use crate::contract::fleet::EventReader;
use crate::contract::units::Duration;
use crate::keys::KeyStore;
use crate::router::{ApiRoutes, OperationRoute, RouteTable, normalize_path};
use crate::snapshot::validate;

/// xorshift64*: deterministic, so that a failure names a seed that replays it. Also the
/// generator of the counters' property tests.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// An index below `n`.
    fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }
}

/// Pieces that tend to matter to these parsers.
const TOKENS: &[&str] = &[
    "/",
    "//",
    ".",
    "..",
    "%2e",
    "%2E",
    "%2f",
    "%2F",
    "%25",
    "%00",
    "%",
    ";",
    "\\",
    "{",
    "}",
    "*",
    "{id}",
    "?",
    "#",
    " ",
    "\t",
    "\r\n",
    "\n",
    ":",
    "\"",
    "'",
    "é",
    "\u{202e}",
    "%c0%af",
    "[",
    "]",
    "-",
    "0",
    "9999999999999999999",
    "null",
    "true",
    "{}",
    "[]",
    "=",
    "eyJ",
    ".",
    "data: ",
    "event: ",
    "\0",
    "\u{feff}",
];

fn iterations() -> usize {
    std::env::var("PORTICO_FUZZ_ITERATIONS").ok().and_then(|n| n.parse().ok()).unwrap_or(20_000)
}

fn seed() -> u64 {
    std::env::var("PORTICO_FUZZ_SEED").ok().and_then(|n| n.parse().ok()).unwrap_or(0x5EED_1234_ABCD_0001)
}

/// `seed` mutated a few times: bytes flipped, dropped or duplicated, tokens inserted.
fn mutate(rng: &mut Rng, seed: &str) -> String {
    let mut bytes = seed.as_bytes().to_vec();
    for _ in 0..=rng.index(6) {
        let at = rng.index(bytes.len() + 1);
        match rng.index(5) {
            0 if !bytes.is_empty() => {
                let i = rng.index(bytes.len());
                bytes[i] ^= 1 << rng.index(8);
            }
            1 if !bytes.is_empty() => {
                bytes.remove(rng.index(bytes.len()));
            }
            2 if at < bytes.len() => {
                let end = (at + rng.index(8)).min(bytes.len());
                let copy = bytes[at..end].to_vec();
                bytes.splice(at..at, copy);
            }
            _ => {
                let token = TOKENS[rng.index(TOKENS.len())];
                bytes.splice(at..at, token.bytes());
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Run `check` on `count` mutations of the seeds; a panic names the input and the seed.
fn campaign(name: &str, seeds: &[&str], check: impl Fn(&str)) -> usize {
    let mut rng = Rng(seed() ^ name.len() as u64);
    let count = iterations();
    for i in 0..count {
        let input = mutate(&mut rng, seeds[i % seeds.len()]);
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&input))).is_err() {
            panic!("{name}: input {input:?} (PORTICO_FUZZ_SEED={})", seed());
        }
    }
    count
}

#[test]
fn the_path_normaliser_never_panics_and_its_normal_form_is_a_fixed_point() {
    let seeds = ["/pets/v1/items/7", "/a/b/../c/./d", "/%2e%2e/x", "//a//b", "/a;b=c/d", "/x%2Fy", "/"];
    let runs = campaign("normalize", &seeds, |input| {
        if let Ok(normal) = normalize_path(input) {
            assert!(normal.starts_with('/'), "{normal}");
            assert_eq!(normalize_path(&normal).as_deref().ok(), Some(normal.as_ref()), "not a fixed point");
            assert!(!normal.contains("//") && !normal.split('/').any(|s| s == ".." || s == "."), "{normal}");
        }
    });
    println!("path normaliser: {runs} inputs, no panic");
}

#[test]
fn the_router_never_panics() {
    let seeds = ["/pets/{id}", "/files/*", "/a/b", "/{x}/{y}/z", "/"];
    let runs = campaign("router", &seeds, |template| {
        let operations = vec![
            OperationRoute { method: Some(Method::GET), template: template.to_owned(), value: 1 },
            OperationRoute { method: None, template: "/fixed".to_owned(), value: 2 },
        ];
        if let Ok(table) = RouteTable::new(vec![ApiRoutes { hosts: Vec::new(), context: "/api".to_owned(), operations }]) {
            for path in ["/api/fixed", "/api/pets/7", &format!("/api{template}"), "/api/", "/other"] {
                let _ = table.route(Some("host"), &Method::GET, path);
            }
        }
    });
    println!("router: {runs} templates, no panic");
}

#[test]
fn environment_documents_never_panic_the_parser_or_the_checks() {
    let seeds = [
        "apis:\n  - name: a\n    context: /a\n    upstream: {endpoints: [\"http://127.0.0.1:9/x\"]}\n    policies: [{policy: headers, timeout: 50ms, memory: 2MiB}]\n    operations: [{method: GET, path: \"/p/{id}\"}]\n",
        "{\"apis\": [], \"consumers\": [{\"name\": \"c\", \"api_key_hashes\": [\"00\"]}], \"blocked\": {\"ips\": [\"10.0.0.0/8\"]}}",
        "modules:\n  m: {sha256: \"ab\"}\nrevoked_before: {app: 12}\nrevoked_tokens: [{jti: x, expires_at: 1}]\n",
    ];
    let ceilings = crate::policy::PolicyCeilings::default();
    let runs = campaign("environment", &seeds, |text| {
        if let Ok(environment) = serde_norway::from_str::<Environment>(text) {
            let _ = validate::validate(&environment, &ceilings);
            let _ = environment.version();
        }
        if let Ok(environment) = serde_json::from_str::<Environment>(text) {
            let _ = validate::validate(&environment, &ceilings);
        }
    });
    println!("environment documents: {runs} inputs, no panic");
}

#[test]
fn tokens_never_panic_the_verifier_and_a_changed_token_never_verifies() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a key");
    let issuer = JwtIssuer {
        issuer: "https://idp.test".into(),
        audiences: vec!["portico".into()],
        algorithms: vec!["ES256".into()],
        keys: vec![JwtKey { kid: None, pem: Some(key.public_key_pem()), pem_file: None }],
        jwks: None,
        jwks_file: None,
        claims: ClaimMapping::default(),
        leeway: Duration::from_secs(30),
        typ: None,
        require_jti: false,
    };
    let store = KeyStore::from_config(&[], &[issuer], Path::new(".")).expect("a key store");
    let now = jsonwebtoken::get_current_timestamp();
    let claims = serde_json::json!({"iss": "https://idp.test", "aud": "portico", "sub": "u", "exp": now + 600, "nbf": now - 5, "iat": now - 5, "jti": "j"});
    let signer = jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).expect("a signer");
    let token = jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256), &claims, &signer).expect("a token");
    assert!(store.verify_jwt(&token).is_ok());
    let runs = campaign("jwt", &[&token], |input| {
        let verified = store.verify_jwt(input);
        // A mutation that leaves the signed parts as they were may still verify; any other must not.
        if verified.is_ok() {
            let signed = |t: &str| t.rsplit_once('.').map(|(signed, _)| signed.to_owned());
            assert_eq!(signed(input), signed(&token), "a changed token verified: {input}");
        }
    });
    println!("JWTs: {runs} tokens, no panic, none forged");
}

#[test]
fn the_fleet_event_reader_never_panics_and_stays_bounded() {
    let seeds = ["event: environment\ndata: {\"a\": 1}\n\n", ": keep-alive\n\nevent: x\ndata: 1\ndata: 2\n\n", "data: no end"];
    let runs = campaign("events", &seeds, |input| {
        let mut reader = EventReader::with_limit(256);
        let bytes = input.as_bytes();
        // In two chunks, split anywhere, as a network would.
        let split = bytes.len() / 2;
        for chunk in [&bytes[..split], &bytes[split..]] {
            if let Ok(events) = reader.push(chunk) {
                assert!(events.iter().all(|(_, data)| data.len() <= 256 + 8), "{events:?}");
            }
        }
    });
    println!("fleet events: {runs} streams, no panic");
}
