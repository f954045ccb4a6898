//! The policy registry, gateway tokens, the fleet endpoints' checks, rollbacks and the
//! snapshot a gateway receives, on both engines.

use axum::http::StatusCode;
use base64::Engine as _;
use portico_control_plane::on_both_engines;
use portico_control_plane::test_support::TestApp;
use portico_gateway::check::{PolicyCeilings, builtin};
use serde_json::{Value, json};

/// The built-in `headers` component, uploaded under another name: a real policy whose
/// `init` refuses unknown fields.
fn headers_component() -> String {
    base64::engine::general_purpose::STANDARD.encode(builtin::find("headers").unwrap().component)
}

fn api_with(policy: Value) -> Value {
    json!({"name": "reg", "version": "v1", "context": "/reg", "endpoints": ["http://192.0.2.1:9/"],
        "operations": [{"method": "GET", "path": "/x"}], "policies": [policy]})
}

#[tokio::test]
async fn uploads_are_validated_immutable_and_checked_against_their_schema() {
    async fn check(app: TestApp) {
        let publisher = app.user("pat", "publisher").await;
        let subscriber = app.user("sue", "subscriber").await;
        let schema = json!({"type": "object", "required": ["request"], "properties": {"request": {"type": "object"}}});
        let upload = json!({"name": "my-headers", "version": "1.0.0", "component": headers_component(), "config_schema": schema});
        let (status, _) = app.send("POST", "/api/v1/policies", Some(&subscriber), Some(upload.clone())).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, module) = app.send("POST", "/api/v1/policies", Some(&publisher), Some(upload.clone())).await;
        assert_eq!(status, StatusCode::CREATED, "{module}");
        assert_eq!(module["reference"], "my-headers@1.0.0");
        assert_eq!(module["config_schema"], schema);
        let (status, body) = app.send("POST", "/api/v1/policies", Some(&publisher), Some(upload)).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");

        for (body, field) in [
            (json!({"name": "key-auth", "version": "1", "component": headers_component()}), "name"),
            (json!({"name": "Upper", "version": "1", "component": headers_component()}), "name"),
            (json!({"name": "x", "version": "1 0", "component": headers_component()}), "version"),
            (json!({"name": "x", "version": "1", "component": "AAAA"}), "component"),
            (json!({"name": "x", "version": "1", "component": headers_component(), "config_schema": {"type": 12}}), "config_schema"),
        ] {
            let (status, problem) = app.send("POST", "/api/v1/policies", Some(&publisher), Some(body)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
            assert_eq!(problem["field"], field, "{problem}");
        }

        // Anyone logged in can read it.
        let (status, _) = app.send("GET", "/api/v1/policies/my-headers/1.0.0", Some(&subscriber), None).await;
        assert_eq!(status, StatusCode::OK);

        // Attachments: an unknown upload, a config against the schema, one the policy's init refuses.
        let (status, problem) = app.send("POST", "/api/v1/apis", Some(&publisher), Some(api_with(json!({"policy": "nope@1.0.0"})))).await;
        assert_eq!((status, problem["field"].as_str()), (StatusCode::BAD_REQUEST, Some("policies[0].policy")), "{problem}");
        let (status, problem) =
            app.send("POST", "/api/v1/apis", Some(&publisher), Some(api_with(json!({"policy": "my-headers@1.0.0", "config": {}})))).await;
        assert_eq!((status, problem["field"].as_str()), (StatusCode::BAD_REQUEST, Some("policies[0].config")), "{problem}");
        assert!(problem["detail"].as_str().unwrap().contains("schema"), "{problem}");
        let (status, problem) = app
            .send(
                "POST",
                "/api/v1/apis",
                Some(&publisher),
                Some(api_with(json!({"policy": "my-headers@1.0.0", "config": {"request": {"bogus": 1}}}))),
            )
            .await;
        assert_eq!((status, problem["field"].as_str()), (StatusCode::BAD_REQUEST, Some("policies[0].config")), "{problem}");
        assert!(problem["detail"].as_str().unwrap().contains("bogus"), "{problem}");
        let good = api_with(json!({"policy": "my-headers@1.0.0", "config": {"request": {"set": {"x-a": "1"}}}}));
        let (status, api) = app.send("POST", "/api/v1/apis", Some(&publisher), Some(good)).await;
        assert_eq!(status, StatusCode::CREATED, "{api}");
        let id = api["id"].as_str().unwrap();

        // Deployed, it travels by digest; a revision using it keeps it from deletion.
        let (status, _) =
            app.send("POST", &format!("/api/v1/apis/{id}/lifecycle"), Some(&publisher), Some(json!({"action": "publish"}))).await;
        assert_eq!(status, StatusCode::OK);
        let (_, revision) = app.send("POST", &format!("/api/v1/apis/{id}/revisions"), Some(&publisher), Some(json!({}))).await;
        let (status, _) = app
            .send(
                "POST",
                &format!("/api/v1/apis/{id}/deployments"),
                Some(&publisher),
                Some(json!({"revision_id": revision["id"], "environments": ["default"]})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        let published = portico_control_plane::fleet::hub::publish(&app.state, "default").await.unwrap();
        let module = &published.message.content.modules["my-headers@1.0.0"];
        assert_eq!(module.sha256.as_deref(), Some(module_digest(&app, &publisher).await.as_str()));
        assert!(module.path.is_none());
        // What the gateway parses has the version the control plane announced.
        let text = std::str::from_utf8(&published.event).unwrap();
        let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
        let received: portico_gateway::contract::fleet::EnvironmentMessage = serde_json::from_str(data).unwrap();
        assert_eq!(received.content.version(), published.message.version);

        let (status, body) = app.send("DELETE", "/api/v1/policies/my-headers/1.0.0", Some(&publisher), None).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert!(body["detail"].as_str().unwrap().contains("(reg v1, revision 1)"), "{body}");
        // The registry says which revisions use each policy.
        let (_, module) = app.send("GET", "/api/v1/policies/my-headers/1.0.0", Some(&publisher), None).await;
        assert_eq!(module["used_by"], json!([format!("{} v1, revision 1", api["name"].as_str().unwrap())]));
        let (_, listed) = app.send("GET", "/api/v1/policies", Some(&publisher), None).await;
        let listed = listed.as_array().unwrap().iter().find(|m| m["reference"] == "my-headers@1.0.0").unwrap().clone();
        assert_eq!(listed["used_by"], module["used_by"]);
        let (_, seen) = app.send("GET", "/api/v1/policies/my-headers/1.0.0", Some(&subscriber), None).await;
        assert_eq!(seen["used_by"], json!([]), "which APIs use it is the publishers' to know");
        let (status, _) = app.send("DELETE", "/api/v1/policies/headers/0.1.0", Some(&publisher), None).await;
        assert_eq!(status, StatusCode::CONFLICT);
    }
    on_both_engines!(check);
}

async fn module_digest(app: &TestApp, token: &str) -> String {
    let (_, module) = app.send("GET", "/api/v1/policies/my-headers/1.0.0", Some(token), None).await;
    module["digest"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn gateway_tokens_open_only_their_environment() {
    async fn check(app: TestApp) {
        let admin = app.login("admin", "admin-password-1").await;
        let publisher = app.user("pat", "publisher").await;
        let (status, _) = app.send("POST", "/api/v1/environments/default/gateway-tokens", Some(&publisher), Some(json!({}))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = app.send("POST", "/api/v1/environments/nowhere/gateway-tokens", Some(&admin), Some(json!({}))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, issued) =
            app.send("POST", "/api/v1/environments/default/gateway-tokens", Some(&admin), Some(json!({"description": "edge"}))).await;
        assert_eq!(status, StatusCode::CREATED, "{issued}");
        let token = issued["token"].as_str().unwrap().to_owned();
        let stored: Vec<String> = sqlx::query_scalar("SELECT token_hash FROM gateway_tokens").fetch_all(&app.db.pool).await.unwrap();
        assert!(!stored.contains(&token), "only the hash is stored");

        let ack = |environment: &'static str, protocol: &str, token: String| {
            let protocol = protocol.to_owned();
            let router = app.router.clone();
            async move {
                use tower::ServiceExt;
                let request = axum::http::Request::post("/fleet/v1/acks")
                    .header("authorization", format!("Bearer {token}"))
                    .header("portico-protocol", protocol)
                    .header("portico-gateway", "gw-1")
                    .header("portico-environment", environment)
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(r#"{"running":"abc"}"#))
                    .unwrap();
                router.oneshot(request).await.unwrap().status()
            }
        };
        // This build's protocol; 2 had no `failed_apis`, 1 carried the whole configuration file.
        let current = portico_gateway::contract::fleet::PROTOCOL_VERSION.to_string();
        assert_eq!(ack("default", &current, token.clone()).await, StatusCode::NO_CONTENT);
        assert_eq!(ack("default", &current, "pgw_forged".into()).await, StatusCode::UNAUTHORIZED);
        assert_eq!(ack("prod", &current, token.clone()).await, StatusCode::FORBIDDEN);
        assert_eq!(ack("default", "2", token.clone()).await, StatusCode::BAD_REQUEST);

        let (_, gateways) = app.send("GET", "/api/v1/gateways", Some(&publisher), None).await;
        assert_eq!(gateways[0]["id"], "gw-1");
        assert_eq!(gateways[0]["running_version"], "abc");
        assert_eq!(gateways[0]["in_sync"], false, "abc is not the current snapshot");
        let (_, rollout) = app.send("GET", "/api/v1/environments/default/rollout", Some(&publisher), None).await;
        assert_eq!(rollout["done"], false, "{rollout}");

        // A gateway id stays with its environment: another environment's token cannot speak
        // for it; and a token fetches only the modules its environment runs.
        let (status, _) = app.send("POST", "/api/v1/environments", Some(&admin), Some(json!({"name": "staging"}))).await;
        assert_eq!(status, StatusCode::CREATED);
        let (_, staging) = app.send("POST", "/api/v1/environments/staging/gateway-tokens", Some(&admin), Some(json!({}))).await;
        let staging = staging["token"].as_str().unwrap().to_owned();
        assert_eq!(ack("staging", &current, staging).await, StatusCode::CONFLICT, "gw-1 is default's");
        let upload = json!({"name": "unused", "version": "1.0.0", "component": headers_component()});
        let (_, module) = app.send("POST", "/api/v1/policies", Some(&admin), Some(upload)).await;
        let fetch = {
            use tower::ServiceExt;
            let request = axum::http::Request::get(format!("/fleet/v1/modules/{}", module["digest"].as_str().unwrap()))
                .header("authorization", format!("Bearer {token}"))
                .header("portico-protocol", current.as_str())
                .header("portico-gateway", "gw-1")
                .header("portico-environment", "default")
                .body(axum::body::Body::empty())
                .unwrap();
            app.router.clone().oneshot(request).await.unwrap().status()
        };
        assert_eq!(fetch, StatusCode::NOT_FOUND, "an upload no deployment of default attaches");

        let id = issued["id"].as_str().unwrap();
        let (status, _) = app.send("DELETE", &format!("/api/v1/environments/default/gateway-tokens/{id}"), Some(&admin), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(ack("default", &current, token).await, StatusCode::UNAUTHORIZED);
    }
    on_both_engines!(check);
}

#[tokio::test]
async fn rollback_deploys_the_previous_revision_again() {
    async fn check(app: TestApp) {
        let publisher = app.user("pat", "publisher").await;
        let (_, api) = app.send("POST", "/api/v1/apis", Some(&publisher), Some(api_with(json!({"policy": "headers", "config": {}})))).await;
        let id = api["id"].as_str().unwrap().to_owned();
        app.send("POST", &format!("/api/v1/apis/{id}/lifecycle"), Some(&publisher), Some(json!({"action": "publish"}))).await;
        let mut revisions = Vec::new();
        for _ in 0..2 {
            let (_, revision) = app.send("POST", &format!("/api/v1/apis/{id}/revisions"), Some(&publisher), Some(json!({}))).await;
            revisions.push(revision["id"].as_str().unwrap().to_owned());
        }
        let rollback = format!("/api/v1/apis/{id}/deployments/default/rollback");
        let (status, _) = app.send("POST", &rollback, Some(&publisher), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "not deployed yet");
        for revision in &revisions {
            let (status, _) = app
                .send(
                    "POST",
                    &format!("/api/v1/apis/{id}/deployments"),
                    Some(&publisher),
                    Some(json!({"revision_id": revision, "environments": ["default"]})),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED);
        }
        let (status, deployments) = app.send("POST", &rollback, Some(&publisher), None).await;
        assert_eq!(status, StatusCode::OK, "{deployments}");
        assert_eq!(deployments[0]["revision_id"], revisions[0].as_str());
        // Rolling back again returns to the later one.
        let (_, deployments) = app.send("POST", &rollback, Some(&publisher), None).await;
        assert_eq!(deployments[0]["revision_id"], revisions[1].as_str());
    }
    on_both_engines!(check);
}

#[tokio::test]
async fn attachments_are_checked_as_gateways_will_run_them() {
    async fn check(app: TestApp) {
        let publisher = app.user("pat", "publisher").await;
        // Over the ceilings (1 s and 256 MiB by default), or under the floors.
        for (attachment, field) in [
            (json!({"policy": "headers", "timeout": "24h"}), "policies[0].timeout"),
            (json!({"policy": "headers", "timeout": "0ms"}), "policies[0].timeout"),
            (json!({"policy": "headers", "memory": "64GiB"}), "policies[0].memory"),
            (json!({"policy": "headers", "memory": "512KiB"}), "policies[0].memory"),
        ] {
            let (status, problem) = app.send("POST", "/api/v1/apis", Some(&publisher), Some(api_with(attachment))).await;
            assert_eq!((status, problem["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{problem}");
        }
        let mut on_operation = api_with(json!({"policy": "headers"}));
        on_operation["operations"][0]["policies"] = json!([{"policy": "headers", "timeout": "2s"}]);
        let (status, problem) = app.send("POST", "/api/v1/apis", Some(&publisher), Some(on_operation)).await;
        assert_eq!((status, problem["field"].as_str()), (StatusCode::BAD_REQUEST, Some("operations[0].policies[0].timeout")), "{problem}");
        // Within the ceilings, but too little memory for the policy to start: refused as a
        // gateway would refuse it, with the reason.
        let (status, problem) =
            app.send("POST", "/api/v1/apis", Some(&publisher), Some(api_with(json!({"policy": "headers", "memory": "1MiB"})))).await;
        assert_eq!((status, problem["field"].as_str()), (StatusCode::BAD_REQUEST, Some("policies[0]")), "{problem}");
        assert!(problem["detail"].as_str().unwrap().contains("memory limit of 1048576 bytes exceeded"), "{problem}");

        // Revisions made under the old ceilings are refused at their deploy, or a rollback to
        // them, under lower ones.
        let (status, api) =
            app.send("POST", "/api/v1/apis", Some(&publisher), Some(api_with(json!({"policy": "headers", "timeout": "100ms"})))).await;
        assert_eq!(status, StatusCode::CREATED, "{api}");
        let id = api["id"].as_str().unwrap().to_owned();
        app.send("POST", &format!("/api/v1/apis/{id}/lifecycle"), Some(&publisher), Some(json!({"action": "publish"}))).await;
        let deploy = async |app: &TestApp| {
            let (_, revision) = app.send("POST", &format!("/api/v1/apis/{id}/revisions"), Some(&publisher), Some(json!({}))).await;
            let deploy = json!({"revision_id": revision["id"], "environments": ["default"]});
            app.send("POST", &format!("/api/v1/apis/{id}/deployments"), Some(&publisher), Some(deploy)).await
        };
        assert_eq!(deploy(&app).await.0, StatusCode::CREATED);
        let (status, _) =
            app.send("PUT", &format!("/api/v1/apis/{id}"), Some(&publisher), Some(api_with(json!({"policy": "headers"})))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(deploy(&app).await.0, StatusCode::CREATED, "the second revision asks for the default 50ms");
        let app = app.with_policy_ceilings(PolicyCeilings { timeout: std::time::Duration::from_millis(50), ..PolicyCeilings::default() });
        let (status, problem) = app.send("POST", &format!("/api/v1/apis/{id}/deployments/default/rollback"), Some(&publisher), None).await;
        assert_eq!(status, StatusCode::CONFLICT, "{problem}");
        assert!(problem["detail"].as_str().unwrap().contains("policies[0].timeout"), "{problem}");
        let (status, _) = app
            .send("PUT", &format!("/api/v1/apis/{id}"), Some(&publisher), Some(api_with(json!({"policy": "headers", "timeout": "100ms"}))))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "saving over the new ceiling is refused too");
        let (_, revisions) = app.send("GET", &format!("/api/v1/apis/{id}/revisions"), Some(&publisher), None).await;
        let first = revisions.as_array().unwrap().iter().find(|r| r["number"] == 1).unwrap()["id"].clone();
        let deploy_first = json!({"revision_id": first, "environments": ["default"]});
        let (status, problem) = app.send("POST", &format!("/api/v1/apis/{id}/deployments"), Some(&publisher), Some(deploy_first)).await;
        assert_eq!((status, problem["field"].as_str()), (StatusCode::BAD_REQUEST, Some("revision_id")), "{problem}");
        assert!(problem["detail"].as_str().unwrap().contains("policies[0].timeout"), "{problem}");
    }
    on_both_engines!(check);
}

#[tokio::test]
async fn only_its_uploader_or_an_admin_deletes_a_module() {
    async fn check(app: TestApp) {
        let admin = app.login("admin", "admin-password-1").await;
        let (pat, pia) = (app.user("pat", "publisher").await, app.user("pia", "publisher").await);
        let upload = json!({"name": "my-headers", "version": "1.0.0", "component": headers_component()});
        for deleter in [&pat, &admin] {
            let (status, _) = app.send("POST", "/api/v1/policies", Some(&pat), Some(upload.clone())).await;
            assert_eq!(status, StatusCode::CREATED);
            let (status, problem) = app.send("DELETE", "/api/v1/policies/my-headers/1.0.0", Some(&pia), None).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
            let (status, _) = app.send("DELETE", "/api/v1/policies/my-headers/1.0.0", Some(deleter), None).await;
            assert_eq!(status, StatusCode::NO_CONTENT);
        }
    }
    on_both_engines!(check);
}

#[tokio::test]
async fn an_environment_is_built_when_a_deployed_module_is_gone() {
    async fn check(app: TestApp) {
        let publisher = app.user("pat", "publisher").await;
        let upload = json!({"name": "my-headers", "version": "1.0.0", "component": headers_component()});
        app.send("POST", "/api/v1/policies", Some(&publisher), Some(upload)).await;
        let (status, api) =
            app.send("POST", "/api/v1/apis", Some(&publisher), Some(api_with(json!({"policy": "my-headers@1.0.0", "config": {}})))).await;
        assert_eq!(status, StatusCode::CREATED, "{api}");
        let id = api["id"].as_str().unwrap();
        app.send("POST", &format!("/api/v1/apis/{id}/lifecycle"), Some(&publisher), Some(json!({"action": "publish"}))).await;
        let (_, revision) = app.send("POST", &format!("/api/v1/apis/{id}/revisions"), Some(&publisher), Some(json!({}))).await;
        let deploy = json!({"revision_id": revision["id"], "environments": ["default"]});
        let (status, _) = app.send("POST", &format!("/api/v1/apis/{id}/deployments"), Some(&publisher), Some(deploy)).await;
        assert_eq!(status, StatusCode::CREATED);
        // However it went (a hand-edited database, a restore), the environment is still
        // built: gateways fail that one API and get everything else, revocations included.
        sqlx::query("DELETE FROM policy_modules").execute(&app.db.pool).await.unwrap();
        let published = portico_control_plane::fleet::hub::publish(&app.state, "default").await.expect("built without the module");
        assert_eq!(published.message.content.apis.len(), 1);
        assert!(published.message.content.modules.is_empty());
    }
    on_both_engines!(check);
}
