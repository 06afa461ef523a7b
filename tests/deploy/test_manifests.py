"""deploy/kubernetes: each kustomization renders with the pinned kustomize, validates against
the Kubernetes schemas, and holds together (hardened pods, probes on the right port, Service
and PodDisruptionBudget selecting the pods, a store the server accepts); and each check fails
on a manifest broken the way it guards against."""

from __future__ import annotations

import copy
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest

from agentrouter_auth.config import ConfigError

from . import manifests as m

# The first render builds kustomize into Go's build cache (`go tool`), which takes a minute on
# a fresh machine; later renders take a fraction of a second.
pytestmark = pytest.mark.timeout(900)

Manifests = list[m.Manifest]


@pytest.fixture(scope="module")
def rendered() -> dict[str, Manifests]:
    return {name: m.render(path) for name, path in m.KUSTOMIZATIONS.items()}


@pytest.mark.parametrize("version", m.KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", list(m.KUSTOMIZATIONS))
def test_each_kustomization_validates_against_the_kubernetes_schemas(
    rendered: dict[str, Manifests], name: str, version: str
) -> None:
    docs = rendered[name]
    assert sorted(doc["kind"] for doc in docs) == [
        "Deployment",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
    ]
    for doc in docs:
        m.validate(doc, version)


@pytest.mark.parametrize("name", list(m.KUSTOMIZATIONS))
def test_each_kustomization_holds_together(rendered: dict[str, Manifests], name: str) -> None:
    docs = rendered[name]
    deployment = m.one(docs, "Deployment")
    m.check_hardened(deployment)
    m.check_mounts(deployment)
    m.check_probes(deployment)
    m.check_shutdown(deployment)
    m.check_spread(deployment)
    m.check_environment(deployment)
    m.check_service(m.one(docs, "Service"), deployment)
    m.check_disruption_budget(m.one(docs, "PodDisruptionBudget"), deployment)
    account = m.one(docs, "ServiceAccount")
    assert m.pod_spec(deployment)["serviceAccountName"] == account["metadata"]["name"]
    assert {c["image"] for c in m.all_containers(deployment)} == {"agentrouter-auth:0.1.0"}


def test_the_base_runs_on_postgresql(rendered: dict[str, Manifests]) -> None:
    deployment = m.one(rendered["base"], "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert m.copied_secrets(deployment) == {
        "kek": "agentrouter-auth-kek",
        "postgresql": m.POSTGRESQL_SECRET,
    }
    m.check_postgresql_store(deployment)
    with pytest.raises(AssertionError, match="store"):
        m.check_directory_store(deployment)


def test_the_overlay_swaps_the_store_for_the_secret_directory(
    rendered: dict[str, Manifests],
) -> None:
    deployment = m.one(rendered["directory-secret"], "Deployment")
    assert m.copied_secrets(deployment) == {"keys": m.KEYS_SECRET}
    m.check_directory_store(deployment)
    with pytest.raises(AssertionError):
        m.check_postgresql_store(deployment)
    # Only the store differs: the rest of the pod is the base's.
    base = m.one(rendered["base"], "Deployment")
    server, base_server = m.container(deployment, m.SERVER), m.container(base, m.SERVER)
    for field in ("ports", "startupProbe", "livenessProbe", "readinessProbe", "securityContext"):
        assert server[field] == base_server[field], field
    volumes = {v["name"] for v in m.pod_spec(deployment)["volumes"]}
    assert volumes == {"keys", "run", "tmp"}


def _deployment(docs: Manifests) -> dict[str, Any]:
    return m.one(docs, "Deployment")


def _server(docs: Manifests) -> dict[str, Any]:
    return m.container(_deployment(docs), m.SERVER)


def _init(docs: Manifests, name: str) -> dict[str, Any]:
    return m.container(_deployment(docs), name)


def _set_env(c: dict[str, Any], name: str, entry: dict[str, Any]) -> None:
    c["env"] = [e for e in c["env"] if e["name"] != name] + [{"name": name, **entry}]


def _check_all(docs: Manifests) -> None:
    deployment = _deployment(docs)
    m.check_hardened(deployment)
    m.check_mounts(deployment)
    m.check_probes(deployment)
    m.check_shutdown(deployment)
    m.check_spread(deployment)
    m.check_environment(deployment)
    m.check_service(m.one(docs, "Service"), deployment)
    m.check_disruption_budget(m.one(docs, "PodDisruptionBudget"), deployment)
    m.check_postgresql_store(deployment)


Breakage = Callable[[Manifests], object]


def _pod(docs: Manifests) -> dict[str, Any]:
    return m.pod_spec(_deployment(docs))


def _service_port(docs: Manifests, name: str) -> dict[str, Any]:
    ports: list[dict[str, Any]] = m.one(docs, "Service")["spec"]["ports"]
    return next(p for p in ports if p["name"] == name)


def _volume(docs: Manifests, name: str) -> dict[str, Any]:
    return next(v for v in _pod(docs)["volumes"] if v["name"] == name)


# (what breaks, how, what the failed check says)
BROKEN: list[tuple[str, Breakage, str]] = [
    ("writable root", lambda d: _server(d)["securityContext"].update(readOnlyRootFilesystem=False),
     "server: readOnlyRootFilesystem"),
    ("may run as root", lambda d: _pod(d)["securityContext"].pop("runAsNonRoot"),
     "runAsNonRoot"),
    ("root user", lambda d: _init(d, "migrate")["securityContext"].update(runAsUser=0),
     "migrate: runs as root"),
    ("capability added", lambda d: _init(d, m.COPY_SECRETS)["securityContext"].update(
        capabilities={"drop": ["ALL"], "add": ["CHOWN"]}), "copy-secrets: adds capabilities"),
    ("no memory limit", lambda d: _server(d)["resources"].pop("limits"), "no memory limit"),
    ("service links", lambda d: _pod(d).pop("enableServiceLinks"), "enableServiceLinks"),
    ("no readiness probe", lambda d: _server(d).pop("readinessProbe"), "no readinessProbe"),
    ("liveness on /readyz", lambda d: _server(d)["livenessProbe"]["httpGet"].update(
        path="/readyz"), "livenessProbe must GET /healthz"),
    ("probe on gRPC", lambda d: _server(d)["startupProbe"]["httpGet"].update(port="grpc"),
     "startupProbe must GET /healthz"),
    ("listener moved", lambda d: _set_env(
        _server(d), "AGENTROUTER_AUTH_HTTP_ADDR", {"value": "0.0.0.0:8081"}),
     "the server listens on 8081"),
    ("no /tmp", lambda d: _server(d).update(volumeMounts=[
        v for v in _server(d)["volumeMounts"] if v["mountPath"] != "/tmp"]),
     "nothing is mounted at /tmp"),
    ("undeclared volume", lambda d: _server(d)["volumeMounts"].append(
        {"name": "cache", "mountPath": "/cache"}), "mounts undeclared 'cache'"),
    ("copies writable", lambda d: m.mount_of(_deployment(d), _server(d), m.RUN_DIR)[0].pop(
        "readOnly"), "must mount /run/agentrouter-auth read-only"),
    ("drain cut short", lambda d: _pod(d).update(terminationGracePeriodSeconds=15),
     "terminationGracePeriodSeconds 15 must exceed"),
    ("one node", lambda d: _pod(d).pop("topologySpreadConstraints"), "not spread across nodes"),
    ("Service selects nothing", lambda d: m.one(d, "Service")["spec"]["selector"].update(
        {"app.kubernetes.io/component": "web"}), "the Service selects no pod"),
    ("Service port astray", lambda d: _service_port(d, "grpc").update(targetPort="h2c"),
     "grpc targets 'h2c'"),
    ("gRPC as HTTP/1.1", lambda d: _service_port(d, "grpc").update(appProtocol="http"),
     "grpc: appProtocol grpc"),
    ("budget astray", lambda d: m.one(d, "PodDisruptionBudget")["spec"]["selector"].update(
        matchLabels={"app": "other"}), "selects none of the pods"),
    ("budget of two", lambda d: m.one(d, "PodDisruptionBudget")["spec"].update(maxUnavailable=2),
     "maxUnavailable must be 1"),
    ("misspelled option", lambda d: _set_env(
        _server(d), "AGENTROUTER_AUTH_ROTATON", {"value": "auto"}),
     "AGENTROUTER_AUTH_ROTATON is no option"),
    ("two sources", lambda d: m.env(_server(d))["AGENTROUTER_AUTH_KEY_STORE"].update(
        value="/keys"), "KEY_STORE: value and valueFrom"),
    ("KEK not copied", lambda d: _set_env(
        _server(d), "AGENTROUTER_AUTH_KEK_FILE", {"value": "/etc/agentrouter-auth/kek/current"}),
     "kek/current is not under /run/agentrouter-auth"),
    ("Secret not copied", lambda d: m.env(_init(d, m.COPY_SECRETS))["SECRETS"].update(
        value="kek"), "pgpass is no copy of a Secret"),
    ("KEK group-readable", lambda d: _volume(d, "kek")["secret"].update(defaultMode=0o440),
     "kek: defaultMode 0400"),
    ("migrate first", lambda d: _pod(d).update(initContainers=_pod(d)["initContainers"][::-1]),
     "init containers in order"),
    ("store astray", lambda d: m.env(_server(d))["AGENTROUTER_AUTH_KEY_STORE"]["valueFrom"][
        "secretKeyRef"].update(name="postgres"), "server: the store is"),
]  # fmt: skip


@pytest.mark.parametrize(("breakage", "reason"), [(b, r) for _, b, r in BROKEN],
                         ids=[name for name, _, _ in BROKEN])  # fmt: skip
def test_a_broken_manifest_fails_its_check(
    rendered: dict[str, Manifests], breakage: Breakage, reason: str
) -> None:
    docs = copy.deepcopy(rendered["base"])
    _check_all(docs)  # intact, it passes
    breakage(docs)
    with pytest.raises(AssertionError, match=re.escape(reason)):
        _check_all(docs)


def test_a_bad_option_value_fails_its_check(rendered: dict[str, Manifests]) -> None:
    docs = copy.deepcopy(rendered["base"])
    _set_env(_server(docs), "AGENTROUTER_AUTH_ROTATION", {"value": "of"})
    with pytest.raises(ConfigError, match="AGENTROUTER_AUTH_ROTATION"):
        m.check_environment(_deployment(docs))


@pytest.mark.parametrize(
    "breakage",
    [
        # a misspelled field: strict validation refuses what Kubernetes would silently drop
        lambda d: _server(d)["securityContext"].update(readOnlyRootFileSystem=True),
        lambda d: _deployment(d)["spec"].update(replicas="3"),
        lambda d: _server(d)["ports"][0].update(containerPort="http"),
        lambda d: m.one(d, "PodDisruptionBudget")["spec"].update(maxUnavailable=[1]),
        lambda d: _server(d)["lifecycle"]["preStop"]["sleep"].pop("seconds"),
    ],
    ids=["misspelled field", "replicas text", "port by name", "budget list", "sleep how long"],
)
def test_a_broken_manifest_fails_schema_validation(
    rendered: dict[str, Manifests], breakage: Breakage
) -> None:
    docs = copy.deepcopy(rendered["base"])
    breakage(docs)
    with pytest.raises(kubernetes_validate.ValidationError):
        for doc in docs:
            m.validate(doc, m.KUBERNETES_VERSIONS[-1])


def test_a_patch_that_misses_fails_to_render(tmp_path: Path) -> None:
    tree = tmp_path / "kubernetes"
    shutil.copytree(m.KUBERNETES, tree)
    overlay = tree / "overlays" / "directory-secret"
    m.render(overlay)  # the copy renders as it is
    patch = overlay / "directory-store.yaml"
    patch.write_text(patch.read_text().replace("  name: agentrouter-auth\n", "  name: auth\n", 1))
    with pytest.raises(AssertionError, match="kustomize build"):
        m.render(overlay)
