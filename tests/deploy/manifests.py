"""Render deploy/kubernetes with the pinned kustomize, validate it against the Kubernetes
schemas, and check what the schemas cannot: that the pieces fit together and that the pods
are hardened. Each `check_*` raises AssertionError naming what is wrong, so the tests can show
that a broken manifest fails it."""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import yaml  # type: ignore[import-untyped]

from agentrouter_auth import config
from agentrouter_auth.keys.policy import parse_duration
from tests.conftest import REPO

KUBERNETES = REPO / "deploy" / "kubernetes"
KUSTOMIZATIONS = {
    "base": KUBERNETES / "base",
    "directory-secret": KUBERNETES / "overlays" / "directory-secret",
}
# The oldest Kubernetes the manifests are for (the preStop sleep action is on by default from
# 1.30) and the newest kubernetes-validate has schemas of.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
SERVER = "server"
COPY_SECRETS = "copy-secrets"
RUN_DIR = "/run/agentrouter-auth"  # where copy-secrets copies each Secret
SECRETS_DIR = "/etc/agentrouter-auth"  # where each Secret is mounted in copy-secrets
HTTP_PORT, GRPC_PORT = 8080, 9090
DEFAULT_GRACE = 10.0  # --grace-period's default
KILL_MARGIN = 5.0  # granian kills workers this long after the grace period
POSTGRESQL_SECRET = "agentrouter-auth-postgresql"
KEYS_SECRET = "agentrouter-auth-keys"

Manifest = dict[str, Any]


