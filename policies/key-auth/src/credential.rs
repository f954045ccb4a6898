//! Finding a credential in a request and answering a refusal: the host-free part of
//! key-auth.

use portico_policy_sdk::keys::KeyError;
use portico_policy_sdk::{ImmediateResponse, problem};

use crate::config::Settings;

/// How a credential was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// An API key, checked with `lookup-api-key`.
    ApiKey,
    /// A JWT, checked with `verify-jwt`.
    Jwt,
    /// The connection's client certificate, checked with `lookup-client-certificate`.
    ClientCertificate,
}

impl Method {
    /// The name used in logs (and in `identity.method` by the host).
    pub fn name(self) -> &'static str {
        match self {
            Method::ApiKey => "api-key",
            Method::Jwt => "jwt",
            Method::ClientCertificate => "client-certificate",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Method::ApiKey => "The API key",
            Method::Jwt => "The token",
            Method::ClientCertificate => "The client certificate",
        }
    }
}

/// Why a request is not let through.
#[derive(Debug)]
pub enum Refusal {
    /// No credential in any of the accepted places.
    Missing,
    /// A credential was given and the host refused it.
    Rejected(Method, KeyError),
    /// The caller lacks scopes: every scope the route requires, and those it lacks.
    InsufficientScope {
        /// What the route requires.
        required: Vec<String>,
        /// What the caller lacks of it.
        missing: Vec<String>,
    },
    /// The caller's application is not subscribed to this API.
    NotSubscribed,
}

/// The token of an `Authorization`-style `Bearer <token>` value.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once([' ', '\t'])?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The JWT in the value of `header`: `Bearer <token>`, or for a header other than
/// `authorization` (which has other schemes) also a bare token.
pub fn jwt_in_header<'a>(header: &str, value: &'a str) -> Option<&'a str> {
    if let Some(token) = bearer_token(value) {
        return Some(token);
    }
    let value = value.trim();
    let bare = header != "authorization" && !value.is_empty() && !value.contains([' ', '\t']);
    bare.then_some(value)
}

/// `query` without any parameter named `name` (names compared percent-decoded), or `None`
/// when nothing is left.
pub fn query_without(query: &str, name: &str) -> Option<String> {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(key, _)| key);
            percent_decode(key) != name
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

