//! The management API fuzzed from its own OpenAPI document: every operation, called as each
//! kind of caller (nobody, a subscriber, a publisher, an admin, an OAuth2 client), with
//! requests generated from the document's schemas — valid ones, and ones broken in one
//! place. The document must be the truth for the clients generated from it: no 5xx; every
//! status is one the operation lists; every body matches the schema listed for its status
//! and content type; a request the document calls valid is not refused with a 400 (except
//! for what it refers to, listed in [`REFERENCES`]); one it calls invalid does not succeed.
//!
//! `PORTICO_API_FUZZ_CASES` (default 4 per operation and caller) sets a longer run;
//! `PORTICO_API_FUZZ_SEED` replays one.

mod pattern;

use std::collections::{BTreeMap, HashMap};

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use portico_control_plane::test_support::TestApp;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};
use tower::ServiceExt;

/// Fields whose 400 to a request the document calls valid is about what their value refers
/// to or holds, which a schema cannot say: (operations, field or field prefix, why). On
/// the OAuth2 endpoints the "field" is the RFC 6749 error code.
const REFERENCES: &[(&[&str], &str, &str)] = &[
    (DEFINE_API, "tiers[", "names a subscription tier that must exist"),
    (
        DEFINE_API,
        "policies",
        "names a registry policy; its config must satisfy that policy's own schema, its limits the operator's ceilings",
    ),
    (DEFINE_API, "operations[", "path templates and their policies (as above) are checked as the gateway's router reads them"),
    (DEFINE_API, "endpoints[", "a URL the gateway can proxy to (scheme, host, port), checked by the gateway's own code"),
    (DEFINE_API, "endpoint_ca", "PEM certificates that must parse"),
    (DEFINE_API, "endpoint_client_certificate", "a PEM certificate and the PEM key that fits it"),
    (
        &["POST /api/v1/apis"],
        "context",
        "a normalised path (no `.`/`..` segments, escapes in upper case) that no other API's context contains",
    ),
    (&["PUT /api/v1/apis/{id}"], "name", "must be the API's current one"),
    (&["PUT /api/v1/apis/{id}"], "version", "must be the API's current one"),
    (&["PUT /api/v1/apis/{id}"], "context", "must be the API's current one"),
    (&["POST /api/v1/apis/import"], "openapi", "an OpenAPI 3.x document, read as the import reads it"),
    (&["POST /api/v1/apis/import"], "endpoints[", "a URL the gateway can proxy to"),
    (&["POST /api/v1/apis/{id}/deployments"], "revision_id", "a revision of this API that can run"),
    (
        &["POST /api/v1/apis/{id}/deployments"],
        "environments[",
        "an environment that exists and whose upstream networks allow the endpoints",
    ),
    (&["POST /api/v1/applications", "PUT /api/v1/applications/{id}"], "tier", "an application tier that exists"),
    (&["PUT /api/v1/tiers/{kind}/{name}"], "time_zone", "an IANA time zone the gateways know"),
    (&["PUT /api/v1/environments/{name}/counters"], "redis", "a Redis configuration, read by the gateway's own code"),
    (&["GET /api/v1/applications/{id}/subscriptions/{sub_id}/usage"], "environment", "an environment that exists"),
    (
        &["POST /api/v1/applications/{id}/client-certificates"],
        "certificate",
        "one PEM X.509 client certificate that parses and has not expired",
    ),
    (&["POST /api/v1/applications/{id}/client-certificates"], "proof", "a signature made with the certificate's private key"),
    (&["POST /api/v1/applications/{id}/subscriptions"], "api_id", "an API that exists and is published"),
    (&["POST /api/v1/applications/{id}/subscriptions"], "tier", "a tier the API offers"),
    (&["POST /api/v1/blocking-conditions"], "value", "an address or network, or an application, user or API that exists"),
    (&["POST /api/v1/policies"], "component", "a WebAssembly component of Portico's world, in base64"),
    (&["POST /api/v1/policies"], "config_schema", "a JSON Schema that compiles"),
    (&["POST /api/v1/policies"], "name", "not a built-in policy's name"),
    (&["PUT /api/v1/environments/{name}/upstream-networks"], "allow", "addresses or networks in CIDR notation"),
    (&["PUT /api/v1/environments/{name}/upstream-networks"], "deny", "addresses or networks in CIDR notation"),
    (&["PUT /api/v1/key-managers/{name}"], "name", "not `built-in`, Portico's own key manager"),
    (&["PUT /api/v1/key-managers/{name}"], "environments[", "an environment that exists"),
    (&["PUT /api/v1/key-managers/{name}"], "issuer", "an https:// URL (http:// on loopback) the gateway's own code accepts"),
    (&["PUT /api/v1/key-managers/{name}"], "algorithms", "signature algorithms the gateway accepts (no HMAC, no `none`)"),
    (&["PUT /api/v1/key-managers/{name}"], "discovery", "settings read by the gateway's own code"),
    (&["PUT /api/v1/key-managers/{name}"], "claims", "claim names read by the gateway's own code"),
    (
        &["PUT /api/v1/applications/{id}/external-clients/{key_manager}"],
        "client_secret",
        "the client's secret, which the key manager's token endpoint must take",
    ),
    (
        &["GET /oauth2/authorize"],
        "",
        "a page, naming no field: `client_id` must be a registered client, `redirect_uri` one of its registered URIs",
    ),
    (
        &["PUT /api/v1/applications/{id}/oauth-client/redirect-uris"],
        "redirect_uris[",
        "an absolute https URI, or http on a loopback address, without fragment or user information",
    ),
    (&["POST /oauth2/token"], "invalid_grant", "a code, refresh token or verifier that is not good"),
    (&["POST /oauth2/token"], "invalid_scope", "scopes the client's subscriptions do not grant"),
    (&["POST /oauth2/token"], "unauthorized_client", "a grant the client may not use"),
];

