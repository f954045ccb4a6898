//! Tests of the key store: API keys, the JWT positive cases and negative matrix (RFC 8725),
//! configuration problems and the verified-token cache. RSA tokens are signed with the fixed
//! test key in `gateway/tests/data/` (generated with `openssl genrsa 2048`); EC and Ed25519
//! keys are generated per test with rcgen.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Identity, KeyError, KeyStore};
use crate::contract::Problem;
use crate::contract::environment::{ClaimMapping, Consumer, JwtIssuer, JwtKey};
use crate::contract::units::Duration;

const ISSUER: &str = "https://idp.example.test";
const AUDIENCE: &str = "portico";
const RSA_PRIVATE: &str = include_str!("../../tests/data/jwt-rsa-private.pem");
const RSA_PUBLIC: &str = include_str!("../../tests/data/jwt-rsa-public.pem");

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn ec_key() -> rcgen::KeyPair {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key")
}

fn issuer(algorithms: &[&str], keys: Vec<JwtKey>) -> JwtIssuer {
    JwtIssuer {
        issuer: ISSUER.to_owned(),
        audiences: vec![AUDIENCE.to_owned(), "reports".to_owned()],
        algorithms: algorithms.iter().map(|alg| (*alg).to_owned()).collect(),
        keys,
        jwks: None,
        jwks_file: None,
        claims: ClaimMapping::default(),
        leeway: Duration::from_secs(30),
        typ: None,
        require_jti: false,
        discovery: None,
        clients: None,
    }
}

fn pem_key(kid: Option<&str>, pem: &str) -> JwtKey {
    JwtKey { kid: kid.map(str::to_owned), pem: Some(pem.to_owned()), pem_file: None }
}

/// A store trusting the RSA test key (`rsa-1`) and `ec` (`ec-1`) for RS256 and ES256.
fn store_with(ec: &rcgen::KeyPair) -> KeyStore {
    let keys = vec![pem_key(Some("rsa-1"), RSA_PUBLIC), pem_key(Some("ec-1"), &ec.public_key_pem())];
    KeyStore::from_config(&[], &[issuer(&["RS256", "ES256"], keys)], Path::new(".")).expect("valid configuration")
}

fn problems_of(issuers: &[JwtIssuer], base_dir: &Path) -> Vec<Problem> {
    match KeyStore::from_config(&[], issuers, base_dir) {
        Ok(_) => panic!("the configuration was accepted"),
        Err(problems) => problems,
    }
}

fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-7",
        "azp": "app-1",
        "exp": now() + 300,
        "nbf": now() - 10,
        "iat": now() - 10,
        "scope": "read write",
        "tier": "gold",
        "subscription": "sub-9",
    })
}

fn with(mut claims: Value, name: &str, value: Value) -> Value {
    claims[name] = value;
    claims
}

fn without(mut claims: Value, name: &str) -> Value {
    claims.as_object_mut().expect("object").remove(name);
    claims
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("signed")
}

fn rsa_signer() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).expect("RSA test key")
}

fn ec_signer(key: &rcgen::KeyPair) -> EncodingKey {
    EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).expect("EC key")
}

fn rsa_token(claims: &Value) -> String {
    sign(Algorithm::RS256, &rsa_signer(), Some("rsa-1"), claims)
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token put together by hand, for headers and signatures no library would produce.
fn assemble(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!("{}.{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()), b64(signature))
}

/// The refusal of `token`, checking that its text quotes nothing from the token.
fn refusal(store: &KeyStore, token: &str) -> KeyError {
    let error = store.verify_jwt(token).expect_err("the token was accepted");
    let text = error.to_string();
    for part in token.split('.').filter(|part| part.len() >= 8) {
        assert!(!text.contains(part), "`{text}` quotes the token");
    }
    error
}

fn is_bad_signature(error: &KeyError) -> bool {
    matches!(error, KeyError::BadSignature(_))
}

fn is_invalid_claims(error: &KeyError) -> bool {
    matches!(error, KeyError::InvalidClaims(_))
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("portico-keys-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A JWKS entry for an EC P-256 public key.
fn ec_jwk(key: &rcgen::KeyPair, kid: &str) -> Value {
    let point = key.public_key_raw();
    assert_eq!(point.len(), 65, "uncompressed P-256 point");
    json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..]), "kid": kid, "use": "sig", "alg": "ES256"})
}

#[test]
fn store_is_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<KeyStore>();
}

// ---- API keys ----

fn consumer(name: &str, keys: &[&str], hashes: &[String]) -> Consumer {
    Consumer {
        name: name.to_owned(),
        application: None,
        tier: Some("silver".to_owned()),
        user: None,
        scopes: vec!["read".to_owned()],
        api_keys: keys.iter().map(|key| (*key).to_owned()).collect(),
        api_key_hashes: hashes.to_vec(),
        client_certificates: Vec::new(),
        subscriptions: None,
    }
}

