"""AgentRouter client SDK: `Client(base_url=..., api_key=...)` and its service clients."""

from agentrouter_sdk._client import AgentRouterError, AuthClient, Client
from agentrouter_sdk._version import __version__

__all__ = ["AgentRouterError", "AuthClient", "Client", "__version__"]
