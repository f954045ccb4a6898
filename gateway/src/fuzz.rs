//! Fuzzing on stable Rust: each parser the network or a publisher feeds (the path
//! normaliser, the router, the environment document and its checks, JWTs, the fleet event
//! reader) gets inputs mutated by a small deterministic generator, and must never panic,
//! and must keep its invariants.
//!
//! Each target has a corpus in `gateway/fuzz-corpus/<target>/`, replayed as it is before
//! any mutation. The search is guided by outcomes, the stable-Rust stand-in for coverage: a
//! mutation that makes the target answer in a way not seen yet (another error, another set
//! of problems) joins the inputs mutated next. `PORTICO_FUZZ_ITERATIONS` (default 20,000 per
//! target, under a second in CI) sets a longer campaign; `PORTICO_FUZZ_SEED` replays one;
//! `PORTICO_FUZZ_SAVE=1` writes the inputs that found new outcomes into the corpus, to be
//! committed, and an input that panics is always written there.

use std::path::Path;

use http::Method;

use crate::contract::environment::{ClaimMapping, Environment, JwtIssuer, JwtKey};
use crate::contract::fleet::EventReader;
use crate::contract::units::Duration;
use crate::keys::KeyStore;
use crate::router::{ApiRoutes, OperationRoute, RouteMatch, RouteTable, normalize_path};
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

/// At most this many inputs are kept in memory per campaign, and written per run.
const MAX_CORPUS: usize = 2_000;
const MAX_SAVED: usize = 40;

/// The corpus directory of a target.
fn corpus_dir(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz-corpus").join(name)
}

/// The inputs kept for a target, in name order.
fn corpus(name: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(corpus_dir(name)) else { return Vec::new() };
    let mut files: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    files.sort();
    files.iter().filter_map(|file| std::fs::read(file).ok()).map(|bytes| String::from_utf8_lossy(&bytes).into_owned()).collect()
}

/// Write `input` into the target's corpus, named by its content; the file's name.
fn save(name: &str, prefix: &str, input: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(input.as_bytes());
    let file = format!("{prefix}{}", crate::contract::hex::encode(&digest[..8]));
    let dir = corpus_dir(name);
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(&file), input);
    file
}

/// An outcome without its particulars (numbers, quoted values), so that outcomes that
/// differ only in them count as one.
fn outcome_class(outcome: &str) -> String {
    let mut class = String::with_capacity(outcome.len());
    let mut quoted = false;
    for c in outcome.chars() {
        match c {
            '`' => {
                quoted = !quoted;
                if quoted {
                    class.push_str("`…`");
                }
            }
            _ if quoted => {}
            '0'..='9' if class.ends_with('#') => {}
            '0'..='9' => class.push('#'),
            c => class.push(c),
        }
    }
    class
}

/// Replay the target's corpus and `seeds`, then run `check` on `count` mutations of the
/// inputs so far, keeping those with a new outcome; a panic names the input and the seed,
/// and writes it into the corpus. `check` describes what the target did, one outcome per
/// line (a problem found, an error kind): an input is kept when one of them is new.
fn campaign(name: &str, seeds: &[&str], check: impl Fn(&str) -> String) -> usize {
    let run = |input: &str| std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(input)));
    let mut inputs: Vec<String> = corpus(name);
    inputs.extend(seeds.iter().map(|s| (*s).to_owned()));
    let mut seen = std::collections::HashSet::new();
    for input in &inputs {
        match run(input) {
            Ok(outcome) => seen.extend(outcome.lines().map(outcome_class)),
            Err(_) => panic!("{name}: a corpus input panics: {input:?}"),
        }
    }
    let replayed = inputs.len();
    let saving = std::env::var("PORTICO_FUZZ_SAVE").is_ok_and(|v| v == "1");
    let mut saved = 0;
    let mut rng = Rng(seed() ^ name.len() as u64);
    let count = iterations();
    for _ in 0..count {
        let pick = rng.index(inputs.len());
        let input = mutate(&mut rng, &inputs[pick]);
        match run(&input) {
            Ok(outcome) => {
                let mut new = false;
                for line in outcome.lines() {
                    new |= seen.insert(outcome_class(line));
                }
                if new && inputs.len() < MAX_CORPUS {
                    if saving && saved < MAX_SAVED {
                        save(name, "", &input);
                        saved += 1;
                    }
                    inputs.push(input);
                }
            }
            Err(_) => {
                let file = save(name, "crash-", &input);
                panic!("{name}: input {input:?} (PORTICO_FUZZ_SEED={}), kept as fuzz-corpus/{name}/{file}", seed());
            }
        }
    }
    println!("{name}: {replayed} corpus inputs replayed, {} outcomes, {} inputs kept, {saved} saved", seen.len(), inputs.len() - replayed);
    count
}

