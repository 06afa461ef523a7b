"""http.metrics_endpoint: /metrics adds this worker's latest counts before it answers."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from agentrouter_auth.http.app import HttpApp

from .conftest import Call


def rest_jwks_ok(text: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "agentrouter_auth_requests_total"
        and sample.labels == {"protocol": "rest", "method": "GetJWKS", "code": "OK"}
    )


def test_a_scrape_includes_the_requests_answered_just_before(http_app: HttpApp, call: Call) -> None:
    before = rest_jwks_ok(call(http_app, "GET", "/metrics").text)
    for _ in range(3):
        assert call(http_app, "GET", "/.well-known/jwks.json").status_code == 200
    response = call(http_app, "GET", "/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    assert rest_jwks_ok(response.text) - before == 3
    assert "agentrouter_auth_keys{" in response.text  # this worker's key-set gauges
