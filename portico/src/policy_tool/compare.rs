//! A case's expectation against its outcome: every difference becomes one line, naming the
//! header, the JSON pointer or the place in the text where they part.

use bytes::Bytes;
use http::HeaderMap;

use super::fixtures::{DecisionKind, Expect, HeaderValues};
use super::mocks;
use super::outcome::Outcome;

/// Every difference between what a case expects and what came out, one line each.
pub(super) fn compare(expect: &Expect, outcome: &Outcome) -> Vec<String> {
    let mut out = Vec::new();
    match (&expect.failure, &outcome.failure) {
        (Some(expected), Some(actual)) if actual.contains(expected.as_str()) => return out,
        (Some(expected), Some(actual)) => {
            out.push(format!("failure: expected one mentioning {expected:?}, got: {actual}"));
            return out;
        }
        (Some(expected), None) => out.push(format!("failure: expected one mentioning {expected:?}, but the policy did not fail")),
        (None, Some(actual)) => {
            out.push(actual.clone());
            return out;
        }
        (None, None) => {}
    }
    if let Some(expected) = expect.decision
        && outcome.decision != Some(expected)
    {
        let got = match outcome.decision {
            Some(DecisionKind::Respond) => format!("respond with {} {}", outcome.status, excerpt(&outcome.body)),
            Some(DecisionKind::Continue) => "continue".to_owned(),
            None => "no decision".to_owned(),
        };
        out.push(format!("decision: expected {}, got {got}", decision_name(expected)));
    }
    if let Some(expected) = expect.status
        && outcome.status != expected
    {
        // The body says why, unless the decision's line above showed it already.
        let shown = matches!(out.last(), Some(line) if line.starts_with("decision:"));
        let body = if shown { String::new() } else { format!(" {}", excerpt(&outcome.body)) };
        out.push(format!("status: expected {expected}, got {}{body}", outcome.status));
    }
    compare_headers("header", &expect.headers, &outcome.headers, &mut out);
    compare_body("body", expect.body.as_deref(), expect.json.as_ref(), &outcome.body, &mut out);
    if let Some(needle) = &expect.body_contains
        && !String::from_utf8_lossy(&outcome.body).contains(needle.as_str())
    {
        out.push(format!("body: expected it to contain {needle:?}, got {}", excerpt(&outcome.body)));
    }
    if let Some(expected) = &expect.upstream {
        match &outcome.upstream {
            None => out.push(format!(
                "upstream: expected the request to be forwarded, but the client got {} {}",
                outcome.status,
                excerpt(&outcome.body)
            )),
            Some(seen) => {
                if let Some(method) = &expected.method
                    && !method.eq_ignore_ascii_case(&seen.method)
                {
                    out.push(format!("upstream method: expected {method}, got {}", seen.method));
                }
                if let Some(path) = &expected.path
                    && *path != seen.path
                {
                    out.push(format!("upstream path: expected {path:?}, got {:?}", seen.path));
                }
                if let Some(query) = &expected.query
                    && *query != seen.query
                {
                    out.push(format!("upstream query: expected {}, got {}", optional(query), optional(&seen.query)));
                }
                compare_headers("upstream header", &expected.headers, &seen.headers, &mut out);
                compare_body("upstream body", expected.body.as_deref(), expected.json.as_ref(), &seen.body, &mut out);
            }
        }
    }
    if let Some(expected) = &expect.identity {
        let actual = outcome.identity.as_ref().map(mocks::fixture_identity);
        let matches = match (expected, &actual) {
            (None, None) => true,
            (Some(expected), Some(actual)) => {
                expected.method.as_ref().is_none_or(|m| Some(m) == actual.method.as_ref())
                    && fixture_identity_fields(expected) == fixture_identity_fields(actual)
            }
            _ => false,
        };
        if !matches {
            out.push(format!("identity: expected {}, got {}", identity_text(expected.as_ref()), identity_text(actual.as_ref())));
        }
    }
    for (key, expected) in &expect.attributes {
        let actual = outcome.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        if *expected != actual {
            out.push(format!("attribute {key:?}: expected {}, got {}", optional(expected), optional(&actual)));
        }
    }
    if let Some(expected) = &expect.hits {
        let fits = expected.len() == outcome.hits.len()
            && expected.iter().zip(&outcome.hits).all(|(e, a)| {
                e.key == a.key
                    && e.limit.is_none_or(|l| l == a.limit)
                    && e.window_ms.is_none_or(|w| w == a.window_ms)
                    && e.cost.is_none_or(|c| c == a.cost)
            });
        if !fits {
            let describe = |hits: Vec<String>| if hits.is_empty() { "none".to_owned() } else { hits.join(", ") };
            let expected = describe(expected.iter().map(|h| format!("{:?}", h.key)).collect());
            let actual = describe(
                outcome.hits.iter().map(|h| format!("{:?} (limit {} per {}ms, cost {})", h.key, h.limit, h.window_ms, h.cost)).collect(),
            );
            out.push(format!("counter hits: expected {expected}; got {actual}"));
        }
    }
    out
}

fn fixture_identity_fields(identity: &super::fixtures::Identity) -> impl PartialEq + '_ {
    (&identity.application, &identity.subscription, &identity.tier, &identity.user, &identity.scopes)
}

fn identity_text(identity: Option<&super::fixtures::Identity>) -> String {
    let Some(identity) = identity else { return "none".to_owned() };
    let mut parts = Vec::new();
    let mut field = |name: &str, value: &Option<String>| {
        if let Some(value) = value {
            parts.push(format!("{name}: {value}"));
        }
    };
    field("method", &identity.method);
    field("application", &identity.application);
    field("subscription", &identity.subscription);
    field("tier", &identity.tier);
    field("user", &identity.user);
    if !identity.scopes.is_empty() {
        parts.push(format!("scopes: [{}]", identity.scopes.join(", ")));
    }
    format!("{{{}}}", parts.join(", "))
}

