"""REST for any annotated gRPC service: routes read from `google.api.http` rules.

A generic transcoder in the manner of grpc-gateway and Envoy's grpc_json_transcoder: it reads
the HTTP rules from a service descriptor and knows nothing of any particular service, nor of
how an application represents its answers over HTTP (a `Responder` writes them). It supports
the rule grammar of `google/api/http.proto`: literal and variable path segments, `*`, `**`,
`{field=pattern}`, custom verbs, `body` (`*` or a top-level field), `response_body`,
`additional_bindings`, and query parameters mapped to request fields.

- `templates`: path templates; `routes`: routes from rules, and finding a request's route;
  `fields`: request fields from path, query and body; `errors`: `google.rpc.Status` errors;
  `app`: the ASGI app and the `Responder` seam: the application writes every answer, headers
  included.
- Routes match the path as sent (`raw_path`): an encoded `/` is not a separator, an encoded
  unreserved character is the character (`request_path`).
- Unknown query parameters are ignored, so a cache-busting parameter never breaks a verifier;
  a known one with a malformed value is a 400.
- Errors are `TranscodeError`s with the HTTP status of `agentrouter_auth.status`, answered by
  the responder (the application's `google.rpc.Status` JSON: `errors.status_json`).
"""

from agentrouter_auth.transcode.app import Responder, Transcoder
from agentrouter_auth.transcode.errors import TranscodeError
from agentrouter_auth.transcode.routes import Route, request_path, routes_for
from agentrouter_auth.transcode.templates import PathTemplate, TemplateError

__all__ = [
    "PathTemplate",
    "Responder",
    "Route",
    "TemplateError",
    "TranscodeError",
    "Transcoder",
    "request_path",
    "routes_for",
]
