"""AgentRouter client SDK: `Client(base_url=..., api_key=...)` and its service clients."""

from agentrouter_sdk._client import AgentRouterError, AuthClient, Client

__all__ = ["AgentRouterError", "AuthClient", "Client"]
__version__ = "0.1.0"