/// The two operations that take a whole API definition.
const DEFINE_API: &[&str] = &["POST /api/v1/apis", "PUT /api/v1/apis/{id}"];

#[tokio::test]
async fn every_operation_answers_as_its_document_says() {
    portico_control_plane::on_both_engines!(fuzz);
}

async fn fuzz(app: TestApp) {
    let cases: usize = std::env::var("PORTICO_API_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
    let seed: u64 = std::env::var("PORTICO_API_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(rand::random);
    println!("PORTICO_API_FUZZ_SEED={seed}");
    let doc = portico_control_plane::openapi::document();
    let (callers, pools) = seed_data(&app).await;
    let mut fuzz = Fuzz { app, doc, callers, pools, validators: HashMap::new(), rng: StdRng::seed_from_u64(seed), seen: Seen::default() };

    let mut operations = Vec::new();
    for (path, item) in fuzz.doc["paths"].as_object().expect("paths") {
        for method in ["get", "put", "post", "patch", "delete"] {
            if item.get(method).is_some() {
                operations.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    // Deletions last, so that the others find what was seeded.
    operations.sort_by_key(|(method, _)| method == "DELETE");
    for (method, path) in &operations {
        for caller in 0..fuzz.callers.len() {
            for _ in 0..cases {
                fuzz.case(method, path, caller).await;
            }
        }
    }

    let seen = &fuzz.seen;
    println!(
        "{} requests over {} operations ({} the document calls valid, {} invalid); statuses {:?}",
        seen.requests,
        operations.len(),
        seen.valid,
        seen.requests - seen.valid,
        seen.statuses
    );
    let problems: Vec<String> = seen.problems.iter().map(|(what, example)| format!("{what}\n    e.g. {example}")).collect();
    assert!(problems.is_empty(), "seed {seed}: {} ways the API and its document disagree:\n{}", problems.len(), problems.join("\n"));
}

/// Who calls: the header that says so, and how to become them again after a logout.
struct Caller {
    name: &'static str,
    authorization: Option<String>,
    login: Option<(String, String)>,
}

/// What the run saw: counts, and each disagreement once with its first example.
#[derive(Default)]
struct Seen {
    requests: usize,
    valid: usize,
    statuses: BTreeMap<u16, usize>,
    problems: BTreeMap<String, String>,
}

struct Fuzz {
    app: TestApp,
    doc: Value,
    callers: Vec<Caller>,
    /// Values for path parameters, by the literal segment before them and their name
    /// (`apis/id`): things that exist.
    pools: HashMap<String, Vec<String>>,
    validators: HashMap<String, jsonschema::Validator>,
    rng: StdRng,
    seen: Seen,
}

/// What came back.
struct Answer {
    status: u16,
    content_type: Option<String>,
    body: Value,
}

/// The request a case sends, and whether the document calls it valid.
struct Case {
    uri: String,
    body: Option<(String, Vec<u8>)>,
    valid: bool,
    /// Client credentials in the form (RFC 6749 §2.3.1): refused beside HTTP Basic ones.
    credentials_in_form: bool,
    shown: String,
}

impl Fuzz {
    async fn case(&mut self, method: &str, path: &str, caller: usize) {
        let operation = self.doc["paths"][path][method.to_lowercase()].clone();
        let mut case = self.request(method, path, &operation);
        let basic = self.callers[caller].authorization.as_ref().is_some_and(|a| a.starts_with("Basic "));
        case.valid &= !(basic && case.credentials_in_form);
        let mut request = Request::builder().method(method).uri(&case.uri);
        if let Some(authorization) = &self.callers[caller].authorization {
            request = request.header("authorization", authorization);
        }
        let request = match &case.body {
            Some((content_type, bytes)) => request.header("content-type", content_type).body(Body::from(bytes.clone())),
            None => request.body(Body::empty()),
        }
        .expect("a request");
        let response = self.app.router.clone().oneshot(request).await.expect("infallible");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
        let bytes = response.into_body().collect().await.expect("a body").to_bytes();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);

        self.seen.requests += 1;
        self.seen.valid += usize::from(case.valid);
        *self.seen.statuses.entry(status).or_default() += 1;
        let who = self.callers[caller].name;
        let example =
            format!("as {who}: {} → {status} {}", case.shown, String::from_utf8_lossy(&bytes).chars().take(300).collect::<String>());
        let answer = Answer { status, content_type, body };
        for problem in self.check(method, path, &operation, &case, &answer) {
            self.seen.problems.entry(problem).or_insert_with(|| example.clone());
        }

        if path == "/api/v1/auth/logout"
            && status == 204
            && let Some((username, password)) = self.callers[caller].login.clone()
        {
            let token = self.app.login(&username, &password).await;
            self.callers[caller].authorization = Some(format!("Bearer {token}"));
        }
    }

    /// What is wrong with an answer, by what the document says of the operation.
    fn check(&mut self, method: &str, path: &str, operation: &Value, case: &Case, answer: &Answer) -> Vec<String> {
        let Answer { status, content_type, body } = answer;
        let (status, content_type) = (*status, content_type.as_deref());
        let mut problems = Vec::new();
        let op = format!("{method} {path}");
        if status >= 500 {
            problems.push(format!("{op} answered {status}"));
        }
        let responses = &operation["responses"];
        let documented = responses.get(status.to_string()).or_else(|| responses.get("default"));
        match documented.map(|r| resolve(&self.doc, r).clone()) {
            None => problems.push(format!("{op} answered {status}, which its document does not list")),
            Some(response) => {
                if let Some(content) = response["content"].as_object().filter(|c| !c.is_empty()) {
                    match content_type.and_then(|ct| content.get(ct).map(|media| (ct, media))) {
                        None => problems.push(format!(
                            "{op} answered {status} as {}, which its document does not list (it lists {:?})",
                            content_type.unwrap_or("nothing"),
                            content.keys().collect::<Vec<_>>()
                        )),
                        Some((ct, media)) if ct.contains("json") && media.get("schema").is_some() => {
                            let key = format!("{op} {status} {ct}");
                            if let Err(error) = self.validate(&key, &media["schema"], body) {
                                problems.push(format!("{op} answered a {status} that does not match its schema: {error}"));
                            }
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        if case.valid && status == 400 {
            let field = body["field"].as_str().or(body["error"].as_str()).unwrap_or("");
            let referred = REFERENCES.iter().any(|(operations, f, _)| operations.contains(&op.as_str()) && field.starts_with(f));
            if !referred {
                problems.push(format!("{op} refused a request its document calls valid, naming `{field}`"));
            }
        }
        if !case.valid && (200..300).contains(&status) {
            problems.push(format!("{op} accepted a request its document calls invalid"));
        }
        problems
    }

    /// A request for `operation`: its path and query parameters and its body, generated
    /// from their schemas and, one time in two, broken in one place.
    fn request(&mut self, method: &str, path: &str, operation: &Value) -> Case {
        let break_it = self.rng.gen_bool(0.5);
        let mut valid = true;
        let mut uri = String::new();
        let mut query = Vec::new();
        let parameters = operation["parameters"].as_array().cloned().unwrap_or_default();
        let mut literal = "";
        let mut first = true;
        for segment in path.split('/') {
            if !first {
                uri.push('/');
            }
            first = false;
            let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else {
                uri.push_str(segment);
                literal = segment;
                continue;
            };
            let parameter = parameters.iter().find(|p| p["name"] == name && p["in"] == "path").cloned().unwrap_or(Value::Null);
            let known = self.pools.get(&format!("{literal}/{name}")).cloned().unwrap_or_default();
            let mut value = match known.choose(&mut self.rng) {
                Some(known) if self.rng.gen_bool(0.7) => Value::String(known.clone()),
                _ => generate(&self.doc, &mut self.rng, &parameter["schema"], 0),
            };
            if break_it && self.rng.gen_bool(0.3) {
                value = Value::String(["..", "%00", "\u{0}", "a b", "é", "0", &"x".repeat(300)].choose(&mut self.rng).unwrap().to_string());
            }
            valid &= self.validate(&format!("{method} {path} path {name}"), &parameter["schema"], &value).is_ok();
            uri.push_str(&encode(&as_text(&value)));
        }
        for parameter in parameters.iter().filter(|p| p["in"] == "query") {
            if parameter["required"] != true && self.rng.gen_bool(0.5) {
                continue;
            }
            let name = parameter["name"].as_str().unwrap_or_default();
            let mut value = generate(&self.doc, &mut self.rng, &parameter["schema"], 0);
            if break_it && self.rng.gen_bool(0.3) {
                value = mutate_value(&mut self.rng, value);
            }
            if value.is_null() {
                continue;
            }
            let text = as_text(&value);
            let sent = as_sent(&self.doc, &parameter["schema"], &text);
            valid &= self.validate(&format!("{method} {path} query {name}"), &parameter["schema"], &sent).is_ok();
            query.push(format!("{}={}", encode(name), encode(&text)));
        }
        if !query.is_empty() {
            uri = format!("{uri}?{}", query.join("&"));
        }

        let mut body = None;
        let mut credentials_in_form = false;
        let mut shown = format!("{method} {uri}");
        let content = resolve(&self.doc, &operation["requestBody"]).get("content").and_then(Value::as_object).cloned();
        if let Some(content) = content {
            let (content_type, media) = content.iter().next().expect("a request body has a content type");
            let schema = media["schema"].clone();
            // The generator reads the keywords of properties, not those that relate
            // them (`if`/`then`): it tries until the whole schema is satisfied.
            let mut tries = 0;
            let mut value = loop {
                let value = generate(&self.doc, &mut self.rng, &schema, 0);
                match self.validate(&format!("{method} {path} body"), &schema, &value) {
                    Ok(()) => break value,
                    Err(error) if tries == 50 => {
                        panic!("the generator made no body for {method} {path} that its schema takes ({error}): {value}")
                    }
                    Err(_) => tries += 1,
                }
            };
            if break_it {
                value = mutate(&mut self.rng, value);
            }
            let form = content_type.contains("x-www-form-urlencoded");
            if form {
                // A form holds only texts: what the server sees of the value.
                let fields = value.as_object().cloned().unwrap_or_default();
                let sent = fields.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| {
                    let text = as_text(&v);
                    (k.clone(), as_sent(&self.doc, &resolve(&self.doc, &schema)["properties"][&k], &text))
                });
                value = Value::Object(sent.collect());
                credentials_in_form = value.get("client_id").is_some() || value.get("client_secret").is_some();
            }
            valid &= self.validate(&format!("{method} {path} body"), &schema, &value).is_ok();
            shown = format!("{shown} {value}");
            let bytes = if form {
                let pairs = value.as_object().into_iter().flatten().map(|(k, v)| format!("{}={}", encode(k), encode(&as_text(v))));
                pairs.collect::<Vec<_>>().join("&").into_bytes()
            } else {
                value.to_string().into_bytes()
            };
            body = Some((content_type.clone(), bytes));
        }
        Case { uri, body, valid, credentials_in_form, shown }
    }

    /// Check `value` against `schema`, whose references name the document's components.
    fn validate(&mut self, key: &str, schema: &Value, value: &Value) -> Result<(), String> {
        if schema.is_null() {
            return Ok(());
        }
        let validator = self.validators.entry(key.to_owned()).or_insert_with(|| {
            let mut root = schema.clone();
            if let Some(object) = root.as_object_mut() {
                object.insert("components".to_owned(), self.doc["components"].clone());
            }
            jsonschema::validator_for(&root).unwrap_or_else(|e| panic!("the schema of {key} does not compile: {e}"))
        });
        match validator.iter_errors(value).next() {
            None => Ok(()),
            Some(error) => Err(format!("{} at `{}`", error, error.instance_path())),
        }
    }
}

/// Log in a subscriber, a publisher and the admin; give the subscriber an application with
/// a subscription, an API key and an OAuth2 client, the publisher a deployed API; and note
/// what exists for path parameters.
async fn seed_data(app: &TestApp) -> (Vec<Caller>, HashMap<String, Vec<String>>) {
    let admin = app.login("admin", "admin-password-1").await;
    let publisher = app.user("pat", "publisher").await;
    let subscriber = app.user("sue", "subscriber").await;
    let mut pools: HashMap<String, Vec<String>> = HashMap::new();
    let mut put = |key: &str, value: &Value| {
        let value = value.as_str().map(str::to_owned).unwrap_or_else(|| panic!("{key}: {value}"));
        pools.entry(key.to_owned()).or_default().push(value);
    };
    let created = |status: axum::http::StatusCode, body: &Value| assert!(status.is_success(), "seeding: {status} {body}");

    let (status, body) =
        app.send("PUT", "/api/v1/tiers/subscription/Tiny", Some(&admin), Some(json!({"requests": 3, "per_ms": 60000}))).await;
    created(status, &body);
    for (kind, name) in [("subscription", "Tiny"), ("subscription", "Unlimited"), ("application", "Unlimited")] {
        put("tiers/kind", &json!(kind));
        put("tiers/name", &json!(name));
    }
    let (status, block) =
        app.send("POST", "/api/v1/blocking-conditions", Some(&admin), Some(json!({"kind": "ip", "value": "192.0.2.7"}))).await;
    created(status, &block);
    put("blocking-conditions/id", &block["id"]);
    let (status, environment) = app.send("POST", "/api/v1/environments", Some(&admin), Some(json!({"name": "staging"}))).await;
    created(status, &environment);
    for name in ["default", "staging"] {
        put("environments/name", &json!(name));
        put("deployments/environment", &json!(name));
    }
    let (status, token) = app.send("POST", "/api/v1/environments/staging/gateway-tokens", Some(&admin), Some(json!({}))).await;
    created(status, &token);
    put("gateway-tokens/id", &token["id"]);
    let (_, keys) = app.send("GET", "/api/v1/keymanager/keys", Some(&admin), None).await;
    for key in keys.as_array().into_iter().flatten() {
        put("keys/kid", &key["kid"]);
    }
    let (_, policies) = app.send("GET", "/api/v1/policies", Some(&admin), None).await;
    for policy in policies.as_array().into_iter().flatten() {
        put("policies/name", &policy["name"]);
        put("policies/version", &policy["version"]);
    }

    let definition = json!({"name": "seed", "version": "v1", "context": "/seed", "endpoints": ["http://192.0.2.1:9/"],
        "operations": [{"method": "GET", "path": "/x"}], "tiers": ["Tiny", "Unlimited"]});
    let (status, api) = app.send("POST", "/api/v1/apis", Some(&publisher), Some(definition)).await;
    created(status, &api);
    let api_path = format!("/api/v1/apis/{}", api["id"].as_str().unwrap());
    put("apis/id", &api["id"]);
    put("catalogue/api_id", &api["id"]);
    let (status, body) = app.send("POST", &format!("{api_path}/lifecycle"), Some(&publisher), Some(json!({"action": "publish"}))).await;
    created(status, &body);
    let (status, revision) = app.send("POST", &format!("{api_path}/revisions"), Some(&publisher), Some(json!({}))).await;
    created(status, &revision);
    put("revisions/revision_id", &revision["id"]);
    let deploy = json!({"revision_id": revision["id"], "environments": ["default"]});
    let (status, body) = app.send("POST", &format!("{api_path}/deployments"), Some(&publisher), Some(deploy)).await;
    created(status, &body);

    let (status, application) = app.send("POST", "/api/v1/applications", Some(&subscriber), Some(json!({"name": "shop"}))).await;
    created(status, &application);
    let application_path = format!("/api/v1/applications/{}", application["id"].as_str().unwrap());
    put("applications/id", &application["id"]);
    let subscribe = json!({"api_id": api["id"], "tier": "Tiny"});
    let (status, subscription) = app.send("POST", &format!("{application_path}/subscriptions"), Some(&subscriber), Some(subscribe)).await;
    created(status, &subscription);
    put("subscriptions/sub_id", &subscription["id"]);
    let (status, key) = app.send("POST", &format!("{application_path}/api-keys"), Some(&subscriber), None).await;
    created(status, &key);
    put("api-keys/key_id", &key["id"]);
    let (status, client) = app.send("POST", &format!("{application_path}/oauth-client"), Some(&subscriber), Some(json!({}))).await;
    created(status, &client);
    let basic = {
        use base64::Engine as _;
        let pair = format!("{}:{}", client["client_id"].as_str().unwrap(), client["client_secret"].as_str().unwrap());
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
    };

    let bearer = |token: &str| Some(format!("Bearer {token}"));
    let callers = vec![
        Caller { name: "nobody", authorization: None, login: None },
        Caller { name: "subscriber", authorization: bearer(&subscriber), login: Some(("sue".into(), "sue-password-1".into())) },
        Caller { name: "publisher", authorization: bearer(&publisher), login: Some(("pat".into(), "pat-password-1".into())) },
        Caller { name: "admin", authorization: bearer(&admin), login: Some(("admin".into(), "admin-password-1".into())) },
        Caller { name: "an OAuth2 client", authorization: Some(basic), login: None },
    ];
    (callers, pools)
}

/// Follow a `$ref` to the document's component.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').unwrap_or_else(|| panic!("an outside reference: {reference}"));
            resolve(doc, doc.pointer(pointer).unwrap_or_else(|| panic!("a dangling reference: {reference}")))
        }
        None => schema,
    }
}

/// A value `schema` accepts.
fn generate(doc: &Value, rng: &mut StdRng, schema: &Value, depth: usize) -> Value {
    let schema = resolve(doc, schema);
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return values.choose(rng).cloned().unwrap_or(Value::Null);
    }
    if let Some(value) = schema.get("const") {
        return value.clone();
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(branches) = schema.get(key).and_then(Value::as_array) {
            let not_null: Vec<&Value> = branches.iter().filter(|b| b.get("type") != Some(&json!("null"))).collect();
            let branch = match not_null.choose(rng) {
                Some(branch) if not_null.len() == branches.len() || rng.gen_bool(0.9) => *branch,
                _ => branches.choose(rng).expect("a branch"),
            };
            return generate(doc, rng, branch, depth + 1);
        }
    }
    if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
        let mut merged = Map::new();
        for part in parts {
            if let Value::Object(object) = generate(doc, rng, part, depth + 1) {
                merged.extend(object);
            }
        }
        return Value::Object(merged);
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
        _ if schema.get("properties").is_some() => vec!["object"],
        _ => vec![],
    };
    let non_null: Vec<&str> = types.iter().copied().filter(|t| *t != "null").collect();
    let nullable = types.contains(&"null");
    let chosen = match non_null.choose(rng) {
        None if nullable => "null",
        None => return json!({}),
        Some(_) if nullable && rng.gen_bool(0.1) => "null",
        Some(chosen) => chosen,
    };
    let number = |key: &str| schema.get(key).and_then(Value::as_f64);
    match chosen {
        "null" => Value::Null,
        "boolean" => Value::Bool(rng.r#gen()),
        "integer" => {
            let low = number("minimum").unwrap_or(0.0) as i64;
            let high = number("maximum").map(|m| m as i64).unwrap_or(low + 1000).min(low + 1_000_000);
            json!(rng.gen_range(low..=high))
        }
        "number" => {
            let low = number("minimum").unwrap_or(0.0);
            let high = number("maximum").unwrap_or(low + 1000.0);
            json!(rng.gen_range(low..=high))
        }
        "string" => Value::String(string(rng, schema)),
        "array" => {
            let low = number("minItems").unwrap_or(0.0) as usize;
            let high = number("maxItems").map(|m| m as usize).unwrap_or(low + 3).min(low + 3);
            let count = if depth > 4 { low } else { rng.gen_range(low..=high) };
            let mut items: Vec<Value> = Vec::new();
            for _ in 0..count * 4 {
                if items.len() == count {
                    break;
                }
                let item = generate(doc, rng, &schema["items"], depth + 1);
                if schema["uniqueItems"] != true || !items.contains(&item) {
                    items.push(item);
                }
            }
            Value::Array(items)
        }
        "object" => {
            let required: Vec<&str> =
                schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
            let mut object = Map::new();
            for (name, property) in schema.get("properties").and_then(Value::as_object).into_iter().flatten() {
                if required.contains(&name.as_str()) || (depth < 4 && rng.gen_bool(0.6)) {
                    object.insert(name.clone(), generate(doc, rng, property, depth + 1));
                }
            }
            Value::Object(object)
        }
        other => panic!("a schema of type `{other}`: {schema}"),
    }
}

/// A string `schema` accepts: by its format, its pattern or its lengths.
fn string(rng: &mut StdRng, schema: &Value) -> String {
    let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
    let max = schema.get("maxLength").and_then(Value::as_u64).map(|m| m as usize).unwrap_or(usize::MAX);
    match schema.get("format").and_then(Value::as_str) {
        Some("uuid") => return uuid::Uuid::new_v4().to_string(),
        Some("date-time") => return "2026-12-03T10:00:00Z".to_owned(),
        _ => {}
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        let parsed = pattern::parse(pattern).unwrap_or_else(|e| panic!("pattern `{pattern}`: {e}"));
        for _ in 0..100 {
            let text = parsed.generate(rng);
            if (min..=max).contains(&text.chars().count()) {
                return text;
            }
        }
        panic!("no string of pattern `{pattern}` between {min} and {max} characters in 100 tries");
    }
    const ALPHABET: &[char] = &['a', 'b', 'z', 'A', 'Q', '0', '7', '-', '_', '.', ' ', '/', ':', 'é'];
    let length = rng.gen_range(min..=max.min(min + 24));
    (0..length).map(|_| *ALPHABET.choose(rng).unwrap()).collect()
}

/// `value` broken in one place: a node replaced by another type, a property removed or
/// added, a string or number stretched.
fn mutate(rng: &mut StdRng, mut value: Value) -> Value {
    let mut places = Vec::new();
    collect_places(&value, String::new(), &mut places);
    let place = places.choose(rng).cloned().unwrap_or_default();
    if place.is_empty() {
        return mutate_value(rng, value);
    }
    let (parent, key) = place.rsplit_once('/').expect("a place below the root");
    let parent = value.pointer_mut(parent).expect("the place's parent");
    match parent {
        Value::Object(object) if rng.gen_bool(0.3) => {
            object.remove(key);
        }
        Value::Object(object) => {
            let old = object.remove(key).unwrap_or(Value::Null);
            object.insert(key.to_owned(), mutate_value(rng, old));
        }
        Value::Array(items) => {
            let index: usize = key.parse().expect("an index");
            let old = std::mem::take(&mut items[index]);
            items[index] = mutate_value(rng, old);
        }
        _ => unreachable!("places are under objects and arrays"),
    }
    value
}

fn collect_places(value: &Value, at: String, places: &mut Vec<String>) {
    places.push(at.clone());
    match value {
        Value::Object(object) => {
            for (key, child) in object {
                collect_places(child, format!("{at}/{}", key.replace('~', "~0").replace('/', "~1")), places);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                collect_places(child, format!("{at}/{i}"), places);
            }
        }
        _ => {}
    }
}

fn mutate_value(rng: &mut StdRng, value: Value) -> Value {
    match (rng.gen_range(0..4), value) {
        (0, Value::String(text)) => Value::String(
            [format!("{text}{}", "a".repeat(300)), format!(" {text}"), format!("{text}\u{0}"), String::new(), format!("{text}\n")]
                .choose(rng)
                .unwrap()
                .clone(),
        ),
        (0, Value::Number(_)) => {
            [json!(-1), json!(0), json!(4_294_967_296u64), json!(1.5), json!(-9_007_199_254_740_993i64)].choose(rng).unwrap().clone()
        }
        (0, Value::Object(mut object)) => {
            object.insert("unexpected".to_owned(), json!(1));
            Value::Object(object)
        }
        (0, Value::Array(mut items)) => {
            if let Some(first) = items.first().cloned() {
                items.push(first);
            }
            Value::Array(items)
        }
        _ => [json!("x"), json!(7), json!(true), Value::Null, json!([]), json!({})].choose(rng).unwrap().clone(),
    }
}

/// What a server reads from `text` in a URL or a form, for a parameter of `schema`: a
/// number or a boolean where the schema takes one and the text is one, else the text.
fn as_sent(doc: &Value, schema: &Value, text: &str) -> Value {
    let schema = resolve(doc, schema);
    let types = match schema.get("type") {
        Some(Value::Array(many)) => many.clone(),
        Some(one) => vec![one.clone()],
        None => vec![],
    };
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Number(n)) if types.iter().any(|t| t == "integer" || t == "number") => Value::Number(n),
        Ok(Value::Bool(b)) if types.iter().any(|t| t == "boolean") => Value::Bool(b),
        _ => Value::String(text.to_owned()),
    }
}

/// A parameter's value as it goes in a URL or a form.
fn as_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Percent-encode all but the unreserved characters.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}
