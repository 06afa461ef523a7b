"""AgentRouter client SDK: `Client(base_url=..., api_key=...)` and its service clients, and
`TokenVerifier` over a `KeySetCache` to verify AgentRouter's tokens."""

from agentrouter_sdk._client import AgentRouterError, AuthClient, Client
from agentrouter_sdk._keyset import (
    InvalidTokenError,
    KeySetCache,
    KeysUnavailableError,
    PublicKey,
)
from agentrouter_sdk._verifier import TokenVerifier
from agentrouter_sdk._version import __version__

__all__ = [
    "AgentRouterError",
    "AuthClient",
    "Client",
    "InvalidTokenError",
    "KeySetCache",
    "KeysUnavailableError",
    "PublicKey",
    "TokenVerifier",
    "__version__",
]
