//! The provider against a fake one served here, which counts what it is asked: keys fetched
//! again for an unknown `kid` at most once per interval, introspection answers cached, and
//! kept through an outage only until the token expires.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use super::Providers;
use crate::contract::environment::{ClaimMapping, ClientApplication, Discovery, Environment, Introspection, JwtIssuer};
use crate::contract::units::Duration;
use crate::keys::{KeyError, KeyStore};

const AUDIENCE: &str = "https://api.test";

/// A fake OpenID provider: what it publishes, what it answers, and how often it was asked.
#[derive(Default)]
struct Fake {
    issuer: Mutex<String>,
    keys: Mutex<Vec<Value>>,
    /// Introspection answers by token.
    answers: Mutex<HashMap<String, Value>>,
    down: AtomicBool,
    jwks_fetches: AtomicUsize,
    questions: AtomicUsize,
}

async fn serve(fake: Arc<Fake>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    *fake.issuer.lock().unwrap() = issuer.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let fake = fake.clone();
            let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
                let fake = fake.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&fake, request).await) }
            });
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    issuer
}

async fn answer(fake: &Fake, request: http::Request<Incoming>) -> http::Response<Full<Bytes>> {
    let reply = |status: u16, body: Value| http::Response::builder().status(status).body(Full::new(Bytes::from(body.to_string()))).unwrap();
    if fake.down.load(Ordering::SeqCst) {
        return reply(503, json!({}));
    }
    let issuer = fake.issuer.lock().unwrap().clone();
    match request.uri().path() {
        "/.well-known/openid-configuration" => reply(
            200,
            json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks"), "introspection_endpoint": format!("{issuer}/introspect")}),
        ),
        "/jwks" => {
            fake.jwks_fetches.fetch_add(1, Ordering::SeqCst);
            reply(200, json!({"keys": *fake.keys.lock().unwrap()}))
        }
        "/introspect" => {
            fake.questions.fetch_add(1, Ordering::SeqCst);
            let authorized = request.headers().get("authorization").and_then(|v| v.to_str().ok()) == Some("Basic Z3c6Z3ctc2VjcmV0");
            let body = request.into_body().collect().await.unwrap().to_bytes();
            let token = form_urlencoded(&body);
            if !authorized {
                return reply(401, json!({"error": "invalid_client"}));
            }
            reply(200, fake.answers.lock().unwrap().get(&token).cloned().unwrap_or(json!({"active": false})))
        }
        _ => reply(404, json!({})),
    }
}

/// The `token` of a form body (the tokens here need no decoding).
fn form_urlencoded(body: &[u8]) -> String {
    let body = String::from_utf8_lossy(body);
    body.split('&').find_map(|pair| pair.strip_prefix("token=")).unwrap_or_default().to_owned()
}

/// A P-256 key named `kid`: its JWK and a signer.
fn key(kid: &str) -> (Value, jsonwebtoken::EncodingKey) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let point = pair.public_key_raw();
    let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65])});
    (jwk, jsonwebtoken::EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap())
}

fn sign(issuer: &str, kid: &str, signer: &jsonwebtoken::EncodingKey, client: &str) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = json!({"iss": issuer, "aud": AUDIENCE, "client_id": client, "sub": client, "exp": now + 600, "nbf": now - 5, "iat": now});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, &claims, signer).unwrap()
}

fn store(issuer: &str, providers: &Providers, cache_ttl: StdDuration, unknown_kid_interval: StdDuration) -> Arc<KeyStore> {
    let clients = [(
        "shop".to_owned(),
        ClientApplication {
            application: "app-1".into(),
            tier: Some("Gold".into()),
            user: Some("owner".into()),
            subscriptions: [("orders@v1".to_owned(), "Gold".to_owned())].into(),
        },
    )];
    let environment = Environment {
        jwt_issuers: vec![JwtIssuer {
            issuer: issuer.to_owned(),
            audiences: vec![AUDIENCE.to_owned()],
            algorithms: vec!["ES256".into()],
            keys: Vec::new(),
            jwks: None,
            jwks_file: None,
            claims: ClaimMapping::default(),
            leeway: Duration(StdDuration::ZERO),
            typ: None,
            require_jti: false,
            discovery: Some(Discovery {
                refresh: Duration(StdDuration::from_secs(3600)),
                unknown_kid_interval: Duration(unknown_kid_interval),
                ca: None,
                introspection: Some(Introspection {
                    client_id: "gw".into(),
                    client_secret: "gw-secret".into(),
                    cache_ttl: Duration(cache_ttl),
                }),
            }),
            clients: Some(clients.into_iter().collect()),
        }],
        ..Environment::default()
    };
    Arc::new(KeyStore::for_gateway(&environment, Path::new("."), providers).unwrap())
}

