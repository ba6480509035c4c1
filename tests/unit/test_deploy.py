"""Deploy artifacts in deploy/: Kubernetes manifests against the offline schemas of kubernetes-validate,
the kustomize bases rendered by a small in-test renderer (no kustomize binary on PyPI), the compose file,
the Dockerfile's key properties, the systemd unit's hardening, and the Grafana dashboard's metric names.
"""

from __future__ import annotations

import configparser
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config import AgentSettings, env_overrides, load_settings
from agent.metrics import METRIC_NAMES
from service.config import load_service_settings
from service.health import METRIC_NAMES as SERVICE_METRIC_NAMES

kubernetes_validate = pytest.importorskip("kubernetes_validate")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
K8S_VERSION = "1.30.0"


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _manifests() -> Iterator[Path]:
    return (path for path in sorted(KUBERNETES.rglob("*.yaml")) if path.name != "kustomization.yaml")


def render_kustomization(folder: Path) -> list[dict[str, Any]]:
    """The subset of kustomize the bases use: resources, namespace, labels (without selectors), images."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    known = {"apiVersion", "kind", "namespace", "labels", "resources", "images"}
    assert set(kustomization) <= known, f"renderer does not know {set(kustomization) - known}"
    rendered = []
    for resource in kustomization["resources"]:
        for doc in _documents(folder / resource):
            if "namespace" in kustomization:
                doc["metadata"]["namespace"] = kustomization["namespace"]
            for group in kustomization.get("labels", []):
                assert group.get("includeSelectors") is False
                doc["metadata"].setdefault("labels", {}).update(group["pairs"])
            for container in _containers(doc):
                for image in kustomization.get("images", []):
                    name = container["image"].split(":", 1)[0]
                    if name == image["name"]:
                        container["image"] = f"{image.get('newName', name)}:{image['newTag']}"
            rendered.append(doc)
    return rendered


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return list(spec.get("containers", []))


@pytest.mark.parametrize("path", list(_manifests()), ids=lambda p: str(p.relative_to(KUBERNETES)))
def test_manifest_validates_against_the_kubernetes_schema(path: Path) -> None:
    """Every Kubernetes manifest is valid for the Kubernetes API (strict: no unknown fields), offline."""
    for doc in _documents(path):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("folder", ["agent-sidecar", "service"])
def test_kustomize_base_renders_and_validates(folder: str) -> None:
    """Each kustomize base lists existing files and renders into valid, namespaced objects."""
    rendered = render_kustomization(KUBERNETES / folder)
    assert rendered
    for doc in rendered:
        assert doc["metadata"]["namespace"]
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_agent_sidecar_has_probes_limits_and_a_locked_down_container() -> None:
    """The agent container probes /healthz and /readyz, has requests and limits, runs non-root on a read-only root."""
    deployment = _documents(KUBERNETES / "agent-sidecar" / "directory-with-agent.yaml")[0]
    pod = deployment["spec"]["template"]["spec"]
    agent = next(c for c in pod["containers"] if c["name"] == "cloudprov-agent")
    assert agent["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert agent["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"cpu", "memory"} <= set(agent["resources"]["requests"]) & set(agent["resources"]["limits"])
    security = agent["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] != 0
    assert security["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"]: m for m in agent["volumeMounts"]}
    assert mounts["/run/secrets/cloudprov"]["readOnly"] is True
    assert "/var/lib/cloudprov" in mounts
    grace = pod["terminationGracePeriodSeconds"]
    config = yaml.safe_load(_documents(KUBERNETES / "agent-sidecar" / "agent-config.yaml")[0]["data"]["agent.yaml"])
    assert config["dispatcher"]["grace_period"] < grace


def test_agent_config_map_is_a_valid_agent_configuration(tmp_path: Path) -> None:
    """The ConfigMap's agent.yaml loads with our settings models, its file: secrets read from the mounted Secret."""
    configmap = _documents(KUBERNETES / "agent-sidecar" / "agent-config.yaml")[0]
    secrets = _documents(KUBERNETES / "agent-sidecar" / "agent-secrets.yaml")[0]["stringData"]
    for name, value in secrets.items():
        (tmp_path / name).write_text(value)
    text = configmap["data"]["agent.yaml"].replace("/run/secrets/cloudprov/", f"{tmp_path}/")
    assert "file:" in text
    (tmp_path / "agent.yaml").write_text(text)
    settings = load_settings(tmp_path / "agent.yaml", env={"POD_NAME": "pod-1", "AMQP_PASSWORD": "pw"})
    assert settings.agent.id == "pod-1"
    assert settings.health.port == 8081
    assert settings.directory.plugin_settings()["password"] == secrets["ldap-password"]
    assert settings.signing.public_keys["k1"] == secrets["signing-k1.pub"]
    pytest.importorskip("bonsai", reason="the ConfigMap configures the ldap plugin")
    from plugins.registry import create_directory

    directory = create_directory(settings.directory.plugin, settings.directory.plugin_settings())
    assert directory.settings.base_dns == ("dc=example,dc=com",)  # type: ignore[attr-defined]  # one DN, quoted


