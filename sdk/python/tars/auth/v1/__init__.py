"""`tars.auth.v1.auth_pb2` is `agentrouter.auth.v1.auth_pb2`: the same module object, so the
descriptors are registered once and messages from either name are interchangeable."""

import sys

from agentrouter.auth.v1 import auth_pb2

sys.modules[f"{__name__}.auth_pb2"] = auth_pb2

__all__ = ["auth_pb2"]
