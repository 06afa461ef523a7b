"""Baseline: the generated connectrpc app with its default codecs, answering a prebuilt
GetJWKSResponse (the same message the server publishes)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from agentrouter.auth.v1 import auth_pb2
from agentrouter.auth.v1.auth_connect import AuthService, AuthServiceASGIApplication

MESSAGE = auth_pb2.GetJWKSResponse.FromString(Path(os.environ["BENCH_MESSAGE"]).read_bytes())


class Prebuilt(AuthService):
    """Returns the same message object every time (other RPCs: the generated UNIMPLEMENTED)."""

    async def get_jwks(
        self,
        request: auth_pb2.GetJWKSRequest,
        ctx: Any,  # noqa: ANN401 - connectrpc's RequestContext, unused
    ) -> auth_pb2.GetJWKSResponse:
        """The prebuilt message."""
        return MESSAGE


app = AuthServiceASGIApplication(Prebuilt())
