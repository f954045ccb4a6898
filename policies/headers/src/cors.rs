//! Cross-origin resource sharing: answering preflights and marking responses for the
//! browser.

use portico_policy_sdk::http::is_token;
use portico_policy_sdk::{ImmediateResponse, problem};

use crate::config::CorsConfig;

/// Validated CORS settings; origins are lower case without a trailing `/`.
#[derive(Debug)]
pub struct Cors {
    any_origin: bool,
    origins: Vec<String>,
    allow_methods: String,
    allow_headers: String,
    expose_headers: String,
    allow_credentials: bool,
    max_age: Option<u32>,
}

impl Cors {
    /// Validates `config`; the error names the field that is wrong.
    pub fn from_config(config: CorsConfig) -> Result<Cors, String> {
        if config.allow_origins.is_empty() {
            return Err("`cors.allow_origins` must list origins, or be [\"*\"] for any".to_owned());
        }
        let mut any_origin = false;
        let mut origins = Vec::new();
        for (index, origin) in config.allow_origins.iter().enumerate() {
            if origin == "*" {
                any_origin = true;
                continue;
            }
            let origin = origin.strip_suffix('/').unwrap_or(origin);
            if !is_origin(origin) {
                return Err(format!(
                    "`cors.allow_origins[{index}]`: `{origin}` is not an origin like \
                     `https://app.example` or `*`"
                ));
            }
            origins.push(origin.to_ascii_lowercase());
        }
        if any_origin && config.allow_credentials {
            return Err("`cors.allow_origins` has `*` while `cors.allow_credentials` is true; browsers \
                 refuse that, so list the origins"
                .to_owned());
        }
        if config.allow_methods.is_empty() {
            return Err("`cors.allow_methods` must not be empty".to_owned());
        }
        let allow_methods = list("cors.allow_methods", &config.allow_methods, |method| method.to_ascii_uppercase())?;
        let lower = |header: &str| header.to_ascii_lowercase();
        Ok(Cors {
            any_origin,
            origins,
            allow_methods,
            allow_headers: list("cors.allow_headers", &config.allow_headers, lower)?,
            expose_headers: list("cors.expose_headers", &config.expose_headers, lower)?,
            allow_credentials: config.allow_credentials,
            max_age: config.max_age,
        })
    }

    /// Whether `origin` (an `Origin` header's value) may call.
    pub fn allows(&self, origin: &str) -> bool {
        self.any_origin || self.origins.iter().any(|allowed| allowed.eq_ignore_ascii_case(origin))
    }

    /// `Access-Control-Allow-Origin` for an allowed `origin`.
    fn allow_origin(&self, origin: &str) -> String {
        if self.any_origin && !self.allow_credentials { "*".to_owned() } else { origin.to_owned() }
    }

    /// The answer to a preflight from `origin`: 204 with the allowed methods and headers,
    /// or a 403 problem for an origin that is not allowed.
    pub fn preflight(&self, origin: &str) -> ImmediateResponse {
        if !self.allows(origin) {
            return problem(403, "Forbidden", "The origin is not allowed to call this API from a browser (CORS).").header("vary", "Origin");
        }
        let mut response = ImmediateResponse::new(204)
            .header("access-control-allow-origin", self.allow_origin(origin))
            .header("vary", "Origin")
            .header("access-control-allow-methods", self.allow_methods.clone());
        if !self.allow_headers.is_empty() {
            response = response.header("access-control-allow-headers", self.allow_headers.clone());
        }
        if self.allow_credentials {
            response = response.header("access-control-allow-credentials", "true");
        }
        if let Some(max_age) = self.max_age {
            response = response.header("access-control-max-age", max_age.to_string());
        }
        response
    }

    /// The headers to set on a response to a request with this `Origin`. `Vary: Origin`
    /// is not among them: it is merged into the response's `Vary` separately.
    pub fn response_headers(&self, origin: Option<&str>) -> Vec<(&'static str, String)> {
        let Some(origin) = origin.filter(|origin| self.allows(origin)) else {
            return Vec::new();
        };
        let mut headers = vec![("access-control-allow-origin", self.allow_origin(origin))];
        if !self.expose_headers.is_empty() {
            headers.push(("access-control-expose-headers", self.expose_headers.clone()));
        }
        if self.allow_credentials {
            headers.push(("access-control-allow-credentials", "true".to_owned()));
        }
        headers
    }
}

/// Whether `Vary` values already cover `Origin` (by naming it, or `*`).
pub fn varies_by_origin(vary: &[String]) -> bool {
    vary.iter().flat_map(|value| value.split(',')).map(str::trim).any(|name| name == "*" || name.eq_ignore_ascii_case("origin"))
}

/// `scheme://host[:port]`, as browsers send in `Origin`.
fn is_origin(origin: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let scheme_ok =
        scheme.starts_with(|c: char| c.is_ascii_alphabetic()) && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    let authority_ok = !authority.is_empty() && authority.chars().all(|c| c.is_ascii_alphanumeric() || "-._:[]".contains(c));
    scheme_ok && authority_ok
}

