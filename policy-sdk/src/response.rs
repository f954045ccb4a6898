//! Building the immediate responses a policy answers with instead of forwarding a request.

use serde::Serialize;

use crate::{Decision, ImmediateResponse};

impl ImmediateResponse {
    /// A response with this status, no headers and an empty body.
    pub fn new(status: u16) -> Self {
        ImmediateResponse { status, headers: Vec::new(), body: Vec::new() }
    }

    /// Adds a header, keeping any added before (also under the same name).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Replaces the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
}

impl From<ImmediateResponse> for Decision {
    fn from(response: ImmediateResponse) -> Self {
        Decision::Respond(response)
    }
}

/// The members of an RFC 9457 problem document that Portico sends.
#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    status: u16,
    detail: &'a str,
}

/// An `application/problem+json` response (RFC 9457) with `type` `about:blank`.
///
/// `title` is the status's reason phrase (`Unauthorized`); `detail` explains this occurrence
/// to the client, so it must never contain a credential.
///
/// ```
/// use portico_policy_sdk::{Decision, problem};
///
/// let decision: Decision = problem(403, "Forbidden", "The client is blocked.")
///     .header("cache-control", "no-store")
///     .into();
/// # assert!(matches!(decision, Decision::Respond(response) if response.status == 403));
/// ```
pub fn problem(status: u16, title: &str, detail: &str) -> ImmediateResponse {
    let document = Problem { kind: "about:blank", title, status, detail };
    // Serialising a struct of strings and a number cannot fail; an empty body is the
    // harmless answer if it ever did.
    let body = serde_json::to_vec(&document).unwrap_or_default();
    ImmediateResponse::new(status).header("content-type", "application/problem+json").body(body)
}

#[cfg(test)]
mod tests {
    use super::problem;
    use crate::{Decision, ImmediateResponse};

    #[test]
    fn builder_keeps_headers_in_order() {
        let response = ImmediateResponse::new(204).header("a", "1").header("a", "2").body("x");
        assert_eq!(response.status, 204);
        assert_eq!(response.headers, vec![("a".to_owned(), "1".to_owned()), ("a".to_owned(), "2".to_owned())]);
        assert_eq!(response.body, b"x");
        assert!(matches!(Decision::from(response), Decision::Respond(r) if r.status == 204));
    }

    #[test]
    fn problem_is_rfc_9457_json() {
        let response = problem(401, "Unauthorized", "No \"credentials\".");
        assert_eq!(response.status, 401);
        assert_eq!(response.headers, vec![("content-type".to_owned(), "application/problem+json".to_owned())]);
        let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "type": "about:blank",
                "title": "Unauthorized",
                "status": 401,
                "detail": "No \"credentials\".",
            })
        );
    }
}
