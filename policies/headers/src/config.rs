//! The headers configuration as written in JSON, and its validated form.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::cors::Cors;
use crate::rules::Rules;

/// The JSON configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Rules for the request, applied in the request phase.
    #[serde(default)]
    pub request: RulesConfig,
    /// Rules for the response, applied in the response phase.
    #[serde(default)]
    pub response: RulesConfig,
    /// Cross-origin resource sharing, off unless given.
    #[serde(default)]
    pub cors: Option<CorsConfig>,
}

/// Header rules of one phase, applied in the order rename, remove, set, add.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// Old name to new name; the new header's values are replaced by the old one's.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// Headers to remove.
    #[serde(default)]
    pub remove: Vec<String>,
    /// Headers to set, replacing their values; values are templates.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Values to add, keeping the values a header has; values are templates.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
}

/// The JSON CORS configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins (`https://app.example`) allowed to call, or `["*"]` for any.
    pub allow_origins: Vec<String>,
    /// Methods a preflight allows.
    #[serde(default = "default_methods")]
    pub allow_methods: Vec<String>,
    /// Request headers a preflight allows.
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// Response headers the browser may show the caller.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// Whether the browser may send credentials (cookies, HTTP authentication).
    #[serde(default)]
    pub allow_credentials: bool,
    /// Seconds a browser may cache a preflight's answer.
    #[serde(default)]
    pub max_age: Option<u32>,
}

fn default_methods() -> Vec<String> {
    ["GET", "HEAD", "POST"].map(str::to_owned).to_vec()
}

/// The validated settings the policy runs with.
#[derive(Debug)]
pub struct Settings {
    /// Request-phase rules.
    pub request: Rules,
    /// Response-phase rules.
    pub response: Rules,
    /// CORS, when configured.
    pub cors: Option<Cors>,
}

impl Settings {
    /// Validates `config`; the error names the field that is wrong.
    pub fn from_config(config: Config) -> Result<Settings, String> {
        Ok(Settings {
            request: Rules::from_config("request", config.request)?,
            response: Rules::from_config("response", config.response)?,
            cors: config.cors.map(Cors::from_config).transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Settings;
    use portico_policy_sdk::parse_config;

    fn settings(json: &str) -> Result<Settings, String> {
        Settings::from_config(parse_config(json)?)
    }

    #[test]
    fn empty_config_does_nothing() {
        let settings = settings("{}").unwrap();
        assert!(settings.request.is_empty());
        assert!(settings.response.is_empty());
        assert!(settings.cors.is_none());
    }

    #[test]
    fn full_config() {
        let settings = settings(
            r#"{"request": {"set": {"x-a": "v"}, "add": {"x-b": "{application}"},
                            "remove": ["x-c"], "rename": {"x-old": "x-new"}},
                "response": {"set": {"x-served-by": "portico"}},
                "cors": {"allow_origins": ["https://app.example"], "allow_methods": ["GET", "POST"],
                         "allow_headers": ["authorization", "content-type"], "expose_headers": [],
                         "allow_credentials": false, "max_age": 600}}"#,
        )
        .unwrap();
        assert!(!settings.request.is_empty());
        assert!(!settings.response.is_empty());
        assert!(settings.cors.is_some());
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (r#"{"request": {"set": {"x a": "v"}}}"#, "`request.set`: `x a` is not a valid header name"),
            (r#"{"response": {"add": {"x-a": "{nope}"}}}"#, "`response.add.x-a` has an unknown placeholder `{nope}`"),
            (r#"{"request": {"rename": {"x-a": "X-A"}}}"#, "`request.rename.x-a` renames the header to itself"),
            (r#"{"request": {"remove": ["ok", ""]}}"#, "`request.remove[1]`: `` is not a valid header name"),
            (r#"{"request": {"copy": {}}}"#, "config field `request.copy`: unknown field"),
            (r#"{"cors": {}}"#, "config field `cors`: missing field `allow_origins`"),
            (r#"{"cors": {"allow_origins": ["*"], "allow_credentials": true}}"#, "`cors.allow_origins` has `*`"),
        ];
        for (json, expected) in cases {
            let error = settings(json).unwrap_err();
            assert!(error.starts_with(expected), "{json}: {error}");
        }
    }
}
