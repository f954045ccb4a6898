//! Policies in every language, end to end: the example policies built with their real
//! toolchains (Rust, componentize-py, componentize-js; installed on first use under
//! `target/policy-toolchains`) and run against their fixtures; `portico policy new`
//! projects that build and pass as they are; `portico policy test` reporting a mismatch;
//! components of a wrong world refused at build, test and load; and the Python and
//! JavaScript examples mediating real traffic in a gateway behind `key-auth`.

use std::path::Path;
use std::process::Command;

use http::{Method, StatusCode};
use portico::policy_tool::{self, Fixtures, Language};
use portico_tests::policy_builds::{build_project, built, harness, toolchains};
use portico_tests::{
    ALLOW_LOOPBACK_UPSTREAMS, ControlPlaneClient, HttpClient, MockUpstream, PorticoProcess, check_config, policies, portico_binary,
    workspace_root,
};

const VALIDATE_JSON: &str = "examples/policies/validate-json";
const MASK_FIELDS: &str = "examples/policies/mask-fields";
const MAINTENANCE_WINDOW: &str = "examples/policies/maintenance-window";
const JSON_TRANSFORM: &str = "bench/policies/json-transform";

/// Run a fixture file against a component and fail the test with the report on a mismatch.
fn assert_fixtures_pass(name: &str, component: &[u8], fixtures: &Path) {
    let fixtures = Fixtures::load(fixtures).unwrap();
    let report = policy_tool::test(harness(), name, component, &fixtures).unwrap();
    println!("{report}");
    assert!(report.passed(), "{report}");
    assert_eq!(report.cases.len(), fixtures.cases.len());
}

fn assert_example_passes(dir: &str) {
    let built = built(dir);
    assert_fixtures_pass(&built.project.name, &built.bytes, &built.project.fixtures());
}

#[test]
fn the_python_example_validates_json_bodies() {
    assert_example_passes(VALIDATE_JSON);
    assert_eq!(built(VALIDATE_JSON).project.language, Language::Python);
}

#[test]
fn the_javascript_example_masks_fields_and_names_the_consumer() {
    assert_example_passes(MASK_FIELDS);
    assert_eq!(built(MASK_FIELDS).project.language, Language::Js);
}

#[test]
fn the_rust_example_keeps_maintenance_windows() {
    assert_example_passes(MAINTENANCE_WINDOW);
    assert_eq!(built(MAINTENANCE_WINDOW).project.language, Language::Rust);
}

#[test]
fn the_benchmark_policy_rewrites_json_bodies() {
    assert_example_passes(JSON_TRANSFORM);
}

#[test]
fn built_in_policies_run_against_mocked_keys_and_counters() {
    let fixtures = workspace_root().join("tests/fixtures");
    for name in ["key-auth", "throttle"] {
        let component = portico_gateway::policy::builtin::find(name).unwrap().component;
        assert_fixtures_pass(name, component, &fixtures.join(format!("{name}.yaml")));
    }
}

#[test]
fn new_projects_build_and_pass_their_fixtures_in_every_language() {
    let dir = tempfile::tempdir().unwrap();
    for language in [Language::Rust, Language::Python, Language::Js] {
        let name = format!("require-tenant-{}", language.name());
        let project = policy_tool::new_project(language, &name, dir.path()).unwrap();
        let built = build_project(&project).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(built.project.language, language);
        assert_fixtures_pass(&name, &built.bytes, &project.join("fixtures.yaml"));
    }
    let again = policy_tool::new_project(Language::Js, "require-tenant-js", dir.path()).unwrap_err();
    assert!(format!("{again:#}").contains("already exists"), "{again:#}");
    let bad = policy_tool::new_project(Language::Rust, "Not_A_Name", dir.path()).unwrap_err();
    assert!(format!("{bad:#}").contains("is not a policy name"), "{bad:#}");

    // A configuration `init` refuses fails the build's check, naming the policy and why.
    let project = dir.path().join("require-tenant-python");
    std::fs::write(project.join("fixtures.yaml"), "config: {header: \"no such header\"}\ncases: []\n").unwrap();
    let error = format!("{:#}", build_project(&project).unwrap_err());
    assert!(
        error.contains(
            "policy `require-tenant-python` refused its configuration: config field `header`: 'no such header' is not a header name"
        ),
        "{error}"
    );
}