def test_service_probes_and_scrape_target_use_the_configured_health_port(tmp_path: Path) -> None:
    """The service ConfigMap is a valid service configuration; probes and the scrape annotation use its health port."""
    configmap = _documents(KUBERNETES / "service" / "configmap.yaml")[0]
    text = configmap["data"]["service.yaml"].replace("/run/secrets/cloudprov/", f"{tmp_path}/")
    for name in ("key-secret", "admin-token", "ca.pem", "ca-key.pem"):  # the CA files must exist, not be valid
        (tmp_path / name).write_text(f"{name}-value\n")
    (tmp_path / "service.yaml").write_text(text)
    settings = load_service_settings(tmp_path / "service.yaml", env={"POSTGRES_URL": "postgresql://db/cloudprov"})
    assert settings.store_url == settings.provisioning_state_url == "postgresql://db/cloudprov"
    assert settings.admin.token is not None
    assert settings.admin.token.get_secret_value() == "admin-token-value"
    pod = _documents(KUBERNETES / "service" / "deployment.yaml")[0]["spec"]["template"]
    container = next(c for c in pod["spec"]["containers"] if c["name"] == "service")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": settings.control.port, "health": settings.health.port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(settings.health.port)
    service = _documents(KUBERNETES / "service" / "service.yaml")[0]
    assert {"name": "health", "port": settings.health.port, "targetPort": "health"} in service["spec"]["ports"]