fn decision_name(decision: DecisionKind) -> &'static str {
    match decision {
        DecisionKind::Continue => "continue",
        DecisionKind::Respond => "respond",
    }
}

fn optional(value: &Option<String>) -> String {
    value.as_ref().map_or_else(|| "(none)".to_owned(), |v| format!("{v:?}"))
}

fn compare_headers(
    what: &str,
    expected: &std::collections::BTreeMap<String, Option<HeaderValues>>,
    actual: &HeaderMap,
    out: &mut Vec<String>,
) {
    for (name, expected) in expected {
        let values: Vec<&str> = actual.get_all(name.as_str()).iter().map(|v| v.to_str().unwrap_or("(not text)")).collect();
        let shown = match values.as_slice() {
            [] => "(absent)".to_owned(),
            [one] => format!("{one:?}"),
            many => format!("{many:?}"),
        };
        match expected {
            None if !values.is_empty() => out.push(format!("{what} {name}: expected it absent, got {shown}")),
            Some(expected) if expected.values() != values => {
                let wanted = match expected {
                    HeaderValues::One(value) => format!("{value:?}"),
                    HeaderValues::Many(values) => format!("{values:?}"),
                };
                out.push(format!("{what} {name}: expected {wanted}, got {shown}"));
            }
            _ => {}
        }
    }
}

fn compare_body(what: &str, text: Option<&str>, json: Option<&serde_json::Value>, actual: &Bytes, out: &mut Vec<String>) {
    if let Some(expected) = text
        && expected.as_bytes() != actual.as_ref()
    {
        out.push(format!("{what}: {}", text_difference(expected, &String::from_utf8_lossy(actual))));
    }
    if let Some(expected) = json {
        match serde_json::from_slice::<serde_json::Value>(actual) {
            Err(_) => out.push(format!("{what}: expected JSON, got {}", excerpt(actual))),
            Ok(actual) => {
                let mut differences = Vec::new();
                json_difference("", expected, &actual, &mut differences);
                for difference in differences {
                    out.push(format!("{what} {difference}"));
                }
            }
        }
    }
}

/// The differences between two JSON values, one line per JSON pointer that differs.
fn json_difference(at: &str, expected: &serde_json::Value, actual: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    let here = if at.is_empty() { "/" } else { at };
    match (expected, actual) {
        (Value::Object(expected), Value::Object(actual)) => {
            for (key, value) in expected {
                let path = format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"));
                match actual.get(key) {
                    Some(found) => json_difference(&path, value, found, out),
                    None => out.push(format!("at {path}: missing, expected {value}")),
                }
            }
            for (key, value) in actual {
                if !expected.contains_key(key) {
                    out.push(format!("at {at}/{key}: unexpected {value}"));
                }
            }
        }
        (Value::Array(expected), Value::Array(actual)) => {
            for (i, value) in expected.iter().enumerate() {
                match actual.get(i) {
                    Some(found) => json_difference(&format!("{at}/{i}"), value, found, out),
                    None => out.push(format!("at {at}/{i}: missing, expected {value}")),
                }
            }
            for (i, value) in actual.iter().enumerate().skip(expected.len()) {
                out.push(format!("at {at}/{i}: unexpected {value}"));
            }
        }
        _ if expected != actual => out.push(format!("at {here}: expected {expected}, got {actual}")),
        _ => {}
    }
}

/// Where two texts first differ, with a little context of each.
fn text_difference(expected: &str, actual: &str) -> String {
    let at = expected
        .char_indices()
        .zip(actual.chars())
        .find(|((_, e), a)| e != a)
        .map(|((i, _), _)| i)
        .unwrap_or(expected.len().min(actual.len()));
    let window = |text: &str| {
        let start = text.floor_char_boundary(at.saturating_sub(30));
        let end = text.ceil_char_boundary((at + 50).min(text.len()));
        format!("{}{:?}{}", if start > 0 { "…" } else { "" }, &text[start..end], if end < text.len() { "…" } else { "" })
    };
    format!("differs at byte {at}: expected {}, got {}", window(expected), window(actual))
}

/// A short, printable view of a body: as it is when it is one line of text, else quoted.
pub(super) fn excerpt(body: &[u8]) -> String {
    if body.is_empty() {
        return "(empty body)".to_owned();
    }
    let text = String::from_utf8_lossy(body);
    let cut = text.floor_char_boundary(160);
    let (head, more) = (&text[..cut], if cut < text.len() { "…" } else { "" });
    if head.chars().any(char::is_control) { format!("{head:?}{more}") } else { format!("{head}{more}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_differences_name_their_pointer() {
        let mut out = Vec::new();
        json_difference(
            "",
            &json!({"a": 1, "b": [1, 2], "c": {"d": "x"}}),
            &json!({"a": 2, "b": [1], "c": {"d": "x", "e": true}}),
            &mut out,
        );
        assert_eq!(out, vec!["at /a: expected 1, got 2", "at /b/1: missing, expected 2", "at /c/e: unexpected true"]);
        let mut out = Vec::new();
        json_difference("", &json!(1), &json!("1"), &mut out);
        assert_eq!(out, vec!["at /: expected 1, got \"1\""]);
    }

    #[test]
    fn text_differences_show_where() {
        let text = text_difference("hello world", "hello there");
        assert!(text.starts_with("differs at byte 6"), "{text}");
        assert!(text.contains("\"hello world\"") && text.contains("\"hello there\""), "{text}");
    }
}
