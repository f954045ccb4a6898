//! The publisher's pages: the APIs the visitor manages, importing one from an OpenAPI
//! document (a file or pasted, JSON or YAML), and an API's page: its lifecycle actions,
//! revisions, deployments with each environment's rollout shown live until every gateway
//! runs it, rollback, and the API's subscriptions; and the policy registry (uploads, each
//! policy's versions and the revisions that use them).

use askama::Template;
use axum::Extension;
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use portico_gateway::traces::SpanParent;

use super::page::{self, FormErrors, Shell, Visitor, query_value, render, see_other, when};
use super::session::Posted;
use crate::AppState;
use crate::devportal::{Subscription, SubscriptionFilter, subscriptions};
use crate::error::{ApiError, JsonBody, QueryParams};
use crate::fleet::{Rollout, RolloutQuery, gateways};
use crate::publisher::{
    Api, ApiSummary, Deploy, Deployment, Environment, Import, LifecycleAction, LifecycleChange, Revision, apis, deployments, environments,
    import, lifecycle, revisions,
};
use crate::registry::{self, PolicyModule, Upload};

#[derive(Template)]
#[template(path = "console/publisher_apis.html")]
struct ApisPage {
    shell: Shell,
    q: String,
    apis: Vec<ApiSummary>,
}

/// `GET /publisher`: the APIs the visitor manages, searched by `q`.
pub(super) async fn apis(State(state): State<AppState>, visitor: Visitor, RawQuery(query): RawQuery) -> Response {
    let q = query_value(query.as_deref(), "q");
    match apis::list(State(state), visitor.caller.clone(), QueryParams(apis::ApiSearch { q: Some(q.clone()) })).await {
        Ok(Json(apis)) => render(StatusCode::OK, &ApisPage { shell: Shell::of(&visitor, "Your APIs", "publisher"), q, apis }),
        Err(e) => page::error(Some(&visitor), e),
    }
}

#[derive(Template)]
#[template(path = "console/publisher_import.html")]
struct ImportPage {
    shell: Shell,
    document: String,
    endpoints: String,
    context: String,
    errors: FormErrors,
}

/// `GET /publisher/import`.
pub(super) async fn import_page(visitor: Visitor) -> Response {
    if let Err(e) = visitor.caller.require(&[crate::auth::Role::Publisher]) {
        return page::error(Some(&visitor), e);
    }
    let page = ImportPage {
        shell: Shell::of(&visitor, "Import an API", "publisher"),
        document: String::new(),
        endpoints: String::new(),
        context: String::new(),
        errors: FormErrors::default(),
    };
    render(StatusCode::OK, &page)
}

/// An OpenAPI document in JSON or YAML, as the JSON value the API takes.
fn document(text: &str) -> Result<serde_json::Value, ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError::invalid("openapi", "choose a file, or paste the document"));
    }
    match serde_json::from_str(text) {
        Ok(value) => Ok(value),
        Err(json) if text.trim_start().starts_with('{') => Err(ApiError::invalid("openapi", format!("not valid JSON: {json}"))),
        Err(_) => serde_norway::from_str(text).map_err(|yaml| ApiError::invalid("openapi", format!("neither JSON nor valid YAML: {yaml}"))),
    }
}

/// `POST /publisher/import` (multipart: the file `openapi_file`, or the text `openapi`).
pub(super) async fn import(State(state): State<AppState>, posted: Posted) -> Response {
    let fields = &posted.fields;
    let (text, read) = match fields.file("openapi_file") {
        None => (fields.get("openapi").to_owned(), Ok(())),
        Some(file) => match String::from_utf8(file.to_vec()) {
            Ok(text) => (text, Ok(())),
            Err(_) => (String::new(), Err(ApiError::invalid("openapi", "the file is not text in UTF-8"))),
        },
    };
    let endpoints: Vec<String> = fields.get("endpoints").lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
    let context = Some(fields.get("context").trim().to_owned()).filter(|c| !c.is_empty());
    let imported = match read.and_then(|()| document(&text)) {
        Ok(openapi) => import::import(State(state), posted.visitor.caller.clone(), JsonBody(Import { openapi, endpoints, context })).await,
        Err(e) => Err(e),
    };
    match imported {
        Ok((_, Json(api))) => see_other(&format!("/publisher/apis/{}", api.id)),
        Err(e) => {
            let page = ImportPage {
                shell: Shell::of(&posted.visitor, "Import an API", "publisher"),
                document: text,
                endpoints: fields.get("endpoints").to_owned(),
                context: fields.get("context").to_owned(),
                errors: FormErrors::from(&e, &["openapi", "endpoints", "context"]),
            };
            render(e.status(), &page)
        }
    }
}

