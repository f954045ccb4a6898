//! The web console's sessions and forms, in process (the browser test in `tests/` clicks
//! through the pages): the login cookie's attributes, the anti-forgery tokens, where a
//! login may send the browser, and the headers every page carries.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use portico_control_plane::db::Engine;
use portico_control_plane::test_support::TestApp;
use tower::ServiceExt;

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: header::HeaderName) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }

    fn cookies(&self) -> Vec<&str> {
        self.headers.get_all(header::SET_COOKIE).iter().map(|v| v.to_str().unwrap()).collect()
    }

    /// The value of the form field `name` on the page.
    fn field(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self.body.find(&marker).unwrap_or_else(|| panic!("no field {name}: {}", self.body)) + marker.len();
        self.body[start..].split('"').next().unwrap().to_owned()
    }
}

async fn send(app: &TestApp, method: &str, uri: &str, cookie: &str, form: Option<&str>) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    if !cookie.is_empty() {
        request = request.header(header::COOKIE, cookie);
    }
    let request = match form {
        Some(form) => request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded").body(Body::from(form.to_owned())),
        None => request.body(Body::empty()),
    }
    .unwrap();
    let response = app.router.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap();
    Answer { status: parts.status, headers: parts.headers, body }
}

/// `name=value` of the cookie `name` among `answer`'s.
fn cookie_pair(answer: &Answer, name: &str) -> String {
    let set = answer.cookies().into_iter().find(|c| c.starts_with(&format!("{name}="))).unwrap_or_else(|| panic!("no cookie {name}"));
    set.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn logging_in_needs_the_page_s_token_and_sets_a_session_cookie() {
    let app = TestApp::new(Engine::Sqlite).await;
    let page = send(&app, "GET", "/login?next=%2Fdevportal%2Fapplications", "", None).await;
    assert_eq!(page.status, StatusCode::OK);
    let csrf_cookie = page.cookies()[0].to_owned();
    assert!(csrf_cookie.contains("; HttpOnly; SameSite=Strict") && !csrf_cookie.contains("Secure"), "{csrf_cookie}");
    let csrf = page.field("csrf");
    assert_eq!(csrf_cookie.split(';').next().unwrap(), format!("portico_csrf={csrf}"));
    assert_eq!(page.field("next"), "/devportal/applications");
    let policy = page.header(header::CONTENT_SECURITY_POLICY);
    assert!(
        policy.starts_with("default-src 'none'; script-src 'self'; style-src 'self';") && policy.contains("frame-ancestors 'none'"),
        "{policy}"
    );
    assert_eq!(page.header(header::X_FRAME_OPTIONS), "DENY");
    assert!(!page.body.contains("<script>") && !page.body.contains("style="), "no inline script or style");

    let cookie = format!("portico_csrf={csrf}");
    let form = |password: &str, token: &str, next: &str| format!("csrf={token}&next={next}&username=admin&password={password}");
    // Without the cookie's token (a form posted from elsewhere), or with another one.
    for (cookie, token) in [("", csrf.as_str()), (cookie.as_str(), ""), (cookie.as_str(), "AAAA")] {
        let answer = send(&app, "POST", "/login", cookie, Some(&form("admin-password-1", token, ""))).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
        assert!(answer.body.contains("anti-forgery token"), "{}", answer.body);
        assert!(answer.cookies().is_empty());
    }
    let wrong = send(&app, "POST", "/login", &cookie, Some(&form("not-the-password", &csrf, ""))).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("wrong user name or password") && wrong.body.contains("value=\"admin\""), "{}", wrong.body);
    assert!(wrong.cookies().is_empty());

    // A login goes back to a page of this site only.
    for (next, to) in [
        ("%2Fdevportal%2Fapplications", "/devportal/applications"),
        ("%2F%2Fevil.example%2F", "/publisher"),
        ("https%3A%2F%2Fevil.example%2F", "/publisher"),
        ("%2F%5Cevil.example", "/publisher"),
        ("%2F%09%2Fevil.example", "/publisher"),
        ("%2F%0A", "/publisher"),
        ("", "/publisher"),
    ] {
        let answer = send(&app, "POST", "/login", &cookie, Some(&form("admin-password-1", &csrf, next))).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
        assert_eq!(answer.header(header::LOCATION), to, "next={next}");
        let session = answer.cookies()[0].to_owned();
        assert!(session.starts_with("portico_session=") && session.contains("; HttpOnly; SameSite=Lax; Max-Age=43"), "{session}");
    }
}

