"""The servicer's RPCs as grpcio method handlers.

The handlers are built from the service descriptor (`rpc.bind`), never from a servicer class:
each calls the coroutine bound to its RPC, turns an `RpcError` into the call's status, and its
response serializer writes a `Rendered` answer's stored protobuf bytes, so no call serializes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from agentrouter_auth.rendered import Answer, Rendered
from agentrouter_auth.rpc import Call, Servicer, bind
from agentrouter_auth.status import RpcError


def method_handlers(servicer: Servicer) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
    """The servicer's handlers by RPC name, as the generated `add_…Servicer_to_server` builds
    them, except that each behavior calls the servicer's coroutine with the request alone and
    the response serializer writes a rendered answer's stored bytes."""
    return {
        method.name: grpc.unary_unary_rpc_method_handler(
            _behavior(method.call),
            request_deserializer=method.request_class.FromString,
            response_serializer=_serialize,
        )
        for method in bind(servicer)
    }


def service_handler(servicer: Servicer) -> grpc.GenericRpcHandler:
    """The generic handler of the servicer's whole service (`/pkg.Service/Method` paths)."""
    return grpc.method_handlers_generic_handler(
        servicer.SERVICE.full_name, method_handlers(servicer)
    )


def _behavior(call: Call) -> Callable[..., Awaitable[Answer]]:
    async def behavior(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Answer:  # noqa: ANN401
        try:
            return await call(request)
        except RpcError as err:
            await context.abort(err.code, err.message)

    return behavior


def _serialize(answer: Answer) -> bytes:
    if isinstance(answer, Rendered):
        return answer.proto
    return answer.SerializeToString()
