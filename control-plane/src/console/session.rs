//! Who is using the console: the login cookie (a session of the same table as the API's
//! bearer tokens, `HttpOnly`, `SameSite=Lax`, `Secure` behind an `https://` public URL),
//! the anti-forgery token every form carries (derived from the session, or a cookie of its
//! own before login), and the login, logout and sign-up pages.

use askama::Template;
use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, RawQuery, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};

use super::page::{self, FormErrors, Shell, Visitor, query_value, render, see_other};
use crate::AppState;
use crate::auth::{self, Login, Role, Source, cookie, random_token, same_secret};
use crate::devportal::{self, SignUp};
use crate::error::{ApiError, JsonBody};

/// The largest form body read.
const MAX_FORM: usize = 1 << 20;

/// What a forged (or stale) form is told.
const FORGED: &str = "the form's anti-forgery token is missing or wrong: reload the page and send it again";

/// The name of a console cookie: `__Host-` prefixed when it is `Secure` (so that no
/// subdomain and no plain-HTTP page can set it).
fn cookie_name(state: &AppState, name: &str) -> String {
    if secure(state) { format!("__Host-portico_{name}") } else { format!("portico_{name}") }
}

fn secure(state: &AppState) -> bool {
    state.settings.public_url.get(..8).is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
}

/// A `Set-Cookie` value; `max_age` none for a cookie that ends with the browser session.
fn set_cookie(state: &AppState, name: &str, value: &str, same_site: &str, max_age: Option<i64>) -> HeaderValue {
    let mut cookie = format!("{}={value}; Path=/; HttpOnly; SameSite={same_site}", cookie_name(state, name));
    if let Some(seconds) = max_age {
        cookie.push_str(&format!("; Max-Age={seconds}"));
    }
    if secure(state) {
        cookie.push_str("; Secure");
    }
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The anti-forgery token of the session `token`: only its holder can work it out.
fn csrf_of(token: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(token.as_bytes()).expect("HMAC takes any key length");
    mac.update(b"portico console forms");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// The login page, coming back to `parts`' page after (for a page fetched; a form posted
/// is not replayed).
fn to_login(parts: &Parts) -> Response {
    if parts.method != Method::GET {
        return see_other("/login");
    }
    let back = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    see_other(&format!("/login?next={}", percent_encoding::utf8_percent_encode(back, percent_encoding::NON_ALPHANUMERIC)))
}

impl FromRequestParts<AppState> for Visitor {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Some(token) = cookie(&parts.headers, &cookie_name(state, "session")) else { return Err(to_login(parts)) };
        match auth::session_caller(&state.db, token).await {
            Ok(caller) => Ok(Visitor { caller, csrf: csrf_of(token), token: token.to_owned() }),
            Err(ApiError::Unauthorized(_)) => Err(to_login(parts)),
            Err(e) => Err(page::error(None, e)),
        }
    }
}

/// The fields of a posted form, its anti-forgery token checked: text fields, and the files
/// of a multipart form.
pub(super) struct Fields {
    values: Vec<(String, String)>,
    files: Vec<(String, Bytes)>,
}

impl Fields {
    /// The value of `name` (empty when absent).
    pub fn get(&self, name: &str) -> &str {
        self.values.iter().find(|(key, _)| key == name).map_or("", |(_, value)| value.as_str())
    }

    /// Every value of `name` (checkboxes), in order.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.values.iter().filter(|(key, _)| key == name).map(|(_, value)| value.clone()).collect()
    }

    /// The file sent as `name`, when one was chosen.
    pub fn file(&self, name: &str) -> Option<&Bytes> {
        self.files.iter().find(|(key, bytes)| key == name && !bytes.is_empty()).map(|(_, bytes)| bytes)
    }

    async fn read(request: Request, expected: &str) -> Result<Self, ApiError> {
        // Without a token to match (no cookie before login), nothing is read.
        if expected.is_empty() {
            return Err(ApiError::Forbidden(FORGED.to_owned()));
        }
        let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let fields = if content_type.starts_with("application/x-www-form-urlencoded") {
            let body = axum::body::to_bytes(request.into_body(), MAX_FORM)
                .await
                .map_err(|e| ApiError::invalid("(body)", format!("cannot read the form: {e}")))?;
            Fields { values: form_urlencoded::parse(&body).into_owned().collect(), files: Vec::new() }
        } else if content_type.starts_with("multipart/form-data") {
            Self::read_multipart(request).await?
        } else {
            return Err(ApiError::invalid("(body)", "send the form as `application/x-www-form-urlencoded` or `multipart/form-data`"));
        };
        if !same_secret(fields.get("csrf"), expected) {
            return Err(ApiError::Forbidden(FORGED.to_owned()));
        }
        if let Some((name, _)) = fields.values.iter().find(|(_, value)| value.contains('\0')) {
            return Err(ApiError::invalid(name.clone(), "must not contain the NUL character"));
        }
        Ok(fields)
    }
}

