//! The publisher API on both engines: APIs, OpenAPI import, lifecycle, revisions,
//! environments and deployments, with their authorisation, validation and conflicts.

use axum::http::StatusCode;
use portico_control_plane::on_both_engines;
use portico_control_plane::publisher;
use portico_control_plane::test_support::TestApp;
use serde_json::{Value, json};

/// A valid API body.
fn pets(name: &str, context: &str) -> Value {
    json!({
        "name": name,
        "version": "v1",
        "context": context,
        "description": "Pets for everyone",
        "tags": ["animals", "Store"],
        "documentation": "# Pets\nBuy one.",
        "endpoints": ["http://192.0.2.1:9000/base"],
        "operations": [
            {"method": "get", "path": "/pets"},
            {"method": "POST", "path": "/pets", "policies": [{"policy": "headers", "config": {"request": {"set": {"x-op": "create"}}}}]},
            {"method": "GET", "path": "/pets/{id}"}
        ],
        "policies": [{"policy": "throttle", "config": {"limits": [{"requests": 10, "per": "1s"}]}}]
    })
}

/// Create an API and return its id.
async fn create(app: &TestApp, token: &str, body: Value) -> String {
    let (status, api) = app.send("POST", "/api/v1/apis", Some(token), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{api}");
    api["id"].as_str().expect("id").to_owned()
}

/// Apply a lifecycle action that must succeed.
async fn lifecycle(app: &TestApp, token: &str, id: &str, action: &str) -> Value {
    let (status, api) = app.send("POST", &format!("/api/v1/apis/{id}/lifecycle"), Some(token), Some(json!({"action": action}))).await;
    assert_eq!(status, StatusCode::OK, "{action}: {api}");
    api
}

/// Make a revision and return its id.
async fn revision(app: &TestApp, token: &str, id: &str) -> String {
    let (status, revision) = app.send("POST", &format!("/api/v1/apis/{id}/revisions"), Some(token), None).await;
    assert_eq!(status, StatusCode::CREATED, "{revision}");
    revision["id"].as_str().expect("id").to_owned()
}

/// Assert a 400 naming `field`.
fn assert_invalid(status: StatusCode, body: &Value, field: &str) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], field, "{body}");
}

