//! The key-auth configuration as written in JSON, and its validated form.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use portico_policy_sdk::http::is_token;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// The JSON configuration; `{}` accepts an API key in the `apikey` header or a Bearer JWT.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where to look for an API key, or `false` to accept none.
    #[serde(default = "on", deserialize_with = "switch")]
    pub api_key: Option<ApiKeyConfig>,
    /// Where to look for a JWT, or `false` to accept none.
    #[serde(default = "on", deserialize_with = "switch")]
    pub jwt: Option<JwtConfig>,
    /// Accept the client certificate of a mutual-TLS connection (a listener with
    /// `client_ca`) registered for an application, when the request carries no other
    /// credential.
    #[serde(default)]
    pub client_certificate: bool,
    /// Remove the credential before the request goes upstream.
    #[serde(default = "yes")]
    pub hide_credentials: bool,
    /// The realm named in `WWW-Authenticate` challenges.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// Scopes the caller must all have.
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// More scopes the caller must all have, by operation (`GET /pets/{id}`, as the
    /// gateway names the operation a request was routed to).
    #[serde(default)]
    pub operation_scopes: BTreeMap<String, Vec<String>>,
    /// Refuse (403) callers whose credential is not subscribed to the API being called.
    #[serde(default)]
    pub require_subscription: bool,
}

/// Where an API key is looked for: a header, then a query parameter.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Header name; `null` for none.
    #[serde(default = "default_api_key_header")]
    pub header: Option<String>,
    /// Query parameter name; none unless given, since URLs end up in logs.
    #[serde(default)]
    pub query: Option<String>,
}

impl Default for ApiKeyConfig {
    fn default() -> Self {
        ApiKeyConfig { header: default_api_key_header(), query: None }
    }
}

/// Where a JWT is looked for.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Header carrying `Bearer <token>` (for a header other than `authorization`, a bare
    /// token is accepted too).
    #[serde(default = "default_jwt_header")]
    pub header: String,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig { header: default_jwt_header() }
    }
}

fn on<T: Default>() -> Option<T> {
    Some(T::default())
}

fn yes() -> bool {
    true
}

fn default_realm() -> String {
    "portico".to_owned()
}

fn default_api_key_header() -> Option<String> {
    Some("apikey".to_owned())
}

fn default_jwt_header() -> String {
    "authorization".to_owned()
}

/// Reads a section that is either an object of settings, `true` for the defaults or
/// `false` for disabled.
fn switch<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    struct Switch<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de> + Default> Visitor<'de> for Switch<T> {
        type Value = Option<T>;

        fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
            formatter.write_str("an object, or false to disable")
        }

        fn visit_bool<E: de::Error>(self, enabled: bool) -> Result<Option<T>, E> {
            Ok(enabled.then(T::default))
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<T>, A::Error> {
            T::deserialize(MapAccessDeserializer::new(map)).map(Some)
        }
    }

    deserializer.deserialize_any(Switch(PhantomData))
}

/// The validated settings the policy runs with; header names are lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The API-key header, if API keys are accepted there.
    pub api_key_header: Option<String>,
    /// The API-key query parameter, if API keys are accepted there.
    pub api_key_query: Option<String>,
    /// The JWT header, if JWTs are accepted.
    pub jwt_header: Option<String>,
    /// Whether a registered client certificate is accepted.
    pub client_certificate: bool,
    /// Remove the credential before forwarding.
    pub hide_credentials: bool,
    /// The challenge's realm; printable ASCII without `"` or `\`.
    pub realm: String,
    /// Scopes the caller must all have.
    pub required_scopes: Vec<String>,
    /// More scopes the caller must all have, by operation.
    pub operation_scopes: BTreeMap<String, Vec<String>>,
    /// Refuse callers with no subscription to the API.
    pub require_subscription: bool,
}

impl Settings {
    /// Validates `config`; the error names the field that is wrong.
    pub fn from_config(config: Config) -> Result<Settings, String> {
        if config.api_key.is_none() && config.jwt.is_none() && !config.client_certificate {
            return Err("`api_key`, `jwt` and `client_certificate` are all false: enable at least one".to_owned());
        }
        let (api_key_header, api_key_query) = match config.api_key {
            Some(api_key) => {
                if api_key.header.is_none() && api_key.query.is_none() {
                    return Err("`api_key`: set `header`, `query` or both".to_owned());
                }
                let header = api_key.header.map(|name| header_name("api_key.header", name)).transpose()?;
                if api_key.query.as_deref() == Some("") {
                    return Err("`api_key.query` must not be empty".to_owned());
                }
                (header, api_key.query)
            }
            None => (None, None),
        };
        let jwt_header = config.jwt.map(|jwt| header_name("jwt.header", jwt.header)).transpose()?;
        if !is_quotable(&config.realm) {
            return Err("`realm` must be printable ASCII without `\"` or `\\`, and not empty".to_owned());
        }
        for (index, scope) in config.required_scopes.iter().enumerate() {
            if !is_quotable(scope) || scope.contains(' ') {
                return Err(format!("`required_scopes[{index}]` must be printable ASCII without spaces, `\"` or `\\`"));
            }
        }
        for (operation, scopes) in &config.operation_scopes {
            for (index, scope) in scopes.iter().enumerate() {
                if !is_quotable(scope) || scope.contains(' ') {
                    return Err(format!("`operation_scopes.{operation}[{index}]` must be printable ASCII without spaces, `\"` or `\\`"));
                }
            }
        }
        Ok(Settings {
            api_key_header,
            api_key_query,
            jwt_header,
            client_certificate: config.client_certificate,
            hide_credentials: config.hide_credentials,
            realm: config.realm,
            required_scopes: config.required_scopes,
            operation_scopes: config.operation_scopes,
            require_subscription: config.require_subscription,
        })
    }
}

