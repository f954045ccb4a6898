//! Parsing a policy's JSON configuration with errors that name the offending field.

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

/// Parses the JSON object `json` (blank counts as `{}`) into `T`, or says what is wrong and where, as in
/// ``config field `limits[0].per`: invalid type: integer `5`, expected a string``.
///
/// [`export_policy!`](crate::export_policy) calls this in `init`; policies can call it in
/// their unit tests to check their configuration handling on the host.
pub fn parse_config<T: DeserializeOwned>(json: &str) -> Result<T, String> {
    let json = json.trim();
    let json = if json.is_empty() { "{}" } else { json };
    // serde would also build a struct from an array of its fields; a configuration is an
    // object.
    if !json.starts_with('{') {
        return Err("invalid config: expected a JSON object".to_owned());
    }
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path();
        let known = path.iter().any(|segment| !matches!(segment, Segment::Unknown));
        let path = path.to_string();
        let inner = error.into_inner();
        if known { format!("config field `{path}`: {inner}") } else { format!("invalid config: {inner}") }
    })?;
    deserializer.end().map_err(|error| format!("invalid config: {error}"))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::parse_config;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Config {
        #[serde(default)]
        name: String,
        #[serde(default)]
        limits: Vec<Limit>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Limit {
        #[allow(dead_code)]
        per: String,
    }

    #[test]
    fn blank_is_an_empty_object() {
        let config: Config = parse_config("  ").unwrap();
        assert!(config.name.is_empty());
        assert!(config.limits.is_empty());
    }

    #[test]
    fn errors_name_the_field() {
        let error = parse_config::<Config>(r#"{"limits": [{"per": 5}]}"#).unwrap_err();
        assert!(error.starts_with("config field `limits[0].per`: invalid type"), "{error}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let error = parse_config::<Config>(r#"{"nmae": "x"}"#).unwrap_err();
        assert!(error.starts_with("config field `nmae`: unknown field `nmae`"), "{error}");
        let error = parse_config::<Config>(r#"{"limits": [{"per": "1s", "x": 1}]}"#).unwrap_err();
        assert!(error.starts_with("config field `limits[0].x`: unknown field `x`"), "{error}");
    }

    #[test]
    fn syntax_errors_and_trailing_data_are_refused() {
        let error = parse_config::<Config>("{").unwrap_err();
        assert!(error.starts_with("invalid config: EOF"), "{error}");
        assert!(parse_config::<Config>("{} {}").unwrap_err().starts_with("invalid config"));
        let error = parse_config::<Config>("[]").unwrap_err();
        assert_eq!(error, "invalid config: expected a JSON object");
    }
}