#[derive(Template)]
#[template(path = "console/rollout.html")]
struct RolloutFragment {
    rollout: Rollout,
}

impl RolloutFragment {
    fn healthy(&self) -> usize {
        self.rollout.gateways.iter().filter(|g| g.healthy).count()
    }

    fn in_sync(&self) -> usize {
        self.rollout.gateways.iter().filter(|g| g.healthy && g.in_sync).count()
    }
}

/// An environment's rollout as HTML, for the API page and its live updates.
async fn rollout_html(state: &AppState, visitor: &Visitor, environment: &str) -> Result<String, ApiError> {
    let query = QueryParams(RolloutQuery { wait_ms: 0 });
    let Json(rollout) = gateways::rollout(State(state.clone()), visitor.caller.clone(), Path(environment.to_owned()), query).await?;
    RolloutFragment { rollout }.render().map_err(|e| ApiError::Internal(format!("the rollout did not render: {e}")))
}

/// `GET /publisher/environments/{name}/rollout`: the rollout alone (the API page's script
/// fetches it until it is done).
pub(super) async fn rollout(State(state): State<AppState>, visitor: Visitor, Path(environment): Path<String>) -> Response {
    match rollout_html(&state, &visitor, &environment).await {
        Ok(html) => page::with_headers(Html(html).into_response()),
        Err(e) => page::error(Some(&visitor), e),
    }
}

