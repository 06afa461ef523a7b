"""A deadline for reading a request body, as ASGI middleware around the HTTP app.

The HTTP server closes connections that are slow to send a request head (granian's header read
timeout), but once the head has arrived the body is read by the app, and a client sending one
byte every few seconds would hold its connection, and a worker's slot, for ever. This
middleware gives the whole body `seconds` from the moment the app is called; a request that has
not sent it by then is answered 408 and its connection closed.

The deadline is enforced inside `receive`, so a request whose app never reads a body (every
GET) pays for nothing but one wrapper object. Once the body is complete, `receive` is passed
through untouched: apps keep watching it for a client disconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from typing import Any, NoReturn

from connectrpc.code import Code
from connectrpc.errors import ConnectError

from agentrouter_auth import status
from agentrouter_auth.asgi_types import App, Message, Receive, Scope, Send
from agentrouter_auth.errors import AgentRouterAuthError
from agentrouter_auth.http.representation import Refusal, closing

_BODILESS = frozenset({"GET", "HEAD"})


class RequestBodyTimeoutError(AgentRouterAuthError, ConnectError):
    """Raised inside the app by `receive` when the body deadline passes.

    A ConnectError, so that Connect and gRPC-Web answer it in their own protocol
    (deadline_exceeded); the rest of the HTTP app lets it through to `BodyDeadline`, which
    answers 408.
    """

    def __init__(self, seconds: float) -> None:
        super().__init__(
            Code(status.connect_name(status.Code.DEADLINE_EXCEEDED)),
            f"the request body was not received within {seconds:g}s",
        )


class BodyDeadline:
    """Answer 408 to a request that does not send its whole body within `seconds`."""

    def __init__(self, app: App, seconds: float) -> None:
        self.app = app
        self.seconds = seconds
        # A google.rpc.Status, as every error of the HTTP listener: Connect clients read it too.
        message = RequestBodyTimeoutError(seconds).message
        self._refusal = Refusal(408, status.Code.DEADLINE_EXCEEDED, message)
        self._collector = _CycleCollector()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point: HTTP requests get a body deadline, anything else passes."""
        if scope["type"] != "http" or scope["method"] in _BODILESS:
            # Nothing reads the body of a GET or HEAD (the transcoder maps no body on them,
            # Connect GET carries its message in the query), and the server drops an unread
            # body after the response: the hot path pays nothing.
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.seconds
        timed = _TimedReceive(receive, deadline, self.seconds)
        send = _ClosingSend(send, timed)
        try:
            await self.app(scope, timed, send)
        except RequestBodyTimeoutError:
            with contextlib.suppress(Exception):  # fails if the response had started
                await self._refusal.send(scope, send)
        finally:
            timed.close()
            if timed.expired:
                self._collector.soon()


class _CycleCollector:
    """Frees the reference cycles a timed-out request leaves, soon after it ends.

    The connection of a request whose body timed out closes only once nothing holds the
    server's `receive` any more: until then granian goes on reading the body into it. An
    error raised through an app is kept in reference cycles (its traceback holds the frames
    that caught it, and their callers up to the one given `receive`), which only the cycle
    collector frees, and an idle server may not run it for minutes. So a young-generation
    collection runs shortly after such a request, at most one at a time, and only then:
    requests in time never pay for it."""

    __slots__ = ("_pending",)
    DELAY = 0.05

    def __init__(self) -> None:
        self._pending = False

    def soon(self) -> None:
        """Collect once, DELAY seconds from now, however many requests ask meanwhile."""
        if not self._pending:
            self._pending = True
            asyncio.get_running_loop().call_later(self.DELAY, self._collect)

    def _collect(self) -> None:
        self._pending = False
        gc.collect(1)


class _ClosingSend:
    """`send` that closes the connection after a response to a request whose body timed out.

    Otherwise the server would go on reading the rest of the body after answering, one slow
    byte at a time, to keep the connection alive."""

    __slots__ = ("_send", "_timed")

    def __init__(self, send: Send, timed: _TimedReceive) -> None:
        self._send = send
        self._timed = timed

    async def __call__(self, message: Message) -> None:
        if self._timed.expired and message["type"] == "http.response.start":
            message = {**message, "headers": closing(message.get("headers", ()))}
        await self._send(message)


class _TimedReceive:
    """`receive` that must deliver the end of the body before `deadline` (loop time).

    One timer per request, armed at the first read and disarmed when the body is complete (or
    the request ends): it cancels the request's task only while that task waits in `receive`,
    and a read that starts after the deadline fails at once. (An `asyncio.timeout` around each
    read cost as much as the rest of answering a small request.)"""

    __slots__ = (
        "_body_done",
        "_deadline",
        "_fired",
        "_receive",
        "_seconds",
        "_timer",
        "_waiting",
        "expired",
    )

    def __init__(self, receive: Receive, deadline: float, seconds: float) -> None:
        self._receive = receive
        self._deadline = deadline
        self._seconds = seconds
        self._body_done = False
        self._timer: asyncio.TimerHandle | None = None
        self._waiting: asyncio.Task[Any] | None = None
        self._fired = False
        self.expired = False

    async def __call__(self) -> Message:
        if self._body_done:
            return await self._receive()
        loop = asyncio.get_running_loop()
        if loop.time() >= self._deadline:
            self._expire_now()
        if self._timer is None:
            self._timer = loop.call_at(self._deadline, self._on_deadline)
        task = self._waiting = asyncio.current_task()
        try:
            message = await self._receive()
        except asyncio.CancelledError:
            if self._fired and task is not None and task.uncancel() == 0:
                self._expire_now()
            raise
        finally:
            self._waiting = None
        if message["type"] != "http.request" or not message.get("more_body", False):
            self._body_done = True
            self.close()
        return message

    def _on_deadline(self) -> None:
        self._timer = None
        if self._waiting is not None:
            self._fired = True
            self._waiting.cancel()

    def _expire_now(self) -> NoReturn:
        self.expired = True  # what the error leaves behind is freed by _CycleCollector
        raise RequestBodyTimeoutError(self._seconds) from None

    def close(self) -> None:
        """Disarm the timer (the body is complete, or the request is over)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
