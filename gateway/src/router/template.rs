//! Path templates below an API's context (`/pets/{id}`, `/files/*`), compiled per API into a
//! tree of segments that is matched without allocating.

use http::Method;

use super::{OperationRoute, RouteError, normalize_path};

/// Why an operation's path template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template does not start with `/`.
    #[error("it must start with `/`")]
    NotAbsolute,
    /// `//` in the template.
    #[error("it has an empty segment")]
    EmptySegment,
    /// `{name` without its `}`.
    #[error("a `{{` is not closed")]
    UnclosedParameter,
    /// `{}`.
    #[error("a parameter has no name")]
    EmptyParameterName,
    /// A brace that does not enclose a whole segment, as in `/a{id}` or `/{a}{b}`.
    #[error("a parameter must be a whole segment, as in `/pets/{{id}}`")]
    MisplacedBrace,
    /// The same parameter name twice.
    #[error("parameter `{0}` appears twice")]
    DuplicateParameter(String),
    /// `*` before the last segment.
    #[error("`*` may only be the last segment")]
    WildcardNotLast,
    /// `*` inside a segment, as in `/files/*.json`.
    #[error("`*` must be a whole segment")]
    WildcardInSegment,
    /// A `.` or `..` segment, which no normalised path contains.
    #[error("it has a dot segment")]
    DotSegment,
    /// A literal segment that is not a valid path segment.
    #[error("{0}")]
    InvalidLiteral(super::PathError),
}

/// One segment of a parsed template.
#[derive(Debug, PartialEq, Eq)]
enum Segment {
    /// Matches this exact (normalised, case-sensitive) segment.
    Literal(String),
    /// `{name}`: matches any one non-empty segment.
    Parameter,
    /// `*`, last: matches zero or more segments.
    Wildcard,
}

/// Parses a template; one trailing slash is ignored, as it is in the paths matched.
fn parse(template: &str) -> Result<Vec<Segment>, TemplateError> {
    let body = template.strip_prefix('/').ok_or(TemplateError::NotAbsolute)?;
    // `/` is the root and `//` an empty segment; only a slash after a segment is trailing.
    let body = if body.len() > 1 { body.strip_suffix('/').unwrap_or(body) } else { body };
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let count = body.split('/').count();
    let mut parameters: Vec<&str> = Vec::new();
    let mut segments = Vec::with_capacity(count);
    for (index, part) in body.split('/').enumerate() {
        if part.is_empty() {
            return Err(TemplateError::EmptySegment);
        }
        if part == "*" {
            if index + 1 != count {
                return Err(TemplateError::WildcardNotLast);
            }
            segments.push(Segment::Wildcard);
        } else if let Some(inner) = part.strip_prefix('{') {
            let name = match inner.strip_suffix('}') {
                Some(name) => name,
                None if inner.contains('}') => return Err(TemplateError::MisplacedBrace),
                None => return Err(TemplateError::UnclosedParameter),
            };
            if name.is_empty() {
                return Err(TemplateError::EmptyParameterName);
            }
            if name.contains(['{', '}']) {
                return Err(TemplateError::MisplacedBrace);
            }
            if parameters.contains(&name) {
                return Err(TemplateError::DuplicateParameter(name.to_owned()));
            }
            parameters.push(name);
            segments.push(Segment::Parameter);
        } else if part.contains(['{', '}']) {
            return Err(TemplateError::MisplacedBrace);
        } else if part.contains('*') {
            return Err(TemplateError::WildcardInSegment);
        } else {
            let path = format!("/{part}");
            let normal = normalize_path(&path).map_err(TemplateError::InvalidLiteral)?;
            // A segment without `/` normalises to `/segment`, or to `/` if it is a dot segment.
            let literal = &normal[1..];
            if literal.is_empty() {
                return Err(TemplateError::DotSegment);
            }
            segments.push(Segment::Literal(literal.to_owned()));
        }
    }
    Ok(segments)
}

/// The operations of one API, matched against the path below its context.
#[derive(Debug)]
pub(super) struct OperationTree<T> {
    root: Node,
    values: Vec<T>,
}

