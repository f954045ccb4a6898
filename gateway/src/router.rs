//! Routing: a request's host, normalised path and method to an API and one of its operations.
//! A [`RouteTable`] is built once per configuration snapshot and only read afterwards; the
//! path is normalised once by [`normalize_path`] and that same path is routed and forwarded.

// Paths spelled out so that `benches/router.rs` can compile this module from its source.
#[path = "router/normalize.rs"]
mod normalize;
#[path = "router/template.rs"]
mod template;

use std::collections::HashMap;

use http::Method;

pub use normalize::{PathError, normalize_path};
pub use template::TemplateError;

use template::OperationTree;

/// Longest host name looked up; longer ones (not valid DNS names) match any-host APIs only.
const MAX_HOST_LEN: usize = 256;

/// One API as the router sees it.
#[derive(Debug, Clone)]
pub struct ApiRoutes<T> {
    /// Exact host names (`api.example.com`) or wildcards (`*.example.com`); any host when
    /// empty. Case-insensitive; a port or a trailing dot in the request's host is ignored.
    pub hosts: Vec<String>,
    /// Normalised path prefix such as `/pets/v1`, or `/`; one trailing slash is ignored.
    pub context: String,
    /// The API's operations.
    pub operations: Vec<OperationRoute<T>>,
}

/// One operation of an API.
#[derive(Debug, Clone)]
pub struct OperationRoute<T> {
    /// The method, or `None` for any method.
    pub method: Option<Method>,
    /// Path below the context: literal segments, `{name}` segments (one non-empty segment),
    /// and `*` as the last segment (zero or more segments); `/` is the context itself.
    pub template: String,
    /// What a match returns.
    pub value: T,
}

/// The result of [`RouteTable::route`].
#[derive(Debug, PartialEq, Eq)]
pub enum RouteMatch<'a, T> {
    /// An operation matched.
    Found {
        /// Index of the API in the list given to [`RouteTable::new`].
        api: usize,
        /// The operation's value.
        value: &'a T,
        /// The path after the context; starts with `/` and is `/` when nothing is left.
        rest: &'a str,
    },
    /// Templates of the API match the path, but none for this method (`405`).
    MethodNotAllowed {
        /// Index of the API in the list given to [`RouteTable::new`].
        api: usize,
        /// The methods those templates accept, for the `Allow` header.
        allowed: Vec<Method>,
    },
    /// No API, or no template of the chosen API, matches (`404`).
    NotFound,
}

/// Why a [`RouteTable`] could not be built; APIs are named by their index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// A host entry that is neither a host name nor `*.` followed by one.
    #[error("API #{api}: host `{host}` is not a host name or `*.domain` (without a port)")]
    InvalidHost {
        /// Index of the API.
        api: usize,
        /// The host as given.
        host: String,
    },
    /// A context that is not a normalised path.
    #[error("API #{api}: context `{context}` is not a normalised path")]
    InvalidContext {
        /// Index of the API.
        api: usize,
        /// The context as given.
        context: String,
    },
    /// Two APIs with the same context on the same host entry (or both on any host).
    #[error("APIs #{first} and #{second} both have context `{context}` on {host}")]
    DuplicateContext {
        /// Index of the API seen first.
        first: usize,
        /// Index of the API seen second.
        second: usize,
        /// The context.
        context: String,
        /// The host entry both have, or `any host`.
        host: String,
    },
    /// An operation's template could not be parsed.
    #[error("API #{api}: template `{template}` is invalid: {reason}")]
    InvalidTemplate {
        /// Index of the API.
        api: usize,
        /// The template as given.
        template: String,
        /// What is wrong with it.
        reason: TemplateError,
    },
    /// Two operations of one API with the same method and the same template (parameter
    /// names aside).
    #[error("API #{api}: templates `{first}` and `{second}` are the same for {method}")]
    DuplicateOperation {
        /// Index of the API.
        api: usize,
        /// The method, or `any method`.
        method: String,
        /// Template of the operation seen first.
        first: String,
        /// Template of the operation seen second.
        second: String,
    },
}

