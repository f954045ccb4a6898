//! The developer portal's pages: the catalogue (search and tags), an API's page (its
//! documentation and operations, subscribing an application), the visitor's applications,
//! their subscriptions and API keys (a new key shown once).

use askama::Template;
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pulldown_cmark::{Event, HeadingLevel, Parser, Tag, TagEnd};

use super::page::{self, FormErrors, Shell, Visitor, query_value, render, see_other, when};
use super::session::Posted;
use super::try_it::{self, Answer, Call};
use crate::AppState;
use crate::devportal::{
    Application, ApplicationFields, CatalogueApi, CatalogueSearch, NewApiKey, NewSubscription, Subscription, api_keys, applications,
    catalogue, subscriptions,
};
use crate::devportal::{OAuthClient, OAuthClientSecret, oauth_clients};
use crate::error::{ApiError, JsonBody, QueryParams};
use crate::keymanager::{self, OAuthError, TokenResponse};
use crate::traffic::{self, Tier};

/// Markdown as HTML: raw HTML in it shown as text, and links only to the web, mail or
/// this site.
fn markdown(text: &str) -> String {
    let safe =
        |url: &str| ["http://", "https://", "mailto:", "/", "#"].iter().any(|prefix| url.starts_with(prefix)) && !url.starts_with("//");
    let events = Parser::new(text).map(|event| match event {
        Event::Html(raw) | Event::InlineHtml(raw) => Event::Text(raw),
        Event::Start(Tag::Link { link_type, dest_url, title, id }) if !safe(&dest_url) => {
            Event::Start(Tag::Link { link_type, dest_url: "#".into(), title, id })
        }
        Event::Start(Tag::Image { link_type, dest_url, title, id }) if !safe(&dest_url) => {
            Event::Start(Tag::Image { link_type, dest_url: "#".into(), title, id })
        }
        // The page has its own `h1` and `h2`: the document's headings go below them.
        Event::Start(Tag::Heading { level, id, classes, attrs }) => {
            Event::Start(Tag::Heading { level: below_the_page(level), id, classes, attrs })
        }
        Event::End(TagEnd::Heading(level)) => Event::End(TagEnd::Heading(below_the_page(level))),
        other => other,
    });
    let mut html = String::with_capacity(text.len() * 2);
    pulldown_cmark::html::push_html(&mut html, events);
    html
}

fn below_the_page(level: HeadingLevel) -> HeadingLevel {
    HeadingLevel::try_from(level as usize + 2).unwrap_or(HeadingLevel::H6)
}

#[derive(Template)]
#[template(path = "console/catalogue.html")]
struct CataloguePage {
    shell: Shell,
    q: String,
    tag: String,
    tags: Vec<String>,
    apis: Vec<CatalogueApi>,
}

/// `GET /devportal`: the catalogue, searched by `q` and `tag`.
pub(super) async fn catalogue(State(state): State<AppState>, visitor: Visitor, RawQuery(query): RawQuery) -> Response {
    let (q, tag) = (query_value(query.as_deref(), "q"), query_value(query.as_deref(), "tag"));
    let list = |q: &str, tag: &str| {
        let search = CatalogueSearch { q: Some(q.to_owned()), tag: Some(tag.to_owned()) };
        catalogue::list(State(state.clone()), visitor.caller.clone(), QueryParams(search))
    };
    let (all, found) = match (list("", "").await, list(&q, &tag).await) {
        (Ok(Json(all)), Ok(Json(found))) => (all, found),
        (Err(e), _) | (_, Err(e)) => return page::error(Some(&visitor), e),
    };
    let mut tags: Vec<String> = all.into_iter().flat_map(|api| api.tags).collect();
    tags.sort_by_key(|tag| tag.to_lowercase());
    tags.dedup_by_key(|tag| tag.to_lowercase());
    let page = CataloguePage { shell: Shell::of(&visitor, "APIs", "devportal"), q, tag, tags, apis: found };
    render(StatusCode::OK, &page)
}

/// What the API page's two forms hold besides the API: the subscription chosen and the
/// try-it call, each with its problems, and the call's answer.
#[derive(Default)]
struct Panels {
    chosen_application: String,
    chosen_tier: String,
    errors: FormErrors,
    call: Call,
    answer: Option<Answer>,
    try_errors: FormErrors,
}