fn hex_sha256(key: &str) -> String {
    Sha256::digest(key.as_bytes()).iter().map(|byte| format!("{byte:02x}")).collect()
}

#[test]
fn api_keys_are_found_by_plain_key_and_by_digest() {
    let mut billing = consumer("billing", &[], &[hex_sha256("hashed-key-0002").to_uppercase()]);
    billing.application = Some("billing-app".to_owned());
    let consumers = [consumer("mobile", &["plain-key-0001"], &[]), billing];
    let store = KeyStore::from_config(&consumers, &[], Path::new(".")).expect("valid");

    let mobile = store.lookup_api_key("plain-key-0001").expect("known key");
    assert_eq!(
        mobile,
        Identity {
            method: "api-key",
            application: Some("mobile".to_owned()),
            subscription: None,
            tier: Some("silver".to_owned()),
            user: None,
            scopes: vec!["read".to_owned()],
            subscriptions: None,
        }
    );
    let billing = store.lookup_api_key("hashed-key-0002").expect("known digest");
    assert_eq!(billing.application.as_deref(), Some("billing-app"));

    assert_eq!(store.lookup_api_key("plain-key-0002"), Err(KeyError::Unknown));
    assert_eq!(store.lookup_api_key(""), Err(KeyError::Unknown));
    assert_eq!(store.lookup_api_key("plain-key-0001 "), Err(KeyError::Unknown));
}

#[test]
fn an_api_key_given_to_two_consumers_is_a_problem() {
    let consumers = [
        consumer("first", &["shared-key-0001", "shared-key-0001"], &[]),
        consumer("second", &["other-key-00001"], &[hex_sha256("shared-key-0001")]),
    ];
    let Err(problems) = KeyStore::from_config(&consumers, &[], Path::new(".")) else {
        panic!("accepted");
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, "consumers[1].api_key_hashes[0]");
    assert!(problems[0].reason.contains("`first`"));
    assert!(!problems[0].reason.contains("shared-key"));
}

// ---- JWT: accepted tokens ----

#[test]
fn client_certificates_are_found_by_sha256_in_either_case_and_belong_to_one_consumer() {
    let fingerprint = hex_sha256("a certificate's DER");
    let mut partner = consumer("partner", &[], &[]);
    partner.application = Some("partner-app".to_owned());
    partner.client_certificates = vec![fingerprint.to_uppercase()];
    let store =
        KeyStore::from_config(&[consumer("mobile", &["plain-key-0001"], &[]), partner.clone()], &[], Path::new(".")).expect("valid");

    let identity = store.lookup_client_certificate(&fingerprint).expect("registered");
    assert_eq!(identity.method, "client-certificate");
    assert_eq!(identity.application.as_deref(), Some("partner-app"));
    assert_eq!(store.lookup_client_certificate(&hex_sha256("another DER")), Err(KeyError::Unknown));
    assert_eq!(store.lookup_client_certificate("not hex"), Err(KeyError::Unknown));
    // A certificate's digest is no API key, nor the other way round.
    assert_eq!(store.lookup_api_key(&fingerprint), Err(KeyError::Unknown));
    assert_eq!(store.lookup_client_certificate(&hex_sha256("plain-key-0001")), Err(KeyError::Unknown));

    let mut thief = consumer("thief", &[], &[]);
    thief.client_certificates = vec![fingerprint];
    let Err(problems) = KeyStore::from_config(&[partner, thief], &[], Path::new(".")) else {
        panic!("a certificate given to two consumers was accepted");
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, "consumers[1].client_certificates[0]");
    assert!(problems[0].reason.contains("client certificate is also given to consumer `partner`"), "{}", problems[0].reason);
}

#[test]
fn rs256_token_is_verified_and_mapped() {
    let store = store_with(&ec_key());
    let claims = claims();
    let verified = store.verify_jwt(&rsa_token(&claims)).expect("valid token");
    assert_eq!(verified.issuer, ISSUER);
    assert_eq!(verified.subject.as_deref(), Some("user-7"));
    assert_eq!(verified.expires_at, claims["exp"].as_u64().unwrap());
    assert_eq!(
        verified.identity,
        Identity {
            method: "jwt",
            application: Some("app-1".to_owned()),
            subscription: Some("sub-9".to_owned()),
            tier: Some("gold".to_owned()),
            user: Some("user-7".to_owned()),
            scopes: vec!["read".to_owned(), "write".to_owned()],
            subscriptions: None,
        }
    );
    assert_eq!(serde_json::from_str::<Value>(&verified.claims).unwrap(), claims);
}

