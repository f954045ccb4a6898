"""`validate-json`: a Portico policy in Python that checks JSON request bodies against a
schema from its configuration, and answers 400 problem+json naming the failing field.

The schema is a small subset of JSON Schema: `type` (object, array, string, integer,
number, boolean, null), `properties`, `required`, `additionalProperties` (true or false),
`items`, `enum`, `minLength`, `maxLength`, `pattern`, `minimum`, `maximum`, `minItems`
and `maxItems`. `init` refuses a schema that uses anything else, naming where.

componentize-py makes a new `Policy` object for every call, so the configuration `init`
checks is kept at module level.
"""

import json
import re

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log
from wit_world.imports.types import (
    BodyError,
    Context,
    Decision,
    Decision_Continue,
    Decision_Respond,
    ImmediateResponse,
    Needs,
    Request,
    Response,
)

TYPES = {"object", "array", "string", "integer", "number", "boolean", "null"}
KEYWORDS = {
    "type", "properties", "required", "additionalProperties", "items", "enum",
    "minLength", "maxLength", "pattern", "minimum", "maximum", "minItems", "maxItems",
    "title", "description",
}
CONFIG_FIELDS = {"schema", "methods", "content_types"}

# This instance's configuration, checked once by `init` (see the module's doc).
config = {}


class SchemaError(Exception):
    """A schema that cannot be used, and where."""


def check_schema(schema, at):
    """Refuse what this validator does not know, so that a typo is not silently ignored."""
    if not isinstance(schema, dict):
        raise SchemaError(f"{at}: a schema is an object")
    for keyword, value in schema.items():
        where = f"{at}.{keyword}"
        if keyword not in KEYWORDS:
            raise SchemaError(f"{where}: unknown keyword `{keyword}`")
        if keyword == "type":
            kinds = value if isinstance(value, list) else [value]
            for kind in kinds:
                if kind not in TYPES:
                    raise SchemaError(f"{where}: unknown type {kind!r}")
        elif keyword == "properties":
            if not isinstance(value, dict):
                raise SchemaError(f"{where}: an object of schemas")
            for name, sub in value.items():
                check_schema(sub, f"{where}.{name}")
        elif keyword == "items":
            check_schema(value, where)
        elif keyword == "required":
            if not (isinstance(value, list) and all(isinstance(n, str) for n in value)):
                raise SchemaError(f"{where}: a list of property names")
        elif keyword == "additionalProperties":
            if not isinstance(value, bool):
                raise SchemaError(f"{where}: true or false")
        elif keyword == "enum":
            if not isinstance(value, list) or not value:
                raise SchemaError(f"{where}: a non-empty list")
        elif keyword == "pattern":
            try:
                re.compile(value)
            except (re.error, TypeError) as error:
                raise SchemaError(f"{where}: not a regular expression ({error})")
        elif keyword in ("minLength", "maxLength", "minItems", "maxItems"):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise SchemaError(f"{where}: a count")
        elif keyword in ("minimum", "maximum"):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise SchemaError(f"{where}: a number")


def type_of(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def pointer(path):
    """An RFC 6901 JSON pointer to the field."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def first_error(schema, value, path):
    """The first place where `value` breaks `schema`, as (field, message), or None."""
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        actual = type_of(value)
        if actual not in kinds and not (actual == "integer" and "number" in kinds):
            return pointer(path), f"must be {' or '.join(kinds)}, not {actual}"
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(json.dumps(v) for v in schema["enum"])
        return pointer(path), f"must be one of {allowed}"
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            return pointer(path), f"must be at least {schema['minLength']} characters long"
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            return pointer(path), f"must be at most {schema['maxLength']} characters long"
        if "pattern" in schema and not re.search(schema["pattern"], value):
            return pointer(path), f"must match {schema['pattern']}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            return pointer(path), f"must be at least {schema['minimum']}"
        if "maximum" in schema and value > schema["maximum"]:
            return pointer(path), f"must be at most {schema['maximum']}"
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            return pointer(path), f"must have at least {schema['minItems']} items"
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            return pointer(path), f"must have at most {schema['maxItems']} items"
        if "items" in schema:
            for index, item in enumerate(value):
                found = first_error(schema["items"], item, path + [index])
                if found:
                    return found
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                return pointer(path + [name]), "is required"
        for name, item in value.items():
            if name in properties:
                found = first_error(properties[name], item, path + [name])
                if found:
                    return found
            elif schema.get("additionalProperties", True) is False:
                return pointer(path + [name]), "is not allowed"
    return None


def problem(status, title, detail, **members):
    document = {"type": "about:blank", "title": title, "status": status, "detail": detail, **members}
    body = json.dumps(document).encode()
    return Decision_Respond(ImmediateResponse(status, [("content-type", "application/problem+json")], body))


class Policy(exports.Policy):
    def init(self, text: str) -> Needs:
        settings = json.loads(text)
        for field in settings:
            if field not in CONFIG_FIELDS:
                raise Err(f"config field `{field}` is unknown")
        if "schema" not in settings:
            raise Err("config field `schema` is missing")
        try:
            check_schema(settings["schema"], "schema")
        except SchemaError as error:
            raise Err(f"config field {error}")
        methods = settings.get("methods", ["POST", "PUT", "PATCH"])
        if not (isinstance(methods, list) and all(isinstance(m, str) for m in methods)):
            raise Err("config field `methods`: a list of HTTP methods")
        content_types = settings.get("content_types", ["application/json"])
        config.clear()
        config.update(
            schema=settings["schema"],
            methods={m.upper() for m in methods},
            content_types={c.lower() for c in content_types},
        )
        return Needs.REQUEST_BODY

    def on_request(self, request: Request, context: Context) -> Decision:
        if request.method() not in config["methods"]:
            return Decision_Continue()
        media_type = (request.header("content-type") or "").split(";")[0].strip().lower()
        if media_type not in config["content_types"]:
            allowed = ", ".join(sorted(config["content_types"]))
            return problem(415, "Unsupported Media Type", f"The body must be {allowed}.")
        try:
            body = request.body()
        except Err as error:
            if error.value == BodyError.TOO_LARGE:
                return problem(413, "Content Too Large", "The body is too large to check.")
            raise
        try:
            document = json.loads(body)
        except ValueError as error:
            return problem(400, "Bad Request", f"The body is not valid JSON: {error}.")
        found = first_error(config["schema"], document, [])
        if found:
            field, message = found
            log.write(log.Level.DEBUG, "request body refused", [("field", field)])
            shown = field or "the body"
            return problem(400, "Bad Request", f"{shown} {message}.", field=field)
        return Decision_Continue()

    def on_response(self, request: Request, response: Response, context: Context) -> None:
        pass
