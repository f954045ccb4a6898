//! Usage analytics as gateways report them and publishers and subscribers read them, on
//! both engines: each report counted once, bad reports refused by field, windows,
//! intervals, environments and retention.

use axum::http::StatusCode;
use portico_control_plane::on_both_engines;
use portico_control_plane::test_support::TestApp;
use serde_json::{Value, json};

/// A row of `requests` requests of `class`, all in the first latency bucket.
fn row(minute: u64, operation: &str, application: Option<&str>, class: u8, requests: u64) -> Value {
    let mut latency = vec![0u64; 13];
    latency[0] = requests;
    json!({"minute": minute, "api": "reg", "version": "v1", "operation": operation, "application": application,
        "class": class, "requests": requests, "latency_us": requests * 500, "latency": latency})
}

#[tokio::test]
async fn reports_are_counted_once_and_read_by_window_interval_and_environment() {
    async fn check(app: TestApp) {
        use tower::ServiceExt;
        let admin = app.login("admin", "admin-password-1").await;
        let publisher = app.user("pat", "publisher").await;
        let subscriber = app.user("sue", "subscriber").await;
        let api = json!({"name": "reg", "version": "v1", "context": "/reg", "endpoints": ["http://192.0.2.1:9/"],
            "operations": [{"method": "GET", "path": "/x"}]});
        let (status, api) = app.send("POST", "/api/v1/apis", Some(&publisher), Some(api)).await;
        assert_eq!(status, StatusCode::CREATED, "{api}");
        let (_, application) = app.send("POST", "/api/v1/applications", Some(&subscriber), Some(json!({"name": "sues"}))).await;
        let application = application["id"].as_str().unwrap().to_owned();
        let (_, token) = app.send("POST", "/api/v1/environments/default/gateway-tokens", Some(&admin), Some(json!({}))).await;
        let token = token["token"].as_str().unwrap().to_owned();
        let report = |body: Value| {
            let (router, token) = (app.router.clone(), token.clone());
            async move {
                let request = axum::http::Request::post("/fleet/v1/analytics")
                    .header("authorization", format!("Bearer {token}"))
                    .header("portico-protocol", portico_gateway::contract::fleet::PROTOCOL_VERSION.to_string())
                    .header("portico-gateway", "gw-1")
                    .header("portico-environment", "default")
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(body.to_string()))
                    .unwrap();
                let response = router.oneshot(request).await.unwrap();
                let status = response.status();
                let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
                (status, serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null))
            }
        };

        let first = json!({"batch": "b1", "rows": [
            row(600, "GET /x", Some(&application), 2, 4),
            row(660, "GET /x", Some(&application), 5, 1),
            row(3_600, "GET /x", None, 4, 2),
        ]});
        // Sent twice (its answer was lost, say): counted once.
        for _ in 0..2 {
            assert_eq!(report(first.clone()).await.0, StatusCode::NO_CONTENT);
        }
        assert_eq!(report(json!({"batch": "b2", "rows": [row(600, "GET /x", Some(&application), 2, 1)]})).await.0, StatusCode::NO_CONTENT);

        let id = api["id"].as_str().unwrap();
        let (status, usage) = app.send("GET", &format!("/api/v1/analytics/apis/{id}?from=0&to=7200"), Some(&publisher), None).await;
        assert_eq!(status, StatusCode::OK, "{usage}");
        assert_eq!(usage["interval"], "hour");
        assert_eq!(usage["totals"]["requests"], 8, "{usage}");
        assert_eq!(usage["totals"]["classes"], json!({"2xx": 5, "4xx": 2, "5xx": 1}));
        assert_eq!((&usage["totals"]["errors"], &usage["totals"]["latency_mean_ms"]), (&json!(3), &json!(0.5)));
        assert_eq!(usage["totals"]["latency_buckets"][0], json!({"le_ms": 1, "count": 8}));
        assert_eq!(usage["totals"]["latency_buckets"][12], json!({"le_ms": null, "count": 0}));
        let series: Vec<(i64, i64)> =
            usage["series"].as_array().unwrap().iter().map(|p| (p["start"].as_i64().unwrap(), p["requests"].as_i64().unwrap())).collect();
        assert_eq!(series, [(0, 6), (3_600, 2)]);
        let (_, minutes) =
            app.send("GET", &format!("/api/v1/analytics/apis/{id}?from=0&to=7200&interval=minute"), Some(&publisher), None).await;
        let starts: Vec<i64> = minutes["series"].as_array().unwrap().iter().map(|p| p["start"].as_i64().unwrap()).collect();
        assert_eq!(starts, [600, 660, 3_600]);
        let parts: Vec<(Value, i64)> = usage["breakdown"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["application_name"].clone(), p["requests"].as_i64().unwrap()))
            .collect();
        assert_eq!(parts, [(json!("sues"), 6), (Value::Null, 2)]);
        let (_, elsewhere) =
            app.send("GET", &format!("/api/v1/analytics/apis/{id}?from=0&to=7200&environment=prod"), Some(&publisher), None).await;
        assert_eq!(elsewhere["totals"]["requests"], 0, "{elsewhere}");
        let (status, own) =
            app.send("GET", &format!("/api/v1/analytics/applications/{application}?from=0&to=7200"), Some(&subscriber), None).await;
        assert_eq!((status, &own["totals"]["requests"]), (StatusCode::OK, &json!(6)), "{own}");

        // Bad reports are refused whole, naming the field.
        for (bad, field) in [
            (json!({"batch": "b3", "rows": [row(600, "GET /x", None, 7, 1)]}), "rows[0].class"),
            (json!({"batch": "b3", "rows": [row(601, "GET /x", None, 2, 1)]}), "rows[0].minute"),
            (json!({"batch": "", "rows": []}), "batch"),
            (json!({"batch": "b3", "rows": [row(600, "", None, 2, 1)]}), "rows[0].operation"),
            (json!({"batch": "b3", "rows": [], "extra": 1}), "extra"),
        ] {
            let (status, problem) = report(bad.clone()).await;
            assert_eq!((status, problem["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{bad}: {problem}");
        }
        let mut uneven = row(600, "GET /x", None, 2, 3);
        uneven["latency"][1] = json!(1);
        let (status, problem) = report(json!({"batch": "b3", "rows": [row(600, "GET /x", None, 2, 1), uneven]})).await;
        assert_eq!((status, problem["field"].as_str()), (StatusCode::BAD_REQUEST, Some("rows[1].latency")), "{problem}");
        let (_, after) = app.send("GET", &format!("/api/v1/analytics/apis/{id}?from=0&to=7200"), Some(&publisher), None).await;
        assert_eq!(after["totals"]["requests"], 8, "nothing of a refused report is kept");

        // Drops are shown for the window they were reported in.
        assert_eq!(report(json!({"batch": "b4", "rows": [], "dropped": 3})).await.0, StatusCode::NO_CONTENT);
        let (_, today) = app.send("GET", &format!("/api/v1/analytics/apis/{id}"), Some(&publisher), None).await;
        assert_eq!(today["dropped_by_gateways"], 3, "{today}");

        // Windows and intervals are checked.
        for (query, field) in [("from=10&to=5", "from"), ("interval=week", "interval"), ("from=0&to=999999999&interval=minute", "interval")]
        {
            let (status, problem) = app.send("GET", &format!("/api/v1/analytics/apis/{id}?{query}"), Some(&publisher), None).await;
            assert_eq!((status, problem["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{query}: {problem}");
        }

        // Retention: minutes older than it are deleted (these are from 1970) by the hourly sweep.
        portico_control_plane::expiry::once(&app.db, Some(std::time::Duration::from_secs(86_400))).await;
        let (_, expired) = app.send("GET", &format!("/api/v1/analytics/apis/{id}?from=0&to=7200"), Some(&publisher), None).await;
        assert_eq!(expired["totals"]["requests"], 0, "{expired}");
        let (_, kept) = app.send("GET", &format!("/api/v1/analytics/apis/{id}"), Some(&publisher), None).await;
        assert_eq!(kept["dropped_by_gateways"], 3, "a report received today is kept: {kept}");
    }
    on_both_engines!(check);
}
