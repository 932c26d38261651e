"""deploy/k8s: every overlay renders with kustomize and validates against the schemas of a current
Kubernetes; the API is probed, scaled, budgeted and routed as intended; only the API and Superset
take traffic from outside; every pod runs non-root on a read-only root filesystem; every command
is real; Dagster's runs become Jobs that are as locked down as the rest."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from bagula.roles import DAGSTER, INGEST, SUPERSET, SUPERSET_DATABASE, TRANSFORM
from bagula.settings import PlatformSettings
from tests.deploy.checks import (
    OVERLAYS,
    PLATFORM_DOCKERFILE,
    REPO,
    Image,
    compose,
    expand_env,
    pod_specs,
    render,
    run,
    runtime_env,
    tool,
)

KUBERNETES_VERSION = "1.37.0"
OVERLAY_IDS = [overlay.name for overlay in OVERLAYS]
SECRET_KEYS = {
    "db-owner-password",
    "db-ingest-password",
    "db-transform-password",
    "db-dagster-password",
    "db-superset-password",
    "superset-reader-password",
    "superset-secret-key",
    "superset-admin-password",
    "alert-webhook-url",
}


@pytest.fixture(scope="module", params=OVERLAYS, ids=OVERLAY_IDS)
def rendered(request) -> tuple[Path, list[dict]]:
    return request.param, render(request.param)


def _find(docs: list[dict], kind: str, name: str) -> dict:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def _containers(spec: dict) -> list[dict]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def _config(docs: list[dict]) -> dict[str, str]:
    return _find(docs, "ConfigMap", "bagula-config")["data"]


def _validate(path: Path) -> subprocess.CompletedProcess:
    return run([tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, "--quiet", str(path)])


def test_every_overlay_renders_and_validates_against_current_kubernetes_schemas(rendered, tmp_path: Path):
    overlay, docs = rendered
    manifest = tmp_path / f"{overlay.name}.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    result = _validate(manifest)
    assert result.returncode == 0, result.stdout + result.stderr
    # A misspelt field fails the same check.
    broken = [dict(doc) for doc in docs]
    api = _find(broken, "Deployment", "bagula-api")
    api["spec"]["template"]["spec"]["containers"][0]["readynessProbe"] = {}
    manifest.write_text(yaml.safe_dump_all(broken))
    assert _validate(manifest).returncode != 0


def test_the_api_is_probed_scaled_budgeted_and_routed_without_its_metrics(rendered):
    _, docs = rendered
    api = _find(docs, "Deployment", "bagula-api")
    pod = api["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000, "metrics": 9464}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["resources"]["requests"] and container["resources"]["limits"]
    annotations = pod["metadata"]["annotations"]
    assert (annotations["prometheus.io/scrape"], annotations["prometheus.io/port"]) == ("true", "9464")
    assert str(PlatformSettings(_env_file=None).metrics_port) == annotations["prometheus.io/port"]
    assert runtime_env(PLATFORM_DOCKERFILE)["BAGULA_METRICS_HOST"] == "0.0.0.0"  # reachable from the pod's IP

    labels = pod["metadata"]["labels"]
    hpa = _find(docs, "HorizontalPodAutoscaler", "bagula-api")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "bagula-api"}
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
    pdb = _find(docs, "PodDisruptionBudget", "bagula-api")["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items() and pdb["minAvailable"] >= 1

    service = _find(docs, "Service", "bagula-api")["spec"]
    assert service["selector"].items() <= labels.items()
    assert [(p["port"], p["targetPort"]) for p in service["ports"]] == [(8000, "http")]
    backends = [
        path["backend"]["service"]
        for d in docs
        if d["kind"] == "Ingress"
        for rule in d["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]
    assert sorted((b["name"], b["port"]["name"]) for b in backends) == [
        ("bagula-api", "http"),
        ("bagula-superset", "http"),
    ]


def _open_to_everyone(docs: list[dict], labels: dict[str, str]) -> set[int]:
    """Ports of a pod with these labels that any source may reach (no NetworkPolicy selecting
    the pod: all of them, -1)."""
    policies = [
        d["spec"]
        for d in docs
        if d["kind"] == "NetworkPolicy" and d["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items()
    ]
    if not any("Ingress" in p["policyTypes"] for p in policies):
        return {-1}
    return {
        port["port"] for p in policies for rule in p.get("ingress", []) if "from" not in rule for port in rule["ports"]
    }


def test_network_policies_let_only_the_api_and_superset_in_from_outside(rendered):
    _, docs = rendered
    reachable = {}
    for workload, _ in pod_specs(docs):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        reachable[workload["metadata"]["name"]] = _open_to_everyone(docs, labels)
    assert {name: ports for name, ports in reachable.items() if ports} == {
        "bagula-api": {8000},
        "bagula-superset": {8088},
    }
    # The run pods dagster-k8s creates carry these labels: the default policy covers them too.
    assert (
        _open_to_everyone(docs, {"app.kubernetes.io/part-of": "bagula", "app.kubernetes.io/name": "bagula-dagster-run"})
        == set()
    )


def test_every_pod_runs_non_root_with_a_read_only_root_filesystem_and_limits(rendered):
    _, docs = rendered
    for workload, spec in pod_specs(docs):
        name = workload["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in _containers(spec):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert container["resources"]["requests"] and container["resources"]["limits"], name
    namespace = _find(docs, "Namespace", "bagula")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_container_commands_are_the_compose_ones_and_real(rendered, platform_image: Image):
    _, docs = rendered
    compose_commands = {tuple(s["command"]) for s in compose()["services"].values() if "command" in s}
    helped = platform_image.help(
        [
            c["command"]
            for _, spec in pod_specs(docs)
            for c in _containers(spec)
            if c.get("command", [""])[0] == "bagula"
        ]
    )
    for workload, spec in pod_specs(docs):
        for container in _containers(spec):
            if "timescaledb" in container["image"]:
                continue
            command = container["command"]
            if command[0] == "bagula":
                status, output = helped[tuple(command)]
                assert status == 0, (workload["metadata"]["name"], output)
            if workload["metadata"]["name"] != "bagula-dagster-webserver":
                assert tuple(command) in compose_commands, command
            for probe in ("readinessProbe", "livenessProbe"):
                if "exec" in container.get(probe, {}):
                    assert shutil.which(container[probe]["exec"]["command"][0], path=platform_image.env["PATH"])


def _resolved_env(docs: list[dict], container: dict) -> dict[str, str]:
    """The container's environment with each secret as <its key>, the namespace as <namespace>."""
    config = _config(docs)
    sources = {}
    for entry in container.get("env", []):
        source = entry.get("valueFrom", {})
        if "secretKeyRef" in source:
            sources[entry["name"]] = f"<{source['secretKeyRef']['key']}>"
        elif "configMapKeyRef" in source:
            sources[entry["name"]] = config[source["configMapKeyRef"]["key"]]
        elif "fieldRef" in source:
            sources[entry["name"]] = "<namespace>"
    return expand_env(container.get("env", []), {**config, **sources})