/// A point in the tree: the templates that share the segments leading here.
#[derive(Debug, Default)]
struct Node {
    /// Literal next segments, sorted for binary search.
    literals: Vec<(Box<str>, Node)>,
    /// A `{parameter}` next segment, whatever its name.
    parameter: Option<Box<Node>>,
    /// Operations whose template ends here.
    end: Vec<Leaf>,
    /// Operations whose template ends here with `*`.
    wildcard: Vec<Leaf>,
}

#[derive(Debug)]
struct Leaf {
    method: Option<Method>,
    operation: usize,
}

impl<T> OperationTree<T> {
    /// Compiles the operations of API number `api`.
    pub(super) fn new(api: usize, operations: Vec<OperationRoute<T>>) -> Result<Self, RouteError> {
        let mut root = Node::default();
        let mut templates: Vec<String> = Vec::with_capacity(operations.len());
        let mut values = Vec::with_capacity(operations.len());
        for (operation, route) in operations.into_iter().enumerate() {
            let segments =
                parse(&route.template).map_err(|reason| RouteError::InvalidTemplate { api, template: route.template.clone(), reason })?;
            let mut node = &mut root;
            let mut ends_with_wildcard = false;
            for segment in segments {
                node = match segment {
                    Segment::Literal(name) => node.literal_child(name),
                    Segment::Parameter => &mut **node.parameter.get_or_insert_with(Box::default),
                    Segment::Wildcard => {
                        ends_with_wildcard = true;
                        break;
                    }
                };
            }
            let leaves = if ends_with_wildcard { &mut node.wildcard } else { &mut node.end };
            if let Some(existing) = leaves.iter().find(|leaf| leaf.method == route.method) {
                return Err(RouteError::DuplicateOperation {
                    api,
                    method: route.method.as_ref().map_or("any method", Method::as_str).to_owned(),
                    first: templates[existing.operation].clone(),
                    second: route.template,
                });
            }
            leaves.push(Leaf { method: route.method, operation });
            templates.push(route.template);
            values.push(route.value);
        }
        Ok(OperationTree { root, values })
    }

    /// The operation for `method` on `rest` (the path below the context), if any.
    pub(super) fn find(&self, method: &Method, rest: &str) -> Option<&T> {
        find(&self.root, segments_of(rest), method).map(|operation| &self.values[operation])
    }

    /// The methods of the operations whose template matches `rest`, in precedence order.
    pub(super) fn allowed_methods(&self, rest: &str) -> Vec<Method> {
        let mut allowed = Vec::new();
        collect_methods(&self.root, segments_of(rest), &mut allowed);
        allowed
    }
}

impl Node {
    fn literal_child(&mut self, name: String) -> &mut Node {
        let index = match self.literals.binary_search_by(|(key, _)| key.as_ref().cmp(&name)) {
            Ok(index) => index,
            Err(index) => {
                self.literals.insert(index, (name.into_boxed_str(), Node::default()));
                index
            }
        };
        &mut self.literals[index].1
    }

    fn literal(&self, name: &str) -> Option<&Node> {
        let index = self.literals.binary_search_by(|(key, _)| key.as_ref().cmp(name)).ok()?;
        Some(&self.literals[index].1)
    }
}

/// `/a/b/` as `a/b`, and `/` as `None` (no segments left).
fn segments_of(rest: &str) -> Option<&str> {
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    (!rest.is_empty()).then_some(rest)
}

/// Splits `a/b/c` into `a` and `Some("b/c")`.
fn next_segment(path: &str) -> (&str, Option<&str>) {
    match path.split_once('/') {
        Some((segment, tail)) => (segment, Some(tail)),
        None => (path, None),
    }
}

/// Depth-first search in precedence order: literal, then parameter, then wildcard.
fn find(node: &Node, path: Option<&str>, method: &Method) -> Option<usize> {
    let Some(path) = path else {
        return pick(&node.end, method).or_else(|| pick(&node.wildcard, method));
    };
    let (segment, tail) = next_segment(path);
    if let Some(operation) = node.literal(segment).and_then(|child| find(child, tail, method)) {
        return Some(operation);
    }
    if let Some(parameter) = node.parameter.as_deref().filter(|_| !segment.is_empty())
        && let Some(operation) = find(parameter, tail, method)
    {
        return Some(operation);
    }
    pick(&node.wildcard, method)
}