fn header_name(field: &str, name: String) -> Result<String, String> {
    if is_token(&name) { Ok(name.to_ascii_lowercase()) } else { Err(format!("`{field}`: `{name}` is not a valid header name")) }
}

/// Whether `text` can go into a quoted-string of a challenge without escaping.
fn is_quotable(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|byte| (b' '..=b'~').contains(&byte) && byte != b'"' && byte != b'\\')
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{Config, Settings};
    use portico_policy_sdk::parse_config;

    fn settings(json: &str) -> Result<Settings, String> {
        Settings::from_config(parse_config::<Config>(json)?)
    }

    #[test]
    fn empty_config_accepts_header_key_and_bearer_jwt() {
        let settings = settings("{}").unwrap();
        assert_eq!(
            settings,
            Settings {
                api_key_header: Some("apikey".to_owned()),
                api_key_query: None,
                jwt_header: Some("authorization".to_owned()),
                client_certificate: false,
                hide_credentials: true,
                realm: "portico".to_owned(),
                required_scopes: Vec::new(),
                operation_scopes: BTreeMap::new(),
                require_subscription: false,
            }
        );
    }

    #[test]
    fn full_config() {
        let settings = settings(
            r#"{"api_key": {"header": "X-Api-Key", "query": "key"}, "jwt": false,
                "hide_credentials": false, "realm": "pets", "required_scopes": ["read"],
                "operation_scopes": {"POST /pets": ["pets:write"]}}"#,
        )
        .unwrap();
        assert_eq!(settings.api_key_header.as_deref(), Some("x-api-key"));
        assert_eq!(settings.api_key_query.as_deref(), Some("key"));
        assert_eq!(settings.jwt_header, None);
        assert!(!settings.hide_credentials);
        assert_eq!(settings.realm, "pets");
        assert_eq!(settings.required_scopes, ["read"]);
        assert_eq!(settings.operation_scopes["POST /pets"], ["pets:write"]);
        let certificates_only = self::settings(r#"{"api_key": false, "jwt": false, "client_certificate": true}"#).unwrap();
        assert!(certificates_only.client_certificate);
        assert_eq!((certificates_only.api_key_header, certificates_only.jwt_header), (None, None));
    }

    #[test]
    fn sections_can_be_true_or_partial() {
        let partial = settings(r#"{"api_key": {"query": "k"}, "jwt": true}"#).unwrap();
        assert_eq!(partial.api_key_header.as_deref(), Some("apikey"));
        assert_eq!(partial.api_key_query.as_deref(), Some("k"));
        assert_eq!(partial.jwt_header.as_deref(), Some("authorization"));
        let query_only = settings(r#"{"api_key": {"header": null, "query": "k"}}"#).unwrap();
        assert_eq!(query_only.api_key_header, None);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (r#"{"api_key": false, "jwt": false}"#, "`api_key`, `jwt` and `client_certificate` are all false"),
            (r#"{"client_certificate": "yes"}"#, "config field `client_certificate`: invalid type: string"),
            (r#"{"api_key": {"header": null}}"#, "`api_key`: set `header`"),
            (r#"{"api_key": {"header": "a b"}}"#, "`api_key.header`: `a b` is not"),
            (r#"{"api_key": {"query": ""}}"#, "`api_key.query` must not be empty"),
            (r#"{"jwt": {"header": ""}}"#, "`jwt.header`: `` is not"),
            (r#"{"realm": "a\"b"}"#, "`realm` must be"),
            (r#"{"required_scopes": ["ok", "a b"]}"#, "`required_scopes[1]` must be"),
            (r#"{"operation_scopes": {"GET /x": ["a\"b"]}}"#, "`operation_scopes.GET /x[0]` must be"),
            (r#"{"api_key": {"headr": "x"}}"#, "config field `api_key.headr`: unknown field"),
            (r#"{"jwt": "yes"}"#, "config field `jwt`: invalid type: string"),
            (r#"{"realms": "x"}"#, "config field `realms`: unknown field"),
        ];
        for (json, expected) in cases {
            let error = settings(json).unwrap_err();
            assert!(error.starts_with(expected), "{json}: {error}");
        }
    }
}