#[test]
fn es256_token_is_verified_with_or_without_kid() {
    let ec = ec_key();
    let store = store_with(&ec);
    assert!(store.verify_jwt(&sign(Algorithm::ES256, &ec_signer(&ec), Some("ec-1"), &claims())).is_ok());
    // Without `kid`, every key fitting the algorithm is tried.
    assert!(store.verify_jwt(&sign(Algorithm::ES256, &ec_signer(&ec), None, &claims())).is_ok());
    assert!(store.verify_jwt(&sign(Algorithm::RS256, &rsa_signer(), None, &claims())).is_ok());
}

#[test]
fn eddsa_token_is_verified() {
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("Ed25519 key");
    let config = issuer(&["EdDSA"], vec![pem_key(None, &ed.public_key_pem())]);
    let store = KeyStore::from_config(&[], &[config], Path::new(".")).expect("valid");
    let signer = EncodingKey::from_ed_pem(ed.serialize_pem().as_bytes()).expect("Ed25519 signer");
    assert!(store.verify_jwt(&sign(Algorithm::EdDSA, &signer, None, &claims())).is_ok());
}

#[test]
fn claims_are_mapped_as_configured() {
    let store = store_with(&ec_key());
    // `client_id` stands in for a missing `azp`; scopes may be an array.
    let fallback = with(without(claims(), "azp"), "client_id", json!("client-2"));
    let fallback = with(fallback, "scope", json!(["a", "b"]));
    let verified = store.verify_jwt(&rsa_token(&fallback)).expect("valid");
    assert_eq!(verified.identity.application.as_deref(), Some("client-2"));
    assert_eq!(verified.identity.scopes, ["a", "b"]);

    let mut config = issuer(&["RS256"], vec![pem_key(None, RSA_PUBLIC)]);
    config.claims = ClaimMapping {
        application: "app".to_owned(),
        subscription: "plan_id".to_owned(),
        tier: "plan".to_owned(),
        user: "email".to_owned(),
        scopes: "scp".to_owned(),
        subscriptions: "subscriptions".to_owned(),
    };
    let store = KeyStore::from_config(&[], &[config], Path::new(".")).expect("valid");
    let custom = with(with(with(claims(), "app", json!("mapped")), "plan", json!("bronze")), "scp", json!("x"));
    let custom = with(custom, "email", json!("someone@example.test"));
    let identity = store.verify_jwt(&rsa_token(&custom)).expect("valid").identity.clone();
    assert_eq!(identity.application.as_deref(), Some("mapped"));
    assert_eq!(identity.subscription, None);
    assert_eq!(identity.tier.as_deref(), Some("bronze"));
    assert_eq!(identity.user.as_deref(), Some("someone@example.test"));
    assert_eq!(identity.scopes, ["x"]);
}

#[test]
fn audience_may_be_a_list_naming_one_accepted_audience() {
    let store = store_with(&ec_key());
    let claims = with(claims(), "aud", json!(["elsewhere", "reports"]));
    assert!(store.verify_jwt(&rsa_token(&claims)).is_ok());
}

#[test]
fn leeway_applies_to_exp_and_nbf() {
    let store = store_with(&ec_key());
    let claims = with(with(claims(), "exp", json!(now() - 10)), "nbf", json!(now() + 10));
    assert!(store.verify_jwt(&rsa_token(&claims)).is_ok());
}

// ---- JWT: the negative matrix ----