/// Decodes `%XX` escapes and `+` (a space in form encoding); malformed escapes stay as they
/// are.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        let escaped = match (byte, bytes.get(index + 1..index + 3)) {
            (b'%', Some(&[high, low])) => hex(high).zip(hex(low)).map(|(h, l)| h * 16 + l),
            _ => None,
        };
        match escaped {
            Some(value) => {
                decoded.push(value);
                index += 3;
            }
            None => {
                decoded.push(if byte == b'+' { b' ' } else { byte });
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

fn hex(digit: u8) -> Option<u8> {
    char::from(digit).to_digit(16).and_then(|value| u8::try_from(value).ok())
}

/// The required scopes that `granted` lacks, in the configured order.
pub fn missing_scopes(required: &[String], granted: &[String]) -> Vec<String> {
    required.iter().filter(|scope| !granted.contains(scope)).cloned().collect()
}

/// A short, loggable name for why the host refused a credential.
pub fn reason(error: &KeyError) -> &'static str {
    match error {
        KeyError::Unknown => "unknown",
        KeyError::BadSignature(_) => "bad-signature",
        KeyError::Expired => "expired",
        KeyError::NotYetValid => "not-yet-valid",
        KeyError::InvalidClaims(_) => "invalid-claims",
        KeyError::Revoked => "revoked",
    }
}

/// The 401 or 403 problem response for `refusal`, with its `WWW-Authenticate` challenge.
/// Nothing the client sent is echoed.
pub fn refusal_response(settings: &Settings, refusal: &Refusal) -> ImmediateResponse {
    let realm = &settings.realm;
    match refusal {
        Refusal::Missing => {
            problem(401, "Unauthorized", &missing_detail(settings)).header("www-authenticate", format!("Bearer realm=\"{realm}\""))
        }
        Refusal::Rejected(method, error) => problem(401, "Unauthorized", &rejected_detail(*method, error))
            .header("www-authenticate", format!("Bearer realm=\"{realm}\", error=\"invalid_token\"")),
        Refusal::NotSubscribed => {
            problem(403, "Forbidden", "The application is not subscribed to this API (or its subscription is not active).")
        }
        Refusal::InsufficientScope { required, missing } => {
            let detail = format!("The credential lacks the required scope(s): {}.", missing.join(", "));
            let scope = required.join(" ");
            problem(403, "Forbidden", &detail)
                .header("www-authenticate", format!("Bearer realm=\"{realm}\", error=\"insufficient_scope\", scope=\"{scope}\""))
        }
    }
}

fn missing_detail(settings: &Settings) -> String {
    let mut api_key_places = Vec::new();
    if let Some(header) = &settings.api_key_header {
        api_key_places.push(format!("the `{header}` header"));
    }
    if let Some(query) = &settings.api_key_query {
        api_key_places.push(format!("the `{query}` query parameter"));
    }
    let mut ways = Vec::new();
    if !api_key_places.is_empty() {
        ways.push(format!("an API key in {}", api_key_places.join(" or ")));
    }
    if let Some(header) = &settings.jwt_header {
        ways.push(format!("a Bearer token in the `{header}` header"));
    }
    if settings.client_certificate {
        ways.push("a client certificate registered for the application (mutual TLS)".to_owned());
    }
    format!("No credentials were sent; send {}.", ways.join(", or "))
}

fn rejected_detail(method: Method, error: &KeyError) -> String {
    let noun = method.noun();
    match error {
        KeyError::Unknown => match method {
            Method::ApiKey => "The API key is not valid.".to_owned(),
            Method::Jwt => "The token is not known or not well formed.".to_owned(),
            Method::ClientCertificate => "The client certificate is not registered for any application.".to_owned(),
        },
        KeyError::BadSignature(_) => format!("{noun}'s signature does not verify."),
        KeyError::Expired => format!("{noun} has expired."),
        KeyError::NotYetValid => format!("{noun} is not valid yet."),
        KeyError::InvalidClaims(why) => format!("{noun}'s claims are not accepted: {why}."),
        KeyError::Revoked => format!("{noun} has been revoked."),
    }
}

/// The value without surrounding white space, if anything is left; copied only when trimmed.
pub fn non_empty(value: Option<String>) -> Option<String> {
    let value = value?;
    match value.trim() {
        "" => None,
        trimmed if trimmed.len() == value.len() => Some(value),
        trimmed => Some(trimmed.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::{Method, Refusal, bearer_token, jwt_in_header, missing_scopes, non_empty, percent_decode, query_without, refusal_response};
    use crate::config::{Config, Settings};
    use portico_policy_sdk::keys::KeyError;
    use portico_policy_sdk::parse_config;

    fn settings(json: &str) -> Settings {
        Settings::from_config(parse_config::<Config>(json).unwrap()).unwrap()
    }

    fn header<'a>(response: &'a portico_policy_sdk::ImmediateResponse, name: &str) -> &'a str {
        response.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str()).unwrap()
    }

    fn detail(response: &portico_policy_sdk::ImmediateResponse) -> String {
        let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        body["detail"].as_str().unwrap().to_owned()
    }

    #[test]
    fn credentials_are_trimmed_and_empty_ones_are_none() {
        let trimmed = |value: &str| non_empty(Some(value.to_owned()));
        assert_eq!(trimmed("key-1").as_deref(), Some("key-1"));
        assert_eq!(trimmed(" key-1\t").as_deref(), Some("key-1"));
        assert_eq!(trimmed(" \t "), None);
        assert_eq!(trimmed(""), None);
        assert_eq!(non_empty(None), None);
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer_token("Bearer abc.def.ghi"), Some("abc.def.ghi"));
        assert_eq!(bearer_token("bearer   abc "), Some("abc"));
        assert_eq!(bearer_token("Basic dXNlcg=="), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer   "), None);
        assert_eq!(bearer_token(""), None);
    }

    #[test]
    fn jwt_headers() {
        assert_eq!(jwt_in_header("authorization", "Bearer t"), Some("t"));
        assert_eq!(jwt_in_header("authorization", "t"), None);
        assert_eq!(jwt_in_header("x-jwt", "t"), Some("t"));
        assert_eq!(jwt_in_header("x-jwt", "Bearer t"), Some("t"));
        assert_eq!(jwt_in_header("x-jwt", "a b c"), None);
        assert_eq!(jwt_in_header("x-jwt", " "), None);
    }

    #[test]
    fn query_parameter_removal() {
        assert_eq!(query_without("a=1&apikey=s3cr3t&b=2", "apikey").as_deref(), Some("a=1&b=2"));
        assert_eq!(query_without("apikey=s3cr3t", "apikey"), None);
        assert_eq!(query_without("api%6Bey=x&apikey&c", "apikey").as_deref(), Some("c"));
        assert_eq!(query_without("apikeys=1&&x=%ZZ", "apikey").as_deref(), Some("apikeys=1&x=%ZZ"));
        assert_eq!(query_without("", "apikey"), None);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
        assert_eq!(percent_decode("%FF"), "\u{FFFD}");
        assert_eq!(percent_decode("é%C3%A9"), "éé");
    }

    #[test]
    fn scopes() {
        let required = vec!["read".to_owned(), "write".to_owned()];
        assert_eq!(missing_scopes(&required, &["write".to_owned()]), ["read"]);
        assert!(missing_scopes(&required, &["write".to_owned(), "read".to_owned()]).is_empty());
        assert!(missing_scopes(&[], &[]).is_empty());
    }

    #[test]
    fn missing_credentials_list_the_accepted_places() {
        let response = refusal_response(&settings("{}"), &Refusal::Missing);
        assert_eq!(response.status, 401);
        assert_eq!(header(&response, "www-authenticate"), "Bearer realm=\"portico\"");
        assert_eq!(header(&response, "content-type"), "application/problem+json");
        assert_eq!(
            detail(&response),
            "No credentials were sent; send an API key in the `apikey` header, or a Bearer \
             token in the `authorization` header."
        );
        let response = refusal_response(&settings(r#"{"api_key": {"query": "k"}, "jwt": false, "realm": "pets"}"#), &Refusal::Missing);
        assert_eq!(header(&response, "www-authenticate"), "Bearer realm=\"pets\"");
        assert_eq!(
            detail(&response),
            "No credentials were sent; send an API key in the `apikey` header or the `k` query \
             parameter."
        );
        let response = refusal_response(&settings(r#"{"jwt": false, "client_certificate": true}"#), &Refusal::Missing);
        assert_eq!(
            detail(&response),
            "No credentials were sent; send an API key in the `apikey` header, or a client \
             certificate registered for the application (mutual TLS)."
        );
    }

    #[test]
    fn rejected_credentials_are_invalid_tokens() {
        let settings = settings("{}");
        let cases = [
            (Method::ApiKey, KeyError::Unknown, "The API key is not valid."),
            (Method::Jwt, KeyError::Unknown, "The token is not known or not well formed."),
            (Method::Jwt, KeyError::BadSignature("alg".to_owned()), "The token's signature does not verify."),
            (Method::Jwt, KeyError::Expired, "The token has expired."),
            (Method::ApiKey, KeyError::Expired, "The API key has expired."),
            (Method::Jwt, KeyError::NotYetValid, "The token is not valid yet."),
            (
                Method::Jwt,
                KeyError::InvalidClaims("aud does not match".to_owned()),
                "The token's claims are not accepted: aud does not match.",
            ),
            (Method::ApiKey, KeyError::Revoked, "The API key has been revoked."),
            (Method::ClientCertificate, KeyError::Unknown, "The client certificate is not registered for any application."),
        ];
        for (method, error, expected) in cases {
            let response = refusal_response(&settings, &Refusal::Rejected(method, error));
            assert_eq!(response.status, 401);
            assert_eq!(header(&response, "www-authenticate"), "Bearer realm=\"portico\", error=\"invalid_token\"");
            assert_eq!(detail(&response), expected);
        }
    }

    #[test]
    fn insufficient_scope_is_forbidden() {
        let settings = settings(r#"{"required_scopes": ["read", "write"]}"#);
        let refusal =
            Refusal::InsufficientScope { required: vec!["read".to_owned(), "write".to_owned()], missing: vec!["write".to_owned()] };
        let response = refusal_response(&settings, &refusal);
        assert_eq!(response.status, 403);
        assert_eq!(header(&response, "www-authenticate"), "Bearer realm=\"portico\", error=\"insufficient_scope\", scope=\"read write\"");
        assert_eq!(detail(&response), "The credential lacks the required scope(s): write.");
    }
}