#[test]
fn a_failing_case_prints_what_differs_and_fails_the_command() {
    let built = built(MAINTENANCE_WINDOW);
    let dir = tempfile::tempdir().unwrap();
    let fixtures = dir.path().join("fixtures.yaml");
    std::fs::write(
        &fixtures,
        r#"
config: {windows: [{days: [sat], from: "02:00", to: "04:00"}]}
cases:
  - name: passes
    mocks: {clock_ms: 1704499200000}
    expect: {decision: continue}
  - name: expects the wrong answer
    mocks: {clock_ms: 1704508200000}
    expect:
      decision: continue
      status: 200
      headers: {retry-after: "60", x-absent: "1"}
      json: {title: Service Unavailable, status: 200, extra: true}
"#,
    )
    .unwrap();
    let output = Command::new(portico_binary())
        .args(["policy", "test", "--timeout", "1s"])
        .arg(&built.component)
        .arg("--fixtures")
        .arg(&fixtures)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}{stderr}");
    assert!(!output.status.success(), "a failed case fails the command");
    for line in [
        "✓ passes",
        "✗ expects the wrong answer",
        "decision: expected continue, got respond with 503",
        "status: expected 200, got 503",
        "header retry-after: expected \"60\", got \"5400\"",
        "header x-absent: expected \"1\", got (absent)",
        "body at /status: expected 200, got 503",
        "body at /extra: missing, expected true",
        "body at /type: unexpected \"about:blank\"",
        "2 cases: 1 passed, 1 failed",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    assert!(stderr.contains("1 of 2 cases of policy `maintenance-window` failed"), "{stderr}");

    let passing = Command::new(portico_binary())
        .args(["policy", "test", "--timeout", "1s"])
        .arg(&built.component)
        .arg("--fixtures")
        .arg(built.project.fixtures())
        .output()
        .unwrap();
    assert!(passing.status.success(), "{}", String::from_utf8_lossy(&passing.stdout));
}

#[test]
fn a_component_of_an_unknown_world_version_is_refused_at_build_test_and_load() {
    let expected = [
        "policy `",
        "does not fit the portico:policy@0.1.1 world: it has no export `portico:policy/policy@0.1.1` (it exports portico:policy/policy@0.2.0)",
    ];
    refused_everywhere("tests/policies/future-world", "portico-test-future-world", policies::FUTURE_WORLD, &expected);
}

#[test]
fn a_component_missing_an_export_is_refused_at_build_test_and_load() {
    let expected = ["policy `", "does not fit the portico:policy@0.1.1 world", "on-request"];
    refused_everywhere("tests/policies/missing-export", "portico-test-missing-export", policies::MISSING_EXPORT, &expected);
}

/// `project` fails `portico policy build`'s check, `portico policy test` and a gateway's
/// configuration check, each time with a message naming the policy and saying why.
fn refused_everywhere(project: &str, name: &str, component: &str, expected: &[&str]) {
    let check = |stage: &str, text: &str, name: &str| {
        for part in expected {
            assert!(text.contains(part), "{stage}: {part:?} missing in: {text}");
        }
        assert!(text.contains(&format!("policy `{name}`")), "{stage}: the policy is not named in: {text}");
    };
    let at_build = format!("{:#}", build_project(&workspace_root().join(project)).unwrap_err());
    check("build", &at_build, name);

    let fixtures = Fixtures::parse("cases: [{name: any}]").unwrap();
    let at_test = format!("{:#}", policy_tool::test(harness(), name, &std::fs::read(component).unwrap(), &fixtures).unwrap_err());
    check("test", &at_test, name);

    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "listeners: [{{address: \"127.0.0.1:0\"}}]\nmodules:\n  odd: {{path: {component}}}\napis:\n  - name: a\n    context: /a\n    upstream: {{endpoints: [\"http://192.0.2.1:9\"]}}\n    policies: [{{policy: odd}}]\n"
    );
    std::fs::write(dir.path().join("portico.yaml"), config).unwrap();
    let (ok, at_load) = check_config(&dir.path().join("portico.yaml"));
    assert!(!ok, "{at_load}");
    check("load", &at_load, "odd");
    println!("build: {at_build}\ntest: {at_test}\nload: {at_load}");
}