def test_every_service_connects_as_its_role_with_secrets_from_the_secret(rendered):
    _, docs = rendered
    config = _config(docs)
    expected = {  # container: {variable: (scheme, role, database)}
        "init": {"BAGULA_DATABASE_URL": ("postgresql", config["BAGULA_DB_OWNER"], config["BAGULA_DB_NAME"])},
        "api": {"BAGULA_DATABASE_URL": ("postgresql", INGEST, config["BAGULA_DB_NAME"])},
        "webserver": {
            "BAGULA_DATABASE_URL": ("postgresql", TRANSFORM, config["BAGULA_DB_NAME"]),
            "BAGULA_DAGSTER_STORAGE_URL": ("postgresql+psycopg2", DAGSTER, config["BAGULA_DB_NAME"]),
        },
        "superset": {"BAGULA_SUPERSET_METADATA_DB_URL": ("postgresql+psycopg2", SUPERSET, SUPERSET_DATABASE)},
        "superset-init": {
            "BAGULA_SUPERSET_MARTS_URI": ("postgresql+psycopg2", "bagula_superset_reader", config["BAGULA_DB_NAME"])
        },
    }
    expected["daemon"] = expected["live"] = expected["webserver"]
    seen = set()
    for _, spec in pod_specs(docs):
        for container in _containers(spec):
            env = _resolved_env(docs, container)
            for entry in container.get("env", []):
                secret = entry.get("valueFrom", {}).get("secretKeyRef")
                if secret:
                    assert secret["name"] == "bagula-secrets" and secret["key"] in SECRET_KEYS, entry
                assert "$(" not in env[entry["name"]], f"{entry['name']} refers to a variable defined later"
            for variable, (scheme, role, database) in expected.get(container["name"], {}).items():
                url = urlsplit(env[variable])
                assert (url.scheme, url.username, url.hostname, url.path) == (
                    scheme,
                    role,
                    config["BAGULA_DB_HOST"],
                    f"/{database}",
                ), (container["name"], variable)
                seen.add(container["name"])
    assert seen == set(expected)