impl Fields {
    /// A form with files: its files as they came, its other parts as text.
    async fn read_multipart(request: Request) -> Result<Fields, ApiError> {
        let unreadable = |e: axum::extract::multipart::MultipartError| ApiError::invalid("(body)", format!("cannot read the form: {e}"));
        let mut multipart =
            axum::extract::Multipart::from_request(request, &()).await.map_err(|e| ApiError::invalid("(body)", e.body_text()))?;
        let mut fields = Fields { values: Vec::new(), files: Vec::new() };
        while let Some(part) = multipart.next_field().await.map_err(unreadable)? {
            let name = part.name().unwrap_or_default().to_owned();
            let is_file = part.file_name().is_some();
            let bytes = part.bytes().await.map_err(unreadable)?;
            if is_file {
                fields.files.push((name, bytes));
            } else {
                let text = String::from_utf8(bytes.to_vec()).map_err(|_| ApiError::invalid(name.clone(), "text in UTF-8"))?;
                fields.values.push((name, text));
            }
        }
        Ok(fields)
    }
}

/// A form posted by a logged-in visitor.
pub(super) struct Posted {
    /// Who posted it.
    pub visitor: Visitor,
    /// What they sent.
    pub fields: Fields,
    /// Where from.
    pub source: Source,
}

impl FromRequest<AppState> for Posted {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let visitor = Visitor::from_request_parts(&mut parts, state).await?;
        let source = Source::of(&parts);
        match Fields::read(Request::from_parts(parts, body), &visitor.csrf).await {
            Ok(fields) => Ok(Posted { visitor, fields, source }),
            Err(e) => Err(page::error(Some(&visitor), e)),
        }
    }
}

/// A form posted before login (logging in, signing up): its token is a cookie's.
pub(super) struct AnonymousPost {
    fields: Fields,
    source: Source,
}

impl FromRequest<AppState> for AnonymousPost {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let expected = cookie(request.headers(), &cookie_name(state, "csrf")).unwrap_or("").to_owned();
        let (parts, body) = request.into_parts();
        let source = Source::of(&parts);
        match Fields::read(Request::from_parts(parts, body), &expected).await {
            Ok(fields) => Ok(AnonymousPost { fields, source }),
            Err(e) => Err(page::error(None, e)),
        }
    }
}

/// The anti-forgery token of a page shown before login, and the cookie that holds it
/// when the browser has none yet.
fn anonymous_csrf(state: &AppState, headers: &HeaderMap) -> (String, Option<HeaderValue>) {
    match cookie(headers, &cookie_name(state, "csrf")) {
        Some(token) if token.len() == 43 => (token.to_owned(), None),
        _ => {
            let token = random_token();
            let cookie = set_cookie(state, "csrf", &token, "Strict", None);
            (token, Some(cookie))
        }
    }
}

/// Where a user goes after logging in: `next` when it is a page of this site.
fn after_login(next: &str, role: Role) -> String {
    // A path of this site only: not `//host`, and nothing a browser would drop or turn
    // into one (a backslash, white space, a control character).
    let local = next.starts_with('/') && !next.starts_with("//") && !next.chars().any(|c| c == '\\' || c.is_whitespace() || c.is_control());
    match (local, role) {
        (true, _) => next.to_owned(),
        (false, Role::Publisher | Role::Admin) => "/publisher".to_owned(),
        (false, Role::Subscriber) => "/devportal".to_owned(),
    }
}

