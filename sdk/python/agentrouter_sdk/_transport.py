"""The HTTP transport of every call: pyqwest's, with a bound on what a response may hold."""

from __future__ import annotations

from collections.abc import Iterator

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from pyqwest import SyncRequest, SyncResponse, SyncTransport, get_default_sync_transport


class BoundedTransport:
    """A pyqwest transport whose responses end in a `resource_exhausted` ConnectError once their
    body passes `max_bytes`, while it is read: pyqwest has already decompressed it, so the bound
    holds for the decompressed size (a gzip bomb) and for a body without a Content-Length.

    connectrpc's own `read_max_bytes` is checked only after pyqwest has read the whole body
    into memory, and not for an error's body: this is what keeps the memory bounded."""

    def __init__(self, max_bytes: int, inner: SyncTransport | None = None) -> None:
        self._max_bytes = max_bytes
        self._inner = inner if inner is not None else get_default_sync_transport()

    def execute_sync(self, request: SyncRequest) -> SyncResponse:
        response = self._inner.execute_sync(request)
        return SyncResponse(
            status=response.status,
            http_version=response.http_version,
            headers=response.headers,
            content=self._bounded(response),
        )

    def _bounded(self, response: SyncResponse) -> Iterator[bytes]:
        read = 0
        with response:  # closes the connection's stream when the bound stops the reading
            for chunk in response.content:
                read += len(chunk)
                if read > self._max_bytes:
                    raise too_large(self._max_bytes)
                yield bytes(chunk)


def too_large(max_bytes: int) -> ConnectError:
    return ConnectError(
        Code.RESOURCE_EXHAUSTED,
        f"the response is larger than the client's limit of {max_bytes} bytes (max_response_bytes)",
    )