#[tokio::test]
async fn a_form_needs_its_session_s_token_and_logging_out_ends_the_session() {
    let app = TestApp::new(Engine::Sqlite).await;
    let page = send(&app, "GET", "/login", "", None).await;
    let csrf = page.field("csrf");
    let csrf_cookie = format!("portico_csrf={csrf}");
    let login = send(&app, "POST", "/login", &csrf_cookie, Some(&format!("csrf={csrf}&username=admin&password=admin-password-1"))).await;
    let session = cookie_pair(&login, "portico_session");

    let page = send(&app, "GET", "/devportal/applications", &session, None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let token = page.field("csrf");
    assert_ne!(token, csrf, "a session's token is not the login page's");
    // The login page's token is worth nothing once logged in, nor is a missing one.
    for body in ["name=forged".to_owned(), format!("name=forged&csrf={csrf}")] {
        let answer = send(&app, "POST", "/devportal/applications", &format!("{session}; {csrf_cookie}"), Some(&body)).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{body}");
    }
    let (_, listed) = app.send("GET", "/api/v1/applications", Some(&app.login("admin", "admin-password-1").await), None).await;
    assert_eq!(listed, serde_json::json!([]), "nothing forged was saved");
    // A field the API refuses is shown next to it, with what was typed kept.
    let refused = send(
        &app,
        "POST",
        "/devportal/applications",
        &session,
        Some(&format!("csrf={token}&name=%20shop&description=kept&tier=Unlimited")),
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(
        refused.body.contains("<p class=\"error\" id=\"name-error\">") && refused.body.contains("aria-invalid=\"true\""),
        "{}",
        refused.body
    );
    assert!(refused.body.contains(">kept</textarea>"), "{}", refused.body);
    let made = send(&app, "POST", "/devportal/applications", &session, Some(&format!("csrf={token}&name=shop&tier=Unlimited"))).await;
    assert_eq!(made.status, StatusCode::SEE_OTHER, "{}", made.body);
    assert!(made.header(header::LOCATION).starts_with("/devportal/applications/"));

    let out = send(&app, "POST", "/logout", &session, Some(&format!("csrf={token}"))).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(out.cookies()[0].starts_with("portico_session=;") && out.cookies()[0].contains("Max-Age=0"), "{:?}", out.cookies());
    let after = send(&app, "GET", "/devportal/applications", &session, None).await;
    assert_eq!(after.status, StatusCode::SEE_OTHER);
    assert_eq!(after.header(header::LOCATION), "/login?next=%2Fdevportal%2Fapplications");
}

#[tokio::test]
async fn behind_an_https_url_the_cookies_are_secure_and_host_only() {
    let app = TestApp::new(Engine::Sqlite).await.with_public_url("https://portico.example");
    let page = send(&app, "GET", "/login", "", None).await;
    let csrf = page.field("csrf");
    assert!(page.cookies()[0].starts_with(&format!("__Host-portico_csrf={csrf}; Path=/;")) && page.cookies()[0].ends_with("; Secure"));
    let login = send(
        &app,
        "POST",
        "/login",
        &format!("__Host-portico_csrf={csrf}"),
        Some(&format!("csrf={csrf}&username=admin&password=admin-password-1")),
    )
    .await;
    assert_eq!(login.status, StatusCode::SEE_OTHER, "{}", login.body);
    let session = login.cookies()[0];
    assert!(session.starts_with("__Host-portico_session=") && session.ends_with("; Secure"), "{session}");
    // The plain-HTTP name is not read: a cookie set by a page without TLS cannot log in.
    let value = cookie_pair(&login, "__Host-portico_session").split_once('=').unwrap().1.to_owned();
    let plain = send(&app, "GET", "/devportal", &format!("portico_session={value}"), None).await;
    assert_eq!(plain.status, StatusCode::SEE_OTHER);
    let secure = send(&app, "GET", "/devportal", &format!("__Host-portico_session={value}"), None).await;
    assert_eq!(secure.status, StatusCode::OK);
}

/// A console session of `username` (whose password is `{username}-password-1`, as
/// `TestApp::user` makes it): the cookie to send.
async fn console_session(app: &TestApp, username: &str) -> String {
    let page = send(app, "GET", "/login", "", None).await;
    let csrf = page.field("csrf");
    let form = format!("csrf={csrf}&username={username}&password={username}-password-1");
    let login = send(app, "POST", "/login", &format!("portico_csrf={csrf}"), Some(&form)).await;
    assert_eq!(login.status, StatusCode::SEE_OTHER, "{}", login.body);
    cookie_pair(&login, "portico_session")
}

#[tokio::test]
async fn the_usage_pages_draw_what_gateways_reported() {
    use serde_json::json;
    let app = TestApp::new(Engine::Sqlite).await;
    let admin = app.login("admin", "admin-password-1").await;
    let publisher = app.user("pat", "publisher").await;
    let subscriber = app.user("sue", "subscriber").await;
    app.user("tom", "subscriber").await;
    let api = json!({"name": "reg", "version": "v1", "context": "/reg", "endpoints": ["http://192.0.2.1:9/"],
        "operations": [{"method": "GET", "path": "/x"}]});
    let (_, api) = app.send("POST", "/api/v1/apis", Some(&publisher), Some(api)).await;
    let api = api["id"].as_str().unwrap().to_owned();
    let (_, application) = app.send("POST", "/api/v1/applications", Some(&subscriber), Some(json!({"name": "sues app"}))).await;
    let application = application["id"].as_str().unwrap().to_owned();
    let (_, token) = app.send("POST", "/api/v1/environments/default/gateway-tokens", Some(&admin), Some(json!({}))).await;
    let token = token["token"].as_str().unwrap().to_owned();

    // Two minutes ago: 4 successes and 1 server error of the application, 2 refusals of no
    // application, as a gateway reports them.
    let minute = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 60 - 2) * 60;
    let row = |application: Option<&str>, class: u8, requests: u64| {
        let mut latency = vec![0u64; 13];
        latency[0] = requests;
        json!({"minute": minute, "api": "reg", "version": "v1", "operation": "GET /x", "application": application,
            "class": class, "requests": requests, "latency_us": requests * 500, "latency": latency})
    };
    let report = json!({"batch": "b1", "rows": [row(Some(&application), 2, 4), row(Some(&application), 5, 1), row(None, 4, 2)]});
    let request = Request::post("/fleet/v1/analytics")
        .header("authorization", format!("Bearer {token}"))
        .header("portico-protocol", portico_gateway::contract::fleet::PROTOCOL_VERSION.to_string())
        .header("portico-gateway", "gw-1")
        .header("portico-environment", "default")
        .header("content-type", "application/json")
        .body(Body::from(report.to_string()))
        .unwrap();
    assert_eq!(app.router.clone().oneshot(request).await.unwrap().status(), StatusCode::NO_CONTENT);

    let pat = console_session(&app, "pat").await;
    for range in ["", "?range=hour", "?range=month"] {
        let page = send(&app, "GET", &format!("/publisher/apis/{api}/usage{range}"), &pat, None).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert!(page.body.contains("<strong>7</strong> requests, <strong>3</strong> errors"), "{range}: {}", page.body);
        // One interval with requests: its successes and its errors stacked.
        assert_eq!(page.body.matches("fill=\"#0b5cad\"").count(), 1, "{range}");
        assert_eq!(page.body.matches("fill=\"#b3261e\"").count(), 1, "{range}");
        assert!(
            page.body.contains("<td>sues app</td><td>5</td><td>1</td>") && page.body.contains("<td>none</td><td>2</td><td>2</td>"),
            "{}",
            page.body
        );
    }
    let sue = console_session(&app, "sue").await;
    let page = send(&app, "GET", &format!("/devportal/applications/{application}/usage"), &sue, None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("<strong>5</strong> requests, <strong>1</strong> errors"), "{}", page.body);
    // Another subscriber's application, or an API to a subscriber: not theirs to see.
    let tom = console_session(&app, "tom").await;
    assert_eq!(send(&app, "GET", &format!("/devportal/applications/{application}/usage"), &tom, None).await.status, StatusCode::NOT_FOUND);
    assert_eq!(send(&app, "GET", &format!("/publisher/apis/{api}/usage"), &sue, None).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_publisher_makes_and_edits_an_api_by_form_and_what_the_form_does_not_show_is_kept() {
    use serde_json::json;
    let app = TestApp::new(Engine::Sqlite).await;
    let publisher = app.user("pat", "publisher").await;
    let pat = console_session(&app, "pat").await;
    let page = send(&app, "GET", "/publisher/new", &pat, None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let csrf = page.field("csrf");
    let form = |context: &str, operations: &str| {
        format!(
            "csrf={csrf}&name=Pets&version=v1&context={context}&description=All+pets&tags=animals%2C+demo&endpoints=http%3A%2F%2F192.0.2.1%3A9%2F\
             &tiers=Unlimited&tiers=Gold&operations={operations}&documentation=%23+Pets"
        )
    };
    // A bad field is refused next to it, with what was typed kept, and nothing is made.
    let refused = send(&app, "POST", "/publisher/new", &pat, Some(&form("pets", "GET+%2Fitems"))).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.body.contains("id=\"context-error\""), "{}", refused.body);
    assert!(refused.body.contains("value=\"animals, demo\""), "{}", refused.body);
    let refused = send(&app, "POST", "/publisher/new", &pat, Some(&form("%2Fpets", "GET+%2Fitems%0D%0AGET"))).await;
    assert!(refused.body.contains("id=\"operations-error\">operations[1]: `GET`: a method and a path"), "{}", refused.body);
    let (_, listed) = app.send("GET", "/api/v1/apis", Some(&publisher), None).await;
    assert_eq!(listed, json!([]), "nothing made");

    let made = send(&app, "POST", "/publisher/new", &pat, Some(&form("%2Fpets", "GET+%2Fitems%0D%0ADELETE+%2Fitems%2F%7Bid%7D"))).await;
    assert_eq!(made.status, StatusCode::SEE_OTHER, "{}", made.body);
    let id = made.header(header::LOCATION).trim_start_matches("/publisher/apis/").to_owned();
    let (_, api) = app.send("GET", &format!("/api/v1/apis/{id}"), Some(&publisher), None).await;
    assert_eq!(
        (&api["context"], &api["tags"], &api["tiers"]),
        (&json!("/pets"), &json!(["animals", "demo"]), &json!(["Unlimited", "Gold"]))
    );
    assert_eq!(
        api["operations"],
        json!([{"method": "GET", "path": "/items", "policies": [], "scopes": []}, {"method": "DELETE", "path": "/items/{id}", "policies": [], "scopes": []}])
    );

    // Policies and scopes set through the API are kept by an edit that does not show them.
    let mut full = api.clone();
    full["scopes"] = json!([{"name": "pets:write", "description": "change pets", "roles": ["subscriber"]}]);
    full["policies"] = json!([{"policy": "headers", "config": {"request": {"set": {"x-a": "1"}}}}]);
    full["operations"][1]["scopes"] = json!(["pets:write"]);
    full["operations"][1]["policies"] = json!([{"policy": "headers", "config": {"request": {"set": {"x-b": "2"}}}}]);
    for field in ["id", "status", "owner", "created_at", "updated_at", "endpoint_client_certificate"] {
        full.as_object_mut().unwrap().remove(field);
    }
    let (status, body) = app.send("PUT", &format!("/api/v1/apis/{id}"), Some(&publisher), Some(full)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let edit = send(&app, "GET", &format!("/publisher/apis/{id}/edit"), &pat, None).await;
    assert!(edit.body.contains(">GET /items\nDELETE /items/{id} pets:write</textarea>"), "{}", edit.body);
    let token = edit.field("csrf");
    let update = format!(
        "csrf={token}&description=Changed&tags=animals&endpoints=http%3A%2F%2F192.0.2.1%3A9%2F&tiers=Gold\
         &operations=DELETE+%2Fitems%2F%7Bid%7D+pets%3Awrite%0D%0APOST+%2Fitems&documentation="
    );
    let saved = send(&app, "POST", &format!("/publisher/apis/{id}/edit"), &pat, Some(&update)).await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let (_, api) = app.send("GET", &format!("/api/v1/apis/{id}"), Some(&publisher), None).await;
    assert_eq!((&api["description"], &api["tiers"]), (&json!("Changed"), &json!(["Gold"])));
    assert_eq!(api["policies"][0]["config"]["request"]["set"]["x-a"], "1", "the API's policies are kept: {api}");
    assert_eq!(api["scopes"][0]["name"], "pets:write");
    let operation = |path: &str| api["operations"].as_array().unwrap().iter().find(|op| op["path"] == path).cloned().unwrap();
    assert_eq!(api["operations"].as_array().unwrap().len(), 2);
    assert_eq!(
        operation("/items/{id}")["policies"][0]["config"]["request"]["set"]["x-b"],
        "2",
        "a kept operation keeps its policies: {api}"
    );
    assert_eq!(operation("/items"), json!({"method": "POST", "path": "/items", "policies": [], "scopes": []}));
    // An endpoint the API refuses: shown next to the field, nothing saved.
    let bad = update.replace("http%3A%2F%2F192.0.2.1%3A9%2F", "ftp%3A%2F%2Fx").replace("Changed", "Again");
    let refused = send(&app, "POST", &format!("/publisher/apis/{id}/edit"), &pat, Some(&bad)).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.body.contains("id=\"endpoints-error\">endpoints[0]"), "{}", refused.body);
    let (_, api) = app.send("GET", &format!("/api/v1/apis/{id}"), Some(&publisher), None).await;
    assert_eq!(api["description"], "Changed");
}

#[tokio::test]
async fn a_policy_is_attached_with_a_form_made_from_its_schema_and_removed() {
    use base64::Engine as _;
    use serde_json::json;
    let app = TestApp::new(Engine::Sqlite).await;
    let publisher = app.user("pat", "publisher").await;
    let component = base64::engine::general_purpose::STANDARD.encode(portico_gateway::policy::builtin::find("headers").unwrap().component);
    let schema = json!({"type": "object", "properties": {"request": {"type": "object", "description": "Headers set on the request"}}, "additionalProperties": false});
    let upload =
        json!({"name": "my-headers", "version": "1.0.0", "description": "Sets headers", "component": component, "config_schema": schema});
    let (status, body) = app.send("POST", "/api/v1/policies", Some(&publisher), Some(upload)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let api = json!({"name": "reg", "version": "v1", "context": "/reg", "endpoints": ["http://192.0.2.1:9/"], "operations": [{"method": "GET", "path": "/x"}]});
    let (_, api) = app.send("POST", "/api/v1/apis", Some(&publisher), Some(api)).await;
    let id = api["id"].as_str().unwrap().to_owned();

    let pat = console_session(&app, "pat").await;
    let page = send(&app, "GET", &format!("/publisher/apis/{id}"), &pat, None).await;
    assert!(page.body.contains("<option value=\"my-headers@1.0.0\">"), "the registry's policies are offered: {}", page.body);
    let form = send(&app, "GET", &format!("/publisher/apis/{id}/attach?policy=my-headers%401.0.0"), &pat, None).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    assert!(form.body.contains("<label for=\"config.request\">request (JSON)</label>"), "a field per property: {}", form.body);
    assert!(form.body.contains("Headers set on the request"));
    let csrf = form.field("csrf");
    let post = |request: &str| format!("csrf={csrf}&policy=my-headers%401.0.0&config.request={request}");
    // JSON that does not read, then a configuration the policy's own check refuses: each
    // shown on the form, nothing attached.
    let refused = send(&app, "POST", &format!("/publisher/apis/{id}/attach"), &pat, Some(&post("%7B"))).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.body.contains("id=\"config.request-error\">not JSON"), "{}", refused.body);
    let refused = send(&app, "POST", &format!("/publisher/apis/{id}/attach"), &pat, Some(&post("%7B%22bogus%22%3A1%7D"))).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(refused.body.contains("bogus"), "{}", refused.body);
    let (_, api) = app.send("GET", &format!("/api/v1/apis/{id}"), Some(&publisher), None).await;
    assert_eq!(api["policies"], json!([]), "nothing attached");

    let attached =
        send(&app, "POST", &format!("/publisher/apis/{id}/attach"), &pat, Some(&post("%7B%22set%22%3A%7B%22x-a%22%3A%221%22%7D%7D"))).await;
    assert_eq!(attached.status, StatusCode::SEE_OTHER, "{}", attached.body);
    let (_, api) = app.send("GET", &format!("/api/v1/apis/{id}"), Some(&publisher), None).await;
    assert_eq!(
        (&api["policies"][0]["policy"], &api["policies"][0]["config"]),
        (&json!("my-headers@1.0.0"), &json!({"request": {"set": {"x-a": "1"}}}))
    );
    let page = send(&app, "GET", &format!("/publisher/apis/{id}"), &pat, None).await;
    assert!(page.body.contains("<code>my-headers@1.0.0</code>"), "{}", page.body);
    let removed = send(&app, "POST", &format!("/publisher/apis/{id}/policies/0/remove"), &pat, Some(&format!("csrf={csrf}"))).await;
    assert_eq!(removed.status, StatusCode::SEE_OTHER, "{}", removed.body);
    let (_, api) = app.send("GET", &format!("/api/v1/apis/{id}"), Some(&publisher), None).await;
    assert_eq!(api["policies"], json!([]));
    let missing = send(&app, "POST", &format!("/publisher/apis/{id}/policies/0/remove"), &pat, Some(&format!("csrf={csrf}"))).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    // On one operation only; an operation the API does not have is refused on the form.
    let config = "&config.request=%7B%22set%22%3A%7B%22x-b%22%3A%222%22%7D%7D";
    let refused = send(
        &app,
        "POST",
        &format!("/publisher/apis/{id}/attach"),
        &pat,
        Some(&format!("csrf={csrf}&policy=my-headers%401.0.0&target=9{config}")),
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.body.contains("id=\"target-error\""), "{}", refused.body);
    let attached = send(
        &app,
        "POST",
        &format!("/publisher/apis/{id}/attach"),
        &pat,
        Some(&format!("csrf={csrf}&policy=my-headers%401.0.0&target=0{config}")),
    )
    .await;
    assert_eq!(attached.status, StatusCode::SEE_OTHER, "{}", attached.body);
    let (_, api) = app.send("GET", &format!("/api/v1/apis/{id}"), Some(&publisher), None).await;
    assert_eq!((&api["policies"], &api["operations"][0]["policies"][0]["policy"]), (&json!([]), &json!("my-headers@1.0.0")));
    let removed =
        send(&app, "POST", &format!("/publisher/apis/{id}/operations/0/policies/0/remove"), &pat, Some(&format!("csrf={csrf}"))).await;
    assert_eq!(removed.status, StatusCode::SEE_OTHER, "{}", removed.body);
    let (_, api) = app.send("GET", &format!("/api/v1/apis/{id}"), Some(&publisher), None).await;
    assert_eq!(api["operations"][0]["policies"], json!([]));
}

#[tokio::test]
async fn an_admin_changes_a_user_s_role_but_not_their_own() {
    use serde_json::json;
    let app = TestApp::new(Engine::Sqlite).await;
    let admin = app.login("admin", "admin-password-1").await;
    let publisher = app.user("pat", "publisher").await;
    let (_, users) = app.send("GET", "/api/v1/users", Some(&admin), None).await;
    let id_of = |name: &str| users.as_array().unwrap().iter().find(|u| u["username"] == name).unwrap()["id"].as_str().unwrap().to_owned();
    let (pat_id, admin_id) = (id_of("pat"), id_of("admin"));
    for (token, id, expected) in [
        (&publisher, &pat_id, StatusCode::FORBIDDEN),
        (&admin, &admin_id, StatusCode::CONFLICT),
        (&admin, &"no-such-user".to_owned(), StatusCode::NOT_FOUND),
    ] {
        let (status, body) = app.send("PUT", &format!("/api/v1/users/{id}/role"), Some(token), Some(json!({"role": "subscriber"}))).await;
        assert_eq!(status, expected, "{body}");
    }
    let (status, body) = app.send("PUT", &format!("/api/v1/users/{pat_id}/role"), Some(&admin), Some(json!({"role": "root"}))).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("role")));

    // From the admin's page: the role holds from the user's next request.
    let console = console_session(&app, "admin").await;
    let page = send(&app, "GET", "/admin/users", &console, None).await;
    assert!(page.body.contains("admin (you)") && page.body.contains(&format!("action=\"/admin/users/{pat_id}/role\"")), "{}", page.body);
    let csrf = page.field("csrf");
    let changed = send(&app, "POST", &format!("/admin/users/{pat_id}/role"), &console, Some(&format!("csrf={csrf}&role=subscriber"))).await;
    assert_eq!(changed.status, StatusCode::SEE_OTHER, "{}", changed.body);
    let (status, _) = app.send("GET", "/api/v1/apis", Some(&publisher), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a subscriber now");
}

/// A server on loopback answering every request with `body` (as an OpenAPI host would).
async fn serving(body: &'static str) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/yaml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(answer.as_bytes()).await;
        }
    });
    address
}