impl RouteError {
    /// The API (by index) a route error is about: for a context two APIs share, the second.
    pub fn api(&self) -> usize {
        match self {
            RouteError::InvalidHost { api, .. }
            | RouteError::InvalidContext { api, .. }
            | RouteError::InvalidTemplate { api, .. }
            | RouteError::DuplicateOperation { api, .. } => *api,
            RouteError::DuplicateContext { second, .. } => *second,
        }
    }
}

/// All routes of one configuration snapshot; immutable once built.
///
/// # Precedence
///
/// 1. **Host.** An exact host entry is tried first, then wildcard entries from the longest
///    suffix to the shortest (`*.example.com` matches `a.example.com` and `a.b.example.com`,
///    not `example.com`), then APIs without hosts. The first of these whose APIs have a
///    context matching the path is used.
/// 2. **Context.** Among those, the longest context that is a prefix of the path on a segment
///    boundary (`/pets/v1` matches `/pets/v1`, `/pets/v1/x`, not `/pets/v10`).
/// 3. **Operation.** The rest of the path is matched against the API's templates only: when
///    none matches, the answer is [`RouteMatch::NotFound`], with no fall-back to a shorter
///    context or a less specific host, so that an API's paths never leak to another API.
///    Templates are compared segment by segment from the left; at the first segment where
///    two differ, a literal beats a `{parameter}`, which beats `*`; a template that ends
///    where the path ends beats a `*` matching zero segments. Only templates accepting the
///    method take part; among operations with the same template, the one naming the method
///    beats the one for any method. When templates match the path but none accepts the
///    method, the answer is [`RouteMatch::MethodNotAllowed`]. `HEAD` is not implied by
///    `GET`.
/// 4. **Trailing slash.** One trailing slash of the path is ignored when matching templates
///    (`/pets/` matches `/pets`); `rest` keeps it.
#[derive(Debug)]
pub struct RouteTable<T> {
    apis: Vec<OperationTree<T>>,
    exact_hosts: HashMap<Box<str>, Contexts>,
    /// Keyed by the suffix with its leading dot: `.example.com`.
    wildcard_hosts: HashMap<Box<str>, Contexts>,
    any_host: Contexts,
}

impl<T> RouteTable<T> {
    /// Compiles the routes of `apis`; the indexes of this list identify the APIs afterwards.
    pub fn new(apis: Vec<ApiRoutes<T>>) -> Result<Self, RouteError> {
        let mut table = RouteTable {
            apis: Vec::with_capacity(apis.len()),
            exact_hosts: HashMap::new(),
            wildcard_hosts: HashMap::new(),
            any_host: Contexts::default(),
        };
        for (api, routes) in apis.into_iter().enumerate() {
            let context = context_key(api, &routes.context)?;
            if routes.hosts.is_empty() {
                table.any_host.insert(context, api, "any host")?;
            }
            for host in &routes.hosts {
                let (map, key) = match parse_host(host) {
                    Some(HostEntry::Exact(name)) => (&mut table.exact_hosts, name),
                    Some(HostEntry::Wildcard(suffix)) => (&mut table.wildcard_hosts, suffix),
                    None => {
                        return Err(RouteError::InvalidHost { api, host: host.clone() });
                    }
                };
                map.entry(key.into_boxed_str()).or_default().insert(context, api, host)?;
            }
            table.apis.push(OperationTree::new(api, routes.operations)?);
        }
        Ok(table)
    }

    /// Routes a request. `host` is the request's host (`Host` header or `:authority`, with or
    /// without port); `path` must come from [`normalize_path`]. The rules are described on
    /// [`RouteTable`]. Allocates only for a [`RouteMatch::MethodNotAllowed`] answer.
    pub fn route<'a>(&'a self, host: Option<&str>, method: &Method, path: &'a str) -> RouteMatch<'a, T> {
        let Some((api, rest)) = self.select_api(host, path) else {
            return RouteMatch::NotFound;
        };
        let operations = &self.apis[api];
        if let Some(value) = operations.find(method, rest) {
            return RouteMatch::Found { api, value, rest };
        }
        let allowed = operations.allowed_methods(rest);
        if allowed.is_empty() { RouteMatch::NotFound } else { RouteMatch::MethodNotAllowed { api, allowed } }
    }

