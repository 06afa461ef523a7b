"""The SDK client: one object per AgentRouter endpoint, one attribute per service."""

from __future__ import annotations

from types import TracebackType
from urllib.parse import urlsplit

from connectrpc.compat import google_protobuf_binary_codec
from connectrpc.errors import ConnectError
from pyqwest import SyncClient

from agentrouter_sdk._transport import BoundedTransport
from agentrouter_sdk._version import __version__
from tars.auth.v1 import auth_pb2
from tars.auth.v1.auth_connect import AuthServiceClientSync

DEFAULT_TIMEOUT_SECONDS = 10.0
# What a response may hold, received and decompressed: a key set is a few KiB.
DEFAULT_MAX_RESPONSE_BYTES = 4 << 20
USER_AGENT = f"agentrouter-sdk-python/{__version__}"


class AgentRouterError(Exception):
    """A call failed. `code` is the Connect code name (`unavailable`, `not_found`, ...) and
    `message` the server's message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class AuthClient:
    """AuthService: the public key set that verifies AgentRouter's tokens."""

    def __init__(
        self, base_url: str, headers: dict[str, str], timeout: float, max_response_bytes: int
    ) -> None:
        self._headers = headers
        self._timeout = timeout
        self._client = AuthServiceClientSync(
            base_url,
            codec=google_protobuf_binary_codec(),
            timeout_ms=_millis(timeout),
            # An uncompressed GET has a stable URL, so HTTP caches can serve it.
            send_compression=None,
            # connectrpc's own bound, and the transport's, which holds while the body is read.
            read_max_bytes=max_response_bytes,
            http_client=SyncClient(BoundedTransport(max_response_bytes)),
        )

    def get_jwks(
        self, req: auth_pb2.GetJWKSRequest | None = None, *, timeout: float | None = None
    ) -> auth_pb2.GetJWKSResponse:
        """The JSON Web Key Set, within `timeout` seconds (the client's default when None).
        Sent as a Connect GET, so HTTP caches can serve it."""
        try:
            return self._client.get_jwks(
                req if req is not None else auth_pb2.GetJWKSRequest(),
                headers=self._headers,
                timeout_ms=_millis(self._timeout if timeout is None else timeout),
                use_get=True,
            )
        except ConnectError as err:
            raise AgentRouterError(err.code.value, err.message) from err

    def get_open_id_configuration(
        self,
        req: auth_pb2.GetOpenIDConfigurationRequest | None = None,
        *,
        timeout: float | None = None,
    ) -> auth_pb2.GetOpenIDConfigurationResponse:
        """The issuer's OpenID Connect discovery document (its `issuer`, `jwks_uri`, ...),
        within `timeout` seconds (the client's default when None). A Connect GET."""
        try:
            return self._client.get_open_id_configuration(
                req if req is not None else auth_pb2.GetOpenIDConfigurationRequest(),
                headers=self._headers,
                timeout_ms=_millis(self._timeout if timeout is None else timeout),
                use_get=True,
            )
        except ConnectError as err:
            raise AgentRouterError(err.code.value, err.message) from err

    def close(self) -> None:
        """Release the HTTP connections."""
        self._client.close()


class Client:
    """An AgentRouter endpoint. `base_url` may carry a path prefix (`https://host/prefix`);
    the API key, when given, is sent as a bearer token on every call, and never to another
    origin on a redirect; `timeout` is each call's default, in seconds, and covers reading the
    answer; a response larger than `max_response_bytes` (received or decompressed) fails the
    call with `resource_exhausted`, without reading the rest."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if not isinstance(max_response_bytes, int) or max_response_bytes <= 0:
            raise ValueError(
                f"max_response_bytes must be a positive number of bytes, got {max_response_bytes!r}"
            )
        headers = {"user-agent": USER_AGENT}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        self.base_url = _checked_base_url(base_url)
        self.timeout = timeout
        self._api_key = api_key or None
        self.auth = AuthClient(self.base_url, headers, timeout, max_response_bytes)

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


def _checked_base_url(base_url: str) -> str:
    """`base_url` without its trailing slash, or ValueError when it cannot be one."""
    if not isinstance(base_url, str) or not base_url:
        raise ValueError("base_url is required: the AgentRouter URL, such as https://host")
    try:
        parts = urlsplit(base_url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as err:
        raise ValueError(f"base_url {base_url!r} is not a URL: {err}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base_url must be an http:// or https:// URL, got {base_url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"base_url must not have a query or fragment, got {base_url!r}")
    if parts.username is not None or parts.password is not None:
        # Not echoed: the message would repeat the credential.
        raise ValueError("base_url must not carry credentials in user:password@ (pass api_key)")
    return base_url.rstrip("/")


def _millis(seconds: float) -> int:
    return max(1, round(seconds * 1000))