#[derive(Template)]
#[template(path = "console/api.html")]
struct ApiPage {
    shell: Shell,
    api: CatalogueApi,
    documentation: String,
    applications: Vec<Application>,
    methods: &'static [&'static str],
    panels: Panels,
}

async fn api_page(state: &AppState, visitor: &Visitor, id: String, mut panels: Panels) -> Response {
    let api = catalogue::get(State(state.clone()), visitor.caller.clone(), Path(id)).await;
    let applications = applications::list(State(state.clone()), visitor.caller.clone()).await;
    // Only subscribers have applications; others read the page without the form.
    let applications = match applications {
        Ok(Json(applications)) => applications,
        Err(ApiError::Forbidden(_)) => Vec::new(),
        Err(e) => return page::error(Some(visitor), e),
    };
    let api = match api {
        Ok(Json(api)) => api,
        Err(e) => return page::error(Some(visitor), e),
    };
    if panels.call.path.is_empty() {
        panels.call.path = api.operations.first().map(|op| op.path.clone()).unwrap_or_else(|| "/".to_owned());
    }
    let status = if panels.errors.any() || panels.try_errors.any() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    let page = ApiPage {
        shell: Shell::of(visitor, format!("{} {}", api.name, api.version), "devportal"),
        documentation: markdown(api.documentation.as_deref().unwrap_or("")),
        api,
        applications,
        methods: try_it::METHODS,
        panels,
    };
    render(status, &page)
}

/// `GET /devportal/apis/{id}`.
pub(super) async fn api(State(state): State<AppState>, visitor: Visitor, Path(id): Path<String>) -> Response {
    api_page(&state, &visitor, id, Panels::default()).await
}

/// `GET /devportal/apis/{id}/openapi.json`: the API's OpenAPI document, to save.
pub(super) async fn openapi(State(state): State<AppState>, visitor: Visitor, Path(id): Path<String>) -> Response {
    match catalogue::openapi(State(state), visitor.caller.clone(), Path(id)).await {
        Ok(document) => {
            let mut response = page::with_headers(document.into_response());
            let disposition = HeaderValue::from_static("attachment; filename=\"openapi.json\"");
            response.headers_mut().insert(header::CONTENT_DISPOSITION, disposition);
            response
        }
        Err(e) => page::error(Some(&visitor), e),
    }
}

/// `POST /devportal/apis/{id}/try`: the call made through the gateway, its answer shown.
pub(super) async fn try_api(State(state): State<AppState>, Path(id): Path<String>, posted: Posted) -> Response {
    let field = |name: &str| posted.fields.get(name).to_owned();
    let call = Call {
        gateway_url: field("gateway_url"),
        method: field("method"),
        path: field("path"),
        api_key: field("api_key"),
        token: field("token"),
        body: field("body"),
    };
    let api = match catalogue::get(State(state.clone()), posted.visitor.caller.clone(), Path(id.clone())).await {
        Ok(Json(api)) => api,
        Err(e) => return page::error(Some(&posted.visitor), e),
    };
    let blocked = match crate::traffic::blocking::for_gateways(&state.db).await {
        Ok(blocked) => blocked,
        Err(e) => return page::error(Some(&posted.visitor), e),
    };
    let mut panels = Panels::default();
    match try_it::send(&api, &call, posted.source.0, &blocked).await {
        Ok(answer) => panels.answer = Some(answer),
        Err(e @ ApiError::Forbidden(_)) => return page::error(Some(&posted.visitor), e),
        Err(e) => panels.try_errors = FormErrors::from(&e, &["gateway_url", "method", "path", "api_key", "token", "body"]),
    }
    panels.call = call;
    api_page(&state, &posted.visitor, id, panels).await
}

#[derive(Template)]
#[template(path = "console/applications.html")]
struct ApplicationsPage {
    shell: Shell,
    applications: Vec<Application>,
    tiers: Vec<Tier>,
    name: String,
    description: String,
    tier: String,
    errors: FormErrors,
}

async fn applications_page(state: &AppState, visitor: &Visitor, entered: ApplicationFields, errors: FormErrors) -> Response {
    let applications = match applications::list(State(state.clone()), visitor.caller.clone()).await {
        Ok(Json(applications)) => applications,
        Err(e) => return page::error(Some(visitor), e),
    };
    let tiers = match traffic::all(&state.db, "application").await {
        Ok(tiers) => tiers,
        Err(e) => return page::error(Some(visitor), e),
    };
    let status = errors.status();
    let page = ApplicationsPage {
        shell: Shell::of(visitor, "Applications", "applications"),
        applications,
        tiers,
        name: entered.name,
        description: entered.description,
        tier: entered.tier,
        errors,
    };
    render(status, &page)
}

