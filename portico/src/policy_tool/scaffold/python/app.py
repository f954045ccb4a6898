"""`{{name}}`: a Portico policy in Python.

It refuses requests that lack a header (`x-tenant` unless configured) with a 400
problem, and passes the header's value on to the policies after it.

componentize-py makes a new `Policy` object for every call, so what `init` keeps
lives at module level, not on `self`. Build with `portico policy build`, test with
`portico policy test` (the cases are in fixtures.yaml).
"""

import json
import re

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports.types import (
    Context,
    Decision,
    Decision_Continue,
    Decision_Respond,
    ImmediateResponse,
    Needs,
    Request,
    Response,
)

# An HTTP header name (an RFC 9110 token).
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

# This instance's configuration, set once by `init`.
settings = {"header": "x-tenant"}


def problem(status: int, title: str, detail: str) -> Decision:
    """An RFC 9457 problem response."""
    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail})
    headers = [("content-type", "application/problem+json")]
    return Decision_Respond(ImmediateResponse(status, headers, body.encode()))


class Policy(exports.Policy):
    def init(self, config: str) -> Needs:
        document = json.loads(config)
        for field in document:
            if field != "header":
                raise Err(f"config field `{field}` is unknown")
        header = document.get("header", "x-tenant")
        if not isinstance(header, str) or not TOKEN.fullmatch(header):
            raise Err(f"config field `header`: {header!r} is not a header name")
        settings["header"] = header.lower()
        # No body, and nothing to do in the response phase.
        return Needs(0)

    def on_request(self, request: Request, context: Context) -> Decision:
        header = settings["header"]
        value = request.header(header)
        if value is None:
            return problem(400, "Bad Request", f"The request has no `{header}` header.")
        context.set(header, value)
        return Decision_Continue()

    def on_response(self, request: Request, response: Response, context: Context) -> None:
        pass
