//! The admin's pages: users and their roles, the traffic tiers, the environments (where
//! their gateways are reached, their gateway tokens), the fleet and the blocking conditions.

use askama::Template;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::page::{self, FormErrors, Shell, Visitor, render, see_other, when};
use super::session::{Fields, Posted};
use crate::AppState;
use crate::auth::{self, NewUser, Role, User};
use crate::error::{ApiError, JsonBody};
use crate::fleet::tokens::{self, GatewayToken, IssuedGatewayToken, NewGatewayToken};
use crate::fleet::{GatewayStatus, gateways};
use crate::publisher::{Environment, GatewayUrl, NewEnvironment, environments};
use crate::traffic::blocking::{self, BlockingCondition, NewBlockingCondition};
use crate::traffic::{self, Tier, TierLimits};

#[derive(Template)]
#[template(path = "console/admin_users.html")]
struct UsersPage {
    shell: Shell,
    users: Vec<User>,
    username: String,
    role: String,
    errors: FormErrors,
}

async fn users_page(state: &AppState, visitor: &Visitor, entered: (String, String), errors: FormErrors) -> Response {
    match auth::list(State(state.clone()), visitor.caller.clone()).await {
        Ok(Json(users)) => {
            let status = errors.status();
            let (username, role) = entered;
            render(status, &UsersPage { shell: Shell::of(visitor, "Users", "admin"), users, username, role, errors })
        }
        Err(e) => page::error(Some(visitor), e),
    }
}

/// `GET /admin/users`.
pub(super) async fn users(State(state): State<AppState>, visitor: Visitor) -> Response {
    users_page(&state, &visitor, (String::new(), Role::Publisher.as_str().to_owned()), FormErrors::default()).await
}