/// `GET /devportal/applications`.
pub(super) async fn applications(State(state): State<AppState>, visitor: Visitor) -> Response {
    let blank = ApplicationFields { name: String::new(), description: String::new(), tier: "Unlimited".to_owned() };
    applications_page(&state, &visitor, blank, FormErrors::default()).await
}

/// `POST /devportal/applications`.
pub(super) async fn create_application(State(state): State<AppState>, posted: Posted) -> Response {
    let fields = |name: &str| posted.fields.get(name).to_owned();
    let new = ApplicationFields { name: fields("name"), description: fields("description"), tier: fields("tier") };
    match applications::create(State(state.clone()), posted.visitor.caller.clone(), JsonBody(new)).await {
        Ok((_, Json(created))) => see_other(&format!("/devportal/applications/{}", created.id)),
        Err(e) => {
            let errors = FormErrors::from(&e, &["name", "description", "tier"]);
            let entered = ApplicationFields { name: fields("name"), description: fields("description"), tier: fields("tier") };
            applications_page(&state, &posted.visitor, entered, errors).await
        }
    }
}

/// What the application page shows once, just made: an API key, the OAuth2 client's
/// secret, a test token (or why it was refused).
#[derive(Default)]
struct Shown {
    key: Option<NewApiKey>,
    secret: Option<OAuthClientSecret>,
    token: Option<TokenResponse>,
    scope: String,
    token_errors: FormErrors,
}

#[derive(Template)]
#[template(path = "console/application.html")]
struct ApplicationPage {
    shell: Shell,
    application: Application,
    subscriptions: Vec<Subscription>,
    keys: Vec<api_keys::ApiKey>,
    oauth: Option<OAuthClient>,
    shown: Shown,
}

