//! A policy's configuration as a form, made from the JSON Schema the policy was uploaded
//! with: a field per property of an object schema (text, number, a box to tick, a choice
//! among an `enum`), JSON text for the rest (nested objects, arrays, or no schema at all);
//! and the configuration read back from what was posted.

use serde_json::{Map, Value};

use crate::error::ApiError;

/// How a field is entered.
#[derive(Debug, PartialEq)]
pub(super) enum Input {
    Text,
    Number,
    Checkbox,
    Choice(Vec<String>),
    Json,
}

/// One field of the form: `config.<name>` when posted.
#[derive(Debug)]
pub(super) struct Field {
    pub name: String,
    pub input: Input,
    pub required: bool,
    pub description: String,
    /// What it holds, as typed (`true` for a ticked box).
    pub value: String,
}

impl Field {
    /// The form field's name: `config.<property>`, or `config` for the whole.
    pub fn key(&self) -> String {
        if self.name.is_empty() { "config".to_owned() } else { format!("config.{}", self.name) }
    }

    pub fn is_number(&self) -> bool {
        self.input == Input::Number
    }

    pub fn is_checkbox(&self) -> bool {
        self.input == Input::Checkbox
    }

    pub fn is_json(&self) -> bool {
        self.input == Input::Json
    }

    /// The choices of an `enum`, if it is one.
    pub fn choices(&self) -> &[String] {
        match &self.input {
            Input::Choice(choices) => choices,
            _ => &[],
        }
    }
}

/// The fields for `schema`; one JSON field named `config` (the whole configuration) when it
/// is not an object schema with properties.
pub(super) fn fields(schema: Option<&Value>) -> Vec<Field> {
    let properties = schema.and_then(|s| s.get("properties")).and_then(Value::as_object);
    let Some(properties) = properties.filter(|_| schema.and_then(|s| s.get("type")).is_none_or(|t| t == "object")) else {
        return vec![Field { name: String::new(), input: Input::Json, required: false, description: String::new(), value: "{}".into() }];
    };
    let required: Vec<&str> = schema
        .and_then(|s| s.get("required"))
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    properties
        .iter()
        .map(|(name, property)| {
            let choices: Option<Vec<String>> = property
                .get("enum")
                .and_then(Value::as_array)
                .map(|values| values.iter().filter_map(Value::as_str).map(str::to_owned).collect());
            let input = match (choices, property.get("type").and_then(Value::as_str)) {
                (Some(choices), _) if !choices.is_empty() => Input::Choice(choices),
                (_, Some("string")) => Input::Text,
                (_, Some("integer" | "number")) => Input::Number,
                (_, Some("boolean")) => Input::Checkbox,
                _ => Input::Json,
            };
            let value = match (&input, property.get("default")) {
                (Input::Json, Some(default)) => default.to_string(),
                (_, Some(Value::String(default))) => default.clone(),
                (_, Some(Value::Bool(true))) => "true".into(),
                (Input::Checkbox, _) => String::new(),
                (_, Some(default)) => default.to_string(),
                (_, None) => String::new(),
            };
            let description = property.get("description").and_then(Value::as_str).unwrap_or_default().to_owned();
            Field { name: name.clone(), input, required: required.contains(&name.as_str()), description, value }
        })
        .collect()
}

/// `fields` with the values posted (`get` answers a form field by name).
pub(super) fn posted<'a>(mut fields: Vec<Field>, get: impl Fn(&str) -> &'a str) -> Vec<Field> {
    for field in &mut fields {
        field.value = get(&field.key()).to_owned();
    }
    fields
}

/// The configuration `fields` hold: empty fields left out (a box not ticked is `false`), a
/// number or JSON that does not read is a problem naming its field.
pub(super) fn config(fields: &[Field]) -> Result<Value, ApiError> {
    if let [field] = fields
        && field.name.is_empty()
    {
        let text = field.value.trim();
        return if text.is_empty() { Ok(Value::Object(Map::new())) } else { json(&field.key(), text) };
    }
    let mut config = Map::new();
    for field in fields {
        let text = field.value.trim();
        let value = match &field.input {
            Input::Checkbox => Value::Bool(!text.is_empty()),
            _ if text.is_empty() => continue,
            Input::Text | Input::Choice(_) => Value::String(field.value.clone()),
            Input::Number => {
                let number: serde_json::Number =
                    text.parse().map_err(|_| ApiError::invalid(field.key(), format!("`{text}` is not a number")))?;
                Value::Number(number)
            }
            Input::Json => json(&field.key(), text)?,
        };
        config.insert(field.name.clone(), value);
    }
    Ok(Value::Object(config))
}

fn json(key: &str, text: &str) -> Result<Value, ApiError> {
    serde_json::from_str(text).map_err(|e| ApiError::invalid(key, format!("not JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_schema_s_properties_become_fields_and_their_values_the_configuration() {
        let schema = json!({"type": "object", "required": ["header"], "properties": {
            "header": {"type": "string", "description": "Which header"},
            "limit": {"type": "integer", "default": 10},
            "strict": {"type": "boolean"},
            "mode": {"enum": ["allow", "deny"]},
            "extra": {"type": "object"},
        }});
        let form = fields(Some(&schema));
        let inputs: Vec<(&str, &Input, bool)> = form.iter().map(|f| (f.name.as_str(), &f.input, f.required)).collect();
        assert_eq!(inputs.len(), 5);
        assert!(inputs.contains(&("header", &Input::Text, true)));
        assert!(inputs.contains(&("limit", &Input::Number, false)));
        assert!(inputs.contains(&("strict", &Input::Checkbox, false)));
        assert!(inputs.contains(&("mode", &Input::Choice(vec!["allow".into(), "deny".into()]), false)));
        assert!(inputs.contains(&("extra", &Input::Json, false)));
        assert_eq!(form.iter().find(|f| f.name == "limit").unwrap().value, "10");

        let typed = |name: &str| match name {
            "config.header" => "x-id",
            "config.limit" => "25",
            "config.strict" => "true",
            "config.mode" => "deny",
            "config.extra" => "{\"a\": [1]}",
            _ => "",
        };
        let read = config(&posted(form, typed)).unwrap();
        assert_eq!(read, json!({"header": "x-id", "limit": 25, "strict": true, "mode": "deny", "extra": {"a": [1]}}));

        let bad = posted(fields(Some(&schema)), |name| if name == "config.limit" { "ten" } else { "" });
        assert!(matches!(config(&bad), Err(ApiError::Validation { field, .. }) if field == "config.limit"));
        let unticked = config(&posted(fields(Some(&schema)), |_| "")).unwrap();
        assert_eq!(unticked, json!({"strict": false}), "empty fields are left out, an unticked box is false");
    }

    #[test]
    fn without_a_schema_the_configuration_is_json() {
        let form = fields(None);
        assert_eq!(form.len(), 1);
        assert!(form[0].is_json() && form[0].key() == "config");
        let read = config(&posted(form, |_| "{\"request\": {}}")).unwrap();
        assert_eq!(read, json!({"request": {}}));
        assert!(super::config(&posted(fields(None), |_| "{")).is_err());
    }
}