#[test]
fn alg_none_is_refused() {
    let store = store_with(&ec_key());
    for alg in ["none", "None", "NONE"] {
        let token = assemble(&json!({"alg": alg, "typ": "JWT"}), &claims(), b"");
        assert!(is_bad_signature(&refusal(&store, &token)), "{alg}");
        let token = assemble(&json!({"alg": alg, "kid": "rsa-1"}), &claims(), b"signature");
        assert!(is_bad_signature(&refusal(&store, &token)), "{alg}");
    }
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_refused() {
    let store = store_with(&ec_key());
    let secret = EncodingKey::from_secret(RSA_PUBLIC.as_bytes());
    for kid in [Some("rsa-1"), None] {
        let token = sign(Algorithm::HS256, &secret, kid, &claims());
        assert_eq!(refusal(&store, &token), KeyError::BadSignature("HS256 is never accepted".to_owned()));
    }
    let der = jsonwebtoken::DecodingKey::from_rsa_pem(RSA_PUBLIC.as_bytes()).unwrap();
    let secret = EncodingKey::from_secret(der.try_get_as_bytes().unwrap());
    assert!(is_bad_signature(&refusal(&store, &sign(Algorithm::HS512, &secret, Some("rsa-1"), &claims()))));
}

#[test]
fn an_algorithm_not_on_the_allow_list_is_refused() {
    let ec = ec_key();
    let store = store_with(&ec);
    for alg in [Algorithm::RS384, Algorithm::RS512, Algorithm::PS256] {
        let token = sign(alg, &rsa_signer(), Some("rsa-1"), &claims());
        assert_eq!(refusal(&store, &token), KeyError::BadSignature(format!("{alg:?} is not allowed for this issuer")));
    }
    // An allowed algorithm that does not fit the key the `kid` names.
    let token = sign(Algorithm::ES256, &ec_signer(&ec), Some("rsa-1"), &claims());
    assert!(is_bad_signature(&refusal(&store, &token)));
    // An RSA signature presented as ES256 (and the reverse).
    let rsa = rsa_token(&claims());
    let (_, rest) = rsa.split_once('.').unwrap();
    let forged = format!("{}.{rest}", b64(br#"{"alg":"ES256","kid":"ec-1"}"#));
    assert!(is_bad_signature(&refusal(&store, &forged)));
    assert_eq!(
        refusal(&store, &assemble(&json!({"alg": "ES512"}), &claims(), b"x")),
        KeyError::BadSignature("unsupported algorithm".to_owned())
    );
}

#[test]
fn expired_token_is_refused() {
    let store = store_with(&ec_key());
    let claims = with(with(claims(), "exp", json!(now() - 100)), "nbf", json!(now() - 1000));
    assert_eq!(refusal(&store, &rsa_token(&claims)), KeyError::Expired);
}

#[test]
fn token_not_yet_valid_is_refused() {
    let store = store_with(&ec_key());
    let claims = with(claims(), "nbf", json!(now() + 100));
    assert_eq!(refusal(&store, &rsa_token(&claims)), KeyError::NotYetValid);
}

#[test]
fn exp_or_nbf_as_a_string_is_refused() {
    let store = store_with(&ec_key());
    let exp_text = with(claims(), "exp", json!((now() + 300).to_string()));
    assert!(is_invalid_claims(&refusal(&store, &rsa_token(&exp_text))));
    let nbf_text = with(claims(), "nbf", json!((now() - 10).to_string()));
    assert!(is_invalid_claims(&refusal(&store, &rsa_token(&nbf_text))));
}

#[test]
fn missing_registered_claims_are_refused() {
    let store = store_with(&ec_key());
    for claim in ["exp", "nbf", "aud"] {
        let error = refusal(&store, &rsa_token(&without(claims(), claim)));
        assert_eq!(error, KeyError::InvalidClaims(format!("missing or malformed `{claim}`")));
    }
    let error = refusal(&store, &rsa_token(&without(claims(), "iss")));
    assert_eq!(error, KeyError::InvalidClaims("missing `iss`".to_owned()));
}

#[test]
fn wrong_audience_is_refused() {
    let store = store_with(&ec_key());
    for aud in [json!("elsewhere"), json!(["elsewhere", "nowhere"]), json!([]), json!(7)] {
        let error = refusal(&store, &rsa_token(&with(claims(), "aud", aud.clone())));
        assert!(is_invalid_claims(&error), "{aud}: {error:?}");
    }
}

#[test]
fn wrong_issuer_is_refused() {
    let store = store_with(&ec_key());
    let token = rsa_token(&with(claims(), "iss", json!("https://evil.example.test")));
    assert_eq!(refusal(&store, &token), KeyError::InvalidClaims("unknown issuer".to_owned()));
    let token = rsa_token(&with(claims(), "iss", json!([ISSUER])));
    assert!(is_invalid_claims(&refusal(&store, &token)));
}

#[test]
fn unknown_or_hostile_kid_is_refused() {
    let store = store_with(&ec_key());
    for kid in ["rsa-2", "", "../../../../etc/passwd", "http://127.0.0.1:9/key", "rsa-1' OR '1'='1"] {
        let token = sign(Algorithm::RS256, &rsa_signer(), Some(kid), &claims());
        assert_eq!(
            refusal(&store, &token),
            KeyError::BadSignature("no configured key for this `kid` and algorithm".to_owned()),
            "kid {kid:?}"
        );
    }
}

#[test]
fn bad_signature_is_refused() {
    let ec = ec_key();
    let store = store_with(&ec);
    // The payload changed after signing.
    let token = rsa_token(&claims());
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged_claims = b64(with(claims(), "sub", json!("admin")).to_string().as_bytes());
    parts[1] = &forged_claims;
    assert_eq!(refusal(&store, &parts.join(".")), KeyError::BadSignature("signature does not verify".to_owned()));
    // A signature cut short, or from another key with the same `kid`.
    let truncated = &token[..token.len() - 4];
    assert!(is_bad_signature(&refusal(&store, truncated)));
    let other = sign(Algorithm::ES256, &ec_signer(&ec_key()), Some("ec-1"), &claims());
    assert!(is_bad_signature(&refusal(&store, &other)));
    let other = sign(Algorithm::ES256, &ec_signer(&ec_key()), None, &claims());
    assert!(is_bad_signature(&refusal(&store, &other)));
}

#[test]
fn keys_offered_by_the_token_are_ignored() {
    // The `jku` and `x5u` point at a listener that counts who connects: nobody may.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
    listener.set_nonblocking(true).expect("non-blocking");
    let at = listener.local_addr().expect("its address");
    let store = store_with(&ec_key());
    let attacker = ec_key();
    let signer = ec_signer(&attacker);
    let mut header = Header::new(Algorithm::ES256);
    header.jku = Some(format!("http://{at}/jwks.json"));
    header.x5u = Some(format!("http://{at}/cert.pem"));
    header.jwk = Some(Jwk::from_encoding_key(&signer, Algorithm::ES256).expect("jwk"));
    let token = jsonwebtoken::encode(&header, &claims(), &signer).expect("signed");
    assert_eq!(refusal(&store, &token), KeyError::BadSignature("signature does not verify".to_owned()));
    header.kid = Some("attacker".to_owned());
    let token = jsonwebtoken::encode(&header, &claims(), &signer).expect("signed");
    assert!(is_bad_signature(&refusal(&store, &token)));
    std::thread::sleep(std::time::Duration::from_millis(100));
    let connections = std::iter::from_fn(|| listener.accept().ok()).count();
    assert_eq!(connections, 0, "the gateway fetched what a token pointed at");
}

#[test]
fn critical_header_extensions_are_refused() {
    let store = store_with(&ec_key());
    let token = assemble(&json!({"alg": "RS256", "kid": "rsa-1", "crit": ["b64"], "b64": false}), &claims(), b"x");
    assert!(is_bad_signature(&refusal(&store, &token)));
}

#[test]
fn malformed_tokens_are_unknown() {
    let store = store_with(&ec_key());
    let valid = rsa_token(&claims());
    let too_long = format!("{valid}{}", "A".repeat(20 * 1024));
    let cases = [
        "".to_owned(),
        "abc".to_owned(),
        "a.b".to_owned(),
        format!("{valid}.extra"),
        format!("!!!.{}", valid.split_once('.').unwrap().1),
        assemble(&json!({"alg": "RS256"}), &json!("not an object"), b"x"),
        format!("{}.bm90IGpzb24.x", b64(br#"{"alg":"RS256"}"#)),
        format!("{}.{}", b64(b"{}"), valid.split_once('.').unwrap().1),
        too_long,
    ];
    for token in cases {
        assert_eq!(refusal(&store, &token), KeyError::Unknown, "{token:.40}");
    }
}

// ---- JWT: the cache ----

#[test]
fn verified_tokens_are_cached_until_they_expire() {
    let store = store_with(&ec_key());
    let claims = claims();
    let token = rsa_token(&claims);
    let first = store.verify_jwt(&token).expect("valid");
    let second = store.verify_jwt(&token).expect("cached");
    assert!(Arc::ptr_eq(&first, &second), "the second verification was not a cache hit");
    assert_eq!(store.tokens.len(), 1);

    // Past `exp` and the leeway, the cached token is refused and dropped.
    let exp = claims["exp"].as_u64().unwrap();
    assert!(store.verify_jwt_at(&token, exp + 30).is_ok());
    assert_eq!(store.verify_jwt_at(&token, exp + 31).err(), Some(KeyError::Expired));
    assert_eq!(store.tokens.len(), 0);
    // Verified afresh (against the real clock) it is accepted and cached again.
    let third = store.verify_jwt(&token).expect("valid");
    assert!(!Arc::ptr_eq(&first, &third));
    assert_eq!(store.tokens.len(), 1);
}

#[test]
fn refused_tokens_are_not_cached() {
    let store = store_with(&ec_key());
    let expired = rsa_token(&with(claims(), "exp", json!(now() - 100)));
    for _ in 0..3 {
        assert_eq!(refusal(&store, &expired), KeyError::Expired);
    }
    let forged = sign(Algorithm::ES256, &ec_signer(&ec_key()), None, &claims());
    assert!(is_bad_signature(&refusal(&store, &forged)));
    assert_eq!(store.tokens.len(), 0);
}

// ---- configuration problems ----

#[test]
fn hmac_none_and_unknown_algorithms_are_problems() {
    let config = issuer(&["RS256", "HS256", "none", "RS999", "ES256"], vec![pem_key(None, RSA_PUBLIC)]);
    let problems = problems_of(&[config], Path::new("."));
    let paths: Vec<&str> = problems.iter().map(|problem| problem.path.as_str()).collect();
    assert_eq!(paths, ["jwt_issuers[0].algorithms[1]", "jwt_issuers[0].algorithms[2]", "jwt_issuers[0].algorithms[3]"]);
    assert!(problems[0].reason.contains("never accepted"));
}

#[test]
fn unusable_pem_keys_are_problems() {
    let ec = ec_key();
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("P-384 key");
    let garbage = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
    let keys = vec![
        pem_key(None, RSA_PUBLIC),
        pem_key(None, RSA_PRIVATE),
        pem_key(None, &ec.serialize_pem()),
        pem_key(None, garbage),
        pem_key(None, "not a key"),
        // Fits ES384, which the issuer does not allow.
        pem_key(None, &p384.public_key_pem()),
    ];
    let problems = problems_of(&[issuer(&["RS256", "ES256"], keys)], Path::new("."));
    let paths: Vec<&str> = problems.iter().map(|problem| problem.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "jwt_issuers[0].keys[1].pem",
            "jwt_issuers[0].keys[2].pem",
            "jwt_issuers[0].keys[3].pem",
            "jwt_issuers[0].keys[4].pem",
            "jwt_issuers[0].keys[5].pem",
        ],
        "{problems:?}"
    );
    assert!(problems[0].reason.contains("private key"));
    assert!(problems[4].reason.contains("P-384"));
}

#[test]
fn pem_files_are_read_from_the_base_dir() {
    let dir = temp_dir("pem-files");
    std::fs::write(dir.join("rsa.pem"), RSA_PUBLIC).unwrap();
    let key = |file: &str| JwtKey { kid: None, pem: None, pem_file: Some(PathBuf::from(file)) };
    let config = issuer(&["RS256"], vec![key("rsa.pem")]);
    let store = KeyStore::from_config(&[], &[config], &dir).expect("valid");
    assert!(store.verify_jwt(&rsa_token(&claims())).is_ok());

    let config = issuer(&["RS256"], vec![key("rsa.pem"), key("missing.pem")]);
    let problems = problems_of(&[config], &dir);
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].path, "jwt_issuers[0].keys[1].pem_file");
    assert!(problems[0].reason.contains("missing.pem"));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn jwks_keys_are_used_and_non_signature_keys_skipped() {
    let ec = ec_key();
    let rsa_der = jsonwebtoken::DecodingKey::from_rsa_pem(RSA_PUBLIC.as_bytes()).unwrap();
    let (n, e) =
        (jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.key_utils.rsa_pub_components_from_public_key)(rsa_der.try_get_as_bytes().unwrap())
            .unwrap();
    let jwks = json!({"keys": [
        ec_jwk(&ec, "jwks-ec"),
        {"kty": "RSA", "n": b64(&n), "e": b64(&e), "kid": "jwks-rsa"},
        {"kty": "RSA", "n": b64(&n), "e": b64(&e), "kid": "enc", "use": "enc"},
        {"kty": "RSA", "n": b64(&n), "e": b64(&e), "kid": "oaep", "alg": "RSA-OAEP"},
        {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA", "kid": "p521"},
    ]});
    let mut config = issuer(&["RS256", "ES256"], Vec::new());
    config.jwks = Some(jwks.clone());
    let store = KeyStore::from_config(&[], &[config], Path::new(".")).expect("valid");
    assert!(store.verify_jwt(&sign(Algorithm::ES256, &ec_signer(&ec), Some("jwks-ec"), &claims())).is_ok());
    assert!(store.verify_jwt(&sign(Algorithm::RS256, &rsa_signer(), Some("jwks-rsa"), &claims())).is_ok());
    // The encryption keys are not verification keys, even though they hold the same RSA key.
    for kid in ["enc", "oaep", "p521"] {
        let token = sign(Algorithm::RS256, &rsa_signer(), Some(kid), &claims());
        assert!(is_bad_signature(&refusal(&store, &token)), "{kid}");
    }

    let dir = temp_dir("jwks-file");
    std::fs::write(dir.join("jwks.json"), jwks.to_string()).unwrap();
    let mut config = issuer(&["ES256"], Vec::new());
    config.jwks_file = Some(PathBuf::from("jwks.json"));
    let store = KeyStore::from_config(&[], &[config], &dir).expect("valid");
    assert!(store.verify_jwt(&sign(Algorithm::ES256, &ec_signer(&ec), None, &claims())).is_ok());
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn bad_jwks_keys_are_problems() {
    let ec = ec_key();
    let short_x = {
        let mut jwk = ec_jwk(&ec, "short");
        jwk["x"] = json!(b64(&[1; 31]));
        jwk
    };
    let jwks = json!({"keys": [
        ec_jwk(&ec, "good"),
        {"kty": "oct", "k": b64(b"a shared secret"), "kid": "hmac"},
        {"kty": "RSA", "n": b64(&[0xC3; 128]), "e": "AQAB", "kid": "rsa-1024"},
        short_x,
        {"kty": "RSA", "n": "not base64!", "e": "AQAB"},
        {"kty": "EC", "crv": "P-256", "x": b64(&[0; 32]), "y": b64(&[0; 32]), "kid": "not-on-curve"},
        {"kty": "RSA", "n": b64(&[0xC3; 256]), "e": "AQAB", "alg": "ES256"},
        {"kty": "RSA", "n": b64(&[0xC3; 256]), "e": "AQAB", "alg": "HS256"},
    ]});
    let mut config = issuer(&["RS256", "ES256"], Vec::new());
    config.jwks = Some(jwks);
    let problems = problems_of(&[config], Path::new("."));
    let paths: Vec<&str> = problems.iter().map(|problem| problem.path.as_str()).collect();
    let expected: Vec<String> = (1..=7).map(|k| format!("jwt_issuers[0].jwks.keys[{k}]")).collect();
    assert_eq!(paths, expected, "{problems:?}");
    assert!(problems[1].reason.contains("1024 bits"));

    let mut config = issuer(&["RS256"], Vec::new());
    config.jwks = Some(json!({"no": "keys"}));
    assert_eq!(problems_of(&[config], Path::new("."))[0].path, "jwt_issuers[0].jwks");
    let mut config = issuer(&["RS256"], Vec::new());
    config.jwks_file = Some(PathBuf::from("/nonexistent/portico/jwks.json"));
    assert_eq!(problems_of(&[config], Path::new("."))[0].path, "jwt_issuers[0].jwks_file");
}

#[test]
fn an_issuer_without_usable_keys_or_configured_twice_is_a_problem() {
    let ec = ec_key();
    let mut config = issuer(&["RS256"], Vec::new());
    config.jwks = Some(json!({"keys": [ec_jwk(&ec, "ec")]}));
    let problems = problems_of(&[config], Path::new("."));
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].path, "jwt_issuers[0]");

    let twice = [issuer(&["RS256"], vec![pem_key(None, RSA_PUBLIC)]), issuer(&["RS256"], vec![pem_key(None, RSA_PUBLIC)])];
    let problems = problems_of(&twice, Path::new("."));
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].path, "jwt_issuers[1].issuer");
}

// ---- Control-plane features: HMAC digests, subscriptions, revocation ----

#[test]
fn hmac_digests_need_the_secret() {
    use hmac::Mac;
    let secret = "00112233445566778899aabbccddeeff";
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&crate::contract::hex::decode(secret).unwrap()).unwrap();
    mac.update(b"pk_live_key");
    let digest: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let mut config = crate::contract::environment::Environment { consumers: vec![consumer("shop", &[], &[digest])], ..Default::default() };
    config.api_key_hmac_secret = Some(secret.to_owned());
    let store = KeyStore::for_gateway(&config, Path::new("."), &super::Providers::default()).expect("valid");
    assert!(store.lookup_api_key("pk_live_key").is_ok());
    assert_eq!(store.lookup_api_key("pk_other").unwrap_err(), KeyError::Unknown);
    // The same digest read as a plain sha256 matches nothing.
    config.api_key_hmac_secret = None;
    let plain = KeyStore::for_gateway(&config, Path::new("."), &super::Providers::default()).expect("valid");
    assert_eq!(plain.lookup_api_key("pk_live_key").unwrap_err(), KeyError::Unknown);
}