def test_the_database_is_in_the_cluster_or_managed(rendered):
    overlay, docs = rendered
    config = _config(docs)
    statefulsets = [d for d in docs if d["kind"] == "StatefulSet"]
    if overlay.name == "small":
        (database,) = statefulsets
        assert database["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
        assert re.fullmatch(
            r"timescale/timescaledb:[\w.-]+@sha256:[0-9a-f]{64}",
            database["spec"]["template"]["spec"]["containers"][0]["image"],
        )
        assert config["BAGULA_DB_HOST"] == _find(docs, "Service", "bagula-db")["metadata"]["name"]
        # Only Bagula's pods reach it: every workload's, and the run Jobs' (their launcher's labels).
        (allowed,) = _find(docs, "NetworkPolicy", "bagula-db")["spec"]["ingress"][0]["from"]
        selector = allowed["podSelector"]["matchLabels"].items()
        for workload, _ in pod_specs(docs):
            assert selector <= workload["spec"]["template"]["metadata"]["labels"].items(), workload["metadata"]["name"]
        launcher = yaml.safe_load(_find(docs, "ConfigMap", "bagula-dagster-instance")["data"]["instance.yaml"])
        assert selector <= launcher["run_launcher"]["config"]["labels"].items()
    else:
        assert statefulsets == [] and config["BAGULA_DB_HOST"] != "bagula-db"
        assert config["PGSSLMODE"] in ("require", "verify-ca", "verify-full")


def test_the_live_path_runs_once_as_dbt_and_detection_with_somewhere_to_write(rendered):
    _, docs = rendered
    live = _find(docs, "Deployment", "bagula-live")
    # One process holds the pipeline lock; a rollout stops the old pod before the new one starts.
    assert live["spec"]["replicas"] == 1 and live["spec"]["strategy"]["type"] == "Recreate"
    assert not [
        d
        for d in docs
        if d["kind"] == "HorizontalPodAutoscaler" and d["spec"]["scaleTargetRef"]["name"] == "bagula-live"
    ]
    spec = live["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["command"] == ["bagula", "pipeline", "live"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # dbt's target folder and logs (the image's DBT_TARGET_PATH, DBT_LOG_PATH) and Dagster's
    # instance file land on volumes of the pod's own.
    image_env = runtime_env(PLATFORM_DOCKERFILE)
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    for path in (image_env["DBT_TARGET_PATH"], image_env["DBT_LOG_PATH"], image_env["BAGULA_DAGSTER_HOME"]):
        (mount,) = [m for m in mounts if path == m or path.startswith(m + "/")]
        assert "emptyDir" in volumes[mounts[mount]], path
    assert not image_env["BAGULA_DBT_PROJECT_DIR"].startswith(tuple(mounts))  # read from the image
    # Readiness says whether it keeps up; nothing restarts it for pausing behind a Dagster run.
    assert container["readinessProbe"]["exec"]["command"][0] == "python" and "livenessProbe" not in container
    env = _resolved_env(docs, container)
    assert "BAGULA_DAGSTER_INSTANCE_CONFIG" not in env  # reports to Dagster's storage, launches nothing


def test_dagster_runs_one_daemon_and_launches_runs_with_its_own_image(rendered):
    _, docs = rendered
    daemon = _find(docs, "Deployment", "bagula-dagster-daemon")
    assert daemon["spec"]["replicas"] == 1 and daemon["spec"]["strategy"]["type"] == "Recreate"
    image = daemon["spec"]["template"]["spec"]["containers"][0]["image"]
    for name in ("bagula-dagster-daemon", "bagula-dagster-webserver"):
        (container,) = _find(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"]
        assert container["image"] == image
        assert {e["name"]: e.get("value") for e in container["env"]}["DAGSTER_CURRENT_IMAGE"] == image
    role = _find(docs, "Role", "bagula-dagster")
    jobs = next(rule for rule in role["rules"] if rule["apiGroups"] == ["batch"])
    assert {"create", "delete", "watch"} <= set(jobs["verbs"])


# Run in the image's environment: dagster-k8s builds the Job of a run from the instance settings
# the Kubernetes deployment gives Dagster, as its run launcher does.
_RUN_JOB = """
import json, sys, yaml
from pathlib import Path
from dagster._config import process_config
from dagster._core.storage.dagster_run import DagsterRun
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import construct_dagster_k8s_job
from dagster_k8s.launcher import K8sRunLauncher
from kubernetes.client import ApiClient
from orchestration.instance import InstanceSettings, instance_config

config = instance_config(InstanceSettings(instance_config=Path(sys.argv[1])))
launcher_block = config["run_launcher"]
assert (launcher_block["module"], launcher_block["class"]) == ("dagster_k8s", "K8sRunLauncher"), launcher_block
# Outside a cluster: the same settings with a kubeconfig that is never contacted.
settings = dict(launcher_block["config"], load_incluster_config=False, kubeconfig_file=sys.argv[2])
processed = process_config(K8sRunLauncher.config_type(), settings)
assert processed.success, processed.errors
launcher = K8sRunLauncher(**processed.value)
run = DagsterRun(job_name="__ASSET_JOB", run_id="0123456789abcdef")
context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=True)
job = construct_dagster_k8s_job(context.get_k8s_job_config(sys.argv[3], launcher), ["dagster", "api", "execute_run", "{}"],
                                "dagster-run-0123456789abcdef", user_defined_k8s_config=context.run_k8s_config,
                                component="run_worker")
print(json.dumps({"job": ApiClient().sanitize_for_serialization(job), "namespace": launcher.job_namespace,
                  "other": sorted(set(config) - {"run_launcher"})}))
"""
_KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: none, user: {token: none}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
"""


def test_runs_become_jobs_as_locked_down_as_the_rest(rendered, platform_image: Image, tmp_path: Path):
    overlay, docs = rendered
    # Where the image's user may read them.
    folder = platform_image.tmp / f"run-job-{overlay.name}"
    folder.mkdir(exist_ok=True)
    instance = folder / "instance.yaml"
    instance.write_text(_find(docs, "ConfigMap", "bagula-dagster-instance")["data"]["instance.yaml"])
    kubeconfig = folder / "kubeconfig"
    kubeconfig.write_text(_KUBECONFIG)
    image = _find(docs, "Deployment", "bagula-dagster-daemon")["spec"]["template"]["spec"]["containers"][0]["image"]
    built = platform_image.run(
        ["python", "-c", _RUN_JOB, str(instance), str(kubeconfig), image],
        {"BAGULA_K8S_NAMESPACE": "bagula"},
        timeout=120,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    answer = json.loads(built.stdout.strip().splitlines()[-1])
    assert answer["namespace"] == "bagula"
    assert {"run_monitoring", "compute_logs", "storage"} <= set(answer["other"])

    job = answer["job"]
    manifest = tmp_path / "run-job.yaml"
    manifest.write_text(yaml.safe_dump(job))
    valid = _validate(manifest)
    assert valid.returncode == 0, valid.stdout + valid.stderr

    spec = job["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "bagula-dagster-run" and spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = spec["containers"]
    assert container["image"] == image
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["limits"] and container["resources"]["requests"]
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp", "/var/lib/bagula/dagster"}
    assert [source["configMapRef"]["name"] for source in container["envFrom"]] == ["bagula-config"]
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert _open_to_everyone(docs, labels) == set()

    # The run's URLs are the daemon's: transform for the data, dagster for the storage.
    env = _resolved_env(docs, container)
    (daemon,) = _find(docs, "Deployment", "bagula-dagster-daemon")["spec"]["template"]["spec"]["containers"]
    daemon_env = _resolved_env(docs, daemon)
    for variable in ("BAGULA_DATABASE_URL", "BAGULA_DAGSTER_STORAGE_URL"):
        assert env[variable] == daemon_env[variable]
    assert urlsplit(env["BAGULA_DATABASE_URL"]).username == TRANSFORM


def test_the_deployment_guide_creates_the_secret_with_every_key():
    guide = (REPO / "docs" / "deployment.md").read_text()
    command = re.search(r"kubectl -n bagula create secret generic bagula-secrets.*?(?=\n```)", guide, re.S)
    assert command, "docs/deployment.md shows how to create the Secret"
    assert set(re.findall(r"--from-literal=([a-z-]+)=", command.group(0))) == SECRET_KEYS