#[test]
fn the_path_normaliser_never_panics_and_its_normal_form_is_a_fixed_point() {
    let seeds = ["/pets/v1/items/7", "/a/b/../c/./d", "/%2e%2e/x", "//a//b", "/a;b=c/d", "/x%2Fy", "/"];
    let runs = campaign("normalize", &seeds, |input| match normalize_path(input) {
        Ok(normal) => {
            assert!(normal.starts_with('/'), "{normal}");
            assert_eq!(normalize_path(&normal).as_deref().ok(), Some(normal.as_ref()), "not a fixed point");
            assert!(!normal.contains("//") && !normal.split('/').any(|s| s == ".." || s == "."), "{normal}");
            format!("ok, {}", if normal == input { "as it was" } else { "normalised" })
        }
        Err(e) => format!("{e:?}"),
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
        match RouteTable::new(vec![ApiRoutes { hosts: Vec::new(), context: "/api".to_owned(), operations }]) {
            Ok(table) => ["/api/fixed", "/api/pets/7", &format!("/api{template}"), "/api/", "/other"]
                .iter()
                .map(|path| match table.route(Some("host"), &Method::GET, path) {
                    RouteMatch::Found { .. } => 'f',
                    RouteMatch::MethodNotAllowed { .. } => 'm',
                    _ => 'n',
                })
                .collect(),
            // The kind of error, not its particulars.
            Err(e) => format!("{e:?}").split([' ', '{', '(']).next().unwrap_or_default().to_owned(),
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
    // The outcome: which problems the checks found, by place.
    let problems = |environment: &Environment| {
        let validation = validate::validate(environment, &ceilings);
        // A problem as the part of the document it is in and what is wrong, without
        // indices, names or quoted values.
        let place = |problem: &crate::contract::Problem| {
            let part = problem.path.split(['.', '[']).next().unwrap_or_default();
            // Quoted values may hold backticks themselves: everything from the first to the
            // last goes.
            let reason = &problem.reason;
            let unquoted = match (reason.find('`'), reason.rfind('`')) {
                (Some(first), Some(last)) => format!("{}…{}", &reason[..first], &reason[last + 1..]),
                _ => reason.clone(),
            };
            format!("{part}: {}", outcome_class(&unquoted).chars().take(40).collect::<String>())
        };
        let mut places: Vec<String> = validation.global.iter().chain(validation.apis.iter().flatten()).map(place).collect();
        places.sort();
        places.dedup();
        places.join("\n")
    };
    let runs = campaign("environment", &seeds, |text| {
        let yaml = serde_norway::from_str::<Environment>(text).map(|environment| {
            let _ = environment.version();
            problems(&environment)
        });
        let json = serde_json::from_str::<Environment>(text).map(|environment| problems(&environment));
        let lines = |format: &str, result: Result<String, ()>| match result {
            Ok(places) => places.lines().map(|place| format!("{format} {place}\n")).collect::<String>() + &format!("{format} read\n"),
            Err(()) => format!("{format} refused\n"),
        };
        lines("yaml", yaml.map_err(drop)) + &lines("json", json.map_err(drop))
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
        discovery: None,
        clients: None,
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
        format!("{:?}", verified.map(drop))
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
        let mut outcome = String::new();
        for chunk in [&bytes[..split], &bytes[split..]] {
            match reader.push(chunk) {
                Ok(events) => {
                    assert!(events.iter().all(|(_, data)| data.len() <= 256 + 8), "{events:?}");
                    outcome.push_str(if events.is_empty() { "none\n" } else { "events\n" });
                    for (name, data) in &events {
                        let kind = if name == "message" { "unnamed" } else { "named" };
                        outcome.push_str(&format!("{kind} event, {} data\n", if data.is_empty() { "no" } else { "some" }));
                    }
                }
                Err(e) => outcome.push_str(&format!("{e}\n")),
            }
        }
        outcome
    });
    println!("fleet events: {runs} streams, no panic");
}
