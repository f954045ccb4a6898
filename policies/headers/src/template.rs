//! Header value templates: literal text with `{placeholder}`s filled in per request.

/// A value a placeholder stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// `{application}`: the caller's application.
    Application,
    /// `{user}`: the end user.
    User,
    /// `{tier}`: the caller's throttling tier.
    Tier,
    /// `{subscription}`: the application's subscription.
    Subscription,
    /// `{api}`: the name of the API the request was routed to.
    Api,
    /// `{client_ip}`: the client's IP address.
    ClientIp,
}

impl Var {
    fn from_name(name: &str) -> Option<Var> {
        let var = match name {
            "application" => Var::Application,
            "user" => Var::User,
            "tier" => Var::Tier,
            "subscription" => Var::Subscription,
            "api" => Var::Api,
            "client_ip" => Var::ClientIp,
            _ => return None,
        };
        Some(var)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

/// A parsed header value. `{{` and `}}` stand for literal braces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses `text`; the error says what is wrong, for the caller to prefix with the field.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => {
                                return Err("has an unclosed `{` (write `{{` for a brace)".to_owned());
                            }
                        }
                    }
                    let var = Var::from_name(&name).ok_or_else(|| {
                        format!(
                            "has an unknown placeholder `{{{name}}}`; known are {{application}}, \
                             {{user}}, {{tier}}, {{subscription}}, {{api}} and {{client_ip}}"
                        )
                    })?;
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Var(var));
                }
                '}' => return Err("has an unmatched `}` (write `}}` for a brace)".to_owned()),
                c if c != '\t' && c.is_control() => {
                    return Err("contains a control character".to_owned());
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    /// The value with each placeholder replaced by `value(var)`.
    pub fn render(&self, value: &mut dyn FnMut(Var) -> String) -> String {
        let mut rendered = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => rendered.push_str(text),
                Part::Var(var) => rendered.push_str(&value(*var)),
            }
        }
        rendered
    }
}

#[cfg(test)]
mod tests {
    use super::{Template, Var};

    fn render(text: &str) -> String {
        Template::parse(text).unwrap().render(&mut |var| match var {
            Var::Application => "shop".to_owned(),
            Var::ClientIp => "203.0.113.7".to_owned(),
            _ => String::new(),
        })
    }

    #[test]
    fn placeholders_are_filled_in() {
        assert_eq!(render("plain"), "plain");
        assert_eq!(render(""), "");
        assert_eq!(render("{application}"), "shop");
        assert_eq!(render("app={application}; ip={client_ip}; user={user}."), "app=shop; ip=203.0.113.7; user=.");
        assert_eq!(render("{{application}} {{}}"), "{application} {}");
        assert_eq!(render("é\tx"), "é\tx");
    }

    #[test]
    fn every_placeholder_parses() {
        for name in ["application", "user", "tier", "subscription", "api", "client_ip"] {
            assert!(Template::parse(&format!("{{{name}}}")).is_ok(), "{name}");
        }
    }

    #[test]
    fn bad_templates_are_refused() {
        let error = Template::parse("x-{app}").unwrap_err();
        assert!(error.starts_with("has an unknown placeholder `{app}`"), "{error}");
        assert!(Template::parse("{application").unwrap_err().contains("unclosed"));
        assert!(Template::parse("a}").unwrap_err().contains("unmatched"));
        assert!(Template::parse("a\r\nb").unwrap_err().contains("control character"));
        assert!(Template::parse("{}").unwrap_err().contains("unknown placeholder `{}`"));
    }
}
