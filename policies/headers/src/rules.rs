//! Header rules of one phase (rename, remove, set, add) and how they change a set of
//! headers.

use std::collections::BTreeMap;

use portico_policy_sdk::http::is_token;
use portico_policy_sdk::{HeaderError, Request, Response};

use crate::config::RulesConfig;
use crate::template::{Template, Var};

/// The headers of a request or a response, as the host lets a policy change them.
pub trait Headers {
    /// All values of a header.
    fn values(&self, name: &str) -> Vec<String>;
    /// Replaces every value of a header with `value`.
    fn set(&self, name: &str, value: &str) -> Result<(), HeaderError>;
    /// Adds a value to a header.
    fn append(&self, name: &str, value: &str) -> Result<(), HeaderError>;
    /// Removes every value of a header.
    fn remove(&self, name: &str) -> Result<(), HeaderError>;
}

impl Headers for Request {
    fn values(&self, name: &str) -> Vec<String> {
        self.header_all(name)
    }

    fn set(&self, name: &str, value: &str) -> Result<(), HeaderError> {
        self.set_header(name, value)
    }

    fn append(&self, name: &str, value: &str) -> Result<(), HeaderError> {
        self.append_header(name, value)
    }

    fn remove(&self, name: &str) -> Result<(), HeaderError> {
        self.remove_header(name)
    }
}

impl Headers for Response {
    fn values(&self, name: &str) -> Vec<String> {
        self.header_all(name)
    }

    fn set(&self, name: &str, value: &str) -> Result<(), HeaderError> {
        self.set_header(name, value)
    }

    fn append(&self, name: &str, value: &str) -> Result<(), HeaderError> {
        self.append_header(name, value)
    }

    fn remove(&self, name: &str) -> Result<(), HeaderError> {
        self.remove_header(name)
    }
}

/// A header change the host refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The header.
    pub header: String,
    /// Why.
    pub error: HeaderError,
}

/// The validated rules of one phase; every name is lower case.
#[derive(Debug, Default)]
pub struct Rules {
    rename: Vec<(String, String)>,
    remove: Vec<String>,
    set: Vec<(String, Template)>,
    add: Vec<(String, Template)>,
}