/// `/`: the visitor's home page.
pub(super) async fn home(visitor: Visitor) -> Response {
    see_other(&after_login("", visitor.caller.role))
}

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage {
    shell: Shell,
    next: String,
    username: String,
    errors: FormErrors,
}

fn with_cookie(mut response: Response, cookie: Option<HeaderValue>) -> Response {
    if let Some(cookie) = cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// `GET /login`.
pub(super) async fn login_page(State(state): State<AppState>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let (csrf, cookie) = anonymous_csrf(&state, &headers);
    let page = LoginPage {
        shell: Shell::anonymous("Log in", csrf),
        next: query_value(query.as_deref(), "next"),
        username: String::new(),
        errors: FormErrors::default(),
    };
    with_cookie(render(StatusCode::OK, &page), cookie)
}

/// A new session for `login`'s user: the cookie set and the browser sent on.
async fn start_session(state: &AppState, source: Source, login: Login, next: &str) -> Result<Response, ApiError> {
    let Json(session) = auth::login(State(state.clone()), source, JsonBody(login)).await?;
    let max_age = (session.expires_at - crate::db::now_ms()) / 1000;
    let mut response = see_other(&after_login(next, session.role));
    response.headers_mut().append(header::SET_COOKIE, set_cookie(state, "session", &session.token, "Lax", Some(max_age)));
    Ok(response)
}

/// `POST /login`.
pub(super) async fn login(State(state): State<AppState>, form: AnonymousPost) -> Response {
    let fields = &form.fields;
    let login = Login { username: fields.get("username").to_owned(), password: fields.get("password").to_owned() };
    match start_session(&state, form.source, login, fields.get("next")).await {
        Ok(response) => response,
        Err(e) => {
            let page = LoginPage {
                shell: Shell::anonymous("Log in", fields.get("csrf").to_owned()),
                next: fields.get("next").to_owned(),
                username: fields.get("username").to_owned(),
                errors: FormErrors::from(&e, &[]),
            };
            render(e.status(), &page)
        }
    }
}

/// `POST /logout`: the session ended, its cookie dropped.
pub(super) async fn logout(State(state): State<AppState>, posted: Posted) -> Response {
    if let Err(e) = auth::end_session(&state.db, &posted.visitor.token).await {
        return page::error(Some(&posted.visitor), e);
    }
    let mut response = see_other("/login");
    response.headers_mut().append(header::SET_COOKIE, set_cookie(&state, "session", "", "Lax", Some(0)));
    response
}

#[derive(Template)]
#[template(path = "console/signup.html")]
struct SignUpPage {
    shell: Shell,
    username: String,
    errors: FormErrors,
}

/// `GET /signup`.
pub(super) async fn signup_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (csrf, cookie) = anonymous_csrf(&state, &headers);
    let page = SignUpPage { shell: Shell::anonymous("Sign up", csrf), username: String::new(), errors: FormErrors::default() };
    with_cookie(render(StatusCode::OK, &page), cookie)
}

/// `POST /signup`: a subscriber account, then logged in.
pub(super) async fn signup(State(state): State<AppState>, form: AnonymousPost) -> Response {
    let fields = &form.fields;
    let (username, password) = (fields.get("username").to_owned(), fields.get("password").to_owned());
    let result = async {
        let _created =
            devportal::signup::signup(State(state.clone()), JsonBody(SignUp { username: username.clone(), password: password.clone() }))
                .await?;
        start_session(&state, form.source, Login { username: username.clone(), password }, "/devportal").await
    };
    match result.await {
        Ok(response) => response,
        Err(e) => {
            let page = SignUpPage {
                shell: Shell::anonymous("Sign up", fields.get("csrf").to_owned()),
                username,
                errors: FormErrors::from(&e, &["username", "password"]),
            };
            render(e.status(), &page)
        }
    }
}
