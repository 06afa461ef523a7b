"""The SDK client: one object per AgentRouter endpoint, one attribute per service."""

from __future__ import annotations

from types import TracebackType

from connectrpc.compat import google_protobuf_binary_codec
from connectrpc.errors import ConnectError

from agentrouter.auth.v1 import auth_pb2
from agentrouter.auth.v1.auth_connect import AuthServiceClientSync

DEFAULT_TIMEOUT_SECONDS = 10.0


class AgentRouterError(Exception):
    """A call failed. `code` is the Connect code name (`unavailable`, `not_found`, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class AuthClient:
    """AuthService: the public key set that verifies AgentRouter's tokens."""

    def __init__(self, base_url: str, headers: dict[str, str], timeout: float) -> None:
        self._headers = headers
        self._timeout = timeout
        self._client = AuthServiceClientSync(
            base_url.rstrip("/"),
            codec=google_protobuf_binary_codec(),
            timeout_ms=int(timeout * 1000),
            # An uncompressed GET has a stable URL, so HTTP caches can serve it.
            send_compression=None,
        )

    def get_jwks(
        self, request: auth_pb2.GetJWKSRequest | None = None, *, timeout: float | None = None
    ) -> auth_pb2.GetJWKSResponse:
        """The JSON Web Key Set. Sent as a Connect GET, so HTTP caches can serve it."""
        try:
            return self._client.get_jwks(
                request or auth_pb2.GetJWKSRequest(),
                headers=self._headers,
                timeout_ms=int((timeout or self._timeout) * 1000),
                use_get=True,
            )
        except ConnectError as err:
            raise AgentRouterError(err.code.value, err.message) from err

    def close(self) -> None:
        """Release the HTTP connections."""
        self._client.close()


class Client:
    """An AgentRouter endpoint. The API key is sent as a bearer token on every call."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http:// or https:// URL, got {base_url!r}")
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.auth = AuthClient(base_url, headers, timeout)

    def close(self) -> None:
        """Release the HTTP connections of every service client."""
        self.auth.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