#[test]
fn revoked_api_keys_are_refused_once_their_revocations_arrive() {
    use sha2::Digest;
    let hex = |key: &str| -> String { sha2::Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect() };
    let digests = vec![hex("key-shop-0001"), hex("key-shop-0002")];
    let mut config = crate::contract::environment::Environment { consumers: vec![consumer("shop", &[], &digests)], ..Default::default() };
    let store = KeyStore::for_gateway(&config, Path::new("."), &super::Providers::default()).expect("valid");
    assert!(store.lookup_api_key("key-shop-0001").is_ok());
    config.revoked_api_keys = vec![digests[0].clone()];
    store.set_revocations(&config);
    assert_eq!(store.lookup_api_key("key-shop-0001").unwrap_err(), KeyError::Unknown);
    assert!(store.lookup_api_key("key-shop-0002").is_ok(), "only the revoked key");
    // A store built with them refuses it from the start.
    let built = KeyStore::for_gateway(&config, Path::new("."), &super::Providers::default()).expect("valid");
    assert_eq!(built.lookup_api_key("key-shop-0001").unwrap_err(), KeyError::Unknown);
}

#[test]
fn subscriptions_give_the_tier_of_the_api_called() {
    let mut shop = consumer("shop", &["key-shop-0001"], &[]);
    shop.subscriptions = Some([("pets@v1".to_owned(), "Gold".to_owned())].into());
    let store = KeyStore::from_config(&[shop], &[], Path::new(".")).expect("valid");
    let identity = store.lookup_api_key("key-shop-0001").unwrap();
    let pets = identity.for_api("pets", "v1");
    assert_eq!((pets.subscription.as_deref(), pets.tier.as_deref()), (Some("pets@v1"), Some("Gold")));
    let orders = identity.for_api("orders", "v1");
    assert_eq!(orders.subscription, None);
    // Without a subscription list, nothing changes.
    let open = KeyStore::from_config(&[consumer("open", &["key-open-0001"], &[])], &[], Path::new(".")).unwrap();
    let identity = open.lookup_api_key("key-open-0001").unwrap();
    assert_eq!(identity.for_api("pets", "v1"), identity);
}

