"""A runtime vllm Deployment reconciled on the real API server: the export Job runs in the
workload image on CPU and writes `<step folder>/hf` with its marker, a second Deployment of the
same checkpoint reuses it, and the vLLM apps/v1 Deployment is made as specified. Its pods fetch
the export (the init container, in the workload image) and then cannot start vLLM: there is no
vLLM image (nor a real GPU) here, and status says so naming the pod. vLLM itself runs where a
GPU is lent (the report of the branch says where)."""

from __future__ import annotations

import pytest

from capstan_operator.deployment import export, reconcile
from capstan_trainer import storage
from tests.integration.test_reconcile_deployment import deployment_yaml, status
from tests.support.operator_env import driver, op_cfg, operator_cluster

pytestmark = pytest.mark.cluster
__all__ = ["driver", "op_cfg", "operator_cluster"]  # fixtures


def vllm_yaml(name: str, uri: str) -> str:
    return deployment_yaml(name, uri, runtime="vllm", resources={"cpu": "500m", "memory": "1Gi", "gpus": 1})


def jobs(cluster, namespace: str) -> list[str]:
    return sorted(j["metadata"]["name"] for j in cluster.list("jobs", namespace))


def test_vllm_exports_once_per_checkpoint_then_makes_the_vllm_deployment(
    operator_cluster, namespace, driver, tiny, s3_bucket
):
    cluster = operator_cluster
    # A copy of the tiny checkpoint of this test's own: its export is made here, not found.
    step = f"{s3_bucket}/ckpt/step-00000100"
    fs, _ = storage.filesystem(step)
    fs.copy(tiny.checkpoint_uri.removeprefix("s3://"), step.removeprefix("s3://"), recursive=True)
    fs.invalidate_cache()
    marker = export.marker_uri(step)
    assert not storage.exists(marker)

    cluster.apply(vllm_yaml("chat", step), namespace)
    driver.add("deployments", "chat", reconcile.reconcile)
    job = export.job_name(step)
    driver.run_until("the export Job", lambda: job in jobs(cluster, namespace), 30)
    st = status(driver, "chat")
    assert st["phase"] == "Waiting" and f"Job {job} exporting {step}" in st["message"]

    # The marker appears (the export's last write), and only then is the vLLM revision made.
    driver.run_until("revision 1 of chat", lambda: status(driver, "chat").get("revision") == 1, 300)
    assert storage.exists(marker)
    cluster.wait_for(
        "the export Job to succeed", lambda: cluster.get("job", job, namespace)["status"].get("succeeded"), 60
    )
    dep = cluster.get("deployment", "chat-r1", namespace)
    pod = dep["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    assert server["image"] == driver.cfg.vllm_image
    assert server["command"][:3] == ["vllm", "serve", "/models/served"]
    assert server["command"][server["command"].index("--served-model-name") + 1] == "tiny"
    assert {"path": "/health", "port": "http"}.items() <= server["readinessProbe"]["httpGet"].items()
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "1"  # a quantity, as stored
    (fetch,) = pod["initContainers"]
    assert fetch["command"][3:5] == ["--uri", f"{step}/hf"]
    assert dep["metadata"]["annotations"]["capstan.dev/served-uri"] == f"{step}/hf"

    # A second Deployment of the same checkpoint serves the same export: no second Job.
    cluster.apply(vllm_yaml("chat-b", step), namespace)
    driver.add("deployments", "chat-b", reconcile.reconcile)
    driver.run_until("revision 1 of chat-b", lambda: status(driver, "chat-b").get("revision") == 1, 60)
    assert jobs(cluster, namespace) == [job]
    exporting = [e[0] for e in driver.events if e[2] == "Exporting"]
    assert exporting == ["chat"], driver.events

    # The pod fetches the export, then vLLM cannot start here: status waits, naming the pod.
    def named_pod() -> str:
        pods = cluster.list("pods", namespace, "capstan.dev/owner=chat,capstan.dev/revision=1")
        msg = status(driver, "chat").get("message", "")
        return next((p["metadata"]["name"] for p in pods if p["metadata"]["name"] in msg), "")

    name = driver.run_until("status to name chat's pod", named_pod, 180)
    st = status(driver, "chat")
    assert st["phase"] in ("Progressing", "Degraded") and st["readyReplicas"] == 0, st
    assert st["message"].startswith("revision 1: 0/1 Ready; "), st["message"]

    def fetched():
        p = cluster.get("pod", name, namespace) or {}
        inits = (p.get("status") or {}).get("initContainerStatuses") or [{}]
        return ((inits[0].get("state") or {}).get("terminated") or {}).get("exitCode") == 0

    driver.run_until("the init container to fetch the export", fetched, 180)
    driver.run_until(
        "status to say why vLLM's container cannot start",
        lambda: "cannot start" in status(driver, "chat").get("message", ""),
        120,
    )
    msg = status(driver, "chat")["message"]
    assert name in msg and driver.cfg.vllm_image in msg, msg