/// Verify on a runtime worker, as a policy's host call does.
async fn verify(store: &Arc<KeyStore>, token: &str) -> Result<crate::keys::Identity, KeyError> {
    let (store, token) = (store.clone(), token.to_owned());
    tokio::spawn(async move { store.verify_jwt(&token).map(|verified| verified.identity.clone()) }).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kid_fetches_the_keys_at_most_once_per_interval() {
    let fake = Arc::new(Fake::default());
    let (first, first_signer) = key("k1");
    fake.keys.lock().unwrap().push(first);
    let issuer = serve(fake.clone()).await;
    let providers = Providers::default();
    let interval = StdDuration::from_secs(1);
    let store = store(&issuer, &providers, StdDuration::from_secs(60), interval);

    let identity = verify(&store, &sign(&issuer, "k1", &first_signer, "shop")).await.expect("a token of the published key");
    // The client's application, its tier and subscriptions; the subject was the client.
    assert_eq!(identity.application.as_deref(), Some("app-1"));
    assert_eq!((identity.tier.as_deref(), identity.user.as_deref()), (Some("Gold"), Some("owner")));
    assert!(identity.subscriptions.as_ref().unwrap().contains_key("orders@v1"));
    let fetches = fake.jwks_fetches.load(Ordering::SeqCst);
    assert_eq!(fetches, 1, "fetched once, when the provider was made");

    // Rotation: a new key published; its first token makes the gateway fetch again.
    let (second, second_signer) = key("k2");
    fake.keys.lock().unwrap().insert(0, second);
    let rotated = sign(&issuer, "k2", &second_signer, "shop");
    tokio::time::sleep(interval).await;
    assert!(verify(&store, &rotated).await.is_ok());
    assert_eq!(fake.jwks_fetches.load(Ordering::SeqCst), 2);

    // More unknown `kid`s within the interval: refused, and the provider is not asked again.
    for kid in ["k3", "k4", "k5"] {
        let (_, stranger) = key(kid);
        assert!(matches!(verify(&store, &sign(&issuer, kid, &stranger, "shop")).await, Err(KeyError::BadSignature(_))));
    }
    assert_eq!(fake.jwks_fetches.load(Ordering::SeqCst), 2);
    // A client no application maps is refused.
    let refused = verify(&store, &sign(&issuer, "k1", &first_signer, "stranger")).await;
    assert!(matches!(refused, Err(KeyError::InvalidClaims(_))), "{refused:?}");

    // The provider down: the keys fetched are kept.
    fake.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(interval).await;
    let (_, stranger) = key("k6");
    assert!(verify(&store, &sign(&issuer, "k6", &stranger, "shop")).await.is_err());
    assert_eq!(fake.jwks_fetches.load(Ordering::SeqCst), 2, "nothing newer came");
    assert!(verify(&store, &rotated).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_answers_are_cached_and_outlast_an_outage_only_until_the_token_expires() {
    let fake = Arc::new(Fake::default());
    fake.keys.lock().unwrap().push(key("k1").0);
    let issuer = serve(fake.clone()).await;
    let providers = Providers::default();
    let ttl = StdDuration::from_millis(300);
    let store = store(&issuer, &providers, ttl, StdDuration::from_secs(3600));
    let now = jsonwebtoken::get_current_timestamp();
    let active = |exp: u64| json!({"active": true, "client_id": "shop", "scope": "read", "exp": exp, "iss": issuer});
    fake.answers.lock().unwrap().insert("long-lived".into(), active(now + 600));
    fake.answers.lock().unwrap().insert("short-lived".into(), active(now + 2));

    let identity = verify(&store, "long-lived").await.expect("an active token");
    assert_eq!(identity.application.as_deref(), Some("app-1"));
    assert!(verify(&store, "long-lived").await.is_ok());
    assert_eq!(fake.questions.load(Ordering::SeqCst), 1, "the second call used the cached answer");
    assert_eq!(verify(&store, "never-issued").await.unwrap_err(), KeyError::Unknown);

    // Revoked at the provider: refused once the cached answer is older than the cache time.
    fake.answers.lock().unwrap().insert("long-lived".into(), json!({"active": false}));
    assert!(verify(&store, "long-lived").await.is_ok(), "within the cache time");
    tokio::time::sleep(ttl).await;
    assert_eq!(verify(&store, "long-lived").await.unwrap_err(), KeyError::Unknown);

    // The provider down past the cache time: an active answer stands until its token
    // expires; a token never answered for is refused.
    assert!(verify(&store, "short-lived").await.is_ok());
    fake.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(ttl).await;
    assert!(verify(&store, "short-lived").await.is_ok(), "the provider is down: the cached answer stands");
    assert_eq!(verify(&store, "another").await.unwrap_err(), KeyError::Unknown);
    tokio::time::sleep(StdDuration::from_secs(3)).await;
    assert!(verify(&store, "short-lived").await.is_err(), "expired");
}
