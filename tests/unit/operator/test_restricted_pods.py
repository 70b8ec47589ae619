"""Every workload pod the operator writes meets the Pod Security Standard "restricted" (the
checks the API server's PodSecurity admission makes), and the only writable path is a volume."""

from __future__ import annotations

import pytest

from capstan_api.dataset import DatasetSpec
from capstan_api.deployment import DeploymentSpec
from capstan_api.evaluation import EvaluationSpec
from capstan_api.preparation import plan
from capstan_api.trainingrun import TrainingRunSpec
from capstan_operator.config import OperatorConfig
from capstan_operator.dataset import build as dataset_build
from capstan_operator.deployment import build as deployment_build
from capstan_operator.evaluation import build as evaluation_build
from capstan_operator.trainingrun import build as trainingrun_build
from tests.unit.operator.resources import dataset, deployment, evaluation, trainingrun

ALLOWED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def pods(cfg: OperatorConfig) -> dict[str, dict]:
    ds, tr, dp = dataset("d"), trainingrun("t"), deployment("s")
    ds_spec = DatasetSpec.model_validate(ds["spec"])
    # A resolved Evaluation: a model URI, no dataset reference left to look up.
    ev = evaluation("e", model={"uri": "s3://m/ckpt"}, datasetRef=None, outputUri="s3://m/eval")
    return {
        "Dataset": dataset_build.build_stage_job(ds, ds_spec, cfg, plan(ds_spec)[0])["spec"]["template"][
            "spec"
        ],
        "Evaluation": evaluation_build.build(ev, EvaluationSpec.model_validate(ev["spec"]), cfg)[1]["spec"][
            "template"
        ]["spec"],
        "TrainingRun": trainingrun_build.pod_spec(tr, TrainingRunSpec.model_validate(tr["spec"]), cfg),
        "Deployment": deployment_build.deployment(
            dp, DeploymentSpec.model_validate(dp["spec"]), cfg, 1, "s3://m/ckpt", 1
        )["spec"]["template"]["spec"],
    }


def violations(pod: dict) -> list[str]:
    """The restricted profile's rules (Kubernetes' pod-security-admission, v1.37), as they apply."""
    out = []
    psc = pod.get("securityContext") or {}
    if (psc.get("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
        out.append("pod seccompProfile")
    for name in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(name):
            out.append(name)
    for v in pod.get("volumes") or []:
        if not ALLOWED_VOLUMES & set(v):
            out.append(f"volume {v['name']} type")
    for c in (pod.get("initContainers") or []) + pod["containers"]:
        sc = c.get("securityContext") or {}
        non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        uid = sc.get("runAsUser", psc.get("runAsUser"))
        if non_root is not True or uid == 0:
            out.append(f"{c['name']} runAsNonRoot/runAsUser")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{c['name']} allowPrivilegeEscalation")
        if "ALL" not in (sc.get("capabilities") or {}).get("drop", []) or (sc.get("capabilities") or {}).get(
            "add"
        ):
            out.append(f"{c['name']} capabilities")
        if sc.get("privileged"):
            out.append(f"{c['name']} privileged")
        if not sc.get("readOnlyRootFilesystem"):
            out.append(f"{c['name']} readOnlyRootFilesystem")  # not in the standard: our own rule
        if not any(m["mountPath"] == "/tmp" for m in c.get("volumeMounts") or []):
            out.append(f"{c['name']} has no writable /tmp")
    return out


@pytest.mark.parametrize("kind", ["Dataset", "Evaluation", "TrainingRun", "Deployment"])
def test_every_workload_pod_meets_restricted(kind):
    pod = pods(OperatorConfig())[kind]
    assert violations(pod) == []
    assert pod["securityContext"]["runAsUser"] == 65532


def test_root_workloads_break_restricted_so_admission_refuses_them():
    for kind, pod in pods(OperatorConfig(run_as_user=0)).items():
        assert any("runAsNonRoot" in v for v in violations(pod)), kind
