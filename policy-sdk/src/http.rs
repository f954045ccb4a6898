//! HTTP syntax checks for validating header names and values in a policy's configuration.

/// Whether `name` is an HTTP token (RFC 9110 §5.6.2), as header names and methods must be.
pub fn is_token(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte))
}

/// Whether `value` may be sent as a header value: no control characters other than tab
/// (so no CR, LF or NUL), and no leading or trailing whitespace.
pub fn is_field_value(value: &str) -> bool {
    let trimmed = value.trim_matches([' ', '\t']);
    trimmed.len() == value.len() && value.chars().all(|c| c == '\t' || !c.is_control())
}

#[cfg(test)]
mod tests {
    use super::{is_field_value, is_token};

    #[test]
    fn tokens() {
        assert!(is_token("x-request-id"));
        assert!(is_token("GET"));
        assert!(!is_token(""));
        assert!(!is_token("x y"));
        assert!(!is_token("x:y"));
        assert!(!is_token("é"));
    }

    #[test]
    fn field_values() {
        assert!(is_field_value(""));
        assert!(is_field_value("a b\tc, é"));
        assert!(!is_field_value("a\r\nb"));
        assert!(!is_field_value("a\0"));
        assert!(!is_field_value(" a"));
        assert!(!is_field_value("a "));
    }
}
