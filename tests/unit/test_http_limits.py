"""http.limits: a request body that does not arrive in time is answered 408, and nothing
else about the request changes."""

from __future__ import annotations

import asyncio
import gc
import json
import weakref
from typing import Any

from agentrouter_auth.http.limits import BodyDeadline

SCOPE = {"type": "http", "method": "POST", "path": "/v1/things", "headers": []}


async def read_body_app(scope: Any, receive: Any, send: Any) -> None:
    """An app that reads the whole body, then echoes its length."""
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(size).encode()})


def run(app: Any, events: list[dict[str, Any]], *, then_wait: float | None = None) -> list[Any]:
    """Drive `app` with `events` from receive, then block (a client gone quiet)."""
    sent: list[Any] = []

    async def receive() -> Any:
        if events:
            return events.pop(0)
        if then_wait is None:
            await asyncio.Event().wait()
        await asyncio.sleep(then_wait or 0)
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(asyncio.wait_for(app(dict(SCOPE), receive, send), 10))
    return sent


def test_a_body_that_stops_arriving_is_answered_408() -> None:
    app = BodyDeadline(read_body_app, 0.2)
    sent = run(app, [{"type": "http.request", "body": b"{", "more_body": True}])
    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]
    body = json.loads(sent[1]["body"])
    assert body["code"] == 4  # google.rpc.Code DEADLINE_EXCEEDED
    assert "0.2s" in body["message"]


def test_a_body_in_time_passes_through_unchanged() -> None:
    app = BodyDeadline(read_body_app, 5)
    events = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"cd", "more_body": False},
    ]
    sent = run(app, events)
    assert sent[0]["status"] == 200
    assert sent[1]["body"] == b"4"


def test_after_the_body_receive_is_not_limited() -> None:
    """Apps watch receive() for a disconnect once the body is read: that may take any time."""
    seen: list[str] = []

    async def watcher(scope: Any, receive: Any, send: Any) -> None:
        await receive()  # the whole (empty) body
        seen.append((await receive())["type"])  # waits past the deadline for the disconnect

    run(BodyDeadline(watcher, 0.1), [{"type": "http.request", "body": b""}], then_wait=0.4)
    assert seen == ["http.disconnect"]


def test_lifespan_passes_through() -> None:
    calls: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["type"])

    async def unused(*_: Any) -> Any:
        raise AssertionError("not called")

    asyncio.run(BodyDeadline(app, 0.1)({"type": "lifespan"}, unused, unused))
    assert calls == ["lifespan"]


def test_an_app_that_answers_the_timeout_itself_gets_its_connection_closed() -> None:
    """Connect answers deadline_exceeded on its own; the connection must still close, or the
    server would go on reading the slow body to keep the connection alive."""

    async def answers_errors(scope: Any, receive: Any, send: Any) -> None:
        try:
            await read_body_app(scope, receive, send)
        except Exception:  # as connectrpc does with a handler's error
            headers = [(b"content-type", b"application/json"), (b"connection", b"keep-alive")]
            await send({"type": "http.response.start", "status": 504, "headers": headers})
            await send({"type": "http.response.body", "body": b"{}"})

    sent = run(BodyDeadline(answers_errors, 0.2), [{"type": "http.request", "more_body": True}])
    assert sent[0]["status"] == 504
    connection = [value for name, value in sent[0]["headers"] if name == b"connection"]
    assert connection == [b"close"]


def test_a_request_in_time_keeps_its_headers() -> None:
    async def answers(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        headers = [(b"connection", b"keep-alive")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    sent = run(BodyDeadline(answers, 5), [{"type": "http.request", "body": b"{}"}])
    assert sent[0]["headers"] == [(b"connection", b"keep-alive")]


def test_a_timed_out_request_lets_go_of_the_server_protocol() -> None:
    """granian reads a request's body for as long as anything holds its protocol object, whose
    bound methods are `receive` and `send`. An app that keeps the timeout error in a reference
    cycle (as connectrpc does: `error = e`) holds them through the error's traceback until the
    cycle collector runs, which an idle server may not do for minutes; the deadline runs it
    soon after such a request."""

    class ServerProtocol:
        started = False

        async def receive(self) -> Any:
            if not self.started:
                self.started = True
                return {"type": "http.request", "body": b"{", "more_body": True}
            await asyncio.Event().wait()
            return None

        async def send(self, message: Any) -> None:
            pass

    async def keeps_errors(scope: Any, receive: Any, send: Any) -> None:
        error = None
        try:
            await read_body_app(scope, receive, send)
        except Exception as err:
            error = err  # a cycle: error -> traceback -> this frame -> error, send, receive
        assert error is not None
        await send({"type": "http.response.start", "status": 504, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def serve_then_idle(proto: ServerProtocol) -> None:
        await BodyDeadline(keeps_errors, 0.1)(dict(SCOPE), proto.receive, proto.send)
        await asyncio.sleep(0.3)  # an idle server: nothing allocates, nothing collects

    proto = ServerProtocol()
    alive = weakref.ref(proto)
    gc.collect()
    gc.disable()  # only collections the code asks for run
    try:
        loop = asyncio.new_event_loop()
        task = loop.create_task(serve_then_idle(proto))
        del proto
        loop.run_until_complete(task)
        loop.close()
        del task, loop
        assert alive() is None
    finally:
        gc.enable()


def test_get_and_head_pass_through_untouched() -> None:
    """The hot path (every verifier's GET) gets the server's own receive and send."""
    seen: list[tuple[Any, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((receive, send))

    async def receive() -> Any:
        return {"type": "http.request"}

    async def send(message: Any) -> None:
        pass

    for method in ("GET", "HEAD"):
        asyncio.run(BodyDeadline(app, 1)({**SCOPE, "method": method}, receive, send))
    assert seen == [(receive, send), (receive, send)]