#[test]
fn a_configuration_a_python_policy_refuses_is_named_at_load() {
    let built = built(VALIDATE_JSON);
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "listeners: [{{address: \"127.0.0.1:0\"}}]\nmodules:\n  validate-json: {{path: {}}}\napis:\n  - name: a\n    context: /a\n    upstream: {{endpoints: [\"http://192.0.2.1:9\"]}}\n    policies:\n      - policy: validate-json\n        config: {{schema: {{type: object, properties: {{quantity: {{typ: integer}}}}}}}}\n",
        built.component.display()
    );
    std::fs::write(dir.path().join("portico.yaml"), config).unwrap();
    let (ok, text) = check_config(&dir.path().join("portico.yaml"));
    assert!(!ok, "{text}");
    assert!(text.contains("apis[0].policies[0]"), "{text}");
    assert!(
        text.contains(
            "policy `validate-json` refused its configuration: config field schema.properties.quantity.typ: unknown keyword `typ`"
        ),
        "{text}"
    );
}

#[test]
fn the_toolchains_are_pinned() {
    let root = toolchains().root().to_owned();
    let py = root.join(format!("componentize-py-{}", policy_tool::COMPONENTIZE_PY));
    let js = std::fs::read_dir(&root)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.file_name().unwrap().to_string_lossy().starts_with(&format!("componentize-js-{}-", policy_tool::COMPONENTIZE_JS)))
        .expect("componentize-js installed");
    built(VALIDATE_JSON);
    built(MASK_FIELDS);
    assert!(py.join(format!("componentize_py-{}.dist-info", policy_tool::COMPONENTIZE_PY)).is_dir(), "{}", py.display());
    let package = std::fs::read_to_string(js.join("node_modules/@bytecodealliance/componentize-js/package.json")).unwrap();
    let version = serde_json::from_str::<serde_json::Value>(&package).unwrap()["version"].as_str().unwrap().to_owned();
    assert_eq!(version, policy_tool::COMPONENTIZE_JS);
}

