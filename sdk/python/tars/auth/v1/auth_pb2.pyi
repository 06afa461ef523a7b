# Type stub for the alias made in tars/auth/v1/__init__.py: the generated module itself.
from agentrouter.auth.v1.auth_pb2 import *  # noqa: F403 - the whole module, re-exported