    /// The API for `host` and `path`, and the path below its context.
    fn select_api<'a>(&self, host: Option<&str>, path: &'a str) -> Option<(usize, &'a str)> {
        let mut buffer = [0; MAX_HOST_LEN];
        if let Some(host) = host.and_then(|host| lower_case_host(host, &mut buffer)) {
            if let Some(found) = self.exact_hosts.get(host).and_then(|contexts| contexts.find(path)) {
                return Some(found);
            }
            if !self.wildcard_hosts.is_empty() {
                // From the longest suffix to the shortest; a wildcard needs a label before it.
                for (dot, _) in host.match_indices('.').filter(|&(dot, _)| dot > 0) {
                    let found = self.wildcard_hosts.get(&host[dot..]).and_then(|contexts| contexts.find(path));
                    if found.is_some() {
                        return found;
                    }
                }
            }
        }
        self.any_host.find(path)
    }
}

/// The contexts of the APIs on one host entry.
#[derive(Debug, Default)]
struct Contexts {
    /// Context to API index; the root context `/` is the empty string.
    by_context: HashMap<Box<str>, usize>,
    /// Length of the longest context, to skip longer prefixes of a path.
    longest: usize,
}

impl Contexts {
    fn insert(&mut self, context: &str, api: usize, host: &str) -> Result<(), RouteError> {
        match self.by_context.get(context) {
            // The same host listed twice by one API.
            Some(&existing) if existing == api => Ok(()),
            Some(&existing) => Err(RouteError::DuplicateContext {
                first: existing,
                second: api,
                context: if context.is_empty() { "/".to_owned() } else { context.to_owned() },
                host: host.to_owned(),
            }),
            None => {
                self.by_context.insert(context.into(), api);
                self.longest = self.longest.max(context.len());
                Ok(())
            }
        }
    }

    /// The API with the longest context that is a segment prefix of `path`, and the rest.
    fn find<'a>(&self, path: &'a str) -> Option<(usize, &'a str)> {
        if self.by_context.is_empty() {
            return None;
        }
        // Probe `path` itself, then each prefix ending before a `/`, down to the empty prefix
        // (the root).
        let mut end = path.len();
        loop {
            if end <= self.longest
                && let Some(&api) = self.by_context.get(&path[..end])
            {
                let rest = if end == path.len() { "/" } else { &path[end..] };
                return Some((api, rest));
            }
            end = path[..end].rfind('/')?;
        }
    }
}

/// The key of a context: normalised, without its trailing slash (so `/` is the empty string).
fn context_key(api: usize, context: &str) -> Result<&str, RouteError> {
    match normalize_path(context) {
        Ok(normal) if normal == context => Ok(context.strip_suffix('/').unwrap_or(context)),
        _ => Err(RouteError::InvalidContext { api, context: context.to_owned() }),
    }
}

/// A configured host, lower-cased.
enum HostEntry {
    Exact(String),
    /// The suffix with its leading dot: `.example.com` for `*.example.com`.
    Wildcard(String),
}