fn mediated_config(upstream: &MockUpstream) -> String {
    let validate = built(VALIDATE_JSON).component.display().to_string();
    let mask = built(MASK_FIELDS).component.display().to_string();
    format!(
        r#"listeners:
  - address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
{ALLOW_LOOPBACK_UPSTREAMS}modules:
  validate-json: {{path: {validate}}}
  mask-fields: {{path: {mask}}}
consumers:
  - name: shop
    tier: Gold
    api_keys: ["key-shop-0001"]
  - name: back-office
    scopes: ["pii:read"]
    api_keys: ["key-back-0001"]
apis:
  - name: orders
    context: /orders
    upstream:
      endpoints: ["{}/base"]
    policies:
      - policy: key-auth
        config: {{api_key: {{header: apikey}}, jwt: false}}
      - policy: validate-json
        config:
          schema:
            type: object
            required: [sku, quantity]
            additionalProperties: false
            properties:
              sku: {{type: string, pattern: "^[A-Z]{{2}}-[0-9]{{4}}$"}}
              quantity: {{type: integer, minimum: 1}}
      - policy: mask-fields
        config: {{fields: ["headers.x-card[]"], keep_last: 4, unless_scope: "pii:read"}}
"#,
        upstream.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_policies_mediate_traffic_behind_key_auth() {
    let upstream = MockUpstream::start().await;
    // Build (or take) both components off the async threads.
    tokio::task::spawn_blocking(|| (built(VALIDATE_JSON), built(MASK_FIELDS))).await.unwrap();
    let gateway = PorticoProcess::start(&mediated_config(&upstream)).unwrap();
    let client = HttpClient::default();
    let url = gateway.url("/orders/items");
    let json = [("content-type", "application/json")];
    let order = r#"{"sku": "AB-1234", "quantity": 2}"#;

    // key-auth runs first: no key, no further policy.
    let reply = client.send(Method::POST, &url, &json, order).await.unwrap();
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());

    // A valid order reaches the upstream untouched, with the consumer named (JavaScript,
    // request phase); the card number the upstream echoes is masked on the way back
    // (JavaScript, response phase).
    let shop =
        [("apikey", "key-shop-0001"), ("content-type", "application/json"), ("x-card", "4111111111111111"), ("x-consumer", "forged")];
    let reply = client.send(Method::POST, &url, &shop, order).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let seen = reply.json();
    assert_eq!(seen["body"], order, "the upstream got the body as sent");
    assert_eq!(seen["headers"]["x-consumer"], serde_json::json!(["shop; tier=Gold"]));
    assert_eq!(seen["headers"]["x-card"], serde_json::json!(["************1111"]));
    assert_eq!(reply.header("x-masked-fields"), Some("1"));
    assert_eq!(reply.header("x-upstream"), Some("mock"));

    // An invalid order is refused by the Python policy and never forwarded.
    let reply = client.send(Method::POST, &url, &shop, r#"{"sku": "AB-1234", "quantity": 0}"#).await.unwrap();
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/problem+json"));
    assert_eq!(reply.header("x-upstream"), None, "the request was not forwarded");
    assert_eq!(reply.json()["field"], "/quantity");
    assert_eq!(reply.json()["detail"], "/quantity must be at least 1.");
    let reply = client.send(Method::POST, &url, &shop, "{not json").await.unwrap();
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());

    // A caller with the scope sees the field as the upstream sent it.
    let back_office = [("apikey", "key-back-0001"), ("content-type", "application/json"), ("x-card", "4111111111111111")];
    let reply = client.send(Method::POST, &url, &back_office, order).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["headers"]["x-card"], serde_json::json!(["4111111111111111"]));
    assert_eq!(reply.json()["headers"]["x-consumer"], serde_json::json!(["back-office"]));
    assert_eq!(reply.header("x-masked-fields"), None);

    // Warm instances are reused: one request at a time needs no instance beyond the first.
    for _ in 0..20 {
        let reply = client.send(Method::POST, &url, &shop, order).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
    }
    let metrics = client.get(&format!("http://{}/metrics", gateway.admin.unwrap()), &[]).await.unwrap().text();
    for policy in ["validate-json", "mask-fields"] {
        assert!(metrics.contains(&format!("portico_policy_instantiations_total{{policy=\"{policy}\"}} 1\n")), "{metrics}");
        assert!(metrics.contains(&format!("portico_policy_failures_total{{policy=\"{policy}\"}} 0\n")), "{metrics}");
    }
}

