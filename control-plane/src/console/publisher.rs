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
use super::policy_form;
use super::session::Posted;
use crate::AppState;
use crate::devportal::{Subscription, SubscriptionFilter, subscriptions};
use crate::error::{ApiError, JsonBody, QueryParams};
use crate::fleet::{Rollout, RolloutQuery, gateways};
use crate::publisher::{
    Api, ApiSummary, ApiUpdate, Deploy, Deployment, Environment, Import, LifecycleAction, LifecycleChange, NewApi, Operation, Revision,
    apis, deployments, environments, import, lifecycle, revisions,
};
use crate::registry::{self, PolicyModule, Upload};
use crate::traffic::Tier;

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
    url: String,
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
        url: String::new(),
        endpoints: String::new(),
        context: String::new(),
        errors: FormErrors::default(),
    };
    render(StatusCode::OK, &page)
}

/// The longest document fetched from a URL, and how long the fetch may take.
const MAX_FETCHED: usize = 8 << 20;
const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The document at `url`, fetched as the `default` environment's gateways reach upstreams:
/// only at addresses its upstream networks accept (so not this host, link-local or cloud
/// metadata addresses unless an admin allowed them), within 10 s and 8 MiB.
async fn fetch(state: &AppState, url: &str) -> Result<String, ApiError> {
    use http_body_util::BodyExt;
    let refused = |reason: String| ApiError::invalid("openapi_url", reason);
    let uri: http::Uri = url.parse().map_err(|_| refused(format!("`{url}` is not a URL")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(refused("an `http://` or `https://` URL".into()));
    }
    let mut conn = state.db.pool.acquire().await?;
    let networks = crate::publisher::upstream_networks(&mut conn, "default").await?.unwrap_or_default();
    drop(conn);
    portico_gateway::check::upstream_allowed(&networks, url).map_err(|reason| refused(format!("not fetched: {reason}")))?;
    let connector = portico_gateway::check::upstream_connector(&networks, FETCH_TIMEOUT).map_err(ApiError::Internal)?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
    let request = http::Request::get(uri).body(http_body_util::Empty::<bytes::Bytes>::new()).map_err(|e| refused(e.to_string()))?;
    let fetched = async {
        let response = client.request(request).await.map_err(|e| refused(format!("not fetched: {e}")))?;
        if !response.status().is_success() {
            return Err(refused(format!("the server answered {}", response.status())));
        }
        let body = http_body_util::Limited::new(response.into_body(), MAX_FETCHED);
        let bytes = body.collect().await.map_err(|e| refused(format!("not read (at most 8 MiB): {e}")))?.to_bytes();
        String::from_utf8(bytes.to_vec()).map_err(|_| refused("not text in UTF-8".into()))
    };
    tokio::time::timeout(FETCH_TIMEOUT, fetched).await.unwrap_or_else(|_| Err(refused("no answer within 10 s".into())))
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
    let url = fields.get("openapi_url").trim();
    let (text, read) = match (fields.file("openapi_file"), url) {
        (None, "") => (fields.get("openapi").to_owned(), Ok(())),
        (None, url) => match fetch(&state, url).await {
            Ok(text) => (text, Ok(())),
            Err(e) => (String::new(), Err(e)),
        },
        (Some(file), _) => match String::from_utf8(file.to_vec()) {
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
                url: url.to_owned(),
                errors: FormErrors::from(&e, &["openapi", "openapi_url", "endpoints", "context"]),
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
    /// What may be attached: the registry's policies' references.
    attachable: Vec<String>,
    errors: FormErrors,
}

impl ApiPage {
    /// An attachment's configuration, as JSON to read.
    fn config(config: &serde_json::Value) -> String {
        serde_json::to_string_pretty(config).unwrap_or_default()
    }
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
        let Json(policies) = registry::list(State(state.clone()), caller()).await?;
        let attachable = policies.into_iter().map(|policy| policy.reference).collect();
        Ok::<_, ApiError>(ApiPage {
            shell: Shell::of(visitor, format!("{} {}", api.name, api.version), "publisher"),
            api,
            actions,
            revisions,
            environments,
            deployments,
            subscriptions,
            attachable,
            errors,
        })
    };
    match result.await {
        Ok(page) => {
            let status = page.errors.status();
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
            let status = errors.status();
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

/// What the API form holds, as typed.
#[derive(Default)]
struct ApiForm {
    name: String,
    version: String,
    context: String,
    description: String,
    tags: String,
    documentation: String,
    endpoints: String,
    tiers: Vec<String>,
    operations: String,
}

impl ApiForm {
    fn of(api: &Api) -> Self {
        let operations = api.operations.iter().map(|op| {
            [op.method.as_str(), op.path.as_str()].into_iter().chain(op.scopes.iter().map(String::as_str)).collect::<Vec<_>>().join(" ")
        });
        Self {
            name: api.name.clone(),
            version: api.version.clone(),
            context: api.context.clone(),
            description: api.description.clone(),
            tags: api.tags.join(", "),
            documentation: api.documentation.clone(),
            endpoints: api.endpoints.join("\n"),
            tiers: api.tiers.clone(),
            operations: operations.collect::<Vec<_>>().join("\n"),
        }
    }

    fn posted(fields: &super::session::Fields) -> Self {
        Self {
            name: fields.get("name").trim().to_owned(),
            version: fields.get("version").trim().to_owned(),
            context: fields.get("context").trim().to_owned(),
            description: fields.get("description").to_owned(),
            tags: fields.get("tags").to_owned(),
            documentation: fields.get("documentation").to_owned(),
            endpoints: fields.get("endpoints").to_owned(),
            tiers: fields.all("tiers"),
            operations: fields.get("operations").to_owned(),
        }
    }

    fn tags(&self) -> Vec<String> {
        self.tags.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect()
    }

    fn endpoints(&self) -> Vec<String> {
        self.endpoints.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect()
    }

    /// The operations, one a line: `METHOD /path` and the scopes it needs; an operation of
    /// `current` with the same method and path keeps its policies.
    fn operations(&self, current: &[Operation]) -> Result<Vec<Operation>, ApiError> {
        let lines = self.operations.lines().map(str::trim).filter(|l| !l.is_empty());
        lines
            .enumerate()
            .map(|(i, line)| {
                let mut words = line.split_whitespace();
                let (Some(method), Some(path)) = (words.next(), words.next()) else {
                    return Err(ApiError::invalid(
                        format!("operations[{i}]"),
                        format!("`{line}`: a method and a path, then the scopes it needs"),
                    ));
                };
                let policies = current
                    .iter()
                    .find(|op| op.method.eq_ignore_ascii_case(method) && op.path == path)
                    .map(|op| op.policies.clone())
                    .unwrap_or_default();
                Ok(Operation { method: method.to_owned(), path: path.to_owned(), policies, scopes: words.map(str::to_owned).collect() })
            })
            .collect()
    }
}

#[derive(Template)]
#[template(path = "console/publisher_edit.html")]
struct EditPage {
    shell: Shell,
    /// The API edited; none when making one.
    id: Option<String>,
    form: ApiForm,
    tiers: Vec<Tier>,
    errors: FormErrors,
}

impl EditPage {
    /// Whether the form offers the tier `name`.
    fn offers(&self, name: &str) -> bool {
        self.form.tiers.iter().any(|tier| tier == name)
    }
}

const API_FIELDS: &[&str] = &["name", "version", "context", "description", "tags", "documentation", "endpoints", "tiers", "operations"];

async fn edit_page(state: &AppState, visitor: &Visitor, id: Option<String>, form: ApiForm, errors: FormErrors) -> Response {
    if let Err(e) = visitor.caller.require(&[crate::auth::Role::Publisher]) {
        return page::error(Some(visitor), e);
    }
    match crate::traffic::all(&state.db, "subscription").await {
        Ok(tiers) => {
            let title = if id.is_some() { format!("Edit {} {}", form.name, form.version) } else { "New API".to_owned() };
            let status = errors.status();
            render(status, &EditPage { shell: Shell::of(visitor, title, "publisher"), id, form, tiers, errors })
        }
        Err(e) => page::error(Some(visitor), e),
    }
}

/// `GET /publisher/new`: an API made by form.
pub(super) async fn new_api(State(state): State<AppState>, visitor: Visitor) -> Response {
    let form = ApiForm { tiers: vec!["Unlimited".to_owned()], operations: "GET /".to_owned(), ..ApiForm::default() };
    edit_page(&state, &visitor, None, form, FormErrors::default()).await
}

/// `POST /publisher/new`.
pub(super) async fn create_api(State(state): State<AppState>, posted: Posted) -> Response {
    let form = ApiForm::posted(&posted.fields);
    let made = async {
        let new = NewApi {
            name: form.name.clone(),
            version: form.version.clone(),
            context: form.context.clone(),
            description: form.description.clone(),
            tags: form.tags(),
            documentation: form.documentation.clone(),
            endpoints: form.endpoints(),
            endpoint_ca: None,
            endpoint_client_certificate: None,
            operations: form.operations(&[])?,
            policies: Vec::new(),
            scopes: Vec::new(),
            tiers: form.tiers.clone(),
        };
        apis::create(State(state.clone()), posted.visitor.caller.clone(), JsonBody(new)).await
    };
    match made.await {
        Ok((_, Json(api))) => see_other(&format!("/publisher/apis/{}", api.id)),
        Err(e @ (ApiError::Unauthorized(_) | ApiError::Forbidden(_))) => page::error(Some(&posted.visitor), e),
        Err(e) => edit_page(&state, &posted.visitor, None, form, FormErrors::from(&e, API_FIELDS)).await,
    }
}

/// `GET /publisher/apis/{id}/edit`.
pub(super) async fn edit_api(State(state): State<AppState>, visitor: Visitor, Path(id): Path<String>) -> Response {
    match apis::get(State(state.clone()), visitor.caller.clone(), Path(id.clone())).await {
        Ok(Json(api)) => edit_page(&state, &visitor, Some(id), ApiForm::of(&api), FormErrors::default()).await,
        Err(e) => page::error(Some(&visitor), e),
    }
}

/// `POST /publisher/apis/{id}/edit`: what the form shows replaced; the rest (policies,
/// scopes, the endpoints' TLS settings, each kept operation's policies) kept as it is.
pub(super) async fn update_api(State(state): State<AppState>, Path(id): Path<String>, posted: Posted) -> Response {
    let mut form = ApiForm::posted(&posted.fields);
    let current = match apis::get(State(state.clone()), posted.visitor.caller.clone(), Path(id.clone())).await {
        Ok(Json(api)) => api,
        Err(e) => return page::error(Some(&posted.visitor), e),
    };
    (form.name, form.version, form.context) = (current.name.clone(), current.version.clone(), current.context.clone());
    let replaced = async {
        let update = ApiUpdate {
            description: form.description.clone(),
            tags: form.tags(),
            documentation: form.documentation.clone(),
            endpoints: form.endpoints(),
            operations: form.operations(&current.operations)?,
            tiers: form.tiers.clone(),
            ..update_of(&current)
        };
        apis::replace(State(state.clone()), posted.visitor.caller.clone(), Path(id.clone()), JsonBody(update)).await
    };
    match replaced.await {
        Ok(_) => see_other(&format!("/publisher/apis/{id}")),
        Err(e @ (ApiError::Unauthorized(_) | ApiError::Forbidden(_) | ApiError::NotFound(_))) => page::error(Some(&posted.visitor), e),
        Err(e) => edit_page(&state, &posted.visitor, Some(id), form, FormErrors::from(&e, API_FIELDS)).await,
    }
}

/// `api` as an update that changes nothing (its endpoints' client certificate is kept by
/// leaving it out).
fn update_of(api: &Api) -> ApiUpdate {
    ApiUpdate {
        name: None,
        version: None,
        context: None,
        description: api.description.clone(),
        tags: api.tags.clone(),
        documentation: api.documentation.clone(),
        endpoints: api.endpoints.clone(),
        endpoint_ca: api.endpoint_ca.clone(),
        endpoint_client_certificate: None,
        operations: api.operations.clone(),
        policies: api.policies.clone(),
        scopes: api.scopes.clone(),
        tiers: api.tiers.clone(),
    }
}

#[derive(Template)]
#[template(path = "console/publisher_attach.html")]
struct AttachPage {
    shell: Shell,
    api: Api,
    policy: PolicyModule,
    fields: Vec<policy_form::Field>,
    errors: FormErrors,
}

/// The registry's policy `reference`, as a problem naming the `policy` field when there is none.
async fn policy_named(state: &AppState, reference: &str) -> Result<PolicyModule, ApiError> {
    registry::module(&state.db, reference)
        .await?
        .ok_or_else(|| ApiError::invalid("policy", format!("no policy `{reference}` in the registry")))
}

async fn attach_page(
    state: &AppState,
    visitor: &Visitor,
    id: String,
    reference: &str,
    posted: Option<&super::session::Fields>,
    errors: FormErrors,
) -> Response {
    let result = async {
        let Json(api) = apis::get(State(state.clone()), visitor.caller.clone(), Path(id)).await?;
        let policy = policy_named(state, reference).await?;
        let fields = policy_form::fields(policy.config_schema.as_ref());
        let fields = match posted {
            Some(posted) => policy_form::posted(fields, |name| posted.get(name)),
            None => fields,
        };
        Ok::<_, ApiError>(AttachPage { shell: Shell::of(visitor, format!("Attach {reference}"), "publisher"), api, policy, fields, errors })
    };
    match result.await {
        Ok(page) => {
            let status = page.errors.status();
            render(status, &page)
        }
        Err(e) => page::error(Some(visitor), e),
    }
}

/// `GET /publisher/apis/{id}/attach?policy=<reference>`: the policy's configuration form.
pub(super) async fn attach_form(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let reference = query_value(query.as_deref(), "policy");
    attach_page(&state, &visitor, id, &reference, None, FormErrors::default()).await
}

/// `POST /publisher/apis/{id}/attach` (`policy`, `config.*`): the policy attached to the
/// API, after its others; its configuration checked as gateways will run it.
pub(super) async fn attach(State(state): State<AppState>, Path(id): Path<String>, posted: Posted) -> Response {
    let reference = posted.fields.get("policy").to_owned();
    let result = async {
        let policy = policy_named(&state, &reference).await?;
        let fields = policy_form::posted(policy_form::fields(policy.config_schema.as_ref()), |name| posted.fields.get(name));
        let config = policy_form::config(&fields)?;
        let attachment = serde_json::from_value(serde_json::json!({"policy": reference, "config": config}))
            .map_err(|e| ApiError::invalid("config", e.to_string()))?;
        let Json(api) = apis::get(State(state.clone()), posted.visitor.caller.clone(), Path(id.clone())).await?;
        let mut update = update_of(&api);
        match posted.fields.get("target") {
            "" => update.policies.push(attachment),
            target => {
                let operation = target.parse::<usize>().ok().and_then(|i| update.operations.get_mut(i));
                operation.ok_or_else(|| ApiError::invalid("target", "the whole API or one of its operations"))?.policies.push(attachment);
            }
        }
        apis::replace(State(state.clone()), posted.visitor.caller.clone(), Path(id.clone()), JsonBody(update)).await
    };
    match result.await {
        Ok(_) => see_other(&format!("/publisher/apis/{id}")),
        Err(e @ (ApiError::Unauthorized(_) | ApiError::Forbidden(_) | ApiError::NotFound(_))) => page::error(Some(&posted.visitor), e),
        Err(e) => {
            let keys: Vec<String> = policy_named(&state, &reference)
                .await
                .map(|policy| policy_form::fields(policy.config_schema.as_ref()).iter().map(policy_form::Field::key).collect())
                .unwrap_or_default();
            let names: Vec<&str> = keys.iter().map(String::as_str).chain(["target"]).collect();
            // The API names an attachment's problem `policies[N].config` (or an operation's
            // `operations[N].policies[M].config`): that is this form's.
            let errors = match &e {
                ApiError::Validation { field, message } if field.starts_with("policies[") || field.contains(".policies[") => {
                    FormErrors::from(&ApiError::Conflict(message.clone()), &names)
                }
                e => FormErrors::from(e, &names),
            };
            attach_page(&state, &posted.visitor, id, &reference, Some(&posted.fields), errors).await
        }
    }
}

/// `POST /publisher/apis/{id}/policies/{index}/remove`: the API's attachment `index` removed.
pub(super) async fn detach(State(state): State<AppState>, Path((id, index)): Path<(String, usize)>, posted: Posted) -> Response {
    detach_from(state, id, None, index, posted).await
}

/// `POST /publisher/apis/{id}/operations/{operation}/policies/{index}/remove`: an operation's
/// attachment `index` removed.
pub(super) async fn detach_from_operation(
    State(state): State<AppState>,
    Path((id, operation, index)): Path<(String, usize, usize)>,
    posted: Posted,
) -> Response {
    detach_from(state, id, Some(operation), index, posted).await
}

async fn detach_from(state: AppState, id: String, operation: Option<usize>, index: usize, posted: Posted) -> Response {
    let result = async {
        let Json(api) = apis::get(State(state.clone()), posted.visitor.caller.clone(), Path(id.clone())).await?;
        let mut update = update_of(&api);
        let policies = match operation {
            None => Some(&mut update.policies),
            Some(operation) => update.operations.get_mut(operation).map(|op| &mut op.policies),
        };
        match policies.filter(|policies| index < policies.len()) {
            Some(policies) => policies.remove(index),
            None => return Err(ApiError::not_found("attachment", &index.to_string())),
        };
        apis::replace(State(state.clone()), posted.visitor.caller.clone(), Path(id.clone()), JsonBody(update)).await.map(drop)
    };
    let result = result.await;
    after(&state, posted, id, result, &[]).await
}