async fn application_page(state: &AppState, visitor: &Visitor, id: String, shown: Shown) -> Response {
    let caller = || visitor.caller.clone();
    let result = async {
        let Json(application) = applications::get(State(state.clone()), caller(), Path(id.clone())).await?;
        let Json(subscriptions) = subscriptions::list(State(state.clone()), caller(), Path(id.clone())).await?;
        let Json(keys) = api_keys::list(State(state.clone()), caller(), Path(id.clone())).await?;
        let oauth = match oauth_clients::get(State(state.clone()), caller(), Path(id)).await {
            Ok(Json(client)) => Some(client),
            Err(ApiError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        Ok(ApplicationPage {
            shell: Shell::of(visitor, application.name.clone(), "applications"),
            application,
            subscriptions,
            keys,
            oauth,
            shown,
        })
    };
    match result.await {
        Ok(page) => {
            let status = page.shown.token_errors.status();
            render(status, &page)
        }
        Err(e) => page::error(Some(visitor), e),
    }
}

/// `GET /devportal/applications/{id}`.
pub(super) async fn application(State(state): State<AppState>, visitor: Visitor, Path(id): Path<String>) -> Response {
    application_page(&state, &visitor, id, Shown::default()).await
}

/// `POST /devportal/applications/{id}/oauth-client`: the client made, its secret shown once.
pub(super) async fn create_oauth_client(State(state): State<AppState>, Path(id): Path<String>, posted: Posted) -> Response {
    match oauth_clients::create(State(state.clone()), posted.visitor.caller.clone(), Path(id.clone())).await {
        Ok((_, Json(secret))) => application_page(&state, &posted.visitor, id, Shown { secret: Some(secret), ..Shown::default() }).await,
        Err(e) => page::error(Some(&posted.visitor), e),
    }
}

/// `POST /devportal/applications/{id}/oauth-client/secret`: a new secret, shown once.
pub(super) async fn regenerate_secret(State(state): State<AppState>, Path(id): Path<String>, posted: Posted) -> Response {
    match oauth_clients::regenerate_secret(State(state.clone()), posted.visitor.caller.clone(), Path(id.clone())).await {
        Ok(Json(secret)) => application_page(&state, &posted.visitor, id, Shown { secret: Some(secret), ..Shown::default() }).await,
        Err(e) => page::error(Some(&posted.visitor), e),
    }
}

/// `POST /devportal/applications/{id}/oauth-client/token` (`scope`): an access token for
/// testing, shown once.
pub(super) async fn test_token(State(state): State<AppState>, Path(id): Path<String>, posted: Posted) -> Response {
    let scope = posted.fields.get("scope").to_owned();
    let client = match oauth_clients::get(State(state.clone()), posted.visitor.caller.clone(), Path(id.clone())).await {
        Ok(Json(client)) => client,
        Err(e) => return page::error(Some(&posted.visitor), e),
    };
    let mut shown = Shown { scope: scope.clone(), ..Shown::default() };
    match keymanager::token_for_owner(&state, &client.client_id, &id, &scope).await {
        Ok(token) => shown.token = Some(token),
        Err(OAuthError::Server(e)) => return page::error(Some(&posted.visitor), e),
        Err(e) => shown.token_errors = FormErrors::from(&ApiError::invalid("scope", e.to_string()), &["scope"]),
    }
    application_page(&state, &posted.visitor, id, shown).await
}

/// `POST /devportal/subscriptions`: the API page's form (`application`, `api_id`, `tier`).
pub(super) async fn subscribe(State(state): State<AppState>, posted: Posted) -> Response {
    let application = posted.fields.get("application").to_owned();
    let api_id = posted.fields.get("api_id").to_owned();
    let tier = Some(posted.fields.get("tier").to_owned()).filter(|tier| !tier.is_empty());
    let new = NewSubscription { api_id: api_id.clone(), tier: tier.clone() };
    match subscriptions::subscribe(State(state.clone()), posted.visitor.caller.clone(), Path(application.clone()), JsonBody(new)).await {
        Ok(_) => see_other(&format!("/devportal/applications/{application}")),
        Err(e) => {
            let errors = match e {
                // The application is the path's to the API: here it is the form's field.
                ApiError::NotFound(message) if message.starts_with("application") => {
                    FormErrors::from(&ApiError::invalid("application", message), &["application"])
                }
                e => FormErrors::from(&e, &["tier"]),
            };
            let panels = Panels { chosen_application: application, chosen_tier: tier.unwrap_or_default(), errors, ..Panels::default() };
            api_page(&state, &posted.visitor, api_id, panels).await
        }
    }
}

/// `POST /devportal/applications/{id}/subscriptions/{sub_id}/delete`.
pub(super) async fn unsubscribe(State(state): State<AppState>, Path((id, sub_id)): Path<(String, String)>, posted: Posted) -> Response {
    match subscriptions::unsubscribe(State(state.clone()), posted.visitor.caller.clone(), Path((id.clone(), sub_id))).await {
        Ok(_) => see_other(&format!("/devportal/applications/{id}")),
        Err(e) => page::error(Some(&posted.visitor), e),
    }
}

/// `POST /devportal/applications/{id}/api-keys`: the page again, showing the new key once.
pub(super) async fn create_api_key(State(state): State<AppState>, Path(id): Path<String>, posted: Posted) -> Response {
    match api_keys::create(State(state.clone()), posted.visitor.caller.clone(), Path(id.clone())).await {
        Ok((_, Json(key))) => application_page(&state, &posted.visitor, id, Shown { key: Some(key), ..Shown::default() }).await,
        Err(e) => page::error(Some(&posted.visitor), e),
    }
}

/// `POST /devportal/applications/{id}/api-keys/{key_id}/revoke`.
pub(super) async fn revoke_api_key(State(state): State<AppState>, Path((id, key_id)): Path<(String, String)>, posted: Posted) -> Response {
    match api_keys::revoke(State(state.clone()), posted.visitor.caller.clone(), Path((id.clone(), key_id))).await {
        Ok(_) => see_other(&format!("/devportal/applications/{id}")),
        Err(e) => page::error(Some(&posted.visitor), e),
    }
}

#[cfg(test)]
mod tests {
    use super::markdown;

    #[test]
    fn documentation_cannot_carry_script() {
        let html = markdown(
            "# Pets\n\n###### Small\n<script>alert(1)</script>\n\n[click](javascript:alert(1)) [ok](https://example.com/x) <b>x</b>",
        );
        assert!(html.contains("<h3>Pets</h3>"), "{html}");
        assert!(!html.contains("<script>") && !html.contains("<b>"), "{html}");
        assert!(html.contains("&lt;script&gt;") && html.contains("<h6>Small</h6>"), "{html}");
        assert!(html.contains("<a href=\"#\">click</a>") && html.contains("<a href=\"https://example.com/x\">ok</a>"), "{html}");
    }
}
