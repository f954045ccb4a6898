"""Allows a request when it has `x-allow: yes` and answers 403 otherwise: the same work as
the Rust `allow-header`, for comparing languages."""

from wit_world import exports
from wit_world.imports.types import Decision_Continue, Decision_Respond, ImmediateResponse, Needs

FORBIDDEN = Decision_Respond(ImmediateResponse(403, [], b""))


class Policy(exports.Policy):
    def init(self, config):
        return Needs(0)

    def on_request(self, request, context):
        if request.header("x-allow") == "yes":
            return Decision_Continue()
        return FORBIDDEN

    def on_response(self, request, response, context):
        pass
