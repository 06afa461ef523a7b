"""Value types of options: addresses and public URLs (the issuer, the key set's URL), each
refusal naming the flag or the variable the text came from."""

from __future__ import annotations

import re

import pytest

from agentrouter_auth.config import (
    Address,
    ConfigError,
    command_config,
    parse_address,
    serve_config,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9090", Address("127.0.0.1", 9090)),
        ("localhost:0", Address("localhost", 0)),
        ("[::1]:8080", Address("::1", 8080)),
        ("0.0.0.0:65535", Address("0.0.0.0", 65535)),
    ],
)
def test_valid_addresses(text: str, expected: Address) -> None:
    assert parse_address("--grpc-addr", text) == expected
    assert str(expected) == text


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("9090", "expected HOST:PORT"),
        (":9090", "expected HOST:PORT"),
        ("localhost:http", "port must be a number"),
        ("localhost:65536", "port must be a number"),
        ("localhost:-1", "port must be a number"),
        ("::1:9090", "in brackets"),
        ("[nope]:9090", "not an IPv6 address"),
    ],
)
def test_invalid_addresses_name_the_option(text: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=f"^--grpc-addr: .*{re.escape(reason)}"):
        parse_address("--grpc-addr", text)


# -- the issuer (OpenID Connect Discovery 1.0 §3, RFC 8414 §2) --------------------------------


@pytest.mark.parametrize(
    "issuer",
    [
        "https://auth.example.test",
        "https://auth.example.test/",
        "https://auth.example.test:8443/tenants/a%20b",
        "https://xn--bcher-kva.example.test/realms/main",
        "http://127.0.0.1:8080",
        "http://localhost:8080/x",
        "http://[::1]:8080",
        "https://auth.example.test:443/a%2Fb/%C3%A9t%C3%A9/..x/.well",
        "https://a-b.c-d.example.test/realms/%E2%82%AC",
        "https://10.0.0.1",
        "https://AUTH.Example.TEST",
    ],
)
def test_an_issuer_url_is_accepted_as_written(issuer: str) -> None:
    for given, env in (({"issuer": issuer}, {}), ({}, {"AGENTROUTER_AUTH_ISSUER": issuer})):
        assert command_config("token sign", given, env).issuer == issuer
    assert serve_config({"issuer": issuer}, {}).published_jwks_uri.startswith(issuer.rstrip("/"))


@pytest.mark.parametrize(
    ("issuer", "reason"),
    [
        ("https://user:secret@auth.example.test", "must have no user name or password"),
        ("https://user@auth.example.test", "must have no user name or password"),
        ("https://@auth.example.test", "must have no user name or password"),
        ("https://auth.example.test/a b", "may hold only URL characters"),
        ("https://auth.example.test/\n", "may hold only URL characters"),
        ("https://auth.example.test\r\nX-Injected: 1", "may hold only URL characters"),
        ("https://auth.exa\tmple.test", "may hold only URL characters"),
        ('https://auth.example.test/"quoted"', "may hold only URL characters"),
        ("https://auth.example.test/a\\b", "may hold only URL characters"),
        ("https://auth.example.test/\u202egnp.exe", "may hold only URL characters"),
        ("https://auth.example.test/\x1b[31mred", "may hold only URL characters"),
        ("https://auth.example.test/<script>", "may hold only URL characters"),
        ("https://bücher.example.test", "may hold only URL characters"),
        ("https://auth.example.test/%zz", "a '%' must start a %XX escape"),
        ("https://auth.example.test:99999", "is not a URL"),
        ("https://auth.example.test/?tenant=1", "must have no query or fragment"),
        ("https://auth.example.test/#x", "must have no query or fragment"),
        ("http://auth.example.test", "must use https"),
        ("http://localhost.evil.test", "must use https"),
        ("ftp://auth.example.test", "must be an absolute https URL"),
        ("https:///path-only", "must be an absolute https URL"),
        # What the path says once decoded: no control, bidirectional or other unprintable
        # character, only UTF-8, and no dot segment (a client or proxy would remove it).
        ("https://auth.example.test/%0d%0aX-Injected:%201", "not printable"),
        ("https://auth.example.test/%00", "not printable"),
        ("https://auth.example.test/%E2%80%AEgnp.exe", "not printable"),
        ("https://auth.example.test/%E2%80%8B", "not printable"),
        ("https://auth.example.test/%C2%85", "not printable"),
        ("https://auth.example.test/%ff", "not UTF-8"),
        ("https://auth.example.test/..", "dot segment"),
        ("https://auth.example.test/a/./b", "dot segment"),
        ("https://auth.example.test/a/%2e%2E/b", "dot segment"),
        ("https://auth.example.test/%2e", "dot segment"),
        # The host: a DNS name of letters, digits and inner hyphens (RFC 1123), in punycode
        # when international, or an IP literal; never percent-encoded.
        ("https://auth..example.test", "is not a valid host name"),
        ("https://.auth.example.test", "is not a valid host name"),
        ("https://auth.example.test./", "is not a valid host name"),
        ("https://-auth.example.test", "is not a valid host name"),
        ("https://auth-.example.test", "is not a valid host name"),
        ("https://auth_1.example.test", "is not a valid host name"),
        ("https://" + "a" * 64 + ".example.test", "is not a valid host name"),
        ("https://ex%61mple.test", "percent-encoded"),
        ("https://xn--.example.test", "is not a valid host name"),
        ("https://xn--9999999.example.test", "is not valid punycode"),
        ("https://xn--abc.example.test", "is not valid punycode"),
        ("https://10.0.0.999", "is not a valid host name"),
        ("https://auth.example.123", "is not a valid host name"),
        # The port: 1 to 65535, written when there is a colon.
        ("https://auth.example.test:0", "port must be from 1 to 65535"),
        ("https://auth.example.test:", "port must be from 1 to 65535"),
        ("https://auth.example.test:/x", "port must be from 1 to 65535"),
        ("http://[::1]:", "port must be from 1 to 65535"),
    ],
)  # fmt: skip
def test_an_issuer_that_is_not_a_plain_https_url_is_refused_in_one_printable_line(
    issuer: str, reason: str
) -> None:
    for given, env, source in (
        ({"issuer": issuer}, {}, "--issuer"),
        ({}, {"AGENTROUTER_AUTH_ISSUER": issuer}, "AGENTROUTER_AUTH_ISSUER"),
    ):
        with pytest.raises(ConfigError) as failure:
            command_config("serve", given, env)
        message = str(failure.value)
        assert message.startswith(f"{source}: "), message
        assert reason in message
        assert message.isascii(), message
        assert message.isprintable(), message


def test_the_jwks_uri_follows_the_same_rules() -> None:
    with pytest.raises(ConfigError, match="^--jwks-uri: .*must have no user name or password"):
        serve_config(
            {"issuer": "https://auth.example.test", "jwks_uri": "https://u:p@cdn.example.test/k"},
            {},
        )
