"""deploy/kubernetes: the kustomizations build offline, every object validates against its
schema (Kubernetes' own for core kinds, KEDA's fields for ScaledObjects), and the GPU overlay
puts the model pools on GPU nodes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KEDA_SCHEMA = json.loads((Path(__file__).parent / "keda-v1alpha1.schema.json").read_text())
K8S_VERSION = "1.30.0"  # the oldest Kubernetes the manifests promise to work on
LONGEST_TASK_S = 3600  # verisolve.executors.celery_app.LONGEST_TASK_S
WORKERS = {"generator": "generate", "verifier": "verify", "aggregator": "aggregate"}
GPU_POOLS = {"generator", "verifier"}
SECRET_KEYS = {"database-url", "broker-url", "rabbitmq-management-url", "ui-secret"}

Doc = dict[str, Any]


def build(kubectl: str, overlay: str) -> list[Doc]:
    done = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / "kubernetes" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module", params=["base", "overlays/gpu"])
def docs(request: pytest.FixtureRequest, kubectl: str) -> list[Doc]:
    """The objects a kustomization builds."""
    return build(kubectl, request.param)


@pytest.fixture(scope="module")
def gpu(kubectl: str) -> list[Doc]:
    return build(kubectl, "overlays/gpu")


@pytest.fixture(scope="module")
def base(kubectl: str) -> list[Doc]:
    return build(kubectl, "base")


def find(docs: list[Doc], kind: str, name: str | None = None) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    (doc,) = find(docs, kind, name)
    return doc


def containers(doc: Doc) -> list[Doc]:
    pod = doc["spec"]["template"]["spec"]
    found: list[Doc] = pod["containers"]
    return found


def test_core_objects_validate_against_the_kubernetes_schema(docs: list[Doc]) -> None:
    for doc in docs:
        if doc["apiVersion"].startswith("keda.sh/"):
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_keda_objects_validate_against_keda_fields(docs: list[Doc]) -> None:
    keda = [doc for doc in docs if doc["apiVersion"].startswith("keda.sh/")]
    assert {d["kind"] for d in keda} == {"ScaledObject", "TriggerAuthentication"}
    for doc in keda:
        jsonschema.validate(doc, KEDA_SCHEMA)
        behavior = doc["spec"].get("advanced", {}).get("horizontalPodAutoscalerConfig", {})
        if "behavior" in behavior:
            # KEDA hands the behavior to the HPA it creates: Kubernetes' schema checks it.
            hpa = {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": doc["metadata"]["name"]},
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"},
                    "maxReplicas": 1,
                    "behavior": behavior["behavior"],
                },
            }
            kubernetes_validate.validate(hpa, K8S_VERSION, strict=True)


def test_validation_rejects_a_misspelt_field() -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "i", "livenesProbe": {}}]},
            },
        },
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_the_keda_schema_rejects_a_misspelt_field() -> None:
    bad = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "x"},
        "spec": {
            "scaleTargetRef": {"name": "x"},
            "triggers": [
                {
                    "type": "rabbitmq",
                    "metadata": {
                        "queueName": "q",
                        "mode": "QueueLength",
                        "value": "2",
                        "queuname": "q",
                    },
                }
            ],
        },
    }
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, KEDA_SCHEMA)


def test_each_worker_pool_scales_on_its_own_queue(docs: list[Doc]) -> None:
    auths = {d["metadata"]["name"] for d in find(docs, "TriggerAuthentication")}
    scaled = {d["spec"]["scaleTargetRef"]["name"]: d for d in find(docs, "ScaledObject")}
    assert set(scaled) == set(WORKERS)
    for pool, queue in WORKERS.items():
        deployment = one(docs, "Deployment", pool)
        assert containers(deployment)[0]["args"] == ["worker", queue]
        assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
        (trigger,) = scaled[pool]["spec"]["triggers"]
        assert trigger["type"] == "rabbitmq"
        assert trigger["metadata"]["queueName"] == queue
        # The management API counts unacknowledged (running) tasks: busy pods are kept.
        assert trigger["metadata"]["protocol"] == "http"
        assert trigger["authenticationRef"]["name"] in auths


def test_workers_outlive_their_longest_task_and_are_probed(docs: list[Doc]) -> None:
    for pool in WORKERS:
        deployment = one(docs, "Deployment", pool)
        pod = deployment["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] > LONGEST_TASK_S
        (worker,) = containers(deployment)
        assert worker["livenessProbe"]["httpGet"]["path"] == "/metrics"
        assert {"name": "PROMETHEUS_MULTIPROC_DIR", "value": "/tmp/metrics"} in worker["env"]
        mounts = {m["mountPath"]: m["name"] for m in worker["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes[mounts["/tmp/metrics"]]["emptyDir"]["medium"] == "Memory"
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == "9464"


def test_services_with_a_port_have_probes(docs: list[Doc]) -> None:
    for deployment in find(docs, "Deployment"):
        for container in containers(deployment):
            if container.get("ports"):
                assert "livenessProbe" in container, deployment["metadata"]["name"]
    api = containers(one(docs, "Deployment", "api"))[0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"


def pod_templates(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def test_every_pod_runs_as_non_root_without_privileges(docs: list[Doc]) -> None:
    templates = dict(pod_templates(docs))
    assert {"api", "relay", "exporter", "migrate", *WORKERS} <= set(templates)
    for name, pod in templates.items():
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert "memory" in container["resources"]["limits"], name


def test_references_resolve_within_the_build(docs: list[Doc]) -> None:
    config_maps = {d["metadata"]["name"] for d in find(docs, "ConfigMap")}
    claims = {d["metadata"]["name"] for d in find(docs, "PersistentVolumeClaim")}
    for name, pod in pod_templates(docs):
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in config_maps, name
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "verisolve-secrets"
                    assert ref["key"] in SECRET_KEYS
        for volume in pod.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, name
    for service in find(docs, "Service"):
        selector = service["spec"]["selector"]
        assert any(
            selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
            for d in find(docs, "Deployment")
        ), service["metadata"]["name"]


def test_the_migration_job_upgrades_the_schema(docs: list[Doc]) -> None:
    job = one(docs, "Job", "migrate")
    assert containers(job)[0]["args"] == ["db", "upgrade"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("OnFailure", "Never")


def test_the_gpu_overlay_puts_the_model_pools_on_gpu_nodes(gpu: list[Doc]) -> None:
    for pool in WORKERS:
        deployment = one(gpu, "Deployment", pool)
        pod = deployment["spec"]["template"]["spec"]
        (worker,) = containers(deployment)
        on_gpu = pool in GPU_POOLS
        assert (worker["resources"]["limits"].get("nvidia.com/gpu") == 1) is on_gpu, pool
        assert (worker["image"].startswith("verisolve-gpu:")) is on_gpu, pool
        if on_gpu:
            assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in (
                pod["tolerations"]
            )
            assert {"name": "VERISOLVE_PROVIDER", "value": "cuda"} in worker["env"]
            # The base's settings stay: the patch adds to the env list, it does not replace it.
            names = [v["name"] for v in worker["env"]]
            assert "VERISOLVE_DATABASE_URL" in names
            assert len(names) == len(set(names))


def test_the_gpu_overlay_sizes_generate_tasks_for_its_batches(
    gpu: list[Doc], base: list[Doc]
) -> None:
    # The relay reads the shared config: on GPU workers (256 rows) a task fills the batch 8 times.
    (config,) = (
        d for d in find(gpu, "ConfigMap") if d["metadata"]["name"].startswith("verisolve-")
    )
    assert config["data"]["VERISOLVE_GENERATE_CHUNK_CANDIDATES"] == "2048"
    assert config["data"]["VERISOLVE_PROVIDER"] == "cpu"  # the base's settings stay
    (plain,) = (
        d for d in find(base, "ConfigMap") if d["metadata"]["name"].startswith("verisolve-")
    )
    assert "VERISOLVE_GENERATE_CHUNK_CANDIDATES" not in plain["data"]
    relay = one(gpu, "Deployment", "relay")
    (container,) = containers(relay)
    sources = [
        s["configMapRef"]["name"] for s in container.get("envFrom", []) if "configMapRef" in s
    ]
    assert config["metadata"]["name"] in sources


def test_the_base_asks_for_no_gpu(base: list[Doc]) -> None:
    for deployment in find(base, "Deployment"):
        for container in containers(deployment):
            assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