/// Run `portico policy push` for a component file; returns (success, output).
fn push(control_plane: &str, component: &Path, name: &str, schema: Option<&Path>) -> (bool, String) {
    let mut command = Command::new(portico_binary());
    command.args(["policy", "push"]).arg(component).args([
        "--control-plane",
        control_plane,
        "--name",
        name,
        "--version",
        "1.0.0",
        "--user",
        "admin",
    ]);
    if let Some(schema) = schema {
        command.arg("--schema").arg(schema);
    }
    let output = command.env("PORTICO_PASSWORD", "policies-admin-1").output().unwrap();
    (output.status.success(), format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_policies_pushed_to_the_registry_mediate_traffic() {
    let upstream = MockUpstream::start().await;
    let (validate, mask) =
        tokio::task::spawn_blocking(|| (built(VALIDATE_JSON).component.clone(), built(MASK_FIELDS).component.clone())).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    let process = PorticoProcess::spawn(
        dir,
        &["all-in-one", "--data-dir", &data, "--gateway", "127.0.0.1:0", "--api", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
        &[("PORTICO_ADMIN_PASSWORD", "policies-admin-1")],
    )
    .unwrap();
    let cp = ControlPlaneClient::new(process.control_plane.unwrap());
    let schema = workspace_root().join(VALIDATE_JSON).join("config.schema.json");

    // `portico policy push`: both uploaded; a component that is not a policy is refused with the reason.
    let base = cp.base.clone();
    let pushed = tokio::task::spawn_blocking(move || {
        [
            push(&base, &validate, "validate-json", Some(&schema)),
            push(&base, &mask, "mask-fields", None),
            push(&base, Path::new(policies::NOT_A_POLICY), "odd", None),
        ]
    })
    .await
    .unwrap();
    assert!(pushed[0].0 && pushed[0].1.contains("pushed validate-json@1.0.0"), "{}", pushed[0].1);
    assert!(pushed[1].0 && pushed[1].1.contains("pushed mask-fields@1.0.0"), "{}", pushed[1].1);
    assert!(!pushed[2].0 && pushed[2].1.contains("component: not a policy of the portico:policy@0.1.1 world"), "{}", pushed[2].1);

    // Attached through the publisher: a configuration against the uploaded schema is refused.
    let admin = cp.login("admin", "policies-admin-1").await;
    cp.allow_loopback_upstreams(&admin).await;
    let api = |validate_config: serde_json::Value| {
        serde_json::json!({
            "name": "orders", "version": "v1", "context": "/orders", "endpoints": [format!("{}/base", upstream.url())],
            "operations": [{"method": "POST", "path": "/items"}],
            "tiers": ["Unlimited"],
            "policies": [
                {"policy": "validate-json@1.0.0", "config": validate_config},
                {"policy": "mask-fields@1.0.0", "config": {"fields": ["headers.x-card[]"], "keep_last": 4, "unless_scope": "pii:read"}},
            ],
        })
    };
    let refused =
        cp.call(Method::POST, "/api/v1/apis", Some(&admin), Some(api(serde_json::json!({"schema": {}, "method": ["POST"]})))).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.text());
    assert_eq!(refused.json()["field"], "policies[0].config");
    assert!(refused.json()["detail"].as_str().unwrap().contains("schema"), "{}", refused.text());
    let order_schema = serde_json::json!({"type": "object", "required": ["sku", "quantity"], "properties": {"quantity": {"type": "integer", "minimum": 1}}});
    let created = cp.ok(Method::POST, "/api/v1/apis", Some(&admin), api(serde_json::json!({"schema": order_schema}))).await;
    let api_id = created["id"].as_str().unwrap().to_owned();
    cp.ok(Method::POST, &format!("/api/v1/apis/{api_id}/lifecycle"), Some(&admin), serde_json::json!({"action": "publish"})).await;
    let revision = cp.ok(Method::POST, &format!("/api/v1/apis/{api_id}/revisions"), Some(&admin), serde_json::json!({})).await;
    cp.ok(
        Method::POST,
        &format!("/api/v1/apis/{api_id}/deployments"),
        Some(&admin),
        serde_json::json!({"revision_id": revision["id"], "environments": ["default"]}),
    )
    .await;
    let key = cp.subscribed_key(&admin, "shop", &api_id).await.key;

    // Through the gateway, behind the managed key-auth: the Python policy validates, the
    // JavaScript one names the consumer and masks.
    let client = HttpClient::default();
    let url = process.url("/orders/v1/items");
    let order = r#"{"sku": "AB-1234", "quantity": 2}"#;
    let shop = [("apikey", key.as_str()), ("content-type", "application/json"), ("x-card", "4111111111111111")];
    // The gateway compiles both components first: seconds each in a debug build, but this
    // binary's other tests build and compile Python and JavaScript policies on the same two
    // cores meanwhile, and once that took CI past a minute. The bound is for a hang only.
    portico_tests::eventually("the deployment reaching the gateway", std::time::Duration::from_secs(240), async || {
        client.send(Method::POST, &url, &shop, order).await.unwrap().status == StatusCode::OK
    })
    .await;
    let reply = client.send(Method::POST, &url, &[("content-type", "application/json")], order).await.unwrap();
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let reply = client.send(Method::POST, &url, &shop, order).await.unwrap();
    assert_eq!(reply.json()["body"], order);
    assert_eq!(reply.json()["headers"]["x-card"], serde_json::json!(["************1111"]));
    assert!(reply.json()["headers"]["x-consumer"][0].as_str().unwrap().contains("tier=Unlimited"), "{}", reply.text());
    assert_eq!(reply.header("x-masked-fields"), Some("1"));
    let reply = client.send(Method::POST, &url, &shop, r#"{"sku": "AB-1234", "quantity": 0}"#).await.unwrap();
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    assert_eq!(reply.json()["field"], "/quantity");
    assert_eq!(reply.header("x-upstream"), None, "the request was not forwarded");
}