/// The leaf for exactly `method`, else the leaf for any method.
fn pick(leaves: &[Leaf], method: &Method) -> Option<usize> {
    leaves
        .iter()
        .find(|leaf| leaf.method.as_ref() == Some(method))
        .or_else(|| leaves.iter().find(|leaf| leaf.method.is_none()))
        .map(|leaf| leaf.operation)
}

/// Visits the same leaves as [`find`] but all of them, collecting their methods.
fn collect_methods(node: &Node, path: Option<&str>, allowed: &mut Vec<Method>) {
    let Some(path) = path else {
        add_methods(&node.end, allowed);
        add_methods(&node.wildcard, allowed);
        return;
    };
    let (segment, tail) = next_segment(path);
    if let Some(child) = node.literal(segment) {
        collect_methods(child, tail, allowed);
    }
    if let Some(parameter) = node.parameter.as_deref().filter(|_| !segment.is_empty()) {
        collect_methods(parameter, tail, allowed);
    }
    add_methods(&node.wildcard, allowed);
}

fn add_methods(leaves: &[Leaf], allowed: &mut Vec<Method>) {
    for method in leaves.iter().filter_map(|leaf| leaf.method.as_ref()) {
        if !allowed.contains(method) {
            allowed.push(method.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_templates() {
        use Segment::{Literal, Parameter, Wildcard};
        let literal = |name: &str| Literal(name.to_owned());
        assert_eq!(parse("/"), Ok(vec![]));
        assert_eq!(parse("/*"), Ok(vec![Wildcard]));
        assert_eq!(parse("/pets"), Ok(vec![literal("pets")]));
        assert_eq!(parse("/pets/"), Ok(vec![literal("pets")]));
        assert_eq!(parse("/pets/{id}"), Ok(vec![literal("pets"), Parameter]));
        assert_eq!(parse("/files/*"), Ok(vec![literal("files"), Wildcard]));
        assert_eq!(parse("/files/*/"), Ok(vec![literal("files"), Wildcard]));
        assert_eq!(parse("/%7euser/a%3ab;c"), Ok(vec![literal("~user"), literal("a%3Ab;c")]));
    }

    #[test]
    fn refuses_invalid_templates() {
        let cases: &[(&str, TemplateError)] = &[
            ("pets", TemplateError::NotAbsolute),
            ("", TemplateError::NotAbsolute),
            ("/pets//{id}", TemplateError::EmptySegment),
            ("//", TemplateError::EmptySegment),
            ("/pets//", TemplateError::EmptySegment),
            ("/pets/{id", TemplateError::UnclosedParameter),
            ("/pets/{", TemplateError::UnclosedParameter),
            ("/pets/{}", TemplateError::EmptyParameterName),
            ("/pets/{a}b", TemplateError::MisplacedBrace),
            ("/pets/a{b}", TemplateError::MisplacedBrace),
            ("/pets/id}", TemplateError::MisplacedBrace),
            ("/pets/{{id}}", TemplateError::MisplacedBrace),
            ("/{id}/x/{id}", TemplateError::DuplicateParameter("id".to_owned())),
            ("/*/pets", TemplateError::WildcardNotLast),
            ("/files/*/x", TemplateError::WildcardNotLast),
            ("/files/*.json", TemplateError::WildcardInSegment),
            ("/a/../b", TemplateError::DotSegment),
            ("/a/%2e", TemplateError::DotSegment),
            ("/a%2Fb", TemplateError::InvalidLiteral(super::super::PathError::EncodedSlash)),
            ("/a\\b", TemplateError::InvalidLiteral(super::super::PathError::Backslash)),
        ];
        for (template, expected) in cases {
            assert_eq!(parse(template).as_ref(), Err(expected), "template {template:?}");
        }
    }
}