#[tokio::test]
async fn an_api_is_imported_from_a_url_the_upstream_rules_allow() {
    use serde_json::json;
    let app = TestApp::new(Engine::Sqlite).await;
    let admin = app.login("admin", "admin-password-1").await;
    let publisher = app.user("pat", "publisher").await;
    let address = serving("openapi: 3.0.3\ninfo: {title: Fetched, version: v3}\npaths:\n  /things:\n    get: {}\n").await;
    let pat = console_session(&app, "pat").await;
    let page = send(&app, "GET", "/publisher/import", &pat, None).await;
    let csrf = page.field("csrf");
    let import = |url: &str| {
        let url: String = form_urlencoded::byte_serialize(url.as_bytes()).collect();
        format!("csrf={csrf}&openapi_url={url}&endpoints=http%3A%2F%2F192.0.2.1%3A9%2F&context=%2Ffetched")
    };
    // This host and cloud metadata addresses are not fetched unless an admin allowed them.
    for url in
        [format!("http://{address}/openapi.yaml"), "http://169.254.169.254/latest/meta-data".to_owned(), "file:///etc/passwd".to_owned()]
    {
        let refused = send(&app, "POST", "/publisher/import", &pat, Some(&import(&url))).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{url}");
        assert!(refused.body.contains("id=\"openapi_url-error\""), "{url}: {}", refused.body);
    }
    let (_, listed) = app.send("GET", "/api/v1/apis", Some(&publisher), None).await;
    assert_eq!(listed, json!([]), "nothing imported");
    app.send("PUT", "/api/v1/environments/default/upstream-networks", Some(&admin), Some(json!({"allow": ["127.0.0.1"]}))).await;
    let imported = send(&app, "POST", "/publisher/import", &pat, Some(&import(&format!("http://{address}/openapi.yaml")))).await;
    assert_eq!(imported.status, StatusCode::SEE_OTHER, "{}", imported.body);
    let (_, listed) = app.send("GET", "/api/v1/apis", Some(&publisher), None).await;
    assert_eq!((&listed[0]["name"], &listed[0]["version"], &listed[0]["context"]), (&json!("Fetched"), &json!("v3"), &json!("/fetched")));
}
