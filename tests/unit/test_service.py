"""service: the servicer answers from the current snapshot and knows no transport."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import grpc
import pytest
from jwcrypto import jwk

import agentrouter_auth.service
from agentrouter.auth.v1 import auth_pb2
from agentrouter_auth.rendered import Freshness
from agentrouter_auth.rpc import bind
from agentrouter_auth.service import AuthService, Discovery
from agentrouter_auth.snapshot import Snapshot, render
from agentrouter_auth.status import RpcError

TRANSPORTS = ("grpc", "connectrpc", "agentrouter_auth.transcode", "agentrouter_auth.http",
              "agentrouter_auth.connect", "agentrouter_auth.grpc")  # fmt: skip


class Source:
    def __init__(self, current: Snapshot) -> None:
        self.current = current

    def snapshot(self) -> Snapshot:
        return self.current


def test_get_jwks_is_the_snapshots_set_with_the_policys_freshness(
    key_pool: list[jwk.JWK],
) -> None:
    first, second = render(key_pool[:1], version=1), render(key_pool[:2], version=2)
    source = Source(first)
    service = AuthService(source, freshness=Freshness(120, 30, 7200))
    request = auth_pb2.GetJWKSRequest()
    answer = asyncio.run(service.get_jwks(request))
    assert answer.message is first.message  # the snapshot's own bytes, never re-serialized
    assert (answer.json, answer.proto, answer.etag) == (first.json, first.proto, first.etag)
    assert answer.freshness == Freshness(120, 30, 7200)
    assert answer.media_types == ("application/jwk-set+json",)
    assert asyncio.run(service.get_jwks(request)) is answer  # built once per version
    source.current = second
    assert asyncio.run(service.get_jwks(request)).json == second.json


def test_the_servicer_serves_every_rpc_of_its_service(key_pool: list[jwk.JWK]) -> None:
    service = AuthService(Source(render(key_pool[:1])))
    assert [method.name for method in bind(service)] == [
        method.name for method in AuthService.SERVICE.methods
    ]


def test_the_servicer_imports_no_transport() -> None:
    tree = ast.parse(Path(agentrouter_auth.service.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}  # fmt: skip
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not [name for name in imported if name.startswith(TRANSPORTS)], imported


def test_openid_configuration_lists_the_published_algorithms_once_per_version(
    key_pool: list[jwk.JWK],
) -> None:
    rsa_and_ec = render([key_pool[0], key_pool[2]], version=1)
    source = Source(rsa_and_ec)
    discovery = Discovery("https://auth.example.test", "https://auth.example.test/jwks")
    service = AuthService(source, freshness=Freshness(60), discovery=discovery)
    request = auth_pb2.GetOpenIDConfigurationRequest()
    first = asyncio.run(service.get_open_id_configuration(request))
    assert first.message.issuer == "https://auth.example.test"
    assert first.message.jwks_uri == "https://auth.example.test/jwks"
    assert list(first.message.id_token_signing_alg_values_supported) == ["ES256", "RS256"]
    assert first.freshness == Freshness(60)
    assert asyncio.run(service.get_open_id_configuration(request)) is first  # rendered once
    source.current = render([key_pool[4]], version=2)
    second = asyncio.run(service.get_open_id_configuration(request))
    assert list(second.message.id_token_signing_alg_values_supported) == ["EdDSA"]
    assert second.etag != first.etag


def test_openid_configuration_without_an_issuer_is_not_found(key_pool: list[jwk.JWK]) -> None:
    service = AuthService(Source(render(key_pool[:1])))
    with pytest.raises(RpcError) as failure:
        asyncio.run(service.get_open_id_configuration(auth_pb2.GetOpenIDConfigurationRequest()))
    assert failure.value.code is grpc.StatusCode.NOT_FOUND
