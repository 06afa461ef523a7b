"""The answered calls of the service, counted in metrics under `protocol="grpc"` with their
code and latency (the HTTP listener's twin is `http/recording.py`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc

from agentrouter_auth import status

if TYPE_CHECKING:  # imported by the workers only: prometheus-client must first see
    # PROMETHEUS_MULTIPROC_DIR, which `serve` sets after its own imports.
    from agentrouter_auth.metrics import Recorder

PROTOCOL = "grpc"  # the `protocol` label of native gRPC calls in metrics


class CallMetrics:
    """Counts the answered calls of one service (`service_name`) and their latency."""

    def __init__(self, recorder: Recorder, service_name: str) -> None:
        self._recorder = recorder
        self._service_name = service_name

    def wrap(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """Count the service's request-unary handlers; leave health and reflection alone."""
        service, _, name = method.lstrip("/").partition("/")
        if service != self._service_name:
            return handler
        kinds: tuple[tuple[Any, Callable[..., grpc.RpcMethodHandler[Any, Any]]], ...] = (
            (handler.unary_unary, grpc.unary_unary_rpc_method_handler),
            (handler.stream_unary, grpc.stream_unary_rpc_method_handler),  # as RequestGuard serves
        )
        for behavior, make in kinds:
            if behavior is not None:
                return make(
                    self._counted(name, behavior),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler

    def _counted(self, name: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        record = self._recorder.record

        async def counted(request: Any, context: Any) -> Any:  # noqa: ANN401 - any RPC
            started = time.perf_counter()
            try:
                response = await behavior(request, context)
            except asyncio.CancelledError:
                raise  # the client left: nothing was answered
            except BaseException:
                record(PROTOCOL, name, _code_name(context, status.Code.UNKNOWN), started)
                raise
            record(PROTOCOL, name, _code_name(context, status.Code.OK), started)
            return response

        return counted


def _code_name(context: Any, default: status.Code) -> str:  # noqa: ANN401 - a ServicerContext
    """The label of the code the handler set on `context` (by `abort` or `set_code`), or of
    `default`."""
    code = context.code()
    if code is None or code == status.Code.OK:
        code = default
    return status.label(code)