def test_compose_file_has_the_whole_stack() -> None:
    """compose.yaml runs service, agent, RabbitMQ and OpenLDAP; the agent is non-root, read-only and health-gated;
    the service's environment is a valid service configuration and its healthcheck uses its health port."""
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"service", "agent", "rabbitmq", "openldap"} <= set(services)
    agent = services["agent"]
    assert agent["read_only"] is True
    assert not agent["user"].startswith(("0", "root"))
    assert agent["build"]["dockerfile"] == "deploy/Dockerfile"
    assert agent["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    assert agent["stop_signal"] == "SIGTERM"
    for name in ("rabbitmq", "openldap"):
        assert "healthcheck" in services[name]
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("./secrets/")
    service = services["service"]
    settings = load_service_settings(env={k: str(v) for k, v in service["environment"].items()})
    assert f":{settings.health.port}/healthz" in " ".join(service["healthcheck"]["test"])
    overrides = env_overrides({k: str(v) for k, v in agent["environment"].items()})
    assert set(overrides) <= set(AgentSettings.model_fields)
    for section, values in overrides.items():
        model = AgentSettings.model_fields[section].annotation
        if section != "directory":
            assert set(values) <= set(model.model_fields), section  # type: ignore[union-attr]


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck() -> None:
    """The image builds in one stage and runs in another, as a non-root user, with a /healthz HEALTHCHECK."""
    instructions = _dockerfile_instructions()
    froms = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    assert len(froms) >= 2
    builder, final = instructions[froms[0] : froms[-1]], instructions[froms[-1] :]
    assert any("libldap2-dev" in rest and "gcc" in rest for keyword, rest in builder if keyword == "RUN")
    assert any('".[all]"' in rest for keyword, rest in builder if keyword == "RUN")
    # the request path compiled (setup.py, mypyc) and checked to be
    assert any(keyword == "COPY" and "setup.py" in rest.split() for keyword, rest in builder)
    assert any("(compiled)" in rest for keyword, rest in builder if keyword == "RUN")
    assert not any("-dev" in rest or "gcc" in rest for keyword, rest in final if keyword == "RUN")
    assert any(rest.startswith("--from=builder") for keyword, rest in final if keyword == "COPY")
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users
    assert users[-1].split(":")[0] not in {"root", "0"}
    healthchecks = [rest for keyword, rest in final if keyword == "HEALTHCHECK"]
    assert len(healthchecks) == 1
    assert "/healthz" in healthchecks[0]
    assert ("ENTRYPOINT", '["cloudprov"]') in final
    assert any(keyword == "EXPOSE" and "8081" in rest for keyword, rest in final)


def test_systemd_unit_is_hardened() -> None:
    """The systemd unit runs the agent unprivileged, on a read-only system, stopping with SIGTERM after the grace."""
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((DEPLOY / "systemd" / "cloudprov-agent.service").read_text())
    service = parser["Service"]
    assert "agent run" in service["ExecStart"]
    assert service["DynamicUser"] == "yes"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["ProtectHome"] == "yes"
    assert service["PrivateTmp"] == "yes"
    assert service["StateDirectory"] == "cloudprov"
    assert service["CapabilityBoundingSet"] == ""
    assert service["KillSignal"] == "SIGTERM"
    assert float(service["TimeoutStopSec"]) > AgentSettings().dispatcher.grace_period
    assert service["Restart"] == "on-failure"
    assert parser["Install"]["WantedBy"] == "multi-user.target"


def _unit(name: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((DEPLOY / "systemd" / name).read_text())
    return parser["Service"]


def _unit_environment(name: str) -> dict[str, str]:
    text = (DEPLOY / "systemd" / name).read_text()
    lines = [line.removeprefix("Environment=") for line in text.splitlines() if line.startswith("Environment=")]
    return dict(line.split("=", 1) for line in lines)


def _plugin_state_dir(agent_env: dict[str, str], cwd: str) -> Path:
    """Where the ldap plugin keeps its delta state for an agent configured by ``agent_env``, run in ``cwd``."""
    from plugins.ldap.settings import LdapSettings

    env = {"CLOUDPROV__DIRECTORY__PLUGIN": "ldap", **agent_env}
    settings = load_settings(None, env=env)
    plugin = LdapSettings.model_validate({"auth": "anonymous", **settings.directory.plugin_settings()})
    return Path(cwd) / plugin.state_dir  # an absolute state_dir stays as it is


def test_agent_deployments_keep_the_plugin_state_under_the_agent_state_dir() -> None:
    """systemd, compose and the image put the ldap plugin's relative state_dir under agent.state_dir, not in /."""
    service = _unit("cloudprov-agent.service")
    env = _unit_environment("cloudprov-agent.service")
    assert service["WorkingDirectory"] == f"/var/lib/{service['StateDirectory']}"
    state_dir = load_settings(None, env=env).agent.state_dir
    assert _plugin_state_dir(env, service["WorkingDirectory"]).is_relative_to(state_dir)

    workdir = [rest for keyword, rest in _dockerfile_instructions() if keyword == "WORKDIR"][-1]
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["agent"]
    sections = ("CLOUDPROV__AGENT__", "CLOUDPROV__DIRECTORY__")  # not the file: secrets compose mounts
    env = {key: str(value) for key, value in compose["environment"].items() if key.startswith(sections)}
    env["CLOUDPROV__DIRECTORY__PASSWORD"] = "pw"
    assert _plugin_state_dir(env, workdir).is_relative_to(load_settings(None, env=env).agent.state_dir)


def test_service_systemd_unit_runs_in_its_state_directory() -> None:
    """The service's unit works in its state directory, so a relative path in service.yaml does not land in /."""
    service = _unit("cloudprov-service.service")
    assert service["WorkingDirectory"] == f"/var/lib/{service['StateDirectory']}"
    env = _unit_environment("cloudprov-service.service")
    assert load_service_settings(None, env=env).control.state_dir == Path(service["WorkingDirectory"])


def test_service_systemd_unit_is_hardened_and_its_settings_exist() -> None:
    """The service's unit runs `service run` unprivileged and hardened, and sets only settings the service has."""
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((DEPLOY / "systemd" / "cloudprov-service.service").read_text())
    service = parser["Service"]
    assert "service run" in service["ExecStart"]
    for key, value in {"DynamicUser": "yes", "NoNewPrivileges": "yes", "ProtectSystem": "strict"}.items():
        assert service[key] == value
    assert service["CapabilityBoundingSet"] == ""
    assert service["KillSignal"] == "SIGTERM"
    text = (DEPLOY / "systemd" / "cloudprov-service.service").read_text()
    env = dict(
        line.removeprefix("Environment=").split("=", 1) for line in text.splitlines() if line.startswith("Environment=")
    )
    settings = load_service_settings(None, env=env)
    assert str(settings.control.state_dir) == "/var/lib/cloudprov-service"
    assert settings.health.host == "127.0.0.1"


def _dashboard_metrics(prefix: str) -> set[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "cloudprov-agent.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    return {name for expr in exprs for name in re.findall(prefix + r"_[a-z_]+", expr)}


def test_grafana_dashboard_uses_only_metrics_the_agent_exposes() -> None:
    """Every metric the Grafana dashboard queries is one agent/metrics.py exposes, and it queries most of them."""
    dashboard = json.loads((DEPLOY / "grafana" / "cloudprov-agent.json").read_text())
    used = _dashboard_metrics("cloudprov_agent")
    assert used <= METRIC_NAMES, used - METRIC_NAMES
    assert len(used) >= len(METRIC_NAMES) - 2
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_grafana_dashboard_uses_only_metrics_the_service_exposes() -> None:
    """Every cloudprov_service_* metric the dashboard queries is one service/health.py exposes, and it queries all."""
    used = _dashboard_metrics("cloudprov_service")
    assert used <= SERVICE_METRIC_NAMES, used - SERVICE_METRIC_NAMES
    assert used == SERVICE_METRIC_NAMES
