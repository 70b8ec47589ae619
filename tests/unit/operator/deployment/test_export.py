"""The export a vLLM Deployment serves: its place per checkpoint and the Job that writes it."""

from __future__ import annotations

from capstan_api.deployment import DeploymentSpec
from capstan_operator.config import OperatorConfig
from capstan_operator.deployment import export
from tests.unit.operator.resources import deployment

CFG = OperatorConfig(workload_image="registry.example/capstan:1", s3_endpoint="http://minio:9000")
STEP = "s3://bucket/runs/tiny/checkpoints/step-00000100"


def job(name: str = "chat", uri: str = STEP) -> dict:
    body = deployment(
        name, runtime="vllm", model={"uri": uri}, resources={"gpus": 1, "cpu": "2", "memory": "8Gi"}
    )
    return export.job(body, DeploymentSpec.model_validate(body["spec"]), CFG, uri)


def test_the_export_of_a_step_folder_lives_inside_it_and_a_given_export_is_served_as_is():
    assert export.served_uri(STEP) == f"{STEP}/hf"
    assert export.served_uri(STEP + "/") == f"{STEP}/hf"
    assert export.marker_uri(STEP) == f"{STEP}/hf/EXPORTED"
    assert export.served_uri("s3://bucket/exports/tiny") == "s3://bucket/exports/tiny"


def test_one_job_name_per_checkpoint_whichever_deployment_asks():
    a, b = job("chat"), job("other-chat")
    assert a["metadata"]["name"] == b["metadata"]["name"] == export.job_name(STEP)
    assert export.job_name(STEP) == export.job_name(STEP + "/")
    assert export.job_name(STEP) != export.job_name(STEP.replace("00000100", "00000200"))
    assert len(export.job_name(STEP)) <= 52  # room for the pod suffix
    assert a["metadata"]["ownerReferences"][0]["name"] == "chat"
    assert a["metadata"]["annotations"] == {"capstan.dev/checkpoint": STEP}


def test_the_job_exports_on_cpu_in_the_workload_image():
    j = job()
    assert j["spec"]["backoffLimit"] == 1
    pod = j["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == "registry.example/capstan:1"
    assert c["command"] == [
        "python", "-m", "capstan_trainer.export", "--checkpoint", STEP, "--out", f"{STEP}/hf",
    ]  # fmt: skip
    # The serving pods' CPU and memory, but no GPU and none of the GPU nodes' tolerations.
    assert c["resources"] == {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "8Gi"}}
    assert "tolerations" not in pod
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"
    # No ConfigMap: the Job takes its arguments on the command line.
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]
    assert pod["restartPolicy"] == "Never" and pod["securityContext"]["runAsNonRoot"] is True


def test_a_uri_that_is_no_step_folder_must_be_an_export():
    assert export.given_export("s3://bucket/exports/tiny", {"architectures": ["LlamaForCausalLM"]}).ready
    root = export.given_export("s3://bucket/runs/tiny/checkpoints", None)
    assert not root.ready and "s3://bucket/runs/tiny/checkpoints is neither" in root.failure
    assert "name its step folder" in root.failure
