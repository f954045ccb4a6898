//! The OpenAPI 3 document of the management API, generated from the handlers' annotations
//! and served at `/api/v1/openapi.json`.

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use crate::{AppState, Layers, analytics, auth, devportal, fleet, keymanager, publisher, registry, traffic};

#[derive(OpenApi)]
#[openapi(
    info(title = "Portico control plane", description = "Publisher, developer portal, key manager, traffic tiers, policy registry and gateway fleet."),
    paths(auth::login, auth::logout, auth::me, auth::create, auth::list, auth::set_role),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    }
}

/// The whole document: the control plane's paths and the key manager's.
pub fn document() -> Value {
    let mut doc = ApiDoc::openapi();
    doc.merge(traffic::Doc::openapi());
    doc.merge(publisher::Doc::openapi());
    doc.merge(devportal::Doc::openapi());
    doc.merge(keymanager::AdminDoc::openapi());
    doc.merge(keymanager::Doc::openapi());
    doc.merge(registry::Doc::openapi());
    doc.merge(fleet::Doc::openapi());
    doc.merge(analytics::Doc::openapi());
    complete_error_responses(&mut doc);
    let mut doc = serde_json::to_value(doc).expect("the document serialises");
    constrain(&mut doc);
    doc
}

/// A text without control characters or surrounding white space.
const TEXT: &str = r"^[^\s\x00-\x1f\x7f-\x9f]([^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$";

/// The rules the handlers' checks enforce that the annotations do not state, as schema
/// keywords merged into the document: `(component, property, keywords)`, where a property
/// `[]` is the component itself and `name[]` the items of an array. The document test
/// (`control-plane/tests/document`) fails when a check and its rule here disagree.
fn rules() -> Vec<(&'static str, &'static str, Value)> {
    let name = json!({"minLength": 1, "maxLength": 100, "pattern": TEXT});
    let version = json!({"maxLength": 32, "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$"});
    let tags = json!({"uniqueItems": true, "items": {"minLength": 1, "maxLength": 50, "pattern": TEXT}});
    let username = json!({"minLength": 3, "maxLength": 64, "pattern": "^[A-Za-z0-9._@-]+$"});
    let password = json!({"minLength": 12});
    let api = [
        ("name", name.clone()),
        ("version", version.clone()),
        ("context", json!({"maxLength": 200, "pattern": "^(/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)+$"})),
        ("description", json!({"maxLength": 10000})),
        ("documentation", json!({"maxLength": 500000})),
        ("tags", tags),
        ("endpoints", json!({"minItems": 1})),
        ("tiers", json!({"maxItems": 20, "uniqueItems": true})),
    ];
    // What `environments::checked_gateway_url` takes, written as a pattern.
    let gateway_url = json!({"maxLength": 200, "pattern": "^https?://[a-z0-9]([a-z0-9.-]{0,62})(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?(/[A-Za-z0-9._~-]+)*/?$"});
    let mut rules = Vec::new();
    for component in ["NewApi", "ApiUpdate"] {
        rules.extend(api.iter().map(|(property, keywords)| (component, *property, keywords.clone())));
    }
    rules.extend([
        ("Operation", "method", json!({"pattern": "^(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS|ANY|get|post|put|patch|delete|head|options|any)$"})),
        ("Scope", "roles", json!({"uniqueItems": true, "items": {"enum": ["admin", "publisher", "subscriber"]}})),
        ("Login", "username", json!({"minLength": 1})),
        ("Login", "password", json!({"minLength": 1})),
        ("NewUser", "username", username.clone()),
        ("NewUser", "password", password.clone()),
        ("SignUp", "username", username),
        ("SignUp", "password", password),
        ("ApplicationFields", "name", name),
        ("ApplicationFields", "description", json!({"maxLength": 10000})),
        ("NewEnvironment", "name", json!({"maxLength": 64, "pattern": "^[a-z0-9][a-z0-9_-]*$"})),
        ("NewEnvironment", "description", json!({"maxLength": 1000})),
        ("NewEnvironment", "gateway_url", gateway_url.clone()),
        ("GatewayUrl", "gateway_url", gateway_url),
        ("NewBlockingCondition", "kind", json!({"enum": ["ip", "application", "user", "api"]})),
        ("Upload", "name", json!({"maxLength": 64, "pattern": "^[a-z0-9][a-z0-9._-]*$"})),
        ("Upload", "version", json!({"maxLength": 64, "pattern": "^[A-Za-z0-9][A-Za-z0-9.+-]*$"})),
        ("TierLimits", "requests", json!({"minimum": 1})),
        ("TierLimits", "per_ms", json!({"minimum": 1000, "maximum": 86400000})),
        ("TierLimits", "burst_requests", json!({"minimum": 1})),
        ("TierLimits", "burst_per_ms", json!({"minimum": 1000, "maximum": 86400000})),
        ("TierLimits", "quota_requests", json!({"minimum": 1})),
        ("TierLimits", "quota_period", json!({"enum": ["day", "month"]})),
        ("TierLimits", "[]", json!({"allOf": [
            both("requests", "per_ms"), both("per_ms", "requests"), both("burst_requests", "burst_per_ms"), both("burst_per_ms", "burst_requests"),
            pair(("quota_requests", "integer"), ("quota_period", "string")), pair(("quota_period", "string"), ("quota_requests", "integer")),
        ]})),
        ("Deploy", "environments", json!({"minItems": 1})),
        ("NewApplicationCertificate", "certificate", json!({"maxLength": crate::devportal::MAX_CERTIFICATE_TEXT})),
        ("TokenForm", "[]", json!({"required": ["token"]})),
        ("TokenForm", "token", json!({"minLength": 1})),
        ("TokenRequest", "[]", json!({"required": ["grant_type"], "if": {"properties": {"grant_type": {"const": "refresh_token"}}},
            "then": {"required": ["refresh_token"], "properties": {"refresh_token": {"type": "string", "minLength": 1}}}})),
        ("TokenRequest", "grant_type", json!({"enum": ["client_credentials", "refresh_token"]})),
    ]);
    rules
}