/// Validates tokens (or `*`) and joins them with `, ` after `normalise`.
fn list(field: &str, items: &[String], normalise: impl Fn(&str) -> String) -> Result<String, String> {
    for (index, item) in items.iter().enumerate() {
        if item != "*" && !is_token(item) {
            return Err(format!("`{field}[{index}]`: `{item}` is not a valid name"));
        }
    }
    let items: Vec<String> = items.iter().map(|item| normalise(item)).collect();
    Ok(items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::{Cors, is_origin, varies_by_origin};
    use crate::config::CorsConfig;
    use portico_policy_sdk::{ImmediateResponse, parse_config};

    fn cors(json: &str) -> Result<Cors, String> {
        Cors::from_config(parse_config::<CorsConfig>(json)?)
    }

    fn headers(response: &ImmediateResponse) -> Vec<(&str, &str)> {
        response.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    #[test]
    fn origins() {
        assert!(is_origin("https://app.example"));
        assert!(is_origin("http://localhost:8080"));
        assert!(is_origin("http://[::1]:3000"));
        assert!(!is_origin("app.example"));
        assert!(!is_origin("https://"));
        assert!(!is_origin("https://app.example/path"));
        assert!(!is_origin("null"));
        assert!(!is_origin("1http://x"));
    }

    #[test]
    fn allowed_preflight_gets_204() {
        let cors = cors(
            r#"{"allow_origins": ["https://App.example/"], "allow_methods": ["get", "POST"],
                "allow_headers": ["Authorization", "content-type"], "allow_credentials": true,
                "max_age": 600}"#,
        )
        .unwrap();
        let response = cors.preflight("https://app.example");
        assert_eq!(response.status, 204);
        assert!(response.body.is_empty());
        assert_eq!(
            headers(&response),
            [
                ("access-control-allow-origin", "https://app.example"),
                ("vary", "Origin"),
                ("access-control-allow-methods", "GET, POST"),
                ("access-control-allow-headers", "authorization, content-type"),
                ("access-control-allow-credentials", "true"),
                ("access-control-max-age", "600"),
            ]
        );
    }

    #[test]
    fn disallowed_preflight_gets_403() {
        let cors = cors(r#"{"allow_origins": ["https://app.example"]}"#).unwrap();
        let response = cors.preflight("https://evil.example");
        assert_eq!(response.status, 403);
        assert!(headers(&response).contains(&("content-type", "application/problem+json")));
    }

    #[test]
    fn wildcard_answers_star_without_credentials() {
        let cors = cors(r#"{"allow_origins": ["*"], "expose_headers": ["X-Request-Id"]}"#).unwrap();
        let response = cors.preflight("https://any.example");
        assert_eq!(response.status, 204);
        assert!(headers(&response).contains(&("access-control-allow-methods", "GET, HEAD, POST")));
        assert!(headers(&response).contains(&("access-control-allow-origin", "*")));
        assert_eq!(
            cors.response_headers(Some("https://any.example")),
            [("access-control-allow-origin", "*".to_owned()), ("access-control-expose-headers", "x-request-id".to_owned()),]
        );
    }

    #[test]
    fn responses_to_allowed_origins_are_marked() {
        let cors = cors(r#"{"allow_origins": ["https://app.example"], "allow_credentials": true}"#).unwrap();
        assert_eq!(
            cors.response_headers(Some("https://app.example")),
            [("access-control-allow-origin", "https://app.example".to_owned()), ("access-control-allow-credentials", "true".to_owned()),]
        );
        assert!(cors.response_headers(Some("https://evil.example")).is_empty());
        assert!(cors.response_headers(None).is_empty());
    }

    #[test]
    fn vary() {
        assert!(!varies_by_origin(&[]));
        assert!(!varies_by_origin(&["Accept-Encoding".to_owned()]));
        assert!(varies_by_origin(&["Accept-Encoding, origin".to_owned()]));
        assert!(varies_by_origin(&["*".to_owned()]));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (r#"{"allow_origins": []}"#, "`cors.allow_origins` must list"),
            (r#"{"allow_origins": ["*", "app.example"]}"#, "`cors.allow_origins[1]`: `app.example` is not"),
            (r#"{"allow_origins": ["*"], "allow_credentials": true}"#, "`cors.allow_origins` has `*`"),
            (r#"{"allow_origins": ["*"], "allow_methods": []}"#, "`cors.allow_methods` must not be empty"),
            (r#"{"allow_origins": ["*"], "allow_methods": ["GET", "NO GOOD"]}"#, "`cors.allow_methods[1]`"),
            (r#"{"allow_origins": ["*"], "allow_headers": ["a:b"]}"#, "`cors.allow_headers[0]`"),
            (r#"{"allow_origins": ["*"], "expose_headers": [""]}"#, "`cors.expose_headers[0]`"),
            (r#"{"allow_origins": ["*"], "max_age": -1}"#, "config field `max_age`"),
        ];
        for (json, expected) in cases {
            let error = cors(json).unwrap_err();
            assert!(error.starts_with(expected), "{json}: {error}");
        }
    }
}
