"""The Kubernetes manifests (deploy/k8s/), validated offline: core kinds against the
Kubernetes schemas of ``kubernetes-validate`` (strict: an unknown field fails), the KEDA
ScaledObject against KEDA's own CRD schema (vendored in tests/schemas/, source noted there)
plus the redis-streams scaler's metadata names, and every cross-reference between them."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from imgstream.cli import build_parser, main
from imgstream.config import Settings
from imgstream.keys import Keys

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.33"
KEDA_SCHEMA = Path(__file__).parent / "schemas" / "keda-scaledobject-v1alpha1.json"
DEPLOYMENT_DOC = ROOT / "docs" / "deployment.md"

# The trigger metadata KEDA's Redis streams scalers read (kedacore/keda at the commit named in
# KEDA_SCHEMA: pkg/scalers/redis_streams_scaler.go, redisStreamsMetadata, and the
# connection fields of pkg/scalers/redis_scaler.go, redisConnectionInfo). Names read from the
# environment too may also be given as <name>FromEnv.
STREAMS_METADATA = {
    "pendingEntriesCount", "streamLength", "lagCount", "stream", "consumerGroup",
    "databaseIndex", "activationLagCount", "enableTLS", "unsafeSsl",
}  # fmt: skip
FROM_ENV = {
    "address", "addresses", "username", "password", "sentinelUsername", "sentinelPassword",
    "sentinelMaster", "host", "hosts", "port", "ports",
}  # fmt: skip
COUNTS = ("pendingEntriesCount", "streamLength", "lagCount", "activationLagCount")

# Settings of issue 13 that other branches add; until they land, Settings ignores them.
ISSUE_13_SETTINGS = {
    "IMGSTREAM_REDIS_CLUSTER", "IMGSTREAM_PARTITIONS", "IMGSTREAM_STORAGE", "IMGSTREAM_S3_BUCKET",
    "IMGSTREAM_S3_ENDPOINT_URL", "IMGSTREAM_S3_PREFIX", "IMGSTREAM_S3_PRESIGN",
    "IMGSTREAM_REDIS_WAIT_REPLICAS", "IMGSTREAM_STREAM_PER_OPERATION",
}  # fmt: skip


def manifests() -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            documents.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return documents


def one(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} manifests"
    return found[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def config() -> dict[str, str]:
    data: dict[str, str] = one("ConfigMap", "imgstream")["data"]
    return data


def test_every_core_manifest_validates_strictly_against_the_kubernetes_schemas() -> None:
    kinds = set()
    for document in manifests():
        if document["apiVersion"].startswith("keda.sh/"):
            continue
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        kinds.add(document["kind"])
    assert kinds == {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler"}
    broken = copy.deepcopy(one("Deployment", "imgstream-api"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def unknown_fields(document: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields the CRD schema does not declare (Kubernetes would drop them without a word)."""
    if isinstance(document, list):
        items = schema.get("items", {})
        return [f for i, d in enumerate(document) for f in unknown_fields(d, items, f"{path}[{i}]")]
    if not isinstance(document, dict) or schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    properties = schema.get("properties")
    extra = schema.get("additionalProperties")
    found = []
    for key, value in document.items():
        if properties is not None and key in properties:
            found += unknown_fields(value, properties[key], f"{path}.{key}")
        elif isinstance(extra, dict):
            found += unknown_fields(value, extra, f"{path}.{key}")
        elif properties is not None:
            found.append(f"{path}.{key}")
    return found


def keda_errors(document: dict[str, Any]) -> list[str]:
    schema = json.loads(KEDA_SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]
    return errors + [f"unknown field {f}" for f in unknown_fields(document, schema)]


def test_the_scaled_object_matches_kedas_schema_and_its_scalers_fields() -> None:
    scaled = one("ScaledObject", "imgstream-worker")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert keda_errors(scaled) == []
    typo = copy.deepcopy(scaled)
    typo["spec"]["minReplicas"] = 0
    assert keda_errors(typo) == ["unknown field .spec.minReplicas"]
    for trigger in scaled["spec"]["triggers"]:
        assert trigger["type"] in ("redis-streams", "redis-cluster-streams")
        for key, value in trigger["metadata"].items():
            assert (
                key in STREAMS_METADATA
                or key in FROM_ENV
                or (key.endswith("FromEnv") and key.removesuffix("FromEnv") in FROM_ENV)
            ), f"KEDA's redis streams scaler reads no {key!r}"
            if key in COUNTS:
                assert value.isdigit(), f"{key} must be a whole number, not {value!r}"


