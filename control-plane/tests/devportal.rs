//! The developer portal on both engines: sign-up, the catalogue, applications,
//! subscriptions with approval, OAuth2 clients and API keys.

use axum::http::StatusCode;
use portico_control_plane::devportal::{api_key_hash, api_key_hmac_secret, listed_api_keys};
use portico_control_plane::on_both_engines;
use portico_control_plane::test_support::TestApp;
use serde_json::{Value, json};

/// Insert an API owned by `owner` in `status` with two operations, offering the four
/// seeded subscription tiers, as the publisher would; returns its id.
async fn api(app: &TestApp, owner: &str, name: &str, status: &str) -> String {
    let owner_id: String =
        sqlx::query_scalar("SELECT id FROM users WHERE username = $1").bind(owner).fetch_one(&app.db.pool).await.unwrap();
    let id = uuid::Uuid::new_v4().to_string();
    let context = format!("/{}", name.to_lowercase());
    sqlx::query(
        "INSERT INTO apis (id, name, version, context, description, tags, documentation, endpoints, policies, status, owner_id, created_at, updated_at, tiers) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, '[\"Unlimited\", \"Gold\", \"Silver\", \"Bronze\"]')",
    )
    .bind(&id)
    .bind(name)
    .bind("v1")
    .bind(&context)
    .bind(format!("The {name} service"))
    .bind(json!([format!("tag-{}", name.to_lowercase()), "Shared"]).to_string())
    .bind(format!("# {name}\nHow to use it."))
    .bind(r#"["http://192.0.2.1:9/"]"#)
    .bind("[]")
    .bind(status)
    .bind(&owner_id)
    .bind(1_i64)
    .bind(1_i64)
    .execute(&app.db.pool)
    .await
    .unwrap();
    for (method, path) in [("GET", "/items"), ("POST", "/items")] {
        sqlx::query("INSERT INTO operations (id, api_id, method, path, policies) VALUES ($1, $2, $3, $4, $5)")
            .bind(uuid::Uuid::new_v4().to_string())
            .bind(&id)
            .bind(method)
            .bind(path)
            .bind("[]")
            .execute(&app.db.pool)
            .await
            .unwrap();
    }
    id
}

/// Create an application as `token`; returns its id.
async fn application(app: &TestApp, token: &str, name: &str) -> String {
    let (status, body) = app.send("POST", "/api/v1/applications", Some(token), Some(json!({"name": name}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// Subscribe `application` to `api`; returns the answer.
async fn subscribe(app: &TestApp, token: &str, application: &str, api: &str, tier: &str) -> (StatusCode, Value) {
    app.send("POST", &format!("/api/v1/applications/{application}/subscriptions"), Some(token), Some(json!({"api_id": api, "tier": tier})))
        .await
}

/// Every stored text of the tables that hold credentials or refer to them.
async fn stored_text(app: &TestApp) -> String {
    let queries = [
        "SELECT key || ' ' || value FROM settings",
        "SELECT client_id || ' ' || application_id || ' ' || secret_hash FROM oauth_clients",
        "SELECT id || ' ' || application_id || ' ' || key_hash || ' ' || prefix FROM api_keys",
        "SELECT id || ' ' || name || ' ' || description || ' ' || tier FROM applications",
        "SELECT id || ' ' || tier || ' ' || status FROM subscriptions",
        "SELECT username || ' ' || password_hash FROM users",
        "SELECT token_hash FROM sessions",
    ];
    let mut text = String::new();
    for query in queries {
        let rows: Vec<String> = sqlx::query_scalar(query).fetch_all(&app.db.pool).await.unwrap();
        text.push_str(&rows.join("\n"));
        text.push('\n');
    }
    text
}

#[tokio::test]
async fn sign_up_then_log_in() {
    async fn check(app: TestApp) {
        let (status, body) =
            app.send("POST", "/api/v1/signup", None, Some(json!({"username": "dev.one", "password": "a-long-password"}))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["role"], "subscriber");
        assert_eq!(body["username"], "dev.one");
        assert!(body.get("password").is_none() && !body.to_string().contains("a-long-password"), "{body}");

        let token = app.login("dev.one", "a-long-password").await;
        let (status, me) = app.send("GET", "/api/v1/me", Some(&token), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(me["role"], "subscriber");

        let (status, body) =
            app.send("POST", "/api/v1/signup", None, Some(json!({"username": "dev.one", "password": "another-password"}))).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        let (status, body) =
            app.send("POST", "/api/v1/signup", None, Some(json!({"username": "admin", "password": "another-password"}))).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        let (status, body) =
            app.send("POST", "/api/v1/signup", None, Some(json!({"username": "x y", "password": "a-long-password"}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["field"], "username", "{body}");
        let (status, body) = app.send("POST", "/api/v1/signup", None, Some(json!({"username": "dev.two", "password": "short"}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["field"], "password", "{body}");
        let (status, body) = app.send("POST", "/api/v1/signup", None, Some(json!({"username": "dev.two"}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        // Nobody signs themselves up as anything but a subscriber.
        let (status, body) = app
            .send("POST", "/api/v1/signup", None, Some(json!({"username": "dev.two", "password": "a-long-password", "role": "admin"})))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let roles: Vec<String> =
            sqlx::query_scalar("SELECT role FROM users WHERE username <> 'admin'").fetch_all(&app.db.pool).await.unwrap();
        assert_eq!(roles, ["subscriber"]);
    }
    on_both_engines!(check);
}

#[tokio::test]
async fn the_catalogue_shows_published_and_deprecated_apis() {
    async fn check(app: TestApp) {
        let published = api(&app, "admin", "Pets", "PUBLISHED").await;
        let deprecated = api(&app, "admin", "Orders", "DEPRECATED").await;
        let mut hidden = Vec::new();
        for (name, status) in [("Drafts", "CREATED"), ("Oldies", "RETIRED"), ("Frozen", "BLOCKED")] {
            hidden.push(api(&app, "admin", name, status).await);
        }
        let token = app.user("sub", "subscriber").await;

        let (status, _) = app.send("GET", "/api/v1/catalogue", None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = app.send("GET", &format!("/api/v1/catalogue/{published}"), None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        let (status, list) = app.send("GET", "/api/v1/catalogue", Some(&token), None).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        let names: Vec<&str> = list.as_array().unwrap().iter().map(|api| api["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["Orders", "Pets"]);
        let pets = &list[1];
        assert_eq!(pets["id"], published.as_str());
        assert_eq!(pets["version"], "v1");
        assert_eq!(pets["context"], "/pets");
        assert_eq!(pets["status"], "PUBLISHED");
        assert_eq!(pets["description"], "The Pets service");
        assert_eq!(pets["tags"], json!(["tag-pets", "Shared"]));
        assert_eq!(pets["operations"], json!([{"method": "GET", "path": "/items"}, {"method": "POST", "path": "/items"}]));
        assert!(pets.get("documentation").is_none(), "documentation is not listed: {pets}");
        assert_eq!(list[0]["status"], "DEPRECATED");

        for (q, expected) in [
            ("PET", vec!["Pets"]),
            ("orders service", vec!["Orders"]),
            ("TAG-ORD", vec!["Orders"]),
            ("shared", vec!["Orders", "Pets"]),
            ("drafts", vec![]),
            ("", vec!["Orders", "Pets"]),
        ] {
            let (status, found) = app.send("GET", &format!("/api/v1/catalogue?q={}", q.replace(' ', "%20")), Some(&token), None).await;
            assert_eq!(status, StatusCode::OK);
            let names: Vec<&str> = found.as_array().unwrap().iter().map(|api| api["name"].as_str().unwrap()).collect();
            assert_eq!(names, expected, "q={q}");
        }
        // A tag is matched whole (case-insensitive), and with the search text both must hold.
        for (query, expected) in [
            ("tag=shared", vec!["Orders", "Pets"]),
            ("tag=SHARED&q=pet", vec!["Pets"]),
            ("tag=tag-p", vec![]),
            ("tag=", vec!["Orders", "Pets"]),
        ] {
            let (status, found) = app.send("GET", &format!("/api/v1/catalogue?{query}"), Some(&token), None).await;
            assert_eq!(status, StatusCode::OK);
            let names: Vec<&str> = found.as_array().unwrap().iter().map(|api| api["name"].as_str().unwrap()).collect();
            assert_eq!(names, expected, "{query}");
        }

        let (status, one) = app.send("GET", &format!("/api/v1/catalogue/{published}"), Some(&token), None).await;
        assert_eq!(status, StatusCode::OK, "{one}");
        assert_eq!(one["documentation"], "# Pets\nHow to use it.");
        assert_eq!(one["operations"].as_array().unwrap().len(), 2);
        assert!(one.get("endpoints").is_none() && one.get("policies").is_none(), "no upstream details for subscribers: {one}");
        let (status, one) = app.send("GET", &format!("/api/v1/catalogue/{deprecated}"), Some(&token), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(one["status"], "DEPRECATED");
        for id in hidden.iter().map(String::as_str).chain(["no-such-api"]) {
            let (status, body) = app.send("GET", &format!("/api/v1/catalogue/{id}"), Some(&token), None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        }
    }
    on_both_engines!(check);
}

#[tokio::test]
async fn applications_belong_to_their_owner() {
    async fn check(app: TestApp) {
        let alice = app.user("alice", "subscriber").await;
        let bob = app.user("bob", "subscriber").await;
        let publisher = app.user("pat", "publisher").await;
        let admin = app.login("admin", "admin-password-1").await;

        let (status, _) = app.send("POST", "/api/v1/applications", None, Some(json!({"name": "Mobile"}))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = app.send("GET", "/api/v1/applications", None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, body) = app.send("POST", "/api/v1/applications", Some(&publisher), Some(json!({"name": "Mobile"}))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

        let (status, mobile) =
            app.send("POST", "/api/v1/applications", Some(&alice), Some(json!({"name": "Mobile", "description": "The app"}))).await;
        assert_eq!(status, StatusCode::CREATED, "{mobile}");
        assert_eq!(mobile["tier"], "Unlimited");
        assert_eq!(mobile["owner"], "alice");
        assert_eq!(mobile["description"], "The app");
        assert!(mobile.get("owner_id").is_none());
        let mobile_id = mobile["id"].as_str().unwrap().to_owned();
        let (status, body) = app.send("POST", "/api/v1/applications", Some(&alice), Some(json!({"name": "Mobile"}))).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        let (status, body) =
            app.send("POST", "/api/v1/applications", Some(&bob), Some(json!({"name": "Mobile", "tier": "10PerMin"}))).await;
        assert_eq!(status, StatusCode::CREATED, "the same name for another owner: {body}");
        assert_eq!(body["tier"], "10PerMin");
        let bobs = body["id"].as_str().unwrap().to_owned();

        for (request, field) in [
            (json!({"name": ""}), "name"),
            (json!({"name": " padded "}), "name"),
            (json!({"name": "x".repeat(101)}), "name"),
            (json!({"name": "Web", "description": "d".repeat(1001)}), "description"),
            (json!({"name": "Web", "tier": "Platinum"}), "tier"),
            // Gold is a subscription tier, not an application tier.
            (json!({"name": "Web", "tier": "Gold"}), "tier"),
            (json!({"name": "Web", "tier": 5}), "tier"),
            (json!({"name": "Web", "colour": "red"}), "(body)"),
        ] {
            let (status, body) = app.send("POST", "/api/v1/applications", Some(&alice), Some(request.clone())).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{request}: {body}");
            if field != "(body)" {
                assert_eq!(body["field"], field, "{request}: {body}");
            }
        }

        application(&app, &alice, "Web").await;
        let (status, list) = app.send("GET", "/api/v1/applications", Some(&alice), None).await;
        assert_eq!(status, StatusCode::OK);
        let names: Vec<&str> = list.as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["Mobile", "Web"]);
        let (_, list) = app.send("GET", "/api/v1/applications", Some(&bob), None).await;
        assert_eq!(list.as_array().unwrap().len(), 1);
        let (_, list) = app.send("GET", "/api/v1/applications", Some(&admin), None).await;
        assert_eq!(list.as_array().unwrap().len(), 3, "admins see all: {list}");
        let (status, _) = app.send("GET", "/api/v1/applications", Some(&publisher), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);

        let uri = format!("/api/v1/applications/{mobile_id}");
        let (status, body) = app.send("GET", &uri, Some(&alice), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["name"], "Mobile");
        let (status, _) = app.send("GET", &uri, Some(&admin), None).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = app.send("GET", &uri, Some(&bob), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = app.send("PUT", &uri, Some(&bob), Some(json!({"name": "Mine"}))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = app.send("DELETE", &uri, Some(&bob), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = app.send("GET", "/api/v1/applications/no-such-app", Some(&alice), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        let (status, body) =
            app.send("PUT", &uri, Some(&alice), Some(json!({"name": "Phone", "description": "Renamed", "tier": "50PerMin"}))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            (body["name"].as_str(), body["description"].as_str(), body["tier"].as_str()),
            (Some("Phone"), Some("Renamed"), Some("50PerMin"))
        );
        let (status, body) = app.send("PUT", &uri, Some(&alice), Some(json!({"name": "Web"}))).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        let (status, body) = app.send("PUT", &uri, Some(&alice), Some(json!({"name": "Phone", "tier": "Bronze"}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["field"], "tier");
        let (status, _) = app.send("PUT", "/api/v1/applications/no-such-app", Some(&alice), Some(json!({"name": "X"}))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, body) = app.send("PUT", &format!("/api/v1/applications/{bobs}"), Some(&admin), Some(json!({"name": "Bob's"}))).await;
        assert_eq!(status, StatusCode::OK, "admins may change any application: {body}");
        assert_eq!(body["owner"], "bob");

        let (status, _) = app.send("DELETE", &uri, Some(&alice), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = app.send("GET", &uri, Some(&alice), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = app.send("DELETE", &uri, Some(&alice), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    on_both_engines!(check);
}

#[tokio::test]
async fn subscriptions_to_published_apis() {
    async fn check(app: TestApp) {
        let pets = api(&app, "admin", "Pets", "PUBLISHED").await;
        let orders = api(&app, "admin", "Orders", "PUBLISHED").await;
        let draft = api(&app, "admin", "Drafts", "CREATED").await;
        let old = api(&app, "admin", "Oldies", "DEPRECATED").await;
        let alice = app.user("alice", "subscriber").await;
        let bob = app.user("bob", "subscriber").await;
        let mobile = application(&app, &alice, "Mobile").await;
        let uri = format!("/api/v1/applications/{mobile}/subscriptions");

        let (status, _) = app.send("POST", &uri, None, Some(json!({"api_id": pets}))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, body) = subscribe(&app, &alice, &mobile, &pets, "Gold").await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["status"], "ACTIVE");
        assert_eq!(body["tier"], "Gold");
        assert_eq!(body["api_name"], "Pets");
        assert_eq!(body["api_version"], "v1");
        assert_eq!(body["application_id"], mobile.as_str());
        assert_eq!(body["owner"], "alice");
        let pets_subscription = body["id"].as_str().unwrap().to_owned();
        let (status, body) = app.send("POST", &uri, Some(&alice), Some(json!({"api_id": orders}))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["tier"], "Bronze", "without a tier, the most restrictive the API offers");

        let (status, body) = subscribe(&app, &alice, &mobile, &pets, "Silver").await;
        assert_eq!(status, StatusCode::CONFLICT, "duplicate: {body}");
        let (status, body) = subscribe(&app, &alice, &mobile, &draft, "Gold").await;
        assert_eq!(status, StatusCode::CONFLICT, "CREATED API: {body}");
        let (status, body) = subscribe(&app, &alice, &mobile, &old, "Gold").await;
        assert_eq!(status, StatusCode::CONFLICT, "DEPRECATED API: {body}");
        let (status, body) = subscribe(&app, &alice, &mobile, "no-such-api", "Gold").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["field"], "api_id");
        let (status, body) = subscribe(&app, &alice, &mobile, &pets, "10PerMin").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "an application tier is no subscription tier: {body}");
        assert_eq!(body["field"], "tier");
        // The tiers are the publisher's choice.
        sqlx::query("UPDATE apis SET tiers = '[\"Gold\", \"Silver\"]' WHERE id = $1").bind(&orders).execute(&app.db.pool).await.unwrap();
        let tablet = application(&app, &alice, "Tablet").await;
        let (status, body) = subscribe(&app, &alice, &tablet, &orders, "Unlimited").await;
        assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("tier")), "{body}");
        assert!(body["detail"].as_str().unwrap().contains("it offers Gold, Silver"), "{body}");
        let tablet_uri = format!("/api/v1/applications/{tablet}/subscriptions");
        let (status, body) = app.send("POST", &tablet_uri, Some(&alice), Some(json!({"api_id": orders}))).await;
        assert_eq!((status, body["tier"].as_str()), (StatusCode::CREATED, Some("Silver")), "{body}");
        let (status, body) = app.send("POST", &uri, Some(&alice), Some(json!({"tier": "Gold"}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

        let (status, body) = subscribe(&app, &bob, &mobile, &pets, "Gold").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        let (status, _) = app.send("GET", &uri, Some(&bob), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = app.send("DELETE", &format!("{uri}/{pets_subscription}"), Some(&bob), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = subscribe(&app, &alice, "no-such-app", &pets, "Gold").await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        let (status, list) = app.send("GET", &uri, Some(&alice), None).await;
        assert_eq!(status, StatusCode::OK);
        let apis: Vec<&str> = list.as_array().unwrap().iter().map(|s| s["api_name"].as_str().unwrap()).collect();
        assert_eq!(apis.len(), 2);
        assert!(apis.contains(&"Pets") && apis.contains(&"Orders"), "{list}");

        // A subscription of another application of the same owner is not this one's.
        let web = application(&app, &alice, "Web").await;
        let (status, _) =
            app.send("DELETE", &format!("/api/v1/applications/{web}/subscriptions/{pets_subscription}"), Some(&alice), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = app.send("DELETE", &format!("{uri}/{pets_subscription}"), Some(&alice), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = app.send("DELETE", &format!("{uri}/{pets_subscription}"), Some(&alice), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (_, list) = app.send("GET", &uri, Some(&alice), None).await;
        assert_eq!(list.as_array().unwrap().len(), 1);
        let (status, body) = subscribe(&app, &alice, &mobile, &pets, "Bronze").await;
        assert_eq!(status, StatusCode::CREATED, "subscribing again after unsubscribing: {body}");
    }
    on_both_engines!(check);
}

#[tokio::test]
async fn subscriptions_wait_for_approval_when_it_is_on() {
    async fn check(app: TestApp) {
        let pat = app.user("pat", "publisher").await;
        let other_publisher = app.user("quinn", "publisher").await;
        let alice = app.user("alice", "subscriber").await;
        let admin = app.login("admin", "admin-password-1").await;
        let pets = api(&app, "pat", "Pets", "PUBLISHED").await;
        let orders = api(&app, "pat", "Orders", "PUBLISHED").await;
        let mobile = application(&app, &alice, "Mobile").await;
        let setting = "/api/v1/settings/subscription_approval";

        let (status, body) = app.send("GET", setting, Some(&alice), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, json!({"enabled": false}));
        for token in [&alice, &pat] {
            let (status, _) = app.send("PUT", setting, Some(token), Some(json!({"enabled": true}))).await;
            assert_eq!(status, StatusCode::FORBIDDEN);
        }
        let (status, _) = app.send("PUT", setting, None, Some(json!({"enabled": true}))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, body) = app.send("PUT", setting, Some(&admin), Some(json!({"enabled": "yes"}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["field"], "enabled");
        let (status, body) = app.send("PUT", setting, Some(&admin), Some(json!({"enabled": true}))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (_, body) = app.send("GET", setting, Some(&alice), None).await;
        assert_eq!(body, json!({"enabled": true}));

        let (status, body) = subscribe(&app, &alice, &mobile, &pets, "Gold").await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["status"], "ON_HOLD");
        let pets_subscription = body["id"].as_str().unwrap().to_owned();
        let (_, body) = subscribe(&app, &alice, &mobile, &orders, "Gold").await;
        assert_eq!(body["status"], "ON_HOLD");
        let orders_subscription = body["id"].as_str().unwrap().to_owned();

        let (status, _) = app.send("GET", "/api/v1/subscriptions?status=ON_HOLD", None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = app.send("GET", "/api/v1/subscriptions?status=ON_HOLD", Some(&alice), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, queue) = app.send("GET", "/api/v1/subscriptions?status=ON_HOLD", Some(&pat), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(queue.as_array().unwrap().len(), 2, "{queue}");
        assert_eq!(queue[0]["application_name"], "Mobile");
        assert_eq!(queue[0]["owner"], "alice");
        let (_, queue) = app.send("GET", "/api/v1/subscriptions?status=ON_HOLD", Some(&other_publisher), None).await;
        assert_eq!(queue, json!([]), "only subscriptions to one's own APIs");
        let (_, queue) = app.send("GET", "/api/v1/subscriptions?status=ON_HOLD", Some(&admin), None).await;
        assert_eq!(queue.as_array().unwrap().len(), 2);
        let (_, queue) = app.send("GET", &format!("/api/v1/subscriptions?api_id={orders}"), Some(&pat), None).await;
        assert_eq!(queue.as_array().unwrap().len(), 1, "{queue}");
        assert_eq!(queue[0]["id"], orders_subscription.as_str());
        let (status, body) = app.send("GET", "/api/v1/subscriptions?status=WAITING", Some(&pat), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["field"], "status");

        let approve = format!("/api/v1/subscriptions/{pets_subscription}/approve");
        let (status, _) = app.send("POST", &approve, Some(&alice), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = app.send("POST", &approve, Some(&other_publisher), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = app.send("POST", "/api/v1/subscriptions/no-such-subscription/approve", Some(&pat), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, body) = app.send("POST", &approve, Some(&pat), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "ACTIVE");
        let (status, body) = app.send("POST", &approve, Some(&pat), None).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        let (status, _) = app.send("POST", &format!("/api/v1/subscriptions/{pets_subscription}/reject"), Some(&pat), None).await;
        assert_eq!(status, StatusCode::CONFLICT);

        let (status, body) = app.send("POST", &format!("/api/v1/subscriptions/{orders_subscription}/reject"), Some(&admin), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "REJECTED");
        let (_, queue) = app.send("GET", "/api/v1/subscriptions?status=ON_HOLD", Some(&pat), None).await;
        assert_eq!(queue, json!([]));
        let (_, all) = app.send("GET", "/api/v1/subscriptions", Some(&pat), None).await;
        assert_eq!(all.as_array().unwrap().len(), 2);
        let (_, list) = app.send("GET", &format!("/api/v1/applications/{mobile}/subscriptions"), Some(&alice), None).await;
        let statuses: Vec<(&str, &str)> =
            list.as_array().unwrap().iter().map(|s| (s["api_name"].as_str().unwrap(), s["status"].as_str().unwrap())).collect();
        assert!(statuses.contains(&("Pets", "ACTIVE")) && statuses.contains(&("Orders", "REJECTED")), "{list}");

        // Only the approved subscription is accepted by gateways.
        let (status, _) = app.send("POST", &format!("/api/v1/applications/{mobile}/api-keys"), Some(&alice), None).await;
        assert_eq!(status, StatusCode::CREATED);
        let keys = listed_api_keys(&app.db).await.unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].subscriptions.keys().collect::<Vec<_>>(), ["Pets@v1"]);

        let (status, _) = app.send("PUT", setting, Some(&admin), Some(json!({"enabled": false}))).await;
        assert_eq!(status, StatusCode::OK);
        let web = application(&app, &alice, "Web").await;
        let (_, body) = subscribe(&app, &alice, &web, &pets, "Gold").await;
        assert_eq!(body["status"], "ACTIVE");
    }
    on_both_engines!(check);
}

#[tokio::test]
async fn the_oauth_client_secret_is_shown_once_and_stored_hashed() {
    async fn check(app: TestApp) {
        let alice = app.user("alice", "subscriber").await;
        let bob = app.user("bob", "subscriber").await;
        let mobile = application(&app, &alice, "Mobile").await;
        let uri = format!("/api/v1/applications/{mobile}/oauth-client");

        let (status, _) = app.send("GET", &uri, Some(&alice), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = app.send("POST", &format!("{uri}/regenerate-secret"), Some(&alice), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = app.send("POST", &uri, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = app.send("POST", &uri, Some(&bob), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        let (status, created) = app.send("POST", &uri, Some(&alice), None).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let client_id = created["client_id"].as_str().unwrap().to_owned();
        let first_secret = created["client_secret"].as_str().unwrap().to_owned();
        assert_eq!(client_id.len(), 32, "{client_id}");
        assert!(first_secret.len() >= 40, "{first_secret}");
        assert_eq!(created["token_endpoint"], "http://portico.test/oauth2/token");
        let (status, body) = app.send("POST", &uri, Some(&alice), None).await;
        assert_eq!(status, StatusCode::CONFLICT, "one client per application: {body}");

        let (status, shown) = app.send("GET", &uri, Some(&alice), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(shown["client_id"], client_id.as_str());
        assert!(shown.get("client_secret").is_none() && !shown.to_string().contains(&first_secret), "{shown}");
        let (status, _) = app.send("GET", &uri, Some(&bob), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = app.send("POST", &format!("{uri}/regenerate-secret"), Some(&bob), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        let (status, regenerated) = app.send("POST", &format!("{uri}/regenerate-secret"), Some(&alice), None).await;
        assert_eq!(status, StatusCode::OK, "{regenerated}");
        assert_eq!(regenerated["client_id"], client_id.as_str());
        let second_secret = regenerated["client_secret"].as_str().unwrap().to_owned();
        assert_ne!(second_secret, first_secret);

        let hash: String = sqlx::query_scalar("SELECT secret_hash FROM oauth_clients WHERE client_id = $1")
            .bind(&client_id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(portico_control_plane::auth::verify_secret(&second_secret, &hash));
        assert!(!portico_control_plane::auth::verify_secret(&first_secret, &hash), "the old secret stops working");
        let stored = stored_text(&app).await;
        assert!(stored.contains(&client_id));
        assert!(!stored.contains(&first_secret) && !stored.contains(&second_secret), "a secret is stored in plain text");
    }
    on_both_engines!(check);
}

#[tokio::test]
async fn api_keys_are_shown_once_stored_as_hmacs_and_revocable() {
    async fn check(app: TestApp) {
        let pets = api(&app, "admin", "Pets", "PUBLISHED").await;
        let orders = api(&app, "admin", "Orders", "PUBLISHED").await;
        let legacy = api(&app, "admin", "Legacy", "PUBLISHED").await;
        let alice = app.user("alice", "subscriber").await;
        let bob = app.user("bob", "subscriber").await;
        let mobile = application(&app, &alice, "Mobile").await;
        for (api, tier) in [(&pets, "Gold"), (&orders, "Silver"), (&legacy, "Bronze")] {
            let (status, body) = subscribe(&app, &alice, &mobile, api, tier).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
        // Deprecated APIs are still served; retired ones are not.
        sqlx::query("UPDATE apis SET status = 'DEPRECATED' WHERE id = $1").bind(&orders).execute(&app.db.pool).await.unwrap();
        sqlx::query("UPDATE apis SET status = 'RETIRED' WHERE id = $1").bind(&legacy).execute(&app.db.pool).await.unwrap();
        let uri = format!("/api/v1/applications/{mobile}/api-keys");
        let mut changes = app.state.subscribe_changes();

        let (status, _) = app.send("POST", &uri, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = app.send("POST", &uri, Some(&bob), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = app.send("GET", &uri, Some(&bob), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(!changes.has_changed().unwrap());

        let (status, first) = app.send("POST", &uri, Some(&alice), None).await;
        assert_eq!(status, StatusCode::CREATED, "{first}");
        assert!(changes.has_changed().unwrap(), "gateways are told about a new key");
        changes.mark_unchanged();
        let first_key = first["key"].as_str().unwrap().to_owned();
        let first_id = first["id"].as_str().unwrap().to_owned();
        assert!(first_key.starts_with("pk_") && first_key.len() > 40, "{first_key}");
        assert_eq!(first["prefix"].as_str().unwrap(), &first_key[..8]);
        let (_, second) = app.send("POST", &uri, Some(&alice), None).await;
        let second_key = second["key"].as_str().unwrap().to_owned();
        assert_ne!(first_key, second_key);

        let (status, list) = app.send("GET", &uri, Some(&alice), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list.as_array().unwrap().len(), 2);
        let listed = list.as_array().unwrap().iter().find(|key| key["id"] == first_id.as_str()).unwrap();
        assert_eq!(listed["prefix"], first["prefix"]);
        assert!(listed["revoked_at"].is_null());
        assert_eq!(listed.as_object().unwrap().keys().collect::<Vec<_>>(), ["created_at", "id", "prefix", "revoked_at"], "{list}");
        assert!(!list.to_string().contains(&first_key));

        let secret = api_key_hmac_secret(&app.db).await.unwrap();
        assert_eq!(secret.len(), 32);
        assert_eq!(api_key_hmac_secret(&app.db).await.unwrap(), secret, "the secret is made once");
        let stored_secret: String =
            sqlx::query_scalar("SELECT value FROM settings WHERE key = 'api_key_hmac_secret'").fetch_one(&app.db.pool).await.unwrap();
        assert!(stored_secret.starts_with("sealed:v1:"), "sealed at rest: {stored_secret}");
        assert!(!stored_secret.contains(&portico_gateway::contract::hex::encode(&secret)));
        let hash: String =
            sqlx::query_scalar("SELECT key_hash FROM api_keys WHERE id = $1").bind(&first_id).fetch_one(&app.db.pool).await.unwrap();
        assert_eq!(hash, api_key_hash(&secret, &first_key));
        assert_eq!(hash.len(), 64);
        let stored = stored_text(&app).await;
        assert!(stored.contains(&hash));
        assert!(!stored.contains(&first_key) && !stored.contains(&second_key), "a key is stored in plain text");
        assert!(!stored.contains(&first_key["pk_".len()..]));

        let keys = listed_api_keys(&app.db).await.unwrap();
        assert_eq!(keys.len(), 2);
        let owner = keys.iter().find(|key| key.key_hash == hash).unwrap();
        assert_eq!(owner.application_id, mobile);
        assert_eq!(owner.application_name, "Mobile");
        assert_eq!(owner.application_tier, "Unlimited");
        assert_eq!(owner.owner_username, "alice");
        let subscriptions: Vec<(&str, &str)> = owner.subscriptions.iter().map(|(api, tier)| (api.as_str(), tier.as_str())).collect();
        assert_eq!(subscriptions, [("Orders@v1", "Silver"), ("Pets@v1", "Gold")]);

        changes.mark_unchanged();
        let (status, _) = app.send("DELETE", &format!("{uri}/{first_id}"), Some(&bob), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = app.send("DELETE", &format!("{uri}/no-such-key"), Some(&alice), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let other = application(&app, &alice, "Web").await;
        let (status, _) = app.send("DELETE", &format!("/api/v1/applications/{other}/api-keys/{first_id}"), Some(&alice), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "a key of another application");
        assert!(!changes.has_changed().unwrap());
        let (status, _) = app.send("DELETE", &format!("{uri}/{first_id}"), Some(&alice), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert!(changes.has_changed().unwrap(), "gateways are told about a revocation");
        let (status, _) = app.send("DELETE", &format!("{uri}/{first_id}"), Some(&alice), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "revoking twice changes nothing");
        let (_, list) = app.send("GET", &uri, Some(&alice), None).await;
        for key in list.as_array().unwrap() {
            assert_eq!(key["revoked_at"].as_i64().is_some(), key["id"] == first_id.as_str(), "{list}");
        }

        // The revoked key stays listed for a while, marked, so that gateways take its
        // revocation as a delta.
        let keys = listed_api_keys(&app.db).await.unwrap();
        let mut listed: Vec<(String, bool)> = keys.iter().map(|k| (k.key_hash.clone(), k.revoked)).collect();
        let mut expected = vec![(hash.clone(), true), (api_key_hash(&secret, &second_key), false)];
        listed.sort();
        expected.sort();
        assert_eq!(listed, expected);
    }
    on_both_engines!(check);
}

/// A self-signed client certificate valid from `not_before` to `not_after` (years): its PEM,
/// its DER and its key.
fn client_certificate(name: &str, not_before: i32, not_after: i32) -> (String, Vec<u8>, rcgen::KeyPair) {
    client_certificate_with(name, not_before, not_after, |_| {})
}

fn client_certificate_with(
    name: &str,
    not_before: i32,
    not_after: i32,
    change: impl FnOnce(&mut rcgen::CertificateParams),
) -> (String, Vec<u8>, rcgen::KeyPair) {
    let mut params = rcgen::CertificateParams::new(vec![format!("{name}.clients.test")]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.not_before = rcgen::date_time_ymd(not_before, 1, 1);
    params.not_after = rcgen::date_time_ymd(not_after, 1, 1);
    change(&mut params);
    let key = rcgen::KeyPair::generate().unwrap();
    let certificate = params.self_signed(&key).unwrap();
    (certificate.pem(), certificate.der().to_vec(), key)
}

/// The proof that the holder of `key` registers its certificate for `application`.
fn proof(key: &rcgen::KeyPair, application: &str) -> String {
    portico_control_plane::test_support::proof_of_possession(&key.serialize_der(), application)
}

#[tokio::test]
async fn client_certificates_are_checked_owned_by_one_application_and_reach_gateways_as_digests() {
    async fn check(app: TestApp) {
        let pets = api(&app, "admin", "Pets", "PUBLISHED").await;
        let alice = app.user("alice", "subscriber").await;
        let bob = app.user("bob", "subscriber").await;
        let partner = application(&app, &alice, "Partner").await;
        let (status, _) = subscribe(&app, &alice, &partner, &pets, "Gold").await;
        assert_eq!(status, StatusCode::CREATED);
        let uri = format!("/api/v1/applications/{partner}/client-certificates");
        let (pem, der, key) = client_certificate("partner-client", 2020, 2090);
        let sha256 = portico_gateway::contract::hex::sha256(&der);
        let register = async |token: &str, application: &str, certificate: &str, proof: String| {
            let uri = format!("/api/v1/applications/{application}/client-certificates");
            app.send("POST", &uri, Some(token), Some(json!({"certificate": certificate, "proof": proof}))).await
        };
        let mut changes = app.state.subscribe_changes();

        // What a listener could not take from a client is refused, naming the field.
        let (expired, _, expired_key) = client_certificate("expired-client", 2000, 2001);
        let (other, _, _) = client_certificate("other-client", 2020, 2090);
        let (authority, _, authority_key) =
            client_certificate_with("a-ca", 2020, 2090, |p| p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained));
        let (server_only, _, server_key) = client_certificate_with("server-only", 2020, 2090, |p| {
            p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        });
        let (backwards, _, backwards_key) = client_certificate("backwards", 2090, 2080);
        let (controlled, _, controlled_key) = client_certificate("line\nbreak", 2020, 2090);
        for (certificate, key, why) in [
            ("not a certificate".to_owned(), &key, "no PEM certificate"),
            (pem.replace("MII", "MIX"), &key, "certificate"),
            (format!("{pem}{other}"), &key, "more than one certificate"),
            (format!("{pem}{}", key.serialize_pem()), &key, "holds a private key"),
            ("A".repeat(70_000), &key, "longer than 65536 characters"),
            (expired, &expired_key, "expired on"),
            (authority, &authority_key, "is a CA certificate"),
            (server_only, &server_key, "does not allow client authentication"),
            (backwards, &backwards_key, "before it starts"),
            (controlled, &controlled_key, "control characters"),
        ] {
            let (status, problem) = register(&alice, &partner, &certificate, proof(key, &partner)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{why}: {problem}");
            assert_eq!(problem["field"], "certificate", "{problem}");
            assert!(problem["detail"].as_str().unwrap().contains(why), "{why}: {problem}");
        }
        // A certificate is public: registering one takes a signature by its key, for this
        // application.
        let (_, _, stranger_key) = client_certificate("stranger", 2020, 2090);
        let web = application(&app, &alice, "Web").await;
        for (proof, why) in [
            ("%%%".to_owned(), "must be base64"),
            (proof(&stranger_key, &partner), "does not verify"),
            (proof(&key, &web), "does not verify"),
        ] {
            let (status, problem) = register(&alice, &partner, &pem, proof).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{why}: {problem}");
            assert_eq!(problem["field"], "proof", "{problem}");
            assert!(problem["detail"].as_str().unwrap().contains(why), "{why}: {problem}");
        }
        let (status, _) = register(&bob, &partner, &pem, proof(&key, &partner)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "another's application");
        assert!(!changes.has_changed().unwrap());

        // Text around the PEM block is not kept.
        let (status, registered) = register(&alice, &partner, &format!("partner's:\n{pem}\n"), proof(&key, &partner)).await;
        assert_eq!(status, StatusCode::CREATED, "{registered}");
        assert!(changes.has_changed().unwrap(), "gateways are told about a new certificate");
        assert_eq!(registered["sha256"], sha256.as_str());
        assert_eq!(registered["subject"], "CN=partner-client");
        assert_eq!(registered["not_after"], json!(3_786_912_000_000_i64), "2090-01-01 in milliseconds");
        assert_eq!(registered["certificate"], pem.replace("\r\n", "\n").as_str());
        let (_, listed) = app.send("GET", &uri, Some(&alice), None).await;
        assert_eq!(listed, json!([registered]));

        // One application per certificate, whoever asks.
        let mallory = application(&app, &bob, "Mallory").await;
        let (status, problem) = register(&alice, &web, &pem, proof(&key, &web)).await;
        assert_eq!(status, StatusCode::CONFLICT, "{problem}");

        // Gateways get the digest, as the application's consumer, with its subscriptions;
        // the managed key-auth accepts certificates.
        let environment = portico_control_plane::environment::for_environment(&app.state, "default").await.unwrap();
        let holders: Vec<_> = environment.consumers.iter().filter(|c| !c.client_certificates.is_empty()).collect();
        assert_eq!(holders.len(), 1, "{:?}", environment.consumers);
        assert_eq!(holders[0].client_certificates, std::slice::from_ref(&sha256));
        assert_eq!(holders[0].application.as_deref(), Some(partner.as_str()));
        assert_eq!(holders[0].user.as_deref(), Some("alice"));
        assert_eq!(holders[0].subscriptions.as_ref().unwrap().get("Pets@v1").map(String::as_str), Some("Gold"));
        assert!(!serde_json::to_string(&environment).unwrap().contains("BEGIN CERTIFICATE"));
        // Once expired, it is left out (a resumed TLS session is not checked again).
        let expire = "UPDATE client_certificates SET not_after = $1";
        sqlx::query(expire).bind(1_000_i64).execute(&app.db.pool).await.unwrap();
        let environment = portico_control_plane::environment::for_environment(&app.state, "default").await.unwrap();
        assert!(environment.consumers.iter().all(|c| c.client_certificates.is_empty()), "{:?}", environment.consumers);
        sqlx::query(expire).bind(3_786_912_000_000_i64).execute(&app.db.pool).await.unwrap();

        let id = registered["id"].as_str().unwrap();
        changes.mark_unchanged();
        let (status, _) = app.send("DELETE", &format!("/api/v1/applications/{mallory}/client-certificates/{id}"), Some(&bob), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "through another application");
        assert!(!changes.has_changed().unwrap());
        let (status, _) = app.send("DELETE", &format!("{uri}/{id}"), Some(&alice), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert!(changes.has_changed().unwrap(), "gateways are told about a removal");
        let (status, _) = app.send("DELETE", &format!("{uri}/{id}"), Some(&alice), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let environment = portico_control_plane::environment::for_environment(&app.state, "default").await.unwrap();
        assert!(environment.consumers.iter().all(|c| c.client_certificates.is_empty()));

        // Now free, the certificate can be another application's; deleting the application
        // removes it.
        let (status, _) = register(&bob, &mallory, &pem, proof(&key, &mallory)).await;
        assert_eq!(status, StatusCode::CREATED);
        let (status, _) = app.send("DELETE", &format!("/api/v1/applications/{mallory}"), Some(&bob), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let left: Vec<String> = sqlx::query_scalar("SELECT id FROM client_certificates").fetch_all(&app.db.pool).await.unwrap();
        assert!(left.is_empty(), "{left:?}");
    }
    on_both_engines!(check);
}

#[tokio::test]
async fn deleting_an_application_removes_its_subscriptions_and_credentials() {
    async fn check(app: TestApp) {
        let pets = api(&app, "admin", "Pets", "PUBLISHED").await;
        let alice = app.user("alice", "subscriber").await;
        let mobile = application(&app, &alice, "Mobile").await;
        let web = application(&app, &alice, "Web").await;
        for application in [&mobile, &web] {
            let (status, _) = subscribe(&app, &alice, application, &pets, "Gold").await;
            assert_eq!(status, StatusCode::CREATED);
            let (status, _) = app.send("POST", &format!("/api/v1/applications/{application}/oauth-client"), Some(&alice), None).await;
            assert_eq!(status, StatusCode::CREATED);
            let (status, _) = app.send("POST", &format!("/api/v1/applications/{application}/api-keys"), Some(&alice), None).await;
            assert_eq!(status, StatusCode::CREATED);
        }
        let (status, _) = app.send("DELETE", &format!("/api/v1/applications/{mobile}"), Some(&alice), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        for table in ["subscriptions", "oauth_clients", "api_keys"] {
            let left: Vec<String> =
                sqlx::query_scalar(&format!("SELECT application_id FROM {table}")).fetch_all(&app.db.pool).await.unwrap();
            assert_eq!(left, std::slice::from_ref(&web), "{table}");
        }
        let keys = listed_api_keys(&app.db).await.unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].application_id, web);
    }
    on_both_engines!(check);
}

#[tokio::test]
async fn the_api_key_secret_is_made_once_under_concurrency() {
    async fn check(app: TestApp) {
        let (a, b, c, d) = tokio::join!(
            api_key_hmac_secret(&app.db),
            api_key_hmac_secret(&app.db),
            api_key_hmac_secret(&app.db),
            api_key_hmac_secret(&app.db)
        );
        let a = a.unwrap();
        assert_eq!([&a, &b.unwrap(), &c.unwrap(), &d.unwrap()].iter().filter(|s| ***s == a).count(), 4);
        assert_ne!(api_key_hash(&a, "pk_one"), api_key_hash(&a, "pk_two"));
        assert_ne!(api_key_hash(&a, "pk_one"), api_key_hash(b"another secret value", "pk_one"));
    }
    on_both_engines!(check);
}

#[tokio::test]
async fn the_openapi_document_lists_the_devportal() {
    let app = TestApp::new(portico_control_plane::db::Engine::Sqlite).await;
    let (status, doc) = app.send("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    for (path, method) in [
        ("/api/v1/signup", "post"),
        ("/api/v1/catalogue", "get"),
        ("/api/v1/catalogue/{api_id}", "get"),
        ("/api/v1/applications", "post"),
        ("/api/v1/applications/{id}", "put"),
        ("/api/v1/applications/{id}/subscriptions", "post"),
        ("/api/v1/subscriptions/{sub_id}/approve", "post"),
        ("/api/v1/settings/subscription_approval", "put"),
        ("/api/v1/applications/{id}/oauth-client", "post"),
        ("/api/v1/applications/{id}/oauth-client/regenerate-secret", "post"),
        ("/api/v1/applications/{id}/api-keys", "post"),
        ("/api/v1/applications/{id}/api-keys/{key_id}", "delete"),
        ("/api/v1/applications/{id}/client-certificates", "post"),
        ("/api/v1/applications/{id}/client-certificates/{certificate_id}", "delete"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
    // Operation ids are unique in the whole document, and each devportal one is set.
    let mut ids = Vec::new();
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let id = operation["operationId"].as_str().unwrap_or_default().to_owned();
            if operation["tags"][0] == "devportal" {
                assert!(!id.is_empty(), "{method} {path}");
            }
            ids.push((id, format!("{method} {path}")));
        }
    }
    ids.sort();
    for pair in ids.windows(2) {
        assert!(pair[0].0.is_empty() || pair[0].0 != pair[1].0, "operationId `{}` twice: {} and {}", pair[0].0, pair[0].1, pair[1].1);
    }
    assert_eq!(doc["paths"]["/api/v1/applications/{id}/api-keys"]["post"]["operationId"], "create_api_key");
}

/// Where an environment's counters live is the admin's to say (and read: it holds the
/// store's credentials); a subscriber reads what their subscription used from there, and
/// is told why not when the counters are not shared or the store does not answer.
#[tokio::test]
async fn a_subscription_shows_its_usage_from_the_environments_counters() {
    async fn check(app: TestApp) {
        let admin = app.login("admin", "admin-password-1").await;
        let alice = app.user("alice", "subscriber").await;
        let bob = app.user("bob", "subscriber").await;
        let tier = json!({"requests": 100, "per_ms": 60000, "burst_requests": 10, "burst_per_ms": 1000,
            "quota_requests": 1000, "quota_period": "month", "time_zone": "Europe/Paris"});
        let (status, body) = app.send("PUT", "/api/v1/tiers/subscription/Gold", Some(&admin), Some(tier)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let pets = api(&app, "admin", "Pets", "PUBLISHED").await;
        let mobile = application(&app, &alice, "Mobile").await;
        let (_, subscription) = subscribe(&app, &alice, &mobile, &pets, "Gold").await;
        let usage = format!("/api/v1/applications/{mobile}/subscriptions/{}/usage", subscription["id"].as_str().unwrap());

        // Counted in each gateway: nobody knows the fleet's count.
        let (status, body) = app.send("GET", &usage, Some(&alice), None).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert!(body["detail"].as_str().unwrap().contains("/api/v1/environments/default/counters"), "{body}");

        let counters = "/api/v1/environments/default/counters";
        let (status, body) = app.send("GET", counters, Some(&admin), None).await;
        assert_eq!((status, body), (StatusCode::OK, json!({})));
        let (status, _) = app.send("GET", counters, Some(&alice), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "the store's credentials are the admin's");
        for (body, field) in [
            (json!({"redis": {"url": "http://127.0.0.1:6379/"}}), "redis.url"),
            (json!({"redis": {}}), "redis.url"),
            (json!({"redis": {"url": "redis://127.0.0.1:6379/", "timeout": "5s"}}), "redis.timeout"),
            (json!({"redis": {"sentinel": {"nodes": [], "master": "portico"}}}), "redis.sentinel.nodes"),
        ] {
            let (status, answer) = app.send("PUT", counters, Some(&admin), Some(body.clone())).await;
            assert_eq!((status, answer["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{body}: {answer}");
        }
        let (status, _) = app.send("PUT", "/api/v1/environments/nowhere/counters", Some(&admin), Some(json!({}))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        // A store that does not answer (nothing listens on port 1): 503, after its timeout.
        let silent = json!({"redis": {"url": "redis://127.0.0.1:1/", "timeout": "50ms"}});
        let (status, body) = app.send("PUT", counters, Some(&admin), Some(silent)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = app.send("GET", &usage, Some(&alice), None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");

        // The machine's Redis: a subscription nothing was counted for has all of each limit.
        let shared = json!({"redis": {"url": "redis://127.0.0.1:6379/", "mode": "exact", "fleet_size": 2}});
        let (status, body) = app.send("PUT", counters, Some(&admin), Some(shared.clone())).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (_, stored) = app.send("GET", counters, Some(&admin), None).await;
        assert_eq!(stored["redis"]["url"], shared["redis"]["url"], "{stored}");
        let (status, body) = app.send("GET", &usage, Some(&alice), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!((body["tier"].as_str(), body["environment"].as_str()), (Some("Gold"), Some("default")), "{body}");
        let limits: Vec<(&str, u64, &str, u64, u64)> = body["limits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                let field = |name: &str| l[name].as_u64().unwrap();
                (l["kind"].as_str().unwrap(), field("limit"), l["per"].as_str().unwrap(), field("used"), field("remaining"))
            })
            .collect();
        assert_eq!(limits, [("burst", 10, "1000ms", 0, 10), ("rate", 100, "60000ms", 0, 100), ("quota", 1000, "month", 0, 1000)]);
        assert_eq!(body["limits"][2]["time_zone"], "Europe/Paris");

        // Only the application's owner (or an admin) sees it, and only on an environment that exists.
        let (status, _) = app.send("GET", &usage, Some(&bob), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, body) = app.send("GET", &format!("{usage}?environment=nowhere"), Some(&alice), None).await;
        assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("environment")), "{body}");
        let web = application(&app, &alice, "Web").await;
        let elsewhere = usage.replace(&mobile, &web);
        let (status, _) = app.send("GET", &elsewhere, Some(&alice), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "a subscription of another application is not this one's");
        let (status, _) = app.send("GET", &usage, Some(&admin), None).await;
        assert_eq!(status, StatusCode::OK);

        // The store's password is sealed in the database and never shown again.
        let secret = json!({"redis": {"url": "redis://portico:hunter2-secret@127.0.0.1:1/0", "timeout": "50ms",
            "sentinel": null}});
        let (status, body) = app.send("PUT", counters, Some(&admin), Some(secret)).await;
        assert_eq!((status, body["redis"]["url"].as_str()), (StatusCode::OK, Some("redis://portico:***@127.0.0.1:1/0")), "{body}");
        let (_, body) = app.send("GET", counters, Some(&admin), None).await;
        assert_eq!(body["redis"]["url"], "redis://portico:***@127.0.0.1:1/0", "{body}");
        let stored: String =
            sqlx::query_scalar("SELECT counters FROM environments WHERE name = 'default'").fetch_one(&app.db.pool).await.unwrap();
        assert!(!stored.contains("hunter2"), "{stored}");

        let (status, body) = app.send("PUT", counters, Some(&admin), Some(json!({}))).await;
        assert_eq!((status, body), (StatusCode::OK, json!({})));
        let (status, _) = app.send("GET", &usage, Some(&alice), None).await;
        assert_eq!(status, StatusCode::CONFLICT, "back in each gateway");
    }
    on_both_engines!(check);
}

#[tokio::test]
async fn the_catalogue_says_where_gateways_serve_an_api() {
    async fn check(app: TestApp) {
        let admin = app.login("admin", "admin-password-1").await;
        let pets = api(&app, "admin", "Pets", "PUBLISHED").await;
        let sub = app.user("sub", "subscriber").await;
        let set = "/api/v1/environments/default/gateway-url";
        for bad in ["ftp://gw.example", "https://", "https://gw.example/?q=1", "https://user@gw.example", "not a url", "/relative"] {
            let (status, body) = app.send("PUT", set, Some(&admin), Some(json!({"gateway_url": bad}))).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
            assert_eq!(body["field"], "gateway_url", "{bad}");
        }
        let (status, _) = app.send("PUT", set, Some(&sub), Some(json!({"gateway_url": "https://gw.example"}))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = app
            .send("PUT", "/api/v1/environments/nowhere/gateway-url", Some(&admin), Some(json!({"gateway_url": "https://gw.example"})))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, environment) = app.send("PUT", set, Some(&admin), Some(json!({"gateway_url": "https://gw.example/edge/"}))).await;
        assert_eq!(status, StatusCode::OK, "{environment}");
        assert_eq!(environment["gateway_url"], "https://gw.example/edge");

        // Not deployed: served nowhere.
        let (_, one) = app.send("GET", &format!("/api/v1/catalogue/{pets}"), Some(&sub), None).await;
        assert_eq!(one["gateway_urls"], json!([]));
        let (status, revision) = app.send("POST", &format!("/api/v1/apis/{pets}/revisions"), Some(&admin), Some(json!({}))).await;
        assert_eq!(status, StatusCode::CREATED, "{revision}");
        let deploy = json!({"revision_id": revision["id"], "environments": ["default"]});
        let (status, body) = app.send("POST", &format!("/api/v1/apis/{pets}/deployments"), Some(&admin), Some(deploy)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (_, one) = app.send("GET", &format!("/api/v1/catalogue/{pets}"), Some(&sub), None).await;
        assert_eq!(one["gateway_urls"], json!(["https://gw.example/edge/pets/v1"]));
        let (_, list) = app.send("GET", "/api/v1/catalogue", Some(&sub), None).await;
        assert_eq!(list[0]["gateway_urls"], json!(["https://gw.example/edge/pets/v1"]));
        // Its OpenAPI document: the operations through those gateways, with a key or a token.
        let (status, document) = app.send("GET", &format!("/api/v1/catalogue/{pets}/openapi.json"), Some(&sub), None).await;
        assert_eq!(status, StatusCode::OK, "{document}");
        assert_eq!(document["openapi"], "3.0.3");
        assert_eq!((&document["info"]["title"], &document["info"]["version"]), (&json!("Pets"), &json!("v1")));
        assert_eq!(document["servers"], json!([{"url": "https://gw.example/edge/pets/v1"}]));
        let methods: Vec<&String> = document["paths"]["/items"].as_object().unwrap().keys().collect();
        assert_eq!(methods, ["get", "post"]);
        assert_eq!(document["components"]["securitySchemes"]["apiKey"], json!({"type": "apiKey", "in": "header", "name": "apikey"}));
        assert_eq!(
            document["components"]["securitySchemes"]["oauth2"]["flows"]["clientCredentials"]["tokenUrl"],
            "http://portico.test/oauth2/token"
        );
        let (status, _) = app.send("GET", "/api/v1/catalogue/no-such-api/openapi.json", Some(&sub), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = app.send("PUT", set, Some(&admin), Some(json!({"gateway_url": null}))).await;
        assert_eq!(status, StatusCode::OK);
        let (_, one) = app.send("GET", &format!("/api/v1/catalogue/{pets}"), Some(&sub), None).await;
        assert_eq!(one["gateway_urls"], json!([]), "a forgotten URL is not given");
    }
    on_both_engines!(check);
}