#[test]
fn revoked_tokens_are_refused_even_from_the_cache() {
    let claims = with(claims(), "jti", json!("token-1"));
    let token = rsa_token(&claims);
    let mut config = crate::contract::environment::Environment {
        jwt_issuers: vec![issuer(&["RS256"], vec![pem_key(None, RSA_PUBLIC)])],
        ..Default::default()
    };
    let store = KeyStore::for_gateway(&config, Path::new("."), &super::Providers::default()).unwrap();
    assert!(store.verify_jwt(&token).is_ok());
    config.revoked_tokens = vec![crate::contract::environment::RevokedToken { jti: "token-1".into(), expires_at: u64::MAX }];
    let revoked = KeyStore::for_gateway(&config, Path::new("."), &super::Providers::default()).unwrap();
    assert_eq!(revoked.verify_jwt(&token).unwrap_err(), KeyError::Revoked);
    assert_eq!(revoked.verify_jwt(&token).unwrap_err(), KeyError::Revoked, "and again, from the cache");
}

#[test]
fn an_applications_tokens_issued_before_its_cut_off_are_refused() {
    let issued = now() - 10;
    let old = rsa_token(&with(with(claims(), "azp", json!("app-1")), "iat", json!(issued)));
    let fresh = rsa_token(&with(with(claims(), "azp", json!("app-1")), "iat", json!(issued + 5)));
    let undated = rsa_token(&without(with(claims(), "azp", json!("app-1")), "iat"));
    let other = rsa_token(&with(with(claims(), "azp", json!("app-2")), "iat", json!(issued)));
    let mut config = crate::contract::environment::Environment {
        jwt_issuers: vec![issuer(&["RS256"], vec![pem_key(None, RSA_PUBLIC)])],
        ..Default::default()
    };
    config.revoked_before.insert("app-1".into(), issued + 5);
    let store = KeyStore::for_gateway(&config, Path::new("."), &super::Providers::default()).unwrap();
    assert_eq!(store.verify_jwt(&old).unwrap_err(), KeyError::Revoked);
    assert_eq!(store.verify_jwt(&undated).unwrap_err(), KeyError::Revoked, "no `iat`: it cannot be shown to be newer");
    assert!(store.verify_jwt(&fresh).is_ok(), "issued at the cut-off second");
    assert!(store.verify_jwt(&other).is_ok(), "another application's token");
}