impl Rules {
    /// Validates the rules under `phase` (`request` or `response`); the error names the
    /// field that is wrong.
    pub fn from_config(phase: &str, config: RulesConfig) -> Result<Rules, String> {
        let mut rules = Rules::default();
        for (old, new) in config.rename {
            let old = name(&format!("{phase}.rename"), &old)?;
            let new = name(&format!("{phase}.rename.{old}"), &new)?;
            if old == new {
                return Err(format!("`{phase}.rename.{old}` renames the header to itself"));
            }
            rules.rename.push((old, new));
        }
        for (index, header) in config.remove.iter().enumerate() {
            rules.remove.push(name(&format!("{phase}.remove[{index}]"), header)?);
        }
        rules.set = templates(&format!("{phase}.set"), config.set)?;
        rules.add = templates(&format!("{phase}.add"), config.add)?;
        Ok(rules)
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.rename.is_empty() && self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Applies the rules to `headers` in the order rename, remove, set, add, filling
    /// placeholders with `value`. Changes the host refuses are skipped and returned.
    pub fn apply(&self, headers: &dyn Headers, value: &mut dyn FnMut(Var) -> String) -> Vec<Failure> {
        let mut failures = Vec::new();
        let mut check = |header: &str, result: Result<(), HeaderError>| match result {
            Ok(()) => true,
            Err(error) => {
                failures.push(Failure { header: header.to_owned(), error });
                false
            }
        };
        for (old, new) in &self.rename {
            let values = headers.values(old);
            if values.is_empty() {
                continue;
            }
            // Clear the target first so that a forbidden target leaves the old header be.
            if !check(new, headers.remove(new)) || !check(old, headers.remove(old)) {
                continue;
            }
            for value in &values {
                if !check(new, headers.append(new, value)) {
                    break;
                }
            }
        }
        for header in &self.remove {
            check(header, headers.remove(header));
        }
        for (header, template) in &self.set {
            check(header, headers.set(header, &template.render(value)));
        }
        for (header, template) in &self.add {
            check(header, headers.append(header, &template.render(value)));
        }
        failures
    }
}

fn name(field: &str, header: &str) -> Result<String, String> {
    if is_token(header) { Ok(header.to_ascii_lowercase()) } else { Err(format!("`{field}`: `{header}` is not a valid header name")) }
}

fn templates(field: &str, values: BTreeMap<String, String>) -> Result<Vec<(String, Template)>, String> {
    let mut parsed = Vec::with_capacity(values.len());
    for (header, value) in values {
        let header = name(field, &header)?;
        let template = Template::parse(&value).map_err(|why| format!("`{field}.{header}` {why}"))?;
        parsed.push((header, template));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::{Failure, Headers, Rules};
    use crate::config::RulesConfig;
    use crate::template::Var;
    use portico_policy_sdk::{HeaderError, parse_config};
    use std::cell::RefCell;

    /// Headers in memory, with names the host would refuse to change.
    #[derive(Default)]
    struct FakeHeaders {
        entries: RefCell<Vec<(String, String)>>,
        forbidden: Vec<&'static str>,
    }

    impl FakeHeaders {
        fn with(entries: &[(&str, &str)]) -> FakeHeaders {
            let entries = entries.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
            FakeHeaders { entries: RefCell::new(entries), forbidden: Vec::new() }
        }

        fn list(&self) -> Vec<(String, String)> {
            self.entries.borrow().clone()
        }

        fn allowed(&self, name: &str) -> Result<(), HeaderError> {
            if self.forbidden.contains(&name) { Err(HeaderError::Forbidden) } else { Ok(()) }
        }
    }

    impl Headers for FakeHeaders {
        fn values(&self, name: &str) -> Vec<String> {
            self.entries.borrow().iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect()
        }

        fn set(&self, name: &str, value: &str) -> Result<(), HeaderError> {
            self.remove(name)?;
            self.append(name, value)
        }

        fn append(&self, name: &str, value: &str) -> Result<(), HeaderError> {
            self.allowed(name)?;
            self.entries.borrow_mut().push((name.to_owned(), value.to_owned()));
            Ok(())
        }

        fn remove(&self, name: &str) -> Result<(), HeaderError> {
            self.allowed(name)?;
            self.entries.borrow_mut().retain(|(k, _)| k != name);
            Ok(())
        }
    }

    fn rules(json: &str) -> Rules {
        Rules::from_config("request", parse_config::<RulesConfig>(json).unwrap()).unwrap()
    }

    fn owned(entries: &[(&str, &str)]) -> Vec<(String, String)> {
        entries.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn vars(var: Var) -> String {
        match var {
            Var::Application => "shop".to_owned(),
            _ => String::new(),
        }
    }

    #[test]
    fn rules_run_in_order_rename_remove_set_add() {
        let rules = rules(
            r#"{"rename": {"X-Old": "x-new"}, "remove": ["x-new", "x-gone"],
                "set": {"x-app": "app={application}", "x-user": "{user}"}, "add": {"x-app": "again"}}"#,
        );
        let headers = FakeHeaders::with(&[("x-old", "1"), ("x-gone", "2"), ("x-app", "client")]);
        let failures = rules.apply(&headers, &mut vars);
        assert!(failures.is_empty());
        // The rename happens before the remove, so the renamed header is removed too.
        assert_eq!(headers.list(), owned(&[("x-app", "app=shop"), ("x-user", ""), ("x-app", "again")]));
    }

    #[test]
    fn rename_moves_every_value_and_replaces_the_target() {
        let rules = rules(r#"{"rename": {"x-old": "x-new"}}"#);
        let headers = FakeHeaders::with(&[("x-old", "1"), ("x-new", "stale"), ("x-old", "2")]);
        assert!(rules.apply(&headers, &mut vars).is_empty());
        assert_eq!(headers.list(), owned(&[("x-new", "1"), ("x-new", "2")]));
        let untouched = FakeHeaders::with(&[("x-new", "kept")]);
        assert!(rules.apply(&untouched, &mut vars).is_empty());
        assert_eq!(untouched.list(), owned(&[("x-new", "kept")]));
    }

    #[test]
    fn refused_changes_are_reported_and_skipped() {
        let rules = rules(r#"{"rename": {"x-old": "host"}, "set": {"content-length": "1", "x-a": "a"}}"#);
        let mut headers = FakeHeaders::with(&[("x-old", "1")]);
        headers.forbidden = vec!["host", "content-length"];
        let failures = rules.apply(&headers, &mut vars);
        assert_eq!(
            failures,
            [
                Failure { header: "host".to_owned(), error: HeaderError::Forbidden },
                Failure { header: "content-length".to_owned(), error: HeaderError::Forbidden },
            ]
        );
        assert_eq!(headers.list(), owned(&[("x-old", "1"), ("x-a", "a")]));
    }
}