/// A schema keyword: an object whose `given` is a number has a number `needed` too.
fn both(given: &str, needed: &str) -> Value {
    pair((given, "integer"), (needed, "integer"))
}

/// A schema keyword: an object whose `given` is of its type has `needed`, of its type, too.
fn pair((given, given_type): (&str, &str), (needed, needed_type): (&str, &str)) -> Value {
    json!({"if": {"required": [given], "properties": {given: {"type": given_type}}},
           "then": {"required": [needed], "properties": {needed: {"type": needed_type}}}})
}

/// Rules for parameters: `(path, parameter, keywords)`.
const PARAMETER_RULES: &[(&str, &str, &str)] = &[
    ("/api/v1/subscriptions", "status", r#"{"enum": ["ON_HOLD", "ACTIVE", "BLOCKED", "REJECTED"]}"#),
    ("/api/v1/tiers/{kind}/{name}", "kind", r#"{"enum": ["subscription", "application"]}"#),
    ("/api/v1/tiers/{kind}/{name}", "name", r#"{"maxLength": 64, "pattern": "^[A-Za-z0-9_-]+$"}"#),
];

fn constrain(doc: &mut Value) {
    for schema in doc["components"]["schemas"].as_object_mut().expect("components").values_mut() {
        without_nul(schema);
    }
    for item in doc["paths"].as_object_mut().expect("paths").values_mut() {
        let operations = item.as_object_mut().expect("a path item").values_mut();
        for parameter in operations.filter_map(|operation| operation.get_mut("parameters")?.as_array_mut()).flatten() {
            without_nul(&mut parameter["schema"]);
        }
    }
    for (component, property, keywords) in rules() {
        let schema = &mut doc["components"]["schemas"][component];
        assert!(schema.is_object(), "a rule names the component `{component}`, which the document lacks");
        let target = match property.strip_suffix("[]") {
            Some("") => schema,
            Some(array) => &mut schema["properties"][array]["items"],
            None => &mut schema["properties"][property],
        };
        assert!(target.is_object(), "a rule names `{component}.{property}`, which the document lacks");
        merge(target, keywords);
    }
    for (path, name, keywords) in PARAMETER_RULES {
        let keywords: Value = serde_json::from_str(keywords).expect("a rule is JSON");
        let item = doc["paths"][path].as_object_mut().unwrap_or_else(|| panic!("a rule names `{path}`, which the document lacks"));
        let parameters = item.values_mut().filter_map(|operation| operation.get_mut("parameters")?.as_array_mut()).flatten();
        for parameter in parameters.filter(|p| p["name"] == *name) {
            merge(&mut parameter["schema"], keywords.clone());
        }
    }
}

/// Say of every free text under `schema` (one without a pattern, a format or an enum) that it
/// holds no NUL character, which the API refuses (`error::NO_NUL`).
fn without_nul(schema: &mut Value) {
    let is_text = match &schema["type"] {
        Value::String(one) => one == "string",
        Value::Array(many) => many.iter().any(|t| t == "string"),
        _ => false,
    };
    if is_text && ["pattern", "format", "enum"].iter().all(|k| schema.get(k).is_none()) {
        schema["pattern"] = json!(r"^[^\x00]*$");
    }
    for key in ["items", "additionalProperties"] {
        if schema.get(key).is_some_and(Value::is_object) {
            without_nul(&mut schema[key]);
        }
    }
    for keyword in ["properties"] {
        for property in schema.get_mut(keyword).and_then(Value::as_object_mut).into_iter().flatten().map(|(_, v)| v) {
            without_nul(property);
        }
    }
    for keyword in ["oneOf", "anyOf", "allOf"] {
        for branch in schema.get_mut(keyword).and_then(Value::as_array_mut).into_iter().flatten() {
            without_nul(branch);
        }
    }
}

fn merge(target: &mut Value, keywords: Value) {
    for (keyword, value) in keywords.as_object().into_iter().flatten() {
        match (target.get_mut(keyword), value) {
            (Some(existing @ Value::Object(_)), Value::Object(_)) => merge(existing, value.clone()),
            _ => {
                target[keyword] = value.clone();
            }
        }
    }
}

/// The body of every error of the management API (RFC 9457).
#[derive(ToSchema)]
#[allow(dead_code)]
struct Problem {
    /// Always `about:blank`.
    r#type: String,
    /// The status's reason phrase.
    title: String,
    /// The status code.
    status: u16,
    /// What is wrong.
    detail: String,
    /// For a 400: the field that is wrong (`endpoints[0]`, `allow[1]`).
    field: Option<String>,
}

/// Add the errors every management operation may answer where its annotation leaves them
/// out, and give every error its problem body, so that the document is the truth for
/// generated clients: 400 for an operation that takes a body or parameters (one that does
/// not parse or is refused names its field), 401 for one that needs a session. (The OAuth2
/// endpoints answer RFC 6749 errors and are left as they are.)
fn complete_error_responses(doc: &mut utoipa::openapi::OpenApi) {
    doc.components.get_or_insert_with(Default::default).schemas.insert("Problem".to_owned(), Problem::schema());
    for (path, item) in doc.paths.paths.iter_mut() {
        if !path.starts_with("/api/v1/") {
            continue;
        }
        let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
        for operation in operations.into_iter().flatten() {
            complete(operation);
        }
    }
}

fn complete(operation: &mut Operation) {
    // A path parameter is a whole segment: never empty.
    for parameter in operation.parameters.iter_mut().flatten() {
        if let (ParameterIn::Path, Some(RefOr::T(Schema::Object(schema)))) = (&parameter.parameter_in, &mut parameter.schema)
            && schema.min_length.is_none()
            && schema.schema_type == SchemaType::Type(Type::String)
        {
            schema.min_length = Some(1);
        }
    }
    let takes_input = operation.request_body.is_some() || operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let needs_session = operation
        .security
        .as_ref()
        .is_some_and(|requirements| serde_json::to_value(requirements).is_ok_and(|v| v.to_string().contains("\"bearer\"")));
    let responses = &mut operation.responses.responses;
    for (status, needed, description) in [
        ("400", takes_input, "a field does not parse or is refused (`field` names it)"),
        ("401", needs_session, "no session, or an expired or unknown one"),
    ] {
        if needed && !responses.contains_key(status) {
            responses.insert(status.to_owned(), RefOr::T(ResponseBuilder::new().description(description).build()));
        }
    }
    for (status, response) in responses.iter_mut() {
        if let (true, RefOr::T(response)) = (status.starts_with('4') || status.starts_with('5'), response)
            && response.content.is_empty()
        {
            response.content.insert("application/problem+json".to_owned(), Content::new(Some(Ref::from_schema_name("Problem"))));
        }
    }
}

/// The document of what a control-plane node of `layers` serves: without the OAuth2
/// endpoints when a key-manager layer apart serves them.
fn document_of(layers: Layers) -> Value {
    let mut doc = document();
    if layers == Layers::ControlPlane {
        let apart = keymanager::Doc::openapi().paths.paths;
        if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
            paths.retain(|path, _| !apart.contains_key(path));
        }
    }
    doc
}

/// `GET /api/v1/openapi.json`: what this node serves.
pub fn routes(layers: Layers) -> Router<AppState> {
    let document = std::sync::Arc::new(document_of(layers));
    Router::new().route("/api/v1/openapi.json", get(move || async move { Json(document.as_ref().clone()) }))
}