#[tokio::test]
async fn apis_are_created_read_searched_replaced_and_deleted() {
    async fn check(app: TestApp) {
        let publisher = app.user("pat", "publisher").await;
        let (status, api) = app.send("POST", "/api/v1/apis", Some(&publisher), Some(pets("Pets", "/pets"))).await;
        assert_eq!(status, StatusCode::CREATED, "{api}");
        assert_eq!(api["status"], "CREATED");
        assert_eq!(api["owner"], "pat");
        assert_eq!(api["tags"], json!(["animals", "Store"]));
        assert_eq!(api["documentation"], "# Pets\nBuy one.");
        let operations: Vec<String> = api["operations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|op| format!("{} {}", op["method"].as_str().unwrap(), op["path"].as_str().unwrap()))
            .collect();
        assert_eq!(operations, ["GET /pets", "POST /pets", "GET /pets/{id}"]);
        assert_eq!(api["operations"][1]["policies"][0]["policy"], "headers");
        assert_eq!(api["policies"][0]["config"]["limits"][0]["requests"], 10);
        let id = api["id"].as_str().unwrap().to_owned();

        let (status, read) = app.send("GET", &format!("/api/v1/apis/{id}"), Some(&publisher), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(read, api);

        let mut other = pets("Store", "/store");
        other["tags"] = json!(["shopping"]);
        create(&app, &publisher, other).await;
        let (status, list) = app.send("GET", "/api/v1/apis", Some(&publisher), None).await;
        assert_eq!(status, StatusCode::OK);
        let names: Vec<&str> = list.as_array().unwrap().iter().map(|api| api["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["Pets", "Store"]);
        assert!(list[0].get("documentation").is_none(), "lists are summaries: {list}");
        for (q, expected) in
            [("pet", vec!["Pets"]), ("SHOP", vec!["Store"]), ("store", vec!["Pets", "Store"]), ("%", vec![]), ("zebra", vec![])]
        {
            let (status, found) = app.send("GET", &format!("/api/v1/apis?q={}", q.replace('%', "%25")), Some(&publisher), None).await;
            assert_eq!(status, StatusCode::OK);
            let names: Vec<&str> = found.as_array().unwrap().iter().map(|api| api["name"].as_str().unwrap()).collect();
            assert_eq!(names, expected, "q={q}");
        }

        let update = json!({
            "name": "Pets",
            "description": "Fewer pets",
            "tags": ["animals"],
            "endpoints": ["http://192.0.2.1:9001", "http://192.0.2.1:9002"],
            "operations": [{"method": "DELETE", "path": "/pets/{id}"}, {"method": "ANY", "path": "/admin/*"}]
        });
        let (status, updated) = app.send("PUT", &format!("/api/v1/apis/{id}"), Some(&publisher), Some(update)).await;
        assert_eq!(status, StatusCode::OK, "{updated}");
        assert_eq!(updated["description"], "Fewer pets");
        assert_eq!(updated["documentation"], "", "PUT replaces");
        assert_eq!(updated["policies"], json!([]));
        assert_eq!(updated["endpoints"].as_array().unwrap().len(), 2);
        let operations: Vec<String> = updated["operations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|op| format!("{} {}", op["method"].as_str().unwrap(), op["path"].as_str().unwrap()))
            .collect();
        assert_eq!(operations, ["ANY /admin/*", "DELETE /pets/{id}"], "operations replaced as a set");

        let (status, body) = app
            .send("PUT", &format!("/api/v1/apis/{id}"), Some(&publisher), Some(json!({"name": "Cats", "endpoints": ["http://x"]})))
            .await;
        assert_invalid(status, &body, "name");
        let (status, body) = app.send("PUT", &format!("/api/v1/apis/{id}"), Some(&publisher), Some(json!({"endpoints": []}))).await;
        assert_invalid(status, &body, "endpoints");

        let (status, _) = app.send("DELETE", &format!("/api/v1/apis/{id}"), Some(&publisher), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = app.send("GET", &format!("/api/v1/apis/{id}"), Some(&publisher), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = app.send("DELETE", &format!("/api/v1/apis/{id}"), Some(&publisher), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let operations: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM operations WHERE api_id = $1").bind(&id).fetch_one(&app.db.pool).await.unwrap();
        assert_eq!(operations, 0, "operations go with their API");
    }
    on_both_engines!(check);
}

#[tokio::test]
async fn only_the_owner_or_an_admin_manages_an_api() {
    async fn check(app: TestApp) {
        let admin = app.login("admin", "admin-password-1").await;
        let pat = app.user("pat", "publisher").await;
        let sam = app.user("sam", "publisher").await;
        let sub = app.user("sue", "subscriber").await;
        let id = create(&app, &pat, pets("Pets", "/pets")).await;
        let api = format!("/api/v1/apis/{id}");

        let (status, _) = app.send("GET", "/api/v1/apis", None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = app.send("POST", "/api/v1/apis", None, Some(pets("X", "/x"))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, body) = app.send("GET", "/api/v1/apis", Some(&sub), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["status"], 403);
        let (status, _) = app.send("POST", "/api/v1/apis", Some(&sub), Some(pets("X", "/x"))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = app.send("POST", "/api/v1/apis/import", Some(&sub), Some(json!({"openapi": {}, "endpoints": []}))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);

        let requests: Vec<(&str, String, Option<Value>)> = vec![
            ("GET", api.clone(), None),
            ("PUT", api.clone(), Some(json!({"endpoints": ["http://x"]}))),
            ("DELETE", api.clone(), None),
            ("POST", format!("{api}/lifecycle"), Some(json!({"action": "publish"}))),
            ("GET", format!("{api}/revisions"), None),
            ("POST", format!("{api}/revisions"), None),
            ("GET", format!("{api}/deployments"), None),
            ("POST", format!("{api}/deployments"), Some(json!({"revision_id": "r", "environments": ["default"]}))),
            ("DELETE", format!("{api}/deployments/default"), None),
        ];
        for (method, uri, body) in requests {
            let (status, _) = app.send(method, &uri, None, body.clone()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri} without a token");
            let (status, _) = app.send(method, &uri, Some(&sub), body.clone()).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {uri} as a subscriber");
            let (status, _) = app.send(method, &uri, Some(&sam), body).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri} as another publisher");
        }
        let (status, list) = app.send("GET", "/api/v1/apis", Some(&sam), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list, json!([]), "another publisher's APIs are not listed");

        let (status, read) = app.send("GET", &api, Some(&admin), None).await;
        assert_eq!(status, StatusCode::OK, "admins see every API");
        assert_eq!(read["owner"], "pat");
        let (status, list) = app.send("GET", "/api/v1/apis", Some(&admin), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list.as_array().unwrap().len(), 1);
        lifecycle(&app, &admin, &id, "publish").await;

        let (status, _) = app.send("GET", "/api/v1/apis/no-such-api", Some(&pat), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    on_both_engines!(check);
}

#[tokio::test]
async fn invalid_apis_are_refused_naming_the_field() {
    async fn check(app: TestApp) {
        let publisher = app.user("pat", "publisher").await;
        let cases: Vec<(&str, Value, &str)> = vec![
            ("name", json!(""), "name"),
            ("name", json!(" Pets"), "name"),
            ("version", json!("v 1"), "version"),
            ("version", json!(".."), "version"),
            ("context", json!("pets"), "context"),
            ("context", json!("/pets/"), "context"),
            ("context", json!("/"), "context"),
            ("context", json!("/a//b"), "context"),
            ("context", json!("/a/../b"), "context"),
            ("context", json!("/pets/{id}"), "context"),
            ("tags", json!(["a", "a"]), "tags[1]"),
            ("tags", json!([""]), "tags[0]"),
            ("endpoints", json!([]), "endpoints"),
            ("endpoints", json!(["http://ok:1", "ftp://files:21"]), "endpoints[1]"),
            ("endpoints", json!(["not a url"]), "endpoints[0]"),
            ("operations", json!([{"method": "GET", "path": "/a"}, {"method": "TRACE", "path": "/a"}]), "operations[1].method"),
            ("operations", json!([{"method": "GET", "path": "a"}]), "operations[0].path"),
            ("operations", json!([{"method": "GET", "path": "/a/*/b"}]), "operations[0].path"),
            ("operations", json!([{"method": "GET", "path": "/a/{id}/{id}"}]), "operations[0].path"),
            (
                "operations",
                json!([{"method": "GET", "path": "/a/{id}"}, {"method": "POST", "path": "/a/{id}"}, {"method": "get", "path": "/a/{x}"}]),
                "operations[2]",
            ),
            ("operations", json!([{"method": "GET", "path": "/a", "policies": [{"policy": "nope"}]}]), "operations[0].policies[0].policy"),
            ("operations", json!([{"path": "/a"}]), "operations[0]"),
            ("policies", json!([{"policy": "cors", "config": {}}]), "policies[0].policy"),
            ("policies", json!([{"policy": "headers", "config": [1]}]), "policies[0].config"),
            ("policies", json!([{"policy": "headers", "on_failure": "sometimes"}]), "policies[0].on_failure"),
            ("policies", json!([{"policy": "headers", "typo": 1}]), "policies[0]"),
            ("surprise", json!(1), "surprise"),
        ];
        for (key, value, field) in cases {
            let mut body = pets("Pets", "/pets");
            body[key] = value.clone();
            let (status, problem) = app.send("POST", "/api/v1/apis", Some(&publisher), Some(body)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{key} = {value}: {problem}");
            assert!(problem["field"].as_str().unwrap_or_default().starts_with(field), "{key} = {value}: expected {field}, got {problem}");
            assert_eq!(problem["status"], 400);
        }
        let mut body = pets("Pets", "/pets");
        body.as_object_mut().unwrap().remove("endpoints");
        let (status, problem) = app.send("POST", "/api/v1/apis", Some(&publisher), Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(problem["detail"].as_str().unwrap().contains("endpoints"), "{problem}");

        create(&app, &publisher, pets("Pets", "/pets")).await;
        let (status, problem) = app.send("POST", "/api/v1/apis", Some(&publisher), Some(pets("Pets", "/other"))).await;
        assert_eq!(status, StatusCode::CONFLICT, "same name and version: {problem}");
        assert!(problem["detail"].as_str().unwrap().contains("Pets"), "{problem}");
        let (status, problem) = app.send("POST", "/api/v1/apis", Some(&publisher), Some(pets("Cats", "/pets"))).await;
        assert_eq!(status, StatusCode::CONFLICT, "same context and version: {problem}");
        let mut v2 = pets("Pets", "/pets");
        v2["version"] = json!("v2");
        create(&app, &publisher, v2).await;
    }
    on_both_engines!(check);
}

/// A small petstore-like OpenAPI document.
fn petstore() -> Value {
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Swagger Petstore", "version": "1.0.0", "description": "A sample API"},
        "servers": [{"url": "https://petstore.example.com/api/pets"}],
        "paths": {
            "/pets": {
                "summary": "the pets",
                "parameters": [],
                "get": {"operationId": "listPets", "responses": {"200": {"$ref": "#/components/responses/Pets"}}},
                "post": {"operationId": "createPet", "responses": {"201": {"description": "created"}}}
            },
            "/pets/{petId}": {
                "get": {"operationId": "showPetById", "parameters": [{"$ref": "#/components/parameters/petId"}]},
                "delete": {},
                "trace": {}
            }
        },
        "components": {"schemas": {"Pet": {"type": "object"}}}
    })
}

#[tokio::test]
async fn openapi_documents_are_imported() {
    async fn check(app: TestApp) {
        let publisher = app.user("pat", "publisher").await;
        let (status, api) = app
            .send(
                "POST",
                "/api/v1/apis/import",
                Some(&publisher),
                Some(json!({"openapi": petstore(), "endpoints": ["http://192.0.2.1:9000"]})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{api}");
        assert_eq!(api["name"], "Swagger Petstore");
        assert_eq!(api["version"], "1.0.0");
        assert_eq!(api["description"], "A sample API");
        assert_eq!(api["context"], "/api/pets", "from the first server");
        assert_eq!(api["status"], "CREATED");
        let operations: Vec<String> = api["operations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|op| format!("{} {}", op["method"].as_str().unwrap(), op["path"].as_str().unwrap()))
            .collect();
        assert_eq!(operations, ["GET /pets", "POST /pets", "DELETE /pets/{petId}", "GET /pets/{petId}"]);

        let mut doc = petstore();
        doc["info"]["version"] = json!("2.0.0");
        doc.as_object_mut().unwrap().remove("servers");
        let (status, api) = app
            .send("POST", "/api/v1/apis/import", Some(&publisher), Some(json!({"openapi": doc, "endpoints": ["http://192.0.2.1:9000"]})))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{api}");
        assert_eq!(api["context"], "/swagger-petstore", "from the title");
        let mut doc = petstore();
        doc["info"]["version"] = json!("3.0.0");
        let (status, api) = app
            .send(
                "POST",
                "/api/v1/apis/import",
                Some(&publisher),
                Some(json!({"openapi": doc, "endpoints": ["http://192.0.2.1:9000"], "context": "/zoo"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{api}");
        assert_eq!(api["context"], "/zoo", "as given");

        let (status, problem) = app
            .send(
                "POST",
                "/api/v1/apis/import",
                Some(&publisher),
                Some(json!({"openapi": petstore(), "endpoints": ["http://192.0.2.1:9000"]})),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "imported twice: {problem}");

        type Spoil = Box<dyn Fn(&mut Value)>;
        let bad: Vec<(Spoil, &str)> = vec![
            (Box::new(|doc: &mut Value| doc["info"].as_object_mut().unwrap().clear()), "openapi.info.title"),
            (Box::new(|doc: &mut Value| doc["info"]["version"] = json!(3)), "openapi.info.version"),
            (Box::new(|doc: &mut Value| doc["info"]["version"] = json!("1 beta")), "openapi.info.version"),
            (
                Box::new(|doc: &mut Value| {
                    doc.as_object_mut().unwrap().remove("info");
                }),
                "openapi.info",
            ),
            (
                Box::new(|doc: &mut Value| {
                    doc.as_object_mut().unwrap().remove("paths");
                }),
                "openapi.paths",
            ),
            (Box::new(|doc: &mut Value| doc["openapi"] = json!("2.0")), "openapi.openapi"),
            (Box::new(|doc: &mut Value| *doc = json!({"swagger": "2.0", "info": {"title": "t", "version": "1"}})), "openapi.openapi"),
            (Box::new(|doc: &mut Value| *doc = json!(["not", "a", "document"])), "openapi"),
            (Box::new(|doc: &mut Value| doc["paths"]["/pets"] = json!(1)), "openapi.paths./pets"),
            (Box::new(|doc: &mut Value| doc["paths"]["/a/{x}/{x}"] = json!({"get": {}})), "openapi.paths./a/{x}/{x}.get.path"),
        ];
        for (spoil, field) in bad {
            let mut doc = petstore();
            doc["info"]["version"] = json!("9");
            spoil(&mut doc);
            let (status, problem) = app
                .send(
                    "POST",
                    "/api/v1/apis/import",
                    Some(&publisher),
                    Some(json!({"openapi": doc, "endpoints": ["http://192.0.2.1:9000"]})),
                )
                .await;
            assert_invalid(status, &problem, field);
        }
        let mut doc = petstore();
        doc["info"]["version"] = json!("9");
        let (status, problem) =
            app.send("POST", "/api/v1/apis/import", Some(&publisher), Some(json!({"openapi": doc, "endpoints": []}))).await;
        assert_invalid(status, &problem, "endpoints");
        let (status, problem) = app
            .send(
                "POST",
                "/api/v1/apis/import",
                Some(&publisher),
                Some(json!({"openapi": doc, "endpoints": ["http://a"], "context": "zoo"})),
            )
            .await;
        assert_invalid(status, &problem, "context");
        let (status, problem) = app.send("POST", "/api/v1/apis/import", Some(&publisher), Some(json!({"endpoints": ["http://a"]}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
        assert!(problem["detail"].as_str().unwrap().contains("openapi"), "{problem}");
    }
    on_both_engines!(check);
}

#[tokio::test]
async fn lifecycle_transitions_are_enforced() {
    async fn check(app: TestApp) {
        let publisher = app.user("pat", "publisher").await;
        let mut body = pets("Pets", "/pets");
        body["operations"] = json!([]);
        let id = create(&app, &publisher, body).await;
        let uri = format!("/api/v1/apis/{id}/lifecycle");

        let (status, problem) = app.send("POST", &uri, Some(&publisher), Some(json!({"action": "publish"}))).await;
        assert_eq!(status, StatusCode::CONFLICT, "no operations yet: {problem}");
        assert!(problem["detail"].as_str().unwrap().contains("operation"), "{problem}");
        let (status, problem) = app.send("POST", &uri, Some(&publisher), Some(json!({"action": "retire"}))).await;
        assert_eq!(status, StatusCode::CONFLICT);
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("CREATED") && detail.contains("publish"), "names the status and the allowed actions: {detail}");
        let (status, problem) = app.send("POST", &uri, Some(&publisher), Some(json!({"action": "launch"}))).await;
        assert_invalid(status, &problem, "action");

        let (status, _) = app
            .send(
                "PUT",
                &format!("/api/v1/apis/{id}"),
                Some(&publisher),
                Some(json!({"endpoints": ["http://192.0.2.1:9000"], "operations": [{"method": "GET", "path": "/pets"}]})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(lifecycle(&app, &publisher, &id, "publish").await["status"], "PUBLISHED");
        let (status, problem) = app.send("POST", &uri, Some(&publisher), Some(json!({"action": "publish"}))).await;
        assert_eq!(status, StatusCode::CONFLICT);
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("PUBLISHED") && detail.contains("deprecate, retire, block, demote"), "{detail}");
        let (status, _) = app.send("DELETE", &format!("/api/v1/apis/{id}"), Some(&publisher), None).await;
        assert_eq!(status, StatusCode::CONFLICT, "a PUBLISHED API is not deleted");

        // A subscription keeps it from going back to CREATED.
        let owner: String = sqlx::query_scalar("SELECT id FROM users WHERE username = 'pat'").fetch_one(&app.db.pool).await.unwrap();
        sqlx::query("INSERT INTO applications (id, owner_id, name, tier, created_at) VALUES ('app-1', $1, 'shop', 'Unlimited', 0)")
            .bind(&owner)
            .execute(&app.db.pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO subscriptions (id, application_id, api_id, tier, status, created_at) VALUES ('sub-1', 'app-1', $1, 'Gold', 'ACTIVE', 0)")
            .bind(&id)
            .execute(&app.db.pool)
            .await
            .unwrap();
        let (status, problem) = app.send("POST", &uri, Some(&publisher), Some(json!({"action": "demote"}))).await;
        assert_eq!(status, StatusCode::CONFLICT, "{problem}");
        assert!(problem["detail"].as_str().unwrap().contains("subscription"), "{problem}");
        sqlx::query("UPDATE subscriptions SET status = 'REJECTED'").execute(&app.db.pool).await.unwrap();
        assert_eq!(lifecycle(&app, &publisher, &id, "demote").await["status"], "CREATED");

        assert_eq!(lifecycle(&app, &publisher, &id, "publish").await["status"], "PUBLISHED");
        assert_eq!(lifecycle(&app, &publisher, &id, "block").await["status"], "BLOCKED");
        let (status, _) = app.send("POST", &uri, Some(&publisher), Some(json!({"action": "deprecate"}))).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(lifecycle(&app, &publisher, &id, "unblock").await["status"], "PUBLISHED");
        assert_eq!(lifecycle(&app, &publisher, &id, "deprecate").await["status"], "DEPRECATED");
        let (status, _) = app.send("POST", &uri, Some(&publisher), Some(json!({"action": "demote"}))).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(lifecycle(&app, &publisher, &id, "block").await["status"], "BLOCKED");
        let (status, _) = app.send("POST", &uri, Some(&publisher), Some(json!({"action": "retire"}))).await;
        assert_eq!(status, StatusCode::CONFLICT, "BLOCKED cannot retire directly");
        lifecycle(&app, &publisher, &id, "unblock").await;
        assert_eq!(lifecycle(&app, &publisher, &id, "retire").await["status"], "RETIRED");
        let (status, problem) = app.send("POST", &uri, Some(&publisher), Some(json!({"action": "unblock"}))).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(problem["detail"].as_str().unwrap().contains("none"), "{problem}");

        let (status, _) = app.send("DELETE", &format!("/api/v1/apis/{id}"), Some(&publisher), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "a RETIRED API is deleted");
    }
    on_both_engines!(check);
}

#[tokio::test]
async fn revisions_are_immutable_snapshots() {
    async fn check(app: TestApp) {
        let publisher = app.user("pat", "publisher").await;
        let id = create(&app, &publisher, pets("Pets", "/pets")).await;
        let other = create(&app, &publisher, pets("Cats", "/cats")).await;
        let revisions = format!("/api/v1/apis/{id}/revisions");

        let (status, first) = app.send("POST", &revisions, Some(&publisher), None).await;
        assert_eq!(status, StatusCode::CREATED, "{first}");
        assert_eq!(first["number"], 1);
        assert_eq!(first["content"]["name"], "Pets");
        assert_eq!(first["content"]["context"], "/pets");
        assert_eq!(first["content"]["endpoints"], json!(["http://192.0.2.1:9000/base"]));
        assert_eq!(first["content"]["operations"].as_array().unwrap().len(), 3);
        assert_eq!(first["content"]["policies"][0]["policy"], "throttle");
        assert_eq!(first["environments"], json!([]));
        let first_id = first["id"].as_str().unwrap().to_owned();

        let update = json!({"endpoints": ["http://192.0.2.1:9999"], "operations": [{"method": "GET", "path": "/other"}]});
        let (status, _) = app.send("PUT", &format!("/api/v1/apis/{id}"), Some(&publisher), Some(update)).await;
        assert_eq!(status, StatusCode::OK);
        let (status, again) = app.send("GET", &format!("{revisions}/{first_id}"), Some(&publisher), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(again["content"], first["content"], "changing the API does not change its revisions");

        let (status, second) = app.send("POST", &revisions, Some(&publisher), None).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(second["number"], 2);
        assert_eq!(second["content"]["endpoints"], json!(["http://192.0.2.1:9999"]));
        assert_eq!(second["content"]["operations"], json!([{"method": "GET", "path": "/other", "policies": [], "scopes": []}]));
        let (status, list) = app.send("GET", &revisions, Some(&publisher), None).await;
        assert_eq!(status, StatusCode::OK);
        let numbers: Vec<i64> = list.as_array().unwrap().iter().map(|r| r["number"].as_i64().unwrap()).collect();
        assert_eq!(numbers, [1, 2]);

        // Revisions are reached through their own API only, and there is no way to edit one.
        let (status, _) = app.send("GET", &format!("/api/v1/apis/{other}/revisions/{first_id}"), Some(&publisher), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = app.send("DELETE", &format!("/api/v1/apis/{other}/revisions/{first_id}"), Some(&publisher), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = app.send("PUT", &format!("{revisions}/{first_id}"), Some(&publisher), Some(json!({}))).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

        let (status, _) = app.send("DELETE", &format!("{revisions}/{first_id}"), Some(&publisher), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = app.send("GET", &format!("{revisions}/{first_id}"), Some(&publisher), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, third) = app.send("POST", &revisions, Some(&publisher), None).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(third["number"], 3, "numbers are not reused");

        for _ in 0..18 {
            revision(&app, &publisher, &id).await;
        }
        let (status, problem) = app.send("POST", &revisions, Some(&publisher), None).await;
        assert_eq!(status, StatusCode::CONFLICT, "at most 20: {problem}");
        let (status, _) = app.send("POST", &format!("/api/v1/apis/{other}/revisions"), Some(&publisher), None).await;
        assert_eq!(status, StatusCode::CREATED, "the limit is per API");
    }
    on_both_engines!(check);
}

#[tokio::test]
async fn environments_are_managed_by_admins() {
    async fn check(app: TestApp) {
        let admin = app.login("admin", "admin-password-1").await;
        let publisher = app.user("pat", "publisher").await;
        let sub = app.user("sue", "subscriber").await;

        let (status, _) = app.send("GET", "/api/v1/environments", None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, list) = app.send("GET", "/api/v1/environments", Some(&sub), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list[0]["name"], "default");

        let body = json!({"name": "eu-west", "description": "Europe"});
        let (status, _) = app.send("POST", "/api/v1/environments", Some(&publisher), Some(body.clone())).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = app.send("POST", "/api/v1/environments", None, Some(body.clone())).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, created) = app.send("POST", "/api/v1/environments", Some(&admin), Some(body.clone())).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        assert_eq!(created["name"], "eu-west");
        let (status, _) = app.send("POST", "/api/v1/environments", Some(&admin), Some(body)).await;
        assert_eq!(status, StatusCode::CONFLICT);
        for name in ["", "EU", "a b", "-x", &"x".repeat(65)] {
            let (status, problem) = app.send("POST", "/api/v1/environments", Some(&admin), Some(json!({"name": name}))).await;
            assert_invalid(status, &problem, "name");
        }
        let (status, list) = app.send("GET", "/api/v1/environments", Some(&publisher), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list.as_array().unwrap().len(), 2);

        let (status, _) = app.send("DELETE", "/api/v1/environments/eu-west", Some(&publisher), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = app.send("DELETE", "/api/v1/environments/default", Some(&admin), None).await;
        assert_eq!(status, StatusCode::CONFLICT);
        let (status, _) = app.send("DELETE", "/api/v1/environments/nowhere", Some(&admin), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = app.send("DELETE", "/api/v1/environments/eu-west", Some(&admin), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    on_both_engines!(check);
}

#[tokio::test]
async fn revisions_are_deployed_replaced_and_undeployed() {
    async fn check(app: TestApp) {
        let admin = app.login("admin", "admin-password-1").await;
        let publisher = app.user("pat", "publisher").await;
        let (status, _) = app.send("POST", "/api/v1/environments", Some(&admin), Some(json!({"name": "edge"}))).await;
        assert_eq!(status, StatusCode::CREATED);
        let id = create(&app, &publisher, pets("Pets", "/pets")).await;
        let deployments = format!("/api/v1/apis/{id}/deployments");
        let first = revision(&app, &publisher, &id).await;

        let (status, problem) =
            app.send("POST", &deployments, Some(&publisher), Some(json!({"revision_id": first, "environments": ["default"]}))).await;
        assert_eq!(status, StatusCode::CONFLICT, "a CREATED API is not deployed: {problem}");
        lifecycle(&app, &publisher, &id, "publish").await;

        let (status, problem) =
            app.send("POST", &deployments, Some(&publisher), Some(json!({"revision_id": "nope", "environments": ["default"]}))).await;
        assert_invalid(status, &problem, "revision_id");
        let (status, problem) =
            app.send("POST", &deployments, Some(&publisher), Some(json!({"revision_id": first, "environments": []}))).await;
        assert_invalid(status, &problem, "environments");
        let (status, problem) = app
            .send("POST", &deployments, Some(&publisher), Some(json!({"revision_id": first, "environments": ["default", "mars"]})))
            .await;
        assert_invalid(status, &problem, "environments[1]");
        assert!(publisher::deployed(&app.db, "default").await.unwrap().is_empty(), "all or nothing");

        let before = *app.state.subscribe_changes().borrow();
        let (status, deployed) = app
            .send(
                "POST",
                &deployments,
                Some(&publisher),
                Some(json!({"revision_id": first, "environments": ["default", "edge", "default"]})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{deployed}");
        assert_eq!(deployed.as_array().unwrap().len(), 2);
        assert_eq!(deployed[0]["environment"], "default");
        assert_eq!(deployed[0]["revision_number"], 1);
        assert!(*app.state.subscribe_changes().borrow() > before, "gateways are told");

        let on_default = publisher::deployed(&app.db, "default").await.unwrap();
        assert_eq!(on_default.len(), 1);
        assert_eq!(on_default[0].api_id, id);
        assert_eq!(on_default[0].status, "PUBLISHED");
        assert_eq!(on_default[0].revision_id, first);
        let content = &on_default[0].content;
        assert_eq!((content.name.as_str(), content.version.as_str(), content.context.as_str()), ("Pets", "v1", "/pets"));
        assert_eq!(content.endpoints, ["http://192.0.2.1:9000/base"]);
        assert_eq!(content.operations.len(), 3);
        assert_eq!(content.operations[1].method, "POST");
        assert_eq!(content.operations[1].policies[0].policy, "headers");
        assert_eq!(content.policies[0].policy, "throttle");
        assert_eq!(content.policies[0].config, json!({"limits": [{"requests": 10, "per": "1s"}]}));
        assert!(publisher::deployed(&app.db, "nowhere").await.unwrap().is_empty());

        // Redeploying replaces the revision on that environment only.
        let (status, _) =
            app.send("PUT", &format!("/api/v1/apis/{id}"), Some(&publisher), Some(json!({"endpoints": ["http://192.0.2.1:9001"]}))).await;
        assert_eq!(status, StatusCode::OK);
        let second = revision(&app, &publisher, &id).await;
        let (status, deployed) =
            app.send("POST", &deployments, Some(&publisher), Some(json!({"revision_id": second, "environments": ["default"]}))).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(deployed[0]["revision_id"], second.as_str());
        assert_eq!(deployed[1]["revision_id"], first.as_str());
        let on_default = publisher::deployed(&app.db, "default").await.unwrap();
        assert_eq!(on_default[0].content.endpoints, ["http://192.0.2.1:9001"]);
        assert!(on_default[0].content.operations.is_empty());
        let (status, revision_one) = app.send("GET", &format!("/api/v1/apis/{id}/revisions/{first}"), Some(&publisher), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(revision_one["environments"], json!(["edge"]));

        // Deployed things are not deleted.
        let (status, _) = app.send("DELETE", &format!("/api/v1/apis/{id}/revisions/{first}"), Some(&publisher), None).await;
        assert_eq!(status, StatusCode::CONFLICT);
        let (status, _) = app.send("DELETE", "/api/v1/environments/edge", Some(&admin), None).await;
        assert_eq!(status, StatusCode::CONFLICT);
        lifecycle(&app, &publisher, &id, "retire").await;
        let (status, problem) = app.send("DELETE", &format!("/api/v1/apis/{id}"), Some(&publisher), None).await;
        assert_eq!(status, StatusCode::CONFLICT, "{problem}");
        assert!(problem["detail"].as_str().unwrap().contains("default, edge"), "{problem}");
        assert_eq!(publisher::deployed(&app.db, "edge").await.unwrap()[0].status, "RETIRED", "the status is the API's current one");
        let (status, _) =
            app.send("POST", &deployments, Some(&publisher), Some(json!({"revision_id": second, "environments": ["edge"]}))).await;
        assert_eq!(status, StatusCode::CONFLICT, "a RETIRED API is not deployed");

        let before = *app.state.subscribe_changes().borrow();
        let (status, _) = app.send("DELETE", &format!("{deployments}/edge"), Some(&publisher), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert!(*app.state.subscribe_changes().borrow() > before);
        let (status, _) = app.send("DELETE", &format!("{deployments}/edge"), Some(&publisher), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, list) = app.send("GET", &deployments, Some(&publisher), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list.as_array().unwrap().len(), 1);
        assert!(publisher::deployed(&app.db, "edge").await.unwrap().is_empty());
        let (status, _) = app.send("DELETE", &format!("/api/v1/apis/{id}/revisions/{first}"), Some(&publisher), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = app.send("DELETE", "/api/v1/environments/edge", Some(&admin), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);

        let (status, _) = app.send("DELETE", &format!("{deployments}/default"), Some(&admin), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "admins manage every API");
        let (status, _) = app.send("DELETE", &format!("/api/v1/apis/{id}"), Some(&publisher), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    on_both_engines!(check);
}

#[tokio::test]
async fn the_openapi_document_lists_the_publisher_endpoints() {
    let app = TestApp::new(portico_control_plane::db::Engine::Sqlite).await;
    let (status, doc) = app.send("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    for (path, method) in [
        ("/api/v1/apis", "post"),
        ("/api/v1/apis/import", "post"),
        ("/api/v1/apis/{id}", "put"),
        ("/api/v1/apis/{id}/lifecycle", "post"),
        ("/api/v1/apis/{id}/revisions/{revision_id}", "delete"),
        ("/api/v1/apis/{id}/deployments/{environment}", "delete"),
        ("/api/v1/environments/{name}", "delete"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
    assert_eq!(doc["paths"]["/api/v1/apis"]["get"]["operationId"], "list_apis");
    assert!(doc["components"]["schemas"]["RevisionContent"].is_object());
}

#[tokio::test]
async fn policy_configurations_are_checked_by_the_policies_themselves() {
    async fn check(app: TestApp) {
        let publisher = app.user("pat", "publisher").await;
        let mut body = pets("Pets", "/pets");
        body["policies"] = json!([{"policy": "throttle", "config": {"limits": [{"requests": 10, "per": "a fortnight"}]}}]);
        let (status, problem) = app.send("POST", "/api/v1/apis", Some(&publisher), Some(body)).await;
        assert_invalid(status, &problem, "policies[0].config");
        assert!(problem["detail"].as_str().unwrap().contains("per"), "the policy's own message: {problem}");

        let mut body = pets("Pets", "/pets");
        body["operations"][1]["policies"] = json!([{"policy": "key-auth", "config": {"api_key": false, "jwt": false}}]);
        let (status, problem) = app.send("POST", "/api/v1/apis", Some(&publisher), Some(body)).await;
        assert_invalid(status, &problem, "operations[1].policies[0].config");
    }
    on_both_engines!(check);
}

#[tokio::test]
async fn scopes_are_defined_per_api_and_bound_to_operations() {
    async fn check(app: TestApp) {
        let publisher = app.user("pat", "publisher").await;
        let scoped = |scopes: Value, operation_scopes: Value| {
            let mut api = pets("Scoped", "/scoped");
            api["scopes"] = scopes;
            api["operations"][1]["scopes"] = operation_scopes;
            api
        };
        let write = json!([{"name": "pets:write", "description": "change pets", "roles": ["publisher", "subscriber"]}]);
        for (body, field) in [
            (scoped(json!([{"name": "a b"}]), json!([])), "scopes[0].name"),
            (scoped(json!([{"name": ""}]), json!([])), "scopes[0].name"),
            (scoped(json!([{"name": "x"}, {"name": "x"}]), json!([])), "scopes[1].name"),
            (scoped(json!([{"name": "x", "roles": ["root"]}]), json!([])), "scopes[0].roles[0]"),
            (scoped(write.clone(), json!(["pets:delete"])), "operations[1].scopes[0]"),
        ] {
            let (status, problem) = app.send("POST", "/api/v1/apis", Some(&publisher), Some(body)).await;
            assert_invalid(status, &problem, field);
        }
        // The API's own key-auth may only require scopes the API defines.
        let mut own_key_auth = scoped(write.clone(), json!([]));
        own_key_auth["policies"] = json!([{"policy": "key-auth", "config": {"required_scopes": ["pets:write", "admin"]}}]);
        for (body, field) in [(own_key_auth, "policies[0].config.required_scopes")] {
            let (status, problem) = app.send("POST", "/api/v1/apis", Some(&publisher), Some(body)).await;
            assert_invalid(status, &problem, field);
        }
        let id = create(&app, &publisher, scoped(write.clone(), json!(["pets:write"]))).await;
        let (_, api) = app.send("GET", &format!("/api/v1/apis/{id}"), Some(&publisher), None).await;
        assert_eq!(api["scopes"], write);
        let post = api["operations"].as_array().unwrap().iter().find(|op| op["method"] == "POST").unwrap();
        assert_eq!(post["scopes"], json!(["pets:write"]));

        // Deployed, key-auth holds each operation's scopes.
        lifecycle(&app, &publisher, &id, "publish").await;
        let revision = revision(&app, &publisher, &id).await;
        let deploy = json!({"revision_id": revision, "environments": ["default"]});
        let (status, _) = app.send("POST", &format!("/api/v1/apis/{id}/deployments"), Some(&publisher), Some(deploy)).await;
        assert_eq!(status, StatusCode::CREATED);
        let published = portico_control_plane::fleet::hub::publish(&app.state, "default").await.unwrap();
        let key_auth = &published.message.content.apis[0].policies[0];
        assert_eq!(key_auth.policy, "key-auth");
        assert_eq!(key_auth.config["operation_scopes"], json!({"POST /pets": ["pets:write"]}));

        // A scope name belongs to one API: another cannot define it (and so have it granted
        // to its own subscribers), on creation or update.
        let mallory = app.user("mallory", "publisher").await;
        let mut squatter = pets("Squatter", "/squat");
        squatter["scopes"] = json!([{"name": "pets:write"}]);
        let (status, problem) = app.send("POST", "/api/v1/apis", Some(&mallory), Some(squatter.clone())).await;
        assert_eq!(status, StatusCode::CONFLICT, "{problem}");
        assert!(problem["detail"].as_str().unwrap().contains("pets:write"), "{problem}");
        squatter["scopes"] = json!([]);
        let other = create(&app, &mallory, squatter.clone()).await;
        squatter["scopes"] = json!([{"name": "pets:write"}]);
        let (status, problem) = app.send("PUT", &format!("/api/v1/apis/{other}"), Some(&mallory), Some(squatter)).await;
        assert_eq!(status, StatusCode::CONFLICT, "{problem}");
        // Its own API may keep and redefine it.
        let mut same = scoped(json!([{"name": "pets:write", "roles": ["subscriber"]}]), json!(["pets:write"]));
        same["name"] = json!("Scoped");
        let (status, api) = app.send("PUT", &format!("/api/v1/apis/{id}"), Some(&publisher), Some(same)).await;
        assert_eq!((status, api["scopes"][0]["roles"].clone()), (StatusCode::OK, json!(["subscriber"])), "{api}");
    }
    on_both_engines!(check);
}

#[tokio::test]
async fn the_tiers_an_api_offers_are_its_publishers_choice() {
    async fn check(app: TestApp) {
        let publisher = app.user("pat", "publisher").await;
        let admin = app.login("admin", "admin-password-1").await;
        // None given: the most restrictive subscription tier.
        let id = create(&app, &publisher, pets("Plain", "/plain")).await;
        let (_, api) = app.send("GET", &format!("/api/v1/apis/{id}"), Some(&publisher), None).await;
        assert_eq!(api["tiers"], json!(["Bronze"]));
        let mut offering = pets("Offering", "/offering");
        offering["tiers"] = json!(["Gold", "Platinum"]);
        let (status, problem) = app.send("POST", "/api/v1/apis", Some(&publisher), Some(offering.clone())).await;
        assert_invalid(status, &problem, "tiers[1]");
        offering["tiers"] = json!(["Gold", "Gold"]);
        let (status, problem) = app.send("POST", "/api/v1/apis", Some(&publisher), Some(offering.clone())).await;
        assert_invalid(status, &problem, "tiers[1]");
        offering["tiers"] = json!(["Gold", "Unlimited"]);
        let id = create(&app, &publisher, offering).await;
        let (_, api) = app.send("GET", &format!("/api/v1/apis/{id}"), Some(&publisher), None).await;
        assert_eq!(api["tiers"], json!(["Gold", "Unlimited"]));
        // A tier an API offers cannot be deleted.
        let (status, problem) = app.send("DELETE", "/api/v1/tiers/subscription/Gold", Some(&admin), None).await;
        assert_eq!(status, StatusCode::CONFLICT, "{problem}");
        assert!(problem["detail"].as_str().unwrap().contains("offered by 1 API"), "{problem}");
    }
    on_both_engines!(check);
}

/// A tier's quota per calendar day or month, in a time zone, beside its rate and burst: kept,
/// listed, and handed to the throttle as a `day`/`month` limit with its zone; what gateways
/// could not run is refused with the field named.
#[tokio::test]
async fn tiers_carry_a_calendar_quota_in_a_time_zone() {
    async fn check(app: TestApp) {
        let admin = app.login("admin", "admin-password-1").await;
        let monthly = json!({"description": "Monthly", "requests": 100, "per_ms": 60000, "burst_requests": 10, "burst_per_ms": 1000,
            "quota_requests": 100000, "quota_period": "month", "time_zone": "Asia/Colombo"});
        let (status, tier) = app.send("PUT", "/api/v1/tiers/subscription/Monthly", Some(&admin), Some(monthly)).await;
        assert_eq!(status, StatusCode::OK, "{tier}");
        assert_eq!(
            (tier["quota_requests"].clone(), tier["quota_period"].clone(), tier["time_zone"].clone()),
            (json!(100000), json!("month"), json!("Asia/Colombo"))
        );
        let (_, tiers) = app.send("GET", "/api/v1/tiers", Some(&admin), None).await;
        let listed = tiers.as_array().unwrap().iter().find(|t| t["name"] == "Monthly").expect("listed").clone();
        assert_eq!(listed, tier);
        let daily = json!({"quota_requests": 5, "quota_period": "day"});
        let (status, daily) = app.send("PUT", "/api/v1/tiers/application/Daily", Some(&admin), Some(daily)).await;
        assert_eq!((status, daily["time_zone"].clone()), (StatusCode::OK, json!("UTC")), "UTC unless said");

        let stored = portico_control_plane::traffic::all(&app.state.db, "subscription").await.unwrap();
        let limits = stored.iter().find(|t| t.name == "Monthly").unwrap().limits();
        assert_eq!(
            limits,
            json!([{"requests": 10, "per": "1000ms"}, {"requests": 100, "per": "60000ms"}, {"requests": 100000, "per": "month", "time_zone": "Asia/Colombo"}])
        );

        for (body, field) in [
            (json!({"quota_requests": 5, "quota_period": "day", "time_zone": "Mars/Olympus"}), "time_zone"),
            (json!({"quota_requests": 5, "quota_period": "week"}), "quota_period"),
            (json!({"quota_requests": 5}), "quota_period"),
            (json!({"quota_period": "month"}), "quota_requests"),
            (json!({"quota_requests": 0, "quota_period": "month"}), "quota_requests"),
        ] {
            let (status, problem) = app.send("PUT", "/api/v1/tiers/subscription/Odd", Some(&admin), Some(body.clone())).await;
            assert_invalid(status, &problem, field);
        }
        let (status, _) = app.send("GET", "/api/v1/tiers", Some(&admin), None).await;
        assert_eq!(status, StatusCode::OK);
    }
    on_both_engines!(check);
}

#[tokio::test]
async fn a_context_inside_another_apis_is_refused() {
    async fn check(app: TestApp) {
        let publisher = app.user("pat", "publisher").await;
        create(&app, &publisher, pets("Pets", "/pets")).await;
        // Gateways serve Pets at /pets/v1: an API at /pets/v1/admin (or /pets/v1 + x, or one
        // containing /pets/v1) would capture its paths.
        for context in ["/pets/v1", "/pets/v1/deep"] {
            let (status, problem) = app.send("POST", "/api/v1/apis", Some(&publisher), Some(pets("Capture", context))).await;
            assert_eq!(status, StatusCode::CONFLICT, "{context}: {problem}");
            assert!(problem["detail"].as_str().unwrap().contains("one inside the other"), "{problem}");
        }
        let mut outer = pets("Outer", "/pets");
        outer["version"] = json!("v1x");
        create(&app, &publisher, outer).await;
        create(&app, &publisher, pets("Petshop", "/petshop")).await;
    }
    on_both_engines!(check);
}

#[tokio::test]
async fn an_upstream_client_certificate_is_checked_sealed_and_reaches_gateways_only() {
    async fn check(app: TestApp) {
        let publisher = app.user("pat", "publisher").await;
        let pair = |name: &str| {
            let certified = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
            (certified.cert.pem(), certified.signing_key.serialize_pem())
        };
        let (certificate, key) = pair("gateway-client");
        let (_, other_key) = pair("someone-else");

        // Refused as a gateway would refuse it, naming the part.
        for (given, field) in [
            (json!({"certificate": "not PEM", "key": key}), "endpoint_client_certificate.certificate"),
            (json!({"certificate": certificate, "key": "not PEM"}), "endpoint_client_certificate.key"),
            (json!({"certificate": certificate, "key": other_key}), "endpoint_client_certificate.key"),
        ] {
            let mut body = pets("Pets", "/pets");
            body["endpoint_client_certificate"] = given;
            let (status, problem) = app.send("POST", "/api/v1/apis", Some(&publisher), Some(body)).await;
            assert_eq!((status, problem["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{problem}");
        }

        let mut body = pets("Pets", "/pets");
        body["endpoint_client_certificate"] = json!({"certificate": certificate, "key": key});
        let id = create(&app, &publisher, body).await;
        let api = format!("/api/v1/apis/{id}");
        let (_, shown) = app.send("GET", &api, Some(&publisher), None).await;
        assert_eq!(shown["endpoint_client_certificate"], certificate.as_str(), "the certificate is shown");
        assert!(!shown.to_string().contains("PRIVATE KEY"), "the key never is: {shown}");
        let stored: Vec<Option<String>> = sqlx::query_scalar("SELECT endpoint_client_key FROM apis").fetch_all(&app.db.pool).await.unwrap();
        let sealed = stored[0].clone().expect("stored");
        assert!(sealed.starts_with("sealed:") && !sealed.contains("PRIVATE KEY"), "the key is sealed at rest: {sealed}");

        // A replacement that leaves it out keeps it; the revision made next carries it.
        let mut update = pets("Pets", "/pets");
        update["description"] = json!("kept");
        let (status, replaced) = app.send("PUT", &api, Some(&publisher), Some(update.clone())).await;
        assert_eq!((status, replaced["endpoint_client_certificate"].as_str()), (StatusCode::OK, Some(certificate.as_str())), "{replaced}");
        lifecycle(&app, &publisher, &id, "publish").await;
        let (status, revision) = app.send("POST", &format!("{api}/revisions"), Some(&publisher), Some(json!({}))).await;
        assert_eq!(status, StatusCode::CREATED, "{revision}");
        assert!(!revision.to_string().contains("PRIVATE KEY"), "{revision}");
        let admin = app.login("admin", "admin-password-1").await;
        let networks = json!({"allow": ["192.0.2.0/24"]});
        let (status, _) = app.send("PUT", "/api/v1/environments/default/upstream-networks", Some(&admin), Some(networks)).await;
        assert_eq!(status, StatusCode::OK);
        let deploy = json!({"revision_id": revision["id"], "environments": ["default"]});
        let (status, deployed) = app.send("POST", &format!("{api}/deployments"), Some(&publisher), Some(deploy)).await;
        assert!(status.is_success(), "{deployed}");
        let environment = portico_control_plane::environment::for_environment(&app.state, "default").await.unwrap();
        let given = environment.apis[0].upstream.client_certificate.clone().expect("sent to gateways");
        assert_eq!((given.certificate.as_str(), given.key.as_str()), (certificate.as_str(), key.as_str()));

        // `null` removes it from the API; the deployed revision keeps its own.
        update["endpoint_client_certificate"] = Value::Null;
        let (status, replaced) = app.send("PUT", &api, Some(&publisher), Some(update)).await;
        assert_eq!((status, &replaced["endpoint_client_certificate"]), (StatusCode::OK, &Value::Null), "{replaced}");
        let environment = portico_control_plane::environment::for_environment(&app.state, "default").await.unwrap();
        assert!(environment.apis[0].upstream.client_certificate.is_some());
    }
    on_both_engines!(check);
}