def test_workers_scale_to_zero_on_lag_per_stream_and_keep_one_while_jobs_are_in_hand() -> None:
    scaled = one("ScaledObject", "imgstream-worker")
    worker = one("Deployment", "imgstream-worker")
    assert scaled["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    assert scaled["spec"]["minReplicaCount"] == 0
    settings = config()
    cluster = settings["IMGSTREAM_REDIS_CLUSTER"] == "true"
    group = settings["IMGSTREAM_GROUP"]
    # A pair of triggers per stream the workers read: each partition's, each lane's.
    keys = Keys(settings["IMGSTREAM_KEY_PREFIX"])
    lanes = settings_of_config().served_lanes
    parts = range(int(settings["IMGSTREAM_PARTITIONS"]))
    streams = {keys.partition(part).lane(lane) for part in parts for lane in lanes}
    assert len(streams) > 1  # the shipped manifests show partitions
    lag, pending = {}, {}
    for trigger in scaled["spec"]["triggers"]:
        metadata = trigger["metadata"]
        assert trigger["type"] == ("redis-cluster-streams" if cluster else "redis-streams")
        assert metadata["consumerGroup"] == group
        assert ("addresses" if cluster else "address") in metadata
        if "lagCount" in metadata:
            assert "activationLagCount" in metadata  # what wakes the first worker from zero
            lag[metadata["stream"]] = trigger
        else:
            assert "pendingEntriesCount" in metadata
            pending[metadata["stream"]] = trigger
    assert set(lag) == streams and set(pending) == streams
    secret_keys = set(re.findall(r"--from-literal=(\w+)=", DEPLOYMENT_DOC.read_text()))
    assert "REDIS_URL" in secret_keys  # the documented Secret, as the pods read it
    assert {"secretRef": {"name": "imgstream"}} in container(worker)["envFrom"]
    for trigger in scaled["spec"]["triggers"]:
        for key, variable in trigger["metadata"].items():
            if key.endswith("FromEnv"):  # KEDA reads it from the worker container's env
                assert variable in secret_keys | set(settings), variable


def settings_of_config() -> Settings:
    """The ConfigMap's imgstream settings, as a pod reads them."""
    ours = {k: v for k, v in config().items() if k.startswith("IMGSTREAM_")}
    return Settings(**{k.removeprefix("IMGSTREAM_").lower(): v for k, v in ours.items()})


def test_the_triggers_are_what_imgstream_keda_triggers_prints(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in config().items():
        monkeypatch.setenv(name, value)
    assert main(["keda-triggers", "--addresses", "redis-cluster:6379"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["triggers"] == one("ScaledObject", "imgstream-worker")["spec"]["triggers"]


def test_the_parts_refer_to_each_other_and_to_real_settings() -> None:
    api, worker = one("Deployment", "imgstream-api"), one("Deployment", "imgstream-worker")
    service, hpa = one("Service", "imgstream-api"), one("HorizontalPodAutoscaler", "imgstream-api")
    pod_labels = api["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert (
        not service["spec"]["selector"].items()
        <= worker["spec"]["template"]["metadata"]["labels"].items()
    )
    port_names = {p["name"] for p in container(api)["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    assert hpa["spec"]["scaleTargetRef"]["name"] == api["metadata"]["name"]
    assert container(api)["resources"]["requests"]["cpu"]  # the HPA's utilisation needs it
    for deployment in (api, worker):
        sources = container(deployment)["envFrom"]
        assert {"configMapRef": {"name": "imgstream"}} in sources
    ours = {k: v for k, v in config().items() if k.startswith("IMGSTREAM_")}
    known = {f"IMGSTREAM_{name.upper()}" for name in Settings.model_fields}
    assert set(ours) - known <= ISSUE_13_SETTINGS, set(ours) - known - ISSUE_13_SETTINGS
    Settings(**{k.removeprefix("IMGSTREAM_").lower(): v for k, v in ours.items() if k in known})


def test_api_readiness_does_not_wait_for_a_worker_and_the_worker_has_its_own_check() -> None:
    api, worker = one("Deployment", "imgstream-api"), one("Deployment", "imgstream-worker")
    assert container(api)["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container(api)["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert config()["IMGSTREAM_READY_WORKER_AGE"] == "0"  # workers may be scaled to zero
    check = container(worker)["livenessProbe"]["exec"]["command"]
    assert check[0] == "imgstream"
    assert build_parser().parse_args(check[1:]).command == "health"
    assert build_parser().parse_args(container(worker)["command"][1:]).command == "worker"
    grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > Settings().shutdown_grace  # the job in hand finishes before SIGKILL


def test_the_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not on PATH: the kustomization was read, not built")
    built = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert len([d for d in yaml.safe_load_all(built) if d]) == len(manifests())