fn parse_host(host: &str) -> Option<HostEntry> {
    let host = host.to_ascii_lowercase();
    let host = host.strip_suffix('.').unwrap_or(&host);
    if let Some(domain) = host.strip_prefix("*.") {
        return is_host_name(domain).then(|| HostEntry::Wildcard(format!(".{domain}")));
    }
    let is_ip_literal = host
        .strip_prefix('[')
        .and_then(|host| host.strip_suffix(']'))
        .is_some_and(|address| !address.is_empty() && address.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.'));
    (is_ip_literal || is_host_name(host)).then(|| HostEntry::Exact(host.to_owned()))
}

/// Dot-separated non-empty labels of letters, digits, `-` and `_`.
fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|label| !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

/// The request's host without port or trailing dot, lower-cased into `buffer`; `None` when
/// it does not fit.
fn lower_case_host<'b>(host: &str, buffer: &'b mut [u8; MAX_HOST_LEN]) -> Option<&'b str> {
    let host = if host.starts_with('[') {
        // `[::1]:8080`: the port follows the bracket.
        host.find(']').map_or(host, |end| &host[..=end])
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let target = buffer.get_mut(..host.len())?;
    target.copy_from_slice(host.as_bytes());
    target.make_ascii_lowercase();
    std::str::from_utf8(target).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(method: Option<Method>, template: &str, value: &'static str) -> OperationRoute<&'static str> {
        OperationRoute { method, template: template.to_owned(), value }
    }

    fn api(hosts: &[&str], context: &str, operations: Vec<OperationRoute<&'static str>>) -> ApiRoutes<&'static str> {
        ApiRoutes { hosts: hosts.iter().map(ToString::to_string).collect(), context: context.to_owned(), operations }
    }

    fn any(template: &str, value: &'static str) -> OperationRoute<&'static str> {
        op(None, template, value)
    }

    /// `(api, value, rest)` of a match, or `None`.
    fn found<'a>(
        table: &'a RouteTable<&'static str>,
        host: Option<&str>,
        method: Method,
        path: &'a str,
    ) -> Option<(usize, &'static str, &'a str)> {
        match table.route(host, &method, path) {
            RouteMatch::Found { api, value, rest } => Some((api, *value, rest)),
            _ => None,
        }
    }

    #[test]
    fn table_is_send_and_sync() {
        fn assert_send_sync<S: Send + Sync>() {}
        assert_send_sync::<RouteTable<String>>();
    }

    #[test]
    fn matches_contexts_on_segment_boundaries() {
        let table = RouteTable::new(vec![
            api(&[], "/pets/v1", vec![any("/*", "pets")]),
            api(&[], "/pets", vec![any("/*", "pets-root")]),
            api(&[], "/", vec![any("/*", "root")]),
        ])
        .unwrap();
        let get = |path| found(&table, None, Method::GET, path);
        assert_eq!(get("/pets/v1"), Some((0, "pets", "/")));
        assert_eq!(get("/pets/v1/"), Some((0, "pets", "/")));
        assert_eq!(get("/pets/v1/x/y"), Some((0, "pets", "/x/y")));
        assert_eq!(get("/pets/v10"), Some((1, "pets-root", "/v10")));
        assert_eq!(get("/pets"), Some((1, "pets-root", "/")));
        assert_eq!(get("/petsv1"), Some((2, "root", "/petsv1")));
        assert_eq!(get("/"), Some((2, "root", "/")));
        assert_eq!(get("/other/"), Some((2, "root", "/other/")));
    }

    #[test]
    fn no_fall_back_to_a_shorter_context() {
        let table = RouteTable::new(vec![api(&[], "/pets", vec![any("/cats", "cats")]), api(&[], "/", vec![any("/*", "root")])]).unwrap();
        assert_eq!(table.route(None, &Method::GET, "/pets/dogs"), RouteMatch::NotFound);
        assert_eq!(found(&table, None, Method::GET, "/pets/cats"), Some((0, "cats", "/cats")));
    }

    #[test]
    fn picks_exact_then_wildcard_then_any_host() {
        let table = RouteTable::new(vec![
            api(&["api.example.com"], "/", vec![any("/*", "exact")]),
            api(&["*.example.com"], "/", vec![any("/*", "wildcard")]),
            api(&["*.eu.example.com"], "/", vec![any("/*", "eu-wildcard")]),
            api(&[], "/", vec![any("/*", "any")]),
        ])
        .unwrap();
        let host = |host| found(&table, host, Method::GET, "/x").map(|(_, value, _)| value);
        assert_eq!(host(Some("api.example.com")), Some("exact"));
        assert_eq!(host(Some("API.Example.COM")), Some("exact"));
        assert_eq!(host(Some("api.example.com:8443")), Some("exact"));
        assert_eq!(host(Some("api.example.com.")), Some("exact"));
        assert_eq!(host(Some("web.example.com")), Some("wildcard"));
        assert_eq!(host(Some("a.b.example.com")), Some("wildcard"));
        assert_eq!(host(Some("x.eu.example.com:80")), Some("eu-wildcard"));
        assert_eq!(host(Some("eu.example.com")), Some("wildcard"));
        assert_eq!(host(Some("example.com")), Some("any"));
        assert_eq!(host(Some(".example.com")), Some("any"));
        assert_eq!(host(Some("other.org")), Some("any"));
        assert_eq!(host(None), Some("any"));
        assert_eq!(host(Some(&"a".repeat(300))), Some("any"));
    }

    #[test]
    fn falls_through_host_classes_when_no_context_matches() {
        let table = RouteTable::new(vec![
            api(&["api.example.com"], "/pets", vec![any("/*", "exact-pets")]),
            api(&["*.example.com"], "/orders", vec![any("/*", "wildcard-orders")]),
            api(&[], "/users", vec![any("/*", "any-users")]),
            api(&["[::1]"], "/", vec![any("/*", "ipv6")]),
        ])
        .unwrap();
        let host = |path| found(&table, Some("api.example.com"), Method::GET, path).map(|(_, value, _)| value);
        assert_eq!(host("/pets/1"), Some("exact-pets"));
        assert_eq!(host("/orders/1"), Some("wildcard-orders"));
        assert_eq!(host("/users/1"), Some("any-users"));
        assert_eq!(host("/nothing"), None);
        assert_eq!(found(&table, Some("[::1]:8080"), Method::GET, "/a").map(|(_, value, _)| value), Some("ipv6"));
    }

    #[test]
    fn operation_precedence() {
        let table = RouteTable::new(vec![api(
            &[],
            "/api",
            vec![
                any("/*", "catch-all"),
                any("/pets", "pets"),
                any("/pets/{id}", "pet"),
                any("/pets/mine", "mine"),
                any("/pets/{id}/toys/*", "pet-toys"),
                any("/pets/*", "pets-anything"),
                any("/{kind}/mine", "kind-mine"),
                any("/files/*", "files"),
                any("/", "root"),
            ],
        )])
        .unwrap();
        let value = |path| found(&table, None, Method::GET, path).map(|(_, value, _)| value);
        assert_eq!(value("/api"), Some("root"));
        assert_eq!(value("/api/"), Some("root"));
        assert_eq!(value("/api/pets"), Some("pets"));
        assert_eq!(value("/api/pets/"), Some("pets"));
        assert_eq!(value("/api/pets/mine"), Some("mine"));
        assert_eq!(value("/api/pets/7"), Some("pet"));
        assert_eq!(value("/api/pets/7/"), Some("pet"));
        assert_eq!(value("/api/pets/7/toys"), Some("pet-toys"));
        assert_eq!(value("/api/pets/7/toys/1/2"), Some("pet-toys"));
        assert_eq!(value("/api/pets/7/food"), Some("pets-anything"));
        assert_eq!(value("/api/cats/mine"), Some("kind-mine"));
        // The first differing segment decides: literal `pets` beats `{kind}`.
        assert_eq!(value("/api/pets/mine"), Some("mine"));
        assert_eq!(value("/api/files"), Some("files"));
        assert_eq!(value("/api/files/a/b"), Some("files"));
        assert_eq!(value("/api/Pets"), Some("catch-all"));
        assert_eq!(value("/api/cats"), Some("catch-all"));
        assert_eq!(value("/api/a;b"), Some("catch-all"));
    }

    #[test]
    fn methods() {
        let table = RouteTable::new(vec![api(
            &[],
            "/",
            vec![
                op(Some(Method::GET), "/pets", "list"),
                op(Some(Method::POST), "/pets", "create"),
                op(Some(Method::DELETE), "/pets/mine", "delete-mine"),
                op(Some(Method::GET), "/pets/{id}", "get"),
                op(Some(Method::PUT), "/pets/{id}", "put"),
                any("/pets/{id}", "pet-any"),
                op(Some(Method::PATCH), "/files/*", "patch-files"),
            ],
        )])
        .unwrap();
        let value = |method, path| found(&table, None, method, path).map(|(_, value, _)| value);
        assert_eq!(value(Method::GET, "/pets"), Some("list"));
        assert_eq!(value(Method::POST, "/pets"), Some("create"));
        assert_eq!(value(Method::DELETE, "/pets/mine"), Some("delete-mine"));
        // `/pets/mine` has no GET; the next template that has one is used.
        assert_eq!(value(Method::GET, "/pets/mine"), Some("get"));
        // A named method beats any method on the same template.
        assert_eq!(value(Method::PUT, "/pets/7"), Some("put"));
        assert_eq!(value(Method::DELETE, "/pets/7"), Some("pet-any"));
        assert_eq!(
            table.route(None, &Method::DELETE, "/pets"),
            RouteMatch::MethodNotAllowed { api: 0, allowed: vec![Method::GET, Method::POST] }
        );
        assert_eq!(table.route(None, &Method::GET, "/files/a"), RouteMatch::MethodNotAllowed { api: 0, allowed: vec![Method::PATCH] });
        assert_eq!(table.route(None, &Method::HEAD, "/nothing"), RouteMatch::NotFound);
        assert_eq!(
            table.route(None, &Method::HEAD, "/pets"),
            RouteMatch::MethodNotAllowed { api: 0, allowed: vec![Method::GET, Method::POST] }
        );
    }

    #[test]
    fn method_not_allowed_lists_each_method_once() {
        let table = RouteTable::new(vec![api(
            &[],
            "/",
            vec![op(Some(Method::GET), "/a/{x}", "1"), op(Some(Method::GET), "/a/b", "2"), op(Some(Method::POST), "/a/*", "3")],
        )])
        .unwrap();
        assert_eq!(
            table.route(None, &Method::PUT, "/a/b"),
            RouteMatch::MethodNotAllowed { api: 0, allowed: vec![Method::GET, Method::POST] }
        );
    }

    #[test]
    fn refuses_invalid_tables() {
        let error = |apis| RouteTable::new(apis).err().map(|error| error.to_string());
        assert_eq!(
            error(vec![api(&[], "/pets", vec![]), api(&[], "/pets/", vec![])]),
            Some("APIs #0 and #1 both have context `/pets` on any host".to_owned())
        );
        assert_eq!(
            error(vec![api(&["a.example.com", "b.example.com"], "/", vec![]), api(&["B.example.com"], "/", vec![])]),
            Some("APIs #0 and #1 both have context `/` on B.example.com".to_owned())
        );
        assert!(error(vec![api(&["*.example.com"], "/", vec![]), api(&["*.example.com"], "/", vec![])]).is_some());
        // Different host classes, or the same host twice in one API, are no conflict.
        assert_eq!(
            error(vec![
                api(&["a.example.com", "A.example.com"], "/", vec![]),
                api(&["*.example.com"], "/", vec![]),
                api(&[], "/", vec![]),
                api(&["a.example.com"], "/x", vec![]),
            ]),
            None
        );
        assert_eq!(
            error(vec![api(&[], "/", vec![]), api(&[], "/", vec![any("/x/{", "x")])]),
            Some("APIs #0 and #1 both have context `/` on any host".to_owned())
        );
        assert_eq!(
            error(vec![api(&[], "/", vec![any("/x/{id", "x")])]),
            Some("API #0: template `/x/{id` is invalid: a `{` is not closed".to_owned())
        );
        assert_eq!(
            error(vec![api(&[], "/", vec![any("/*/x", "x")])]),
            Some("API #0: template `/*/x` is invalid: `*` may only be the last segment".to_owned())
        );
        assert_eq!(
            error(vec![api(&[], "/", vec![any("/x/{}", "x")])]),
            Some("API #0: template `/x/{}` is invalid: a parameter has no name".to_owned())
        );
        assert_eq!(
            error(vec![
                api(&[], "/a", vec![]),
                api(&[], "/b", vec![op(Some(Method::GET), "/p/{id}", "1"), op(Some(Method::GET), "/p/{name}/", "2")])
            ]),
            Some("API #1: templates `/p/{id}` and `/p/{name}/` are the same for GET".to_owned())
        );
        assert_eq!(
            error(vec![api(&[], "/", vec![any("/p", "1"), any("/p", "2")])]),
            Some("API #0: templates `/p` and `/p` are the same for any method".to_owned())
        );
        // The same template for two methods, or for a method and any method, is fine.
        assert_eq!(
            error(vec![api(&[], "/", vec![op(Some(Method::GET), "/p", "1"), op(Some(Method::PUT), "/p", "2"), any("/p", "3")])]),
            None
        );
        for context in ["pets", "", "/pets//v1", "/pets/../v1", "/%7epets", "/pets?x"] {
            assert_eq!(error(vec![api(&[], context, vec![])]), Some(format!("API #0: context `{context}` is not a normalised path")));
        }
        for host in ["", "*", "*.", "a.*.com", "api.example.com:8443", "https://api.example.com", "a..b", "a b"] {
            assert_eq!(
                error(vec![api(&[host], "/", vec![])]),
                Some(format!("API #0: host `{host}` is not a host name or `*.domain` (without a port)"))
            );
        }
    }

    #[test]
    fn routes_a_thousand_apis() {
        let names: Vec<&'static str> = (0..1000).map(|i| &*format!("api-{i}").leak()).collect();
        let apis = (0..1000)
            .map(|i| {
                let hosts = match i % 4 {
                    1 => vec![format!("h{i}.example.com")],
                    2 => vec![format!("*.w{i}.example.com")],
                    _ => vec![],
                };
                // Every tenth API is nested below the one before it.
                let context = if i % 10 == 9 { format!("/svc{}/v1/nested", i - 1) } else { format!("/svc{i}/v1") };
                ApiRoutes {
                    hosts,
                    context,
                    operations: vec![
                        op(Some(Method::GET), "/items", names[i]),
                        op(Some(Method::GET), "/items/{id}", names[i]),
                        op(Some(Method::POST), "/items", names[i]),
                    ],
                }
            })
            .collect();
        let table = RouteTable::new(apis).unwrap();
        for (i, &name) in names.iter().enumerate() {
            let host = match i % 4 {
                1 => format!("H{i}.example.com:443"),
                2 => format!("x.w{i}.example.com"),
                _ => "anything.example.org".to_owned(),
            };
            let context = if i % 10 == 9 { format!("/svc{}/v1/nested", i - 1) } else { format!("/svc{i}/v1") };
            let path = format!("{context}/items/42");
            assert_eq!(found(&table, Some(&host), Method::GET, &path), Some((i, name, "/items/42")), "{path}");
            let path = format!("{context}/items/");
            assert_eq!(found(&table, Some(&host), Method::POST, &path), Some((i, name, "/items/")), "{path}");
            assert_eq!(
                table.route(Some(&host), &Method::DELETE, &path),
                RouteMatch::MethodNotAllowed { api: i, allowed: vec![Method::GET, Method::POST] }
            );
            assert_eq!(table.route(Some(&host), &Method::GET, &format!("{context}/other")), RouteMatch::NotFound);
            if i % 4 == 1 || i % 4 == 2 {
                // Host-bound APIs are not reachable from another host.
                let path = format!("{context}/items/42");
                assert_eq!(table.route(Some("anything.example.org"), &Method::GET, &path), RouteMatch::NotFound);
            }
        }
        assert_eq!(table.route(None, &Method::GET, "/svc1000/v1/items"), RouteMatch::NotFound);
    }
}
