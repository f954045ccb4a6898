//! What every console page shares: the frame (navigation, the logged-in user, the logout
//! form), the security headers, and the page shown for an error.

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};

use crate::auth::{Caller, Role};
use crate::error::ApiError;

/// Scripts and styles from this origin only (no inline script or style), forms posted
/// here only, never framed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A logged-in visitor of the console (what `session` makes of the login cookie).
pub(super) struct Visitor {
    /// Who they are, as the API sees them.
    pub caller: Caller,
    /// The anti-forgery token of their session.
    pub csrf: String,
    /// Their session's token.
    pub token: String,
}

/// The frame around a page.
pub(super) struct Shell {
    /// The page's title (the site's name is added).
    pub title: String,
    /// The logged-in user's name.
    pub user: Option<String>,
    /// Their role.
    pub role: Option<Role>,
    /// The anti-forgery token the page's forms carry.
    pub csrf: String,
    /// The navigation entry that is current: `devportal`, `applications`, `publisher` or `admin`.
    pub section: &'static str,
}

impl Shell {
    /// The frame of a logged-in visitor's page.
    pub fn of(visitor: &Visitor, title: impl Into<String>, section: &'static str) -> Self {
        Self {
            title: title.into(),
            user: Some(visitor.caller.username.clone()),
            role: Some(visitor.caller.role),
            csrf: visitor.csrf.clone(),
            section,
        }
    }

    /// The frame of a page shown before login.
    pub fn anonymous(title: &str, csrf: String) -> Self {
        Self { title: title.to_owned(), user: None, role: None, csrf, section: "" }
    }

    /// Whether the user may use the publisher's pages.
    pub fn publishes(&self) -> bool {
        matches!(self.role, Some(Role::Publisher | Role::Admin))
    }

    /// Whether the user may use the admin's pages.
    pub fn administers(&self) -> bool {
        self.role == Some(Role::Admin)
    }

    /// `aria-current` for the navigation entry `section`.
    pub fn current(&self, section: &str) -> &'static str {
        if self.section == section { "page" } else { "false" }
    }
}

/// A rendered page with `status` and the console's headers.
pub(super) fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => with_headers((status, Html(html)).into_response()),
        Err(e) => {
            tracing::error!(error = %e, "a console page failed to render");
            with_headers((StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response())
        }
    }
}

/// `response` with the headers every console answer carries.
pub(super) fn with_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

/// The value of `name` in a query string (empty when absent).
pub(super) fn query_value(query: Option<&str>, name: &str) -> String {
    query.and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(key, _)| key == name).map(|(_, v)| v.into_owned())).unwrap_or_default()
}

/// Milliseconds since the Unix epoch as a UTC date and time.
pub(super) fn when(ms: &i64) -> String {
    jiff::Timestamp::from_millisecond(*ms).map_or_else(|_| ms.to_string(), |t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
}

/// A redirect after a form was handled (the browser then gets the page).
pub(super) fn see_other(to: &str) -> Response {
    with_headers(Redirect::to(to).into_response())
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage {
    shell: Shell,
    status: u16,
    reason: &'static str,
    detail: String,
}

/// The page for an error of the API a page called: the login page when the session is
/// gone, else the problem's status and detail.
pub(super) fn error(visitor: Option<&Visitor>, error: ApiError) -> Response {
    let status = error.status();
    if status == StatusCode::UNAUTHORIZED && visitor.is_some() {
        return see_other("/login");
    }
    let reason = match status {
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::NOT_FOUND => "Not found",
        status => status.canonical_reason().unwrap_or("Error"),
    };
    let shell = match visitor {
        Some(visitor) => Shell::of(visitor, reason, ""),
        None => Shell::anonymous(reason, String::new()),
    };
    render(status, &ErrorPage { shell, status: status.as_u16(), reason, detail: error.detail() })
}

/// Errors of a form, by the field they name; a problem naming no field of the form is
/// shown above it.
#[derive(Debug, Default)]
pub(super) struct FormErrors {
    fields: Vec<(String, String)>,
    /// The message for the form as a whole.
    pub general: Option<String>,
}

impl FormErrors {
    /// The errors for `error`, where `fields` are the form's field names; a problem inside a
    /// field (`endpoints[1]`, `openapi.paths`) is shown next to it, naming where.
    pub fn from(error: &ApiError, fields: &[&str]) -> Self {
        if let ApiError::Validation { field, message } = error {
            let inside = |name: &&&str| field.strip_prefix(**name).is_some_and(|rest| rest.starts_with(['.', '[']));
            if fields.contains(&field.as_str()) {
                return Self { fields: vec![(field.clone(), message.clone())], general: None };
            }
            if let Some(name) = fields.iter().find(inside) {
                return Self { fields: vec![((*name).to_owned(), format!("{field}: {message}"))], general: None };
            }
        }
        Self { fields: Vec::new(), general: Some(error.detail()) }
    }

    /// The message for `field`, if any.
    pub fn on(&self, field: &str) -> Option<&str> {
        self.fields.iter().find(|(name, _)| name == field).map(|(_, message)| message.as_str())
    }

    /// Whether there is any.
    pub fn any(&self) -> bool {
        self.general.is_some() || !self.fields.is_empty()
    }

    /// The status of a page showing the form: 400 with a problem on it, else 200.
    pub fn status(&self) -> StatusCode {
        if self.any() { StatusCode::BAD_REQUEST } else { StatusCode::OK }
    }
}