@functools.cache
def kustomize() -> str:
    """The kustomize that tools/go/go.mod pins, built once into Go's cache by `go tool`."""
    go = shutil.which("go")
    assert go, "go is not on PATH: rendering deploy/kubernetes needs Go (tools/go pins kustomize)"
    result = subprocess.run(
        [go, "tool", "-n", "kustomize"],
        cwd=REPO / "tools" / "go", capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"go tool -n kustomize failed:\n{result.stderr}"
    return result.stdout.strip().splitlines()[-1]


def render(directory: Path) -> list[Manifest]:
    """`kustomize build DIRECTORY`, parsed; a failure is an AssertionError with its message."""
    result = subprocess.run(
        [kustomize(), "build", str(directory)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"kustomize build {directory} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


def validate(manifest: Manifest, version: str) -> None:
    """Validate against the schema of Kubernetes `version`, rejecting unknown fields."""
    kubernetes_validate.validate(manifest, version, strict=True)


def one(manifests: list[Manifest], kind: str) -> Manifest:
    found = [m for m in manifests if m["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec(deployment: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def all_containers(deployment: Manifest) -> Iterator[dict[str, Any]]:
    spec = pod_spec(deployment)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def container(deployment: Manifest, name: str) -> dict[str, Any]:
    found = [c for c in all_containers(deployment) if c["name"] == name]
    assert len(found) == 1, f"expected one container {name!r}, found {len(found)}"
    return found[0]


def env(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A container's environment entries by name (duplicates are refused)."""
    entries = c.get("env", [])
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)), f"{c['name']}: a variable is set twice: {names}"
    return {e["name"]: e for e in entries}


def mount_of(deployment: Manifest, c: dict[str, Any], path: str) -> tuple[dict[str, Any], Any]:
    """The mount of `c` that holds `path`, and the volume it mounts."""
    volumes = {v["name"]: v for v in pod_spec(deployment).get("volumes", [])}
    for mount in c.get("volumeMounts", []):
        root = mount["mountPath"].rstrip("/") + "/"
        if (path.rstrip("/") + "/").startswith(root):
            return mount, volumes[mount["name"]]
    raise AssertionError(f"{c['name']}: nothing is mounted at {path}")


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_hardened(deployment: Manifest) -> None:
    """Non-root, read-only root filesystem, no privilege escalation, no capabilities, the
    runtime's seccomp profile, no API token, no service-link variables."""
    spec = pod_spec(deployment)
    pod = spec.get("securityContext", {})
    assert pod.get("runAsNonRoot") is True, "the pod must set runAsNonRoot"
    assert pod.get("runAsUser", 0) != 0, "the pod must run as a non-zero uid"
    assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault", "seccomp RuntimeDefault"
    assert spec.get("automountServiceAccountToken") is False, "no service account token"
    # Service links would add AGENTROUTER_AUTH_PORT, ... (the Service's name) to the server's
    # own AGENTROUTER_AUTH_* settings.
    assert spec.get("enableServiceLinks") is False, "enableServiceLinks must be false"
    for c in all_containers(deployment):
        sc = c.get("securityContext", {})
        name = c["name"]
        assert sc.get("readOnlyRootFilesystem") is True, f"{name}: readOnlyRootFilesystem"
        assert sc.get("allowPrivilegeEscalation") is False, f"{name}: allowPrivilegeEscalation"
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{name}: drop ALL capabilities"
        assert not sc.get("capabilities", {}).get("add"), f"{name}: adds capabilities"
        assert not sc.get("privileged"), f"{name}: privileged"
        assert sc.get("runAsUser", pod.get("runAsUser")) != 0, f"{name}: runs as root"
        limits = c.get("resources", {}).get("limits", {})
        requests = c.get("resources", {}).get("requests", {})
        assert "memory" in limits, f"{name}: no memory limit"
        assert {"cpu", "memory"} <= requests.keys(), f"{name}: no cpu and memory requests"


def check_mounts(deployment: Manifest) -> None:
    """Every mount names a declared volume, once per path; the server has /tmp on an emptyDir
    (its metrics files; the root filesystem is read-only) and mounts the copies read-only."""
    volumes = {v["name"]: v for v in pod_spec(deployment).get("volumes", [])}
    for c in all_containers(deployment):
        paths = [m["mountPath"] for m in c.get("volumeMounts", [])]
        assert len(paths) == len(set(paths)), f"{c['name']}: a path is mounted twice: {paths}"
        for mount in c.get("volumeMounts", []):
            assert mount["name"] in volumes, f"{c['name']}: mounts undeclared {mount['name']!r}"
    server = container(deployment, SERVER)
    mount, volume = mount_of(deployment, server, "/tmp")
    assert mount["mountPath"] == "/tmp", "the server's /tmp is a subdirectory of a mount"
    assert "emptyDir" in volume, "/tmp must be an emptyDir"
    mount, volume = mount_of(deployment, server, RUN_DIR)
    assert mount.get("readOnly") is True, f"the server must mount {RUN_DIR} read-only"
    assert volume.get("emptyDir", {}).get("medium") == "Memory", f"{RUN_DIR}: memory only"


def _http_probe(c: dict[str, Any], probe: str) -> tuple[str, int]:
    get = c.get(probe, {}).get("httpGet")
    assert get, f"{c['name']}: no {probe} over HTTP"
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    port = get["port"]
    number = ports.get(port) if isinstance(port, str) else port
    assert number is not None, f"{c['name']}: {probe} uses undeclared port {port!r}"
    return get["path"], number


def _address_port(c: dict[str, Any], variable: str) -> int:
    entry = env(c).get(variable)
    assert entry is not None, f"{c['name']}: {variable} is not set"
    assert "value" in entry, f"{c['name']}: {variable} has no value"
    return config.parse_address(variable, entry["value"]).port


def check_probes(deployment: Manifest) -> None:
    """Startup and liveness on /healthz, readiness on /readyz, on the port the server listens
    on (its HTTP address), and the container ports are the listeners'."""
    server = container(deployment, SERVER)
    ports = {p["name"]: p["containerPort"] for p in server.get("ports", [])}
    for name, variable, number in (
        ("http", "AGENTROUTER_AUTH_HTTP_ADDR", HTTP_PORT),
        ("grpc", "AGENTROUTER_AUTH_GRPC_ADDR", GRPC_PORT),
    ):
        listens = _address_port(server, variable)
        assert ports.get(name) == listens == number, (
            f"the {name} port is {ports.get(name)}, the server listens on {listens}, not {number}"
        )
    for probe, path in (
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ):
        assert _http_probe(server, probe) == (path, HTTP_PORT), f"{probe} must GET {path}"


def check_shutdown(deployment: Manifest) -> None:
    """The pod gets to drain: the grace period outlasts preStop + --grace-period + the kill
    margin, and SIGTERM (the image's STOPSIGNAL) comes after endpoints are withdrawn."""
    server = container(deployment, SERVER)
    pre_stop = server.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    entry = env(server).get("AGENTROUTER_AUTH_GRACE_PERIOD")
    grace = parse_duration(entry["name"], entry["value"]) if entry else DEFAULT_GRACE
    needed = pre_stop + grace + KILL_MARGIN
    termination = pod_spec(deployment).get("terminationGracePeriodSeconds", 30)
    assert termination > needed, (
        f"terminationGracePeriodSeconds {termination} must exceed preStop {pre_stop} s + "
        f"--grace-period {grace} s + {KILL_MARGIN} s"
    )


def check_spread(deployment: Manifest) -> None:
    """Replicas are spread across nodes (a topology spread or an anti-affinity on the node)."""
    spec = pod_spec(deployment)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"].get("replicas", 1) >= 2, "a single replica"
    spread = [
        t
        for t in spec.get("topologySpreadConstraints", [])
        if t["topologyKey"] == "kubernetes.io/hostname"
        and selects(t.get("labelSelector", {}).get("matchLabels", {}), labels)
    ]
    anti = [
        term
        for term in spec.get("affinity", {})
        .get("podAntiAffinity", {})
        .get("requiredDuringSchedulingIgnoredDuringExecution", [])
        if term["topologyKey"] == "kubernetes.io/hostname"
        and selects(term.get("labelSelector", {}).get("matchLabels", {}), labels)
    ]
    assert spread or anti, "replicas are not spread across nodes"


def check_service(service: Manifest, deployment: Manifest) -> None:
    """The Service selects the Deployment's pods and exposes both listeners by port name."""
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(service["spec"].get("selector", {}), labels), "the Service selects no pod"
    server = container(deployment, SERVER)
    declared = {p["name"]: p["containerPort"] for p in server["ports"]}
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    for name, number, protocol in (("http", HTTP_PORT, "http"), ("grpc", GRPC_PORT, "grpc")):
        port = ports.get(name)
        assert port is not None, f"the Service has no {name} port"
        target = port.get("targetPort", port["port"])
        assert declared.get(target, target) == number, f"{name} targets {target!r}"
        assert port["port"] == number, f"the Service's {name} port is {port['port']}"
        assert port.get("appProtocol") == protocol, f"{name}: appProtocol {protocol}"


def check_disruption_budget(pdb: Manifest, deployment: Manifest) -> None:
    """The budget covers exactly the Deployment's pods and lets at most one go at a time."""
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = pdb["spec"]["selector"].get("matchLabels", {})
    assert selects(selector, labels), "the PodDisruptionBudget selects none of the pods"
    assert selector == deployment["spec"]["selector"]["matchLabels"], (
        "the PodDisruptionBudget's selector differs from the Deployment's"
    )
    replicas = deployment["spec"].get("replicas", 1)
    if "maxUnavailable" in pdb["spec"]:
        assert pdb["spec"]["maxUnavailable"] == 1, "maxUnavailable must be 1"
    else:
        assert pdb["spec"].get("minAvailable") == replicas - 1, "minAvailable must be N - 1"


def _command(c: dict[str, Any]) -> str:
    """The agentrouter-auth command a container runs (`serve`, `store migrate`, …)."""
    args = [*c.get("command", []), *c.get("args", [])]
    return "serve" if args[:1] == ["serve"] else " ".join(args[:2])


def check_environment(deployment: Manifest) -> None:
    """Every variable has one source, and every AGENTROUTER_AUTH_* variable is an option the
    container's command takes, with a value the server accepts (files and secrets aside)."""
    variables = {config.env_of(name): option for option in config.OPTIONS for name in option.names}
    not_parsed = {"AGENTROUTER_AUTH_KEY_STORE", "AGENTROUTER_AUTH_KEK_FILE"}  # files, secrets
    for c in all_containers(deployment):
        for name, entry in env(c).items():
            assert ("value" in entry) != ("valueFrom" in entry), f"{name}: value and valueFrom"
            if not name.startswith(config.ENV_PREFIX) or c["name"] == COPY_SECRETS:
                continue
            option = variables.get(name)
            assert option is not None, f"{c['name']}: {name} is no option of agentrouter-auth"
            command = _command(c)
            assert option.takes(command), f"{c['name']}: `{command}` does not take {name}"
            if "value" in entry and name not in not_parsed:
                option.parse(entry["value"], name)  # raises ConfigError / PolicyError


def copied_secrets(deployment: Manifest) -> dict[str, str]:
    """The Secrets copy-secrets copies, by the name of the directory they are copied to: each
    name in its SECRETS is mounted from a Secret volume at SECRETS_DIR/NAME."""
    copy = container(deployment, COPY_SECRETS)
    names = env(copy)["SECRETS"]["value"].split()
    assert names, "copy-secrets copies nothing"
    secrets = {}
    for name in names:
        mount, volume = mount_of(deployment, copy, f"{SECRETS_DIR}/{name}")
        assert mount["mountPath"] == f"{SECRETS_DIR}/{name}", f"{name} is mounted elsewhere"
        assert "secret" in volume, f"{SECRETS_DIR}/{name} is not a Secret volume"
        assert volume["secret"].get("defaultMode") == 0o400, f"{name}: defaultMode 0400"
        secrets[name] = volume["secret"]["secretName"]
    mount, volume = mount_of(deployment, copy, RUN_DIR)
    assert mount["mountPath"] == RUN_DIR, f"copy-secrets: {RUN_DIR} is in another mount"
    assert not mount.get("readOnly"), f"copy-secrets cannot write {RUN_DIR}"
    return secrets


def _copied_file(deployment: Manifest, path: str) -> str:
    """The Secret a path under RUN_DIR is a copy from."""
    secrets = copied_secrets(deployment)
    directory = path.removeprefix(RUN_DIR + "/").split("/")[0]
    assert path.startswith(RUN_DIR + "/"), f"{path} is not under {RUN_DIR}"
    assert directory in secrets, f"{path} is no copy of a Secret"
    return secrets[directory]


def check_postgresql_store(deployment: Manifest) -> None:
    """Every process that opens the store reads it from the PostgreSQL Secret, with the KEK and
    the libpq password file copied from Secrets; the schema is migrated before the server starts;
    every replica may take rotation steps."""
    for name, command in (
        ("migrate", "store migrate"),
        ("keys-init", "keys init"),
        (SERVER, "serve"),
    ):
        c = container(deployment, name)
        assert _command(c) == command, f"{name} runs {_command(c)!r}"
        variables = env(c)
        ref = variables["AGENTROUTER_AUTH_KEY_STORE"].get("valueFrom", {}).get("secretKeyRef", {})
        assert ref == {"name": POSTGRESQL_SECRET, "key": "url"}, f"{name}: the store is {ref}"
        for variable in ("AGENTROUTER_AUTH_KEK_FILE", "PGPASSFILE"):
            assert "value" in variables.get(variable, {}), f"{name}: {variable} is not set"
            path = variables[variable]["value"]
            for each in path.split(config.KEK_SEPARATOR):
                _copied_file(deployment, each)
                mount_of(deployment, c, each)
    assert _copied_file(deployment, env(container(deployment, SERVER))["PGPASSFILE"]["value"]) == (
        POSTGRESQL_SECRET
    )
    init = [c["name"] for c in pod_spec(deployment)["initContainers"]]
    assert init == [COPY_SECRETS, "migrate", "keys-init"], f"init containers in order: {init}"
    assert env(container(deployment, SERVER))["AGENTROUTER_AUTH_ROTATION"]["value"] == "auto"


def check_directory_store(deployment: Manifest) -> None:
    """The server serves the copy of the keys Secret with rotation off, and nothing refers to
    the database any more."""
    server = container(deployment, SERVER)
    variables = env(server)
    store = variables["AGENTROUTER_AUTH_KEY_STORE"].get("value", "")
    assert store.startswith("/"), f"the key store is not a directory: {store or 'a Secret'}"
    assert _copied_file(deployment, store + "/manifest.json") == KEYS_SECRET, f"store {store}"
    mount, _ = mount_of(deployment, server, store)
    assert mount.get("readOnly") is True, "the key directory must be mounted read-only"
    assert variables.get("AGENTROUTER_AUTH_ROTATION", {}).get("value") == "off", "rotation off"
    assert not {"AGENTROUTER_AUTH_KEK_FILE", "PGPASSFILE"} & variables.keys()
    assert [c["name"] for c in pod_spec(deployment)["initContainers"]] == [COPY_SECRETS]
    assert POSTGRESQL_SECRET not in yaml.safe_dump(deployment), "the database is still named"