#[test]
fn an_issuer_can_require_the_access_token_typ_and_a_jti() {
    let strict = JwtIssuer { typ: Some("at+jwt".into()), require_jti: true, ..issuer(&["RS256"], vec![pem_key(None, RSA_PUBLIC)]) };
    let store = KeyStore::from_config(&[], &[strict], Path::new(".")).unwrap();
    let typed = |typ: Option<&str>, claims: &Value| {
        let mut header = Header::new(Algorithm::RS256);
        header.typ = typ.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &rsa_signer()).expect("signed")
    };
    let claims = with(claims(), "jti", json!("j-1"));
    for accepted in ["at+jwt", "AT+JWT", "application/at+jwt"] {
        assert!(store.verify_jwt(&typed(Some(accepted), &claims)).is_ok(), "{accepted}");
    }
    for refused in [None, Some("JWT"), Some("id+jwt")] {
        let error = store.verify_jwt(&typed(refused, &claims)).unwrap_err();
        assert_eq!(error, KeyError::InvalidClaims("the header `typ` must be `at+jwt`".into()), "{refused:?}");
    }
    for claims in [without(claims.clone(), "jti"), with(claims.clone(), "jti", json!("")), with(claims, "jti", json!(7))] {
        assert_eq!(store.verify_jwt(&typed(Some("at+jwt"), &claims)).unwrap_err(), KeyError::InvalidClaims("missing `jti`".into()));
    }
}
