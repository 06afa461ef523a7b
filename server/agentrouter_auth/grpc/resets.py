"""`ResetMonitor`: closes a connection whose client cancels call after call before sending a
request (HTTP/2 rapid reset). grpcio's HTTP/2 transport only refuses streams above
MAX_CONCURRENT_STREAMS and never sends GOAWAY for it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import stat
import time
from urllib.parse import unquote

# The window over which `GrpcLimits.max_resets` is counted.
RESET_WINDOW_SECONDS = 10.0
_MAX_TRACKED_PEERS = 1024  # above it, ResetMonitor forgets counts older than its window
log = logging.getLogger("agentrouter-auth")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ResetMonitor:
    """Counts, per connection, the calls cancelled by the client before their request
    message arrived; closes a connection that cancels more than `limit` in a window.

    grpcio offers no way to close one connection, so the connection's socket is found among
    this process's file descriptors by its two addresses and shut down: grpcio then sees the
    connection end and releases it and its calls."""

    def __init__(self, limit: int, window: float = RESET_WINDOW_SECONDS) -> None:
        self.limit = limit
        self.window = window
        self.port = 0  # the listener's port, known once bound
        self._counts: dict[str, tuple[float, int]] = {}

    def record(self, peer: str) -> None:
        """Count one early cancellation by `peer` (grpcio's peer string of the connection)."""
        now = time.monotonic()
        started, count = self._counts.get(peer, (now, 0))
        if now - started > self.window:
            started, count = now, 0
        count += 1
        if count <= self.limit:
            self._counts[peer] = (started, count)
            if len(self._counts) > _MAX_TRACKED_PEERS:
                self._forget_before(now - self.window)
            return
        self._counts.pop(peer, None)
        closed = close_connection(peer, self.port)
        log.warning(
            "closed gRPC connection %s: %d calls cancelled before their request within %gs",
            peer,
            count,
            self.window,
            extra={"event": "grpc_connection_reset_flood", "peer": peer, "closed": closed},
        )

    def _forget_before(self, horizon: float) -> None:
        for peer in [p for p, (started, _) in self._counts.items() if started < horizon]:
            del self._counts[peer]


def close_connection(peer: str, local_port: int) -> bool:
    """Shut down this process's TCP socket from `local_port` to `peer` (a grpcio peer string
    such as `ipv4:127.0.0.1:5000` or `ipv6:%5B::1%5D:5000`); False when none is found."""
    address = _peer_address(peer)
    if address is None or not local_port:
        return False
    for fd in _open_descriptors():
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            duplicate = os.dup(fd)  # the dup keeps the socket alive while it is examined
        except OSError:
            continue
        with contextlib.suppress(OSError), socket.socket(fileno=duplicate) as sock:
            if sock.family not in _INET or sock.getsockname()[1] != local_port:
                continue
            host, port = sock.getpeername()[:2]
            if (_ip(host), port) == address:
                sock.shutdown(socket.SHUT_RDWR)
                return True
    return False


_INET = (socket.AF_INET, socket.AF_INET6)


def _peer_address(peer: str) -> tuple[IPAddress, int] | None:
    kind, _, rest = unquote(peer).partition(":")
    host, _, port = rest.rpartition(":")
    if kind not in ("ipv4", "ipv6") or not port.isdigit():
        return None
    try:
        return _ip(host.strip("[]")), int(port)
    except ValueError:
        return None


def _ip(host: str) -> IPAddress:
    """The address `host` names; an IPv4-mapped IPv6 address (as a dual-stack listener sees
    an IPv4 peer) as its IPv4 address."""
    address = ipaddress.ip_address(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _open_descriptors() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # not Linux: try every possible descriptor
        return list(range(os.sysconf("SC_OPEN_MAX")))