/// A lifecycle action as a button says it.
fn title(action: impl AsRef<str>) -> String {
    let action = action.as_ref();
    let mut chars = action.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// A deployment with its environment's rollout.
struct DeploymentView {
    deployment: Deployment,
    rollout: String,
}

#[derive(Template)]
#[template(path = "console/publisher_api.html")]
struct ApiPage {
    shell: Shell,
    api: Api,
    actions: Vec<LifecycleAction>,
    revisions: Vec<Revision>,
    environments: Vec<Environment>,
    deployments: Vec<DeploymentView>,
    subscriptions: Vec<Subscription>,
    errors: FormErrors,
}

async fn api_page(state: &AppState, visitor: &Visitor, id: String, errors: FormErrors) -> Response {
    let result = async {
        let caller = || visitor.caller.clone();
        let Json(api) = apis::get(State(state.clone()), caller(), Path(id.clone())).await?;
        let Json(revisions) = revisions::list(State(state.clone()), caller(), Path(id.clone())).await?;
        let Json(environments) = environments::list(State(state.clone()), caller()).await?;
        let Json(deployed) = deployments::list(State(state.clone()), caller(), Path(id.clone())).await?;
        let filter = SubscriptionFilter { status: None, api_id: Some(id.clone()) };
        let Json(subscriptions) = subscriptions::queue(State(state.clone()), caller(), QueryParams(filter)).await?;
        let mut deployments = Vec::with_capacity(deployed.len());
        for deployment in deployed {
            let rollout = rollout_html(state, visitor, &deployment.environment).await?;
            deployments.push(DeploymentView { deployment, rollout });
        }
        let actions = lifecycle::allowed(api.status).collect();
        Ok::<_, ApiError>(ApiPage {
            shell: Shell::of(visitor, format!("{} {}", api.name, api.version), "publisher"),
            api,
            actions,
            revisions,
            environments,
            deployments,
            subscriptions,
            errors,
        })
    };
    match result.await {
        Ok(page) => {
            let status = if page.errors.any() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
            render(status, &page)
        }
        Err(e) => page::error(Some(visitor), e),
    }
}

/// `GET /publisher/apis/{id}`.
pub(super) async fn api(State(state): State<AppState>, visitor: Visitor, Path(id): Path<String>) -> Response {
    api_page(&state, &visitor, id, FormErrors::default()).await
}

/// After an action on the API page: back to the page, or the page with the problem.
async fn after(state: &AppState, posted: Posted, id: String, result: Result<(), ApiError>, fields: &[&str]) -> Response {
    match result {
        Ok(()) => see_other(&format!("/publisher/apis/{id}")),
        Err(e @ (ApiError::Unauthorized(_) | ApiError::Forbidden(_) | ApiError::NotFound(_))) => page::error(Some(&posted.visitor), e),
        Err(e) => api_page(state, &posted.visitor, id, FormErrors::from(&e, fields)).await,
    }
}

/// `POST /publisher/apis/{id}/lifecycle` (`action`).
pub(super) async fn change_lifecycle(State(state): State<AppState>, Path(id): Path<String>, posted: Posted) -> Response {
    let action = serde_json::from_value::<LifecycleAction>(serde_json::Value::from(posted.fields.get("action")))
        .map_err(|_| ApiError::invalid("action", format!("no lifecycle action `{}`", posted.fields.get("action"))));
    let result = match action {
        Ok(action) => {
            let change = lifecycle::change(
                State(state.clone()),
                posted.visitor.caller.clone(),
                Path(id.clone()),
                JsonBody(LifecycleChange { action }),
            );
            change.await.map(drop)
        }
        Err(e) => Err(e),
    };
    after(&state, posted, id, result, &[]).await
}

/// `POST /publisher/apis/{id}/revisions`.
pub(super) async fn create_revision(State(state): State<AppState>, Path(id): Path<String>, posted: Posted) -> Response {
    let result = revisions::create(State(state.clone()), posted.visitor.caller.clone(), Path(id.clone())).await.map(drop);
    after(&state, posted, id, result, &[]).await
}

/// `POST /publisher/apis/{id}/deployments` (`revision_id`, `environments` checked): the
/// page shows each environment's rollout as it goes.
pub(super) async fn deploy(
    State(state): State<AppState>,
    Path(id): Path<String>,
    trace: Option<Extension<SpanParent>>,
    posted: Posted,
) -> Response {
    let deploy = Deploy { revision_id: posted.fields.get("revision_id").to_owned(), environments: posted.fields.all("environments") };
    let wait = QueryParams(RolloutQuery { wait_ms: 0 });
    let result = deployments::deploy(State(state.clone()), posted.visitor.caller.clone(), Path(id.clone()), wait, trace, JsonBody(deploy));
    let result = result.await.map(drop);
    after(&state, posted, id, result, &["revision_id", "environments"]).await
}

/// `POST /publisher/apis/{id}/deployments/{environment}/rollback`.
pub(super) async fn rollback(State(state): State<AppState>, Path((id, environment)): Path<(String, String)>, posted: Posted) -> Response {
    let result = deployments::rollback(State(state.clone()), posted.visitor.caller.clone(), Path((id.clone(), environment))).await;
    after(&state, posted, id, result.map(drop), &[]).await
}

#[derive(Template)]
#[template(path = "console/policies.html")]
struct PoliciesPage {
    shell: Shell,
    policies: Vec<PolicyModule>,
    entered: (String, String, String, String),
    errors: FormErrors,
}

impl PoliciesPage {
    fn schema(schema: &Option<serde_json::Value>) -> String {
        schema.as_ref().and_then(|s| serde_json::to_string_pretty(s).ok()).unwrap_or_default()
    }
}

async fn policies_page(state: &AppState, visitor: &Visitor, entered: (String, String, String, String), errors: FormErrors) -> Response {
    if let Err(e) = visitor.caller.require(&[crate::auth::Role::Publisher]) {
        return page::error(Some(visitor), e);
    }
    match registry::list(State(state.clone()), visitor.caller.clone()).await {
        Ok(Json(policies)) => {
            let status = if errors.any() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
            render(status, &PoliciesPage { shell: Shell::of(visitor, "Policies", "publisher"), policies, entered, errors })
        }
        Err(e) => page::error(Some(visitor), e),
    }
}

/// `GET /publisher/policies`: the registry, each policy's versions and the revisions using them.
pub(super) async fn policies(State(state): State<AppState>, visitor: Visitor) -> Response {
    policies_page(&state, &visitor, Default::default(), FormErrors::default()).await
}

/// `POST /publisher/policies` (multipart: `name`, `version`, `description`, the file
/// `component`, `config_schema` as JSON text).
pub(super) async fn upload_policy(State(state): State<AppState>, posted: Posted) -> Response {
    use base64::Engine;
    let fields = &posted.fields;
    let entered = (
        fields.get("name").trim().to_owned(),
        fields.get("version").trim().to_owned(),
        fields.get("description").to_owned(),
        fields.get("config_schema").to_owned(),
    );
    let upload = async {
        let component =
            fields.file("component").ok_or_else(|| ApiError::invalid("component", "choose the policy's component (a .wasm file)"))?;
        let config_schema = match entered.3.trim() {
            "" => None,
            text => Some(serde_json::from_str(text).map_err(|e| ApiError::invalid("config_schema", format!("not JSON: {e}")))?),
        };
        let upload = Upload {
            name: entered.0.clone(),
            version: entered.1.clone(),
            description: entered.2.clone(),
            component: base64::engine::general_purpose::STANDARD.encode(component),
            config_schema,
        };
        registry::upload(State(state.clone()), posted.visitor.caller.clone(), JsonBody(upload)).await
    };
    match upload.await {
        Ok(_) => see_other("/publisher/policies"),
        Err(e @ (ApiError::Unauthorized(_) | ApiError::Forbidden(_))) => page::error(Some(&posted.visitor), e),
        Err(e) => {
            let errors = FormErrors::from(&e, &["name", "version", "description", "component", "config_schema"]);
            policies_page(&state, &posted.visitor, entered, errors).await
        }
    }
}
