//! The authorization endpoint's pages: sign in and allow an application, or an error that
//! cannot be sent back to the application. No script at all; a Content-Security-Policy
//! that allows only the page's own style, and no framing (a consent page in someone
//! else's frame is a clickjacking target).

use std::fmt::Write;
use std::sync::LazyLock;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:28rem;margin:2rem auto;padding:0 1rem;line-height:1.4}\
label{display:block;margin-top:.8rem}input{width:100%;padding:.4rem;box-sizing:border-box}\
.actions{margin-top:1.2rem;display:flex;gap:.6rem}button{padding:.5rem 1.2rem}\
.message{color:#a00;font-weight:bold}code{background:#eee;padding:0 .2rem}";

/// The policy: nothing but the style above, forms posted here, never framed.
static CONTENT_SECURITY_POLICY: LazyLock<HeaderValue> = LazyLock::new(|| {
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
    HeaderValue::from_str(&format!("default-src 'none'; style-src 'sha256-{hash}'; frame-ancestors 'none'; base-uri 'none'"))
        .expect("a header value")
});

/// What the consent page shows and posts back.
pub(super) struct Consent<'a> {
    /// The application asking.
    pub application: &'a str,
    /// Its owner's user name.
    pub owner: &'a str,
    /// The scopes asked for.
    pub scopes: &'a [String],
    /// The request's parameters (name, value), posted back as they came.
    pub request: &'a [(&'static str, &'a str)],
    /// The anti-forgery token.
    pub csrf: &'a str,
    /// Where the form posts: this endpoint's path as browsers reach it.
    pub action: &'a str,
    /// What went wrong with the last answer, if anything.
    pub message: Option<&'a str>,
}

/// The sign-in and consent page.
pub(super) fn consent(status: StatusCode, consent: &Consent) -> Response {
    let mut body = String::with_capacity(2048);
    let application = escape(consent.application);
    let _ = write!(
        body,
        "<h1>Allow {application}?</h1><p><strong>{application}</strong> (an application of {}) asks to call APIs on your behalf",
        escape(consent.owner)
    );
    if consent.scopes.is_empty() {
        body.push_str(".</p>");
    } else {
        body.push_str(" with these scopes:</p><ul>");
        for scope in consent.scopes {
            let _ = write!(body, "<li><code>{}</code></li>", escape(scope));
        }
        body.push_str("</ul>");
    }
    body.push_str("<p>Sign in to answer.</p>");
    if let Some(message) = consent.message {
        let _ = write!(body, "<p class=\"message\" role=\"alert\">{}</p>", escape(message));
    }
    let _ = write!(body, "<form method=\"post\" action=\"{}\">", escape(consent.action));
    for (name, value) in consent.request {
        let _ = write!(body, "<input type=\"hidden\" name=\"{name}\" value=\"{}\">", escape(value));
    }
    let _ = write!(body, "<input type=\"hidden\" name=\"csrf\" value=\"{}\">", escape(consent.csrf));
    body.push_str(
        "<label for=\"username\">User name</label><input id=\"username\" name=\"username\" autocomplete=\"username\" required autofocus>\
         <label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
         <div class=\"actions\"><button type=\"submit\" name=\"decision\" value=\"allow\">Allow</button>\
         <button type=\"submit\" name=\"decision\" value=\"deny\" formnovalidate>Deny</button></div></form>",
    );
    page(status, &format!("Allow {application}? — Portico"), &body)
}

/// A page saying what is wrong, for errors that cannot go back to the application.
pub(super) fn error(status: StatusCode, message: &str) -> Response {
    page(status, "Authorization failed — Portico", &format!("<h1>Authorization failed</h1><p role=\"alert\">{}</p>", escape(message)))
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>{STYLE}</style></head><body><main>{body}</main></body></html>"
    );
    let mut response = (status, Html(html)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY.clone());
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `text` safe in HTML text and in double-quoted attribute values.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn text_from_the_request_cannot_break_out_of_the_page() {
        use http_body_util::BodyExt;
        let request = [("client_id", "c"), ("state", "\"><script>alert(1)</script>")];
        let scopes = ["read".to_owned()];
        let consent = Consent {
            application: "<b>evil</b>",
            owner: "o'neil",
            scopes: &scopes,
            request: &request,
            csrf: "t",
            action: "/km/oauth2/authorize",
            message: None,
        };
        let response = super::consent(StatusCode::OK, &consent);
        let policy = response.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap().to_owned();
        assert!(policy.starts_with("default-src 'none'; style-src 'sha256-"), "{policy}");
        assert_eq!(response.headers()[header::X_FRAME_OPTIONS], "DENY");
        let html = String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
        assert!(!html.contains("<script>") && !html.contains("<b>"), "{html}");
        assert!(html.contains("value=\"&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;\""), "{html}");
        assert!(html.contains("&lt;b&gt;evil&lt;/b&gt;") && html.contains("o&#39;neil"), "{html}");
        assert!(html.contains("<form method=\"post\" action=\"/km/oauth2/authorize\">"), "{html}");
    }
}
