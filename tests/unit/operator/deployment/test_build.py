"""Deployment children: per-revision apps/v1 Deployments, the Service across revisions, the HPA."""

from __future__ import annotations

from capstan_api.deployment import DeploymentSpec
from capstan_operator.config import OperatorConfig
from capstan_operator.deployment import build as bd
from tests.unit.operator.resources import deployment

CFG = OperatorConfig(workload_image="registry.example/capstan:1", s3_endpoint="http://minio:9000")


def build(body, revision=3, uri="s3://bucket/export", replicas=2):
    return bd.deployment(body, DeploymentSpec.model_validate(body["spec"]), CFG, revision, uri, replicas)


def test_one_deployment_per_revision_serving_its_model():
    body = deployment(
        "chat", model={"uri": "s3://bucket/export", "name": "tiny-chat"}, server={"maxBatchSize": 8}
    )
    d = build(body)
    assert d["metadata"]["name"] == "chat-r3"
    assert d["metadata"]["labels"]["capstan.dev/revision"] == "3"
    assert d["metadata"]["annotations"] == {"capstan.dev/model-uri": "s3://bucket/export"}
    assert d["metadata"]["ownerReferences"][0]["name"] == "chat"
    assert d["spec"]["replicas"] == 2
    labels = d["spec"]["template"]["metadata"]["labels"]
    assert d["spec"]["selector"]["matchLabels"] == labels
    assert labels["capstan.dev/revision"] == "3" and labels["capstan.dev/owner"] == "chat"
    c = d["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == [
        "python", "-m", "capstan_trainer.serve", "--model", "s3://bucket/export",
        "--served-model-name", "tiny-chat", "--port", "8000", "--max-batch-size", "8",
        "--max-queue", "64", "--max-model-len", "0", "--max-prompts-per-request", "16",
        "--request-timeout-seconds", "600",
    ]  # fmt: skip
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio:9000"
    assert c["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]


def test_api_key_comes_from_the_secret_into_the_runtimes_variable():
    assert "CAPSTAN_API_KEY" not in {e["name"] for e in _container(deployment("chat"))["env"]}
    secret = {"apiKeySecret": {"name": "chat-key"}}
    for runtime, var, extra in (("builtin", "CAPSTAN_API_KEY", {}), ("vllm", "VLLM_API_KEY", {"gpus": 1})):
        body = deployment("chat", runtime=runtime, server=secret, resources=extra)
        env = {e["name"]: e for e in _container(body)["env"]}
        assert env[var]["valueFrom"] == {"secretKeyRef": {"name": "chat-key", "key": "api-key"}}


def _container(body) -> dict:
    return build(body)["spec"]["template"]["spec"]["containers"][0]


def test_probes_readiness_on_readyz_liveness_on_healthz_and_room_to_load():
    c = build(deployment("chat"))["spec"]["template"]["spec"]["containers"][0]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    startup = c["startupProbe"]
    assert startup["httpGet"]["path"] == "/healthz"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600


STEP = "s3://bucket/runs/tiny/checkpoints/step-00000100"


def vllm_body(**spec):
    resources = {"gpus": 1, "memory": "24Gi", **spec.pop("resources", {})}
    model = {"uri": STEP, "name": "tiny-chat", **spec.pop("model", {})}
    return deployment("chat", runtime="vllm", model=model, resources=resources, **spec)


def test_vllm_pod_serves_the_checkpoints_export_copied_to_a_local_volume():
    d = build(vllm_body(server={"maxBatchSize": 8}), uri=STEP)
    pod = d["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == "vllm/vllm-openai:v0.11.0"  # OperatorConfig's pinned default
    assert c["command"] == [
        "vllm", "serve", "/models/served", "--served-model-name", "tiny-chat",
        "--host", "0.0.0.0", "--port", "8000", "--max-num-seqs", "8", "--dtype", "bfloat16",
    ]  # fmt: skip
    # The export is fetched by the workload image (storage credentials stay out of vLLM's container).
    (init,) = pod["initContainers"]
    assert init["image"] == "registry.example/capstan:1"
    assert init["command"] == [
        "python", "-m", "capstan_trainer.fetch", "--uri", f"{STEP}/hf", "--out", "/models/served",
    ]  # fmt: skip
    init_env = {e["name"]: e.get("value") for e in init["env"]}
    assert init_env["AWS_ENDPOINT_URL"] == "http://minio:9000"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert "AWS_ENDPOINT_URL" not in env and "POD_IP" not in env
    assert env["HOME"] == "/tmp" and env["HF_HUB_OFFLINE"] == "1"
    model_mount = {"name": "model", "mountPath": "/models/served"}
    assert model_mount in init["volumeMounts"] and model_mount in c["volumeMounts"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["model"] == {"name": "model", "emptyDir": {}}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory"}
    # Restricted like every workload pod, the init container included.
    for container in (init, c):
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert d["metadata"]["annotations"] == {
        "capstan.dev/model-uri": STEP,
        "capstan.dev/served-uri": f"{STEP}/hf",
    }


def test_vllm_gpus_limits_placement_and_tensor_parallelism():
    pod = build(vllm_body(resources={"gpus": 2}, server={"maxModelLen": 4096}), uri=STEP)["spec"]["template"]
    spec = pod["spec"]
    c = spec["containers"][0]
    assert c["resources"]["limits"] == {"memory": "24Gi", "nvidia.com/gpu": 2}
    assert c["resources"]["requests"]["nvidia.com/gpu"] == 2
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    cmd = c["command"]
    assert cmd[cmd.index("--tensor-parallel-size") + 1] == "2"
    assert cmd[cmd.index("--max-model-len") + 1] == "4096"
    # A single GPU needs no tensor parallelism, and maxModelLen 0 leaves vLLM the model's length.
    one = build(vllm_body(), uri=STEP)["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--tensor-parallel-size" not in one and "--max-model-len" not in one


def test_vllm_probes_port_and_metrics_match_the_builtin_servers():
    vllm_pod = build(vllm_body(), uri=STEP)["spec"]["template"]
    builtin_pod = build(deployment("chat"))["spec"]["template"]
    c, b = vllm_pod["spec"]["containers"][0], builtin_pod["spec"]["containers"][0]
    assert c["ports"] == b["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}
    # Loading and compiling for a GPU takes longer than the built-in server's start.
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 1200
    scrape = {"prometheus.io/scrape": "true", "prometheus.io/port": "8000", "prometheus.io/path": "/metrics"}
    assert scrape.items() <= vllm_pod["metadata"]["annotations"].items()
    assert scrape.items() <= builtin_pod["metadata"]["annotations"].items()
    assert vllm_pod["metadata"]["annotations"]["capstan.dev/served-uri"] == f"{STEP}/hf"


def test_vllm_serves_a_given_export_as_is_and_spec_image_overrides_vllms():
    export = "s3://bucket/exports/tiny"
    body = vllm_body(model={"uri": export}, image="registry.example/vllm:custom")
    pod = build(body, uri=export)["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.example/vllm:custom"
    assert pod["initContainers"][0]["image"] == "registry.example/capstan:1"
    assert pod["initContainers"][0]["command"][4] == export


def test_vllm_hpa_reads_vllms_running_requests():
    body = vllm_body(autoscaling={"enabled": True})
    h = bd.hpa(body, DeploymentSpec.model_validate(body["spec"]), revision=1)
    assert h["spec"]["metrics"][0]["pods"]["metric"]["name"] == "vllm:num_requests_running"


def test_one_service_across_revisions():
    svc = bd.service(deployment("chat"))
    assert svc["metadata"]["name"] == "chat"
    assert "capstan.dev/revision" not in svc["spec"]["selector"]
    assert svc["spec"]["selector"]["capstan.dev/owner"] == "chat"
    r1 = build(deployment("chat"), revision=1)["spec"]["template"]["metadata"]["labels"]
    r2 = build(deployment("chat"), revision=2)["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= r1.items() and svc["spec"]["selector"].items() <= r2.items()
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]
    assert bd.url("chat", "team-a") == "http://chat.team-a.svc.cluster.local:8000/v1"


def test_hpa_targets_the_stable_revision():
    body = deployment("chat", autoscaling={"enabled": True, "minReplicas": 2, "maxReplicas": 6})
    h = bd.hpa(body, DeploymentSpec.model_validate(body["spec"]), revision=4)
    assert h["apiVersion"] == "autoscaling/v2"
    assert h["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "chat-r4"}
    assert (h["spec"]["minReplicas"], h["spec"]["maxReplicas"]) == (2, 6)
    metric = h["spec"]["metrics"][0]["pods"]
    assert metric["metric"]["name"] == "vllm:num_requests_running"
    assert metric["target"] == {"type": "AverageValue", "averageValue": "8"}


def test_desired_total_follows_the_hpa_within_bounds():
    spec = DeploymentSpec.model_validate(
        deployment("c", autoscaling={"enabled": True, "maxReplicas": 5})["spec"]
    )
    assert bd.desired_total(spec, None) == 1
    assert bd.desired_total(spec, {"spec": {"replicas": 4}}) == 4
    assert bd.desired_total(spec, {"spec": {"replicas": 9}}) == 5
    assert (
        bd.desired_total(DeploymentSpec.model_validate(deployment("c")["spec"]), {"spec": {"replicas": 9}})
        == 2
    )