/// `POST /admin/users` (`username`, `password`, `role`).
pub(super) async fn create_user(State(state): State<AppState>, posted: Posted) -> Response {
    let fields = &posted.fields;
    let entered = (fields.get("username").to_owned(), fields.get("role").to_owned());
    let role = serde_json::from_value::<Role>(serde_json::Value::from(fields.get("role")))
        .map_err(|_| ApiError::invalid("role", "admin, publisher or subscriber"));
    let result = match role {
        Ok(role) => {
            let user = NewUser { username: entered.0.clone(), password: fields.get("password").to_owned(), role };
            auth::create(State(state.clone()), posted.visitor.caller.clone(), JsonBody(user)).await.map(drop)
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => see_other("/admin/users"),
        Err(e @ (ApiError::Unauthorized(_) | ApiError::Forbidden(_))) => page::error(Some(&posted.visitor), e),
        Err(e) => users_page(&state, &posted.visitor, entered, FormErrors::from(&e, &["username", "password", "role"])).await,
    }
}

/// `POST /admin/users/{id}/role` (`role`).
pub(super) async fn set_role(State(state): State<AppState>, Path(id): Path<String>, posted: Posted) -> Response {
    let role = serde_json::from_value::<Role>(serde_json::Value::from(posted.fields.get("role")))
        .map_err(|_| ApiError::invalid("role", "admin, publisher or subscriber"));
    let result = match role {
        Ok(role) => auth::set_role(State(state.clone()), posted.visitor.caller.clone(), Path(id), JsonBody(auth::RoleChange { role }))
            .await
            .map(drop),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => see_other("/admin/users"),
        Err(e) => page::error(Some(&posted.visitor), e),
    }
}

/// What the tier form holds, as typed.
#[derive(Default)]
struct TierForm {
    kind: String,
    name: String,
    description: String,
    requests: String,
    per_ms: String,
    burst_requests: String,
    burst_per_ms: String,
    quota_requests: String,
    quota_period: String,
    time_zone: String,
}

impl TierForm {
    fn of(fields: &Fields) -> Self {
        let get = |name: &str| fields.get(name).trim().to_owned();
        Self {
            kind: get("kind"),
            name: get("name"),
            description: get("description"),
            requests: get("requests"),
            per_ms: get("per_ms"),
            burst_requests: get("burst_requests"),
            burst_per_ms: get("burst_per_ms"),
            quota_requests: get("quota_requests"),
            quota_period: get("quota_period"),
            time_zone: get("time_zone"),
        }
    }

    /// The limits the API takes: empty fields left out, numbers read.
    fn limits(&self) -> Result<TierLimits, ApiError> {
        let number = |field: &str, text: &str| match text {
            "" => Ok(None),
            text => text.parse::<i64>().map(Some).map_err(|_| ApiError::invalid(field, "a whole number")),
        };
        let text = |text: &str| Some(text.to_owned()).filter(|t| !t.is_empty());
        Ok(TierLimits {
            description: self.description.clone(),
            requests: number("requests", &self.requests)?,
            per_ms: number("per_ms", &self.per_ms)?,
            burst_requests: number("burst_requests", &self.burst_requests)?,
            burst_per_ms: number("burst_per_ms", &self.burst_per_ms)?,
            quota_requests: number("quota_requests", &self.quota_requests)?,
            quota_period: text(&self.quota_period),
            time_zone: text(&self.time_zone),
        })
    }
}

#[derive(Template)]
#[template(path = "console/admin_tiers.html")]
struct TiersPage {
    shell: Shell,
    tiers: Vec<Tier>,
    form: TierForm,
    errors: FormErrors,
}

impl TiersPage {
    /// A limit as read: `5000 per 60000 ms`, or nothing.
    fn limit(requests: &Option<i64>, per_ms: &Option<i64>) -> String {
        match (requests, per_ms) {
            (Some(requests), Some(per_ms)) => format!("{requests} per {per_ms} ms"),
            _ => String::new(),
        }
    }
}

async fn tiers_page(state: &AppState, visitor: &Visitor, form: TierForm, errors: FormErrors) -> Response {
    if let Err(e) = visitor.caller.require(&[Role::Admin]) {
        return page::error(Some(visitor), e);
    }
    match traffic::list(State(state.clone()), visitor.caller.clone()).await {
        Ok(Json(tiers)) => {
            let status = errors.status();
            render(status, &TiersPage { shell: Shell::of(visitor, "Tiers", "admin"), tiers, form, errors })
        }
        Err(e) => page::error(Some(visitor), e),
    }
}

/// `GET /admin/tiers`.
pub(super) async fn tiers(State(state): State<AppState>, visitor: Visitor) -> Response {
    let form = TierForm { kind: "subscription".to_owned(), ..TierForm::default() };
    tiers_page(&state, &visitor, form, FormErrors::default()).await
}

/// `POST /admin/tiers`: a tier made, or replaced when its kind and name exist.
pub(super) async fn save_tier(State(state): State<AppState>, posted: Posted) -> Response {
    let form = TierForm::of(&posted.fields);
    let result = match form.limits() {
        Ok(limits) => {
            let path = Path((form.kind.clone(), form.name.clone()));
            traffic::upsert(State(state.clone()), posted.visitor.caller.clone(), path, JsonBody(limits)).await.map(drop)
        }
        Err(e) => Err(e),
    };
    let fields = [
        "kind",
        "name",
        "description",
        "requests",
        "per_ms",
        "burst_requests",
        "burst_per_ms",
        "quota_requests",
        "quota_period",
        "time_zone",
    ];
    match result {
        Ok(()) => see_other("/admin/tiers"),
        Err(e @ (ApiError::Unauthorized(_) | ApiError::Forbidden(_))) => page::error(Some(&posted.visitor), e),
        Err(e) => tiers_page(&state, &posted.visitor, form, FormErrors::from(&e, &fields)).await,
    }
}

/// An environment with its gateway tokens.
struct EnvironmentView {
    environment: Environment,
    tokens: Vec<GatewayToken>,
}

#[derive(Template)]
#[template(path = "console/admin_environments.html")]
struct EnvironmentsPage {
    shell: Shell,
    environments: Vec<EnvironmentView>,
    issued: Option<IssuedGatewayToken>,
    /// The environment a form was posted for, with what it held and its problems.
    form_of: String,
    entered: (String, String, String),
    errors: FormErrors,
}

async fn environments_page(
    state: &AppState,
    visitor: &Visitor,
    issued: Option<IssuedGatewayToken>,
    form: (String, (String, String, String), FormErrors),
) -> Response {
    let caller = || visitor.caller.clone();
    let result = async {
        caller().require(&[Role::Admin])?;
        let Json(list) = environments::list(State(state.clone()), caller()).await?;
        let mut views = Vec::with_capacity(list.len());
        for environment in list {
            let Json(tokens) = tokens::list(State(state.clone()), caller(), Path(environment.name.clone())).await?;
            views.push(EnvironmentView { environment, tokens });
        }
        Ok::<_, ApiError>(views)
    };
    match result.await {
        Ok(environments) => {
            let (form_of, entered, errors) = form;
            let status = errors.status();
            let page =
                EnvironmentsPage { shell: Shell::of(visitor, "Environments", "admin"), environments, issued, form_of, entered, errors };
            render(status, &page)
        }
        Err(e) => page::error(Some(visitor), e),
    }
}

/// `GET /admin/environments`.
pub(super) async fn environments(State(state): State<AppState>, visitor: Visitor) -> Response {
    environments_page(&state, &visitor, None, Default::default()).await
}

/// After a form of the environments page: the page again, with the problem next to the
/// field in the form of `form_of` (an environment's name, or empty for the new one).
async fn environments_after(state: &AppState, posted: &Posted, form_of: &str, result: Result<(), ApiError>, fields: &[&str]) -> Response {
    match result {
        Ok(()) => see_other("/admin/environments"),
        Err(e @ (ApiError::Unauthorized(_) | ApiError::Forbidden(_) | ApiError::NotFound(_))) => page::error(Some(&posted.visitor), e),
        Err(e) => {
            let get = |name: &str| posted.fields.get(name).to_owned();
            let entered = (get("name"), get("description"), get("gateway_url"));
            environments_page(state, &posted.visitor, None, (form_of.to_owned(), entered, FormErrors::from(&e, fields))).await
        }
    }
}

/// `POST /admin/environments` (`name`, `description`, `gateway_url`).
pub(super) async fn create_environment(State(state): State<AppState>, posted: Posted) -> Response {
    let get = |name: &str| posted.fields.get(name).trim().to_owned();
    let new = NewEnvironment {
        name: get("name"),
        description: get("description"),
        gateway_url: Some(get("gateway_url")).filter(|u| !u.is_empty()),
    };
    let result = environments::create(State(state.clone()), posted.visitor.caller.clone(), JsonBody(new)).await.map(drop);
    environments_after(&state, &posted, "", result, &["name", "description", "gateway_url"]).await
}

/// `POST /admin/environments/{name}/gateway-url` (`gateway_url`, empty to forget it).
pub(super) async fn set_gateway_url(State(state): State<AppState>, Path(name): Path<String>, posted: Posted) -> Response {
    let url = Some(posted.fields.get("gateway_url").trim().to_owned()).filter(|u| !u.is_empty());
    let change = JsonBody(GatewayUrl { gateway_url: url });
    let result = environments::set_gateway_url(State(state.clone()), posted.visitor.caller.clone(), Path(name.clone()), change).await;
    environments_after(&state, &posted, &name, result.map(drop), &["gateway_url"]).await
}

/// `POST /admin/environments/{name}/gateway-tokens` (`description`): the token shown once.
pub(super) async fn create_gateway_token(State(state): State<AppState>, Path(name): Path<String>, posted: Posted) -> Response {
    let new = JsonBody(NewGatewayToken { description: posted.fields.get("description").trim().to_owned() });
    match tokens::create(State(state.clone()), posted.visitor.caller.clone(), Path(name.clone()), new).await {
        Ok((_, Json(issued))) => environments_page(&state, &posted.visitor, Some(issued), Default::default()).await,
        Err(e) => environments_after(&state, &posted, &name, Err(e), &["description"]).await,
    }
}

/// `POST /admin/environments/{name}/gateway-tokens/{id}/revoke`.
pub(super) async fn revoke_gateway_token(
    State(state): State<AppState>,
    Path((name, id)): Path<(String, String)>,
    posted: Posted,
) -> Response {
    let result = tokens::delete(State(state.clone()), posted.visitor.caller.clone(), Path((name.clone(), id))).await.map(drop);
    environments_after(&state, &posted, &name, result, &[]).await
}

#[derive(Template)]
#[template(path = "console/admin_gateways.html")]
struct GatewaysPage {
    shell: Shell,
    gateways: Vec<GatewayStatus>,
}

/// `GET /admin/gateways`: the fleet, each gateway's version, sync, health and last sight.
pub(super) async fn gateways(State(state): State<AppState>, visitor: Visitor) -> Response {
    if let Err(e) = visitor.caller.require(&[Role::Admin]) {
        return page::error(Some(&visitor), e);
    }
    match gateways::list(State(state), visitor.caller.clone()).await {
        Ok(Json(gateways)) => render(StatusCode::OK, &GatewaysPage { shell: Shell::of(&visitor, "Gateways", "admin"), gateways }),
        Err(e) => page::error(Some(&visitor), e),
    }
}

#[derive(Template)]
#[template(path = "console/admin_blocking.html")]
struct BlockingPage {
    shell: Shell,
    conditions: Vec<BlockingCondition>,
    kind: String,
    value: String,
    errors: FormErrors,
}

async fn blocking_page(state: &AppState, visitor: &Visitor, entered: (String, String), errors: FormErrors) -> Response {
    match blocking::list(State(state.clone()), visitor.caller.clone()).await {
        Ok(Json(conditions)) => {
            let status = errors.status();
            let (kind, value) = entered;
            render(status, &BlockingPage { shell: Shell::of(visitor, "Blocking", "admin"), conditions, kind, value, errors })
        }
        Err(e) => page::error(Some(visitor), e),
    }
}

/// `GET /admin/blocking`.
pub(super) async fn blocking(State(state): State<AppState>, visitor: Visitor) -> Response {
    blocking_page(&state, &visitor, ("ip".to_owned(), String::new()), FormErrors::default()).await
}

/// `POST /admin/blocking` (`kind`, `value`).
pub(super) async fn block(State(state): State<AppState>, posted: Posted) -> Response {
    let new = NewBlockingCondition { kind: posted.fields.get("kind").to_owned(), value: posted.fields.get("value").trim().to_owned() };
    let entered = (new.kind.clone(), new.value.clone());
    match blocking::create(State(state.clone()), posted.visitor.caller.clone(), JsonBody(new)).await {
        Ok(_) => see_other("/admin/blocking"),
        Err(e @ (ApiError::Unauthorized(_) | ApiError::Forbidden(_))) => page::error(Some(&posted.visitor), e),
        Err(e) => blocking_page(&state, &posted.visitor, entered, FormErrors::from(&e, &["kind", "value"])).await,
    }
}

/// `POST /admin/blocking/{id}/delete`.
pub(super) async fn unblock(State(state): State<AppState>, Path(id): Path<String>, posted: Posted) -> Response {
    match blocking::delete(State(state.clone()), posted.visitor.caller.clone(), Path(id)).await {
        Ok(_) => see_other("/admin/blocking"),
        Err(e) => page::error(Some(&posted.visitor), e),
    }
}
