"""TrainingRun children: plain dict assertions on the ConfigMap, Service, Job and PodGroup."""

from __future__ import annotations

import yaml

from capstan_api import files
from capstan_api.trainingrun import TrainingRunSpec
from capstan_operator.config import OperatorConfig
from capstan_operator.trainingrun import build as build_trainingrun
from tests.unit.operator.resources import trainingrun

CFG = OperatorConfig(workload_image="img:1", s3_endpoint="http://s3:9000", s3_secret="creds")


def build(body):
    children = build_trainingrun.build(body, TrainingRunSpec.model_validate(body["spec"]), CFG)
    return {c["kind"]: c for c in children}, [c["kind"] for c in children]


def test_children_in_creation_order():
    _, kinds = build(trainingrun("llm"))
    assert kinds == ["ConfigMap", "Service", "Job"]
    _, kinds = build(trainingrun("llm", scheduling={"scheduler": "volcano", "queueName": "q"}))
    assert kinds == ["ConfigMap", "Service", "PodGroup", "Job"]


def test_configmap_is_the_resolved_resource():
    kids, _ = build(trainingrun("llm"))
    cm = kids["ConfigMap"]
    assert cm["metadata"]["name"] == "llm-train"
    doc = yaml.safe_load(cm["data"]["resource.yaml"])
    assert (doc["kind"], doc["metadata"]["name"]) == ("TrainingRun", "llm")
    assert doc["spec"]["datasets"] == [{"datasetRef": "", "uri": "s3://bucket/data", "weight": 1.0}]
    assert doc["spec"]["checkpoint"]["uri"] == "s3://bucket/ckpt"
    TrainingRunSpec.model_validate(doc["spec"])
    assert "annotations" not in doc["metadata"]  # no plan estimate (a CPU run)


def test_the_plans_gpu_hours_reach_the_trainer_through_the_resource():
    body = trainingrun("llm")
    kids = build_trainingrun.build(body, TrainingRunSpec.model_validate(body["spec"]), CFG, 12.5)
    doc = yaml.safe_load(kids[0]["data"]["resource.yaml"])
    assert doc["metadata"]["annotations"] == {files.PLANNED_GPU_HOURS_ANNOTATION: "12.5"}
    assert files.planned_gpu_hours(doc["metadata"]) == 12.5


def test_headless_service_publishes_unready_pods():
    kids, _ = build(trainingrun("llm"))
    svc = kids["Service"]
    assert svc["metadata"]["name"] == "llm-train"
    assert svc["spec"] == {
        "clusterIP": "None",
        "publishNotReadyAddresses": True,
        "selector": {
            "app.kubernetes.io/name": "capstan",
            "app.kubernetes.io/instance": "llm",
            "app.kubernetes.io/component": "trainer",
            "app.kubernetes.io/managed-by": "capstan-operator",
            "app.kubernetes.io/part-of": "capstan",
            "capstan.dev/kind": "trainingrun",
            "capstan.dev/owner": "llm",
        },
        "ports": [{"name": "c10d", "port": 29400, "targetPort": 29400}],
    }
    assert svc["spec"]["selector"] == kids["Job"]["spec"]["template"]["metadata"]["labels"]


def test_indexed_job_one_pod_per_node_running_torchrun():
    kids, _ = build(trainingrun("llm", resources={"minNodes": 2, "maxNodes": 2, "nprocPerNode": 2}))
    job = kids["Job"]
    assert job["metadata"]["name"] == "llm-train"
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 2, 2)
    assert spec["backoffLimit"] == 0
    invalid, stopped, disrupted = spec["podFailurePolicy"]["rules"]
    assert invalid == {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [3]}}
    # exit 4 (stopped after checkpointing) and an eviction fail the Job, saying so (not counted)
    assert stopped == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [4]},
    }
    assert disrupted == {
        "action": "FailJob",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    }
    assert spec["suspend"] is False
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == "llm-train"
    assert pod["restartPolicy"] == "Never"
    (c,) = pod["containers"]
    assert c["command"] == [
        "python", "-m", "capstan_trainer.train.launch",
        "--nnodes=2:2", "--nproc-per-node=2", "--rdzv-backend=c10d",
        "--rdzv-endpoint=llm-train-0.llm-train.team-a.svc:29400", "--rdzv-id=llm-train", "--max-restarts=0",
        "-m", "capstan_trainer.train", "-f", "/etc/capstan/resource.yaml",
    ]  # fmt: skip
    assert c["image"] == "img:1"
    assert c["ports"] == [
        {"containerPort": 29400, "name": "c10d"},
        {"containerPort": 9400, "name": "metrics"},
    ]
    env = {e["name"]: e for e in c["env"]}
    # Prometheus discovers the pods by annotation; rank 0 serves /metrics on the pod IP.
    assert spec["template"]["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9400",
        "prometheus.io/path": "/metrics",
    }
    assert env["CAPSTAN_TRAIN_METRICS_PORT"]["value"] == "9400"
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["CAPSTAN_NODE_RANK"]["value"] == "$(JOB_COMPLETION_INDEX)"
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://s3:9000"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "creds"
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}} in pod["volumes"]
    assert {"mountPath": "/dev/shm", "name": "dshm"} in c["volumeMounts"]
    assert {"name": "capstan-resource", "configMap": {"name": "llm-train"}} in pod["volumes"]
    (init,) = pod["initContainers"]
    assert init["command"] == [
        "python", "-m", "capstan_trainer.train", "--validate-only", "-f", "/etc/capstan/resource.yaml",
    ]  # fmt: skip
    assert "nodeSelector" not in pod and "tolerations" not in pod and "schedulerName" not in pod
    assert "resources" not in c or not c["resources"].get("requests")


def test_gpus_requests_and_placement():
    kids, _ = build(
        trainingrun(
            "llm",
            resources={
                "gpusPerNode": 8,
                "requests": {"cpu": "16", "memory": "64Gi"},
                "nodeSelector": {"gpu": "h100"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "priorityClassName": "training",
            },
            failurePolicy={"maxRestarts": 5},
        )
    )
    pod = kids["Job"]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["resources"] == {
        "limits": {"nvidia.com/gpu": "8"},
        "requests": {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": "8"},
    }
    assert pod["nodeSelector"] == {"gpu": "h100"}
    assert pod["tolerations"] == [{"operator": "Exists", "key": "nvidia.com/gpu", "effect": "NoSchedule"}]
    assert pod["priorityClassName"] == "training"
    # one budget: a crashed worker fails the pod and the operator's gang restart counts it
    assert "--max-restarts=0" in c["command"]


def test_kueue_job_is_suspended_with_the_queue_label():
    kids, _ = build(trainingrun("llm", scheduling={"scheduler": "kueue", "queueName": "team-q"}))
    job = kids["Job"]
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-q"


def test_volcano_podgroup_and_scheduler_name():
    kids, _ = build(trainingrun("llm", scheduling={"scheduler": "volcano", "queueName": "research"}))
    pg = kids["PodGroup"]
    assert pg["apiVersion"] == "scheduling.volcano.sh/v1beta1"
    assert pg["metadata"]["name"] == "llm-train"
    assert pg["spec"] == {"minMember": 2, "queue": "research"}
    tmpl = kids["Job"]["spec"]["template"]
    assert tmpl["spec"]["schedulerName"] == "volcano"
    assert tmpl["metadata"]["annotations"]["scheduling.k8s.io/group-name"] == "llm-train"


def test_an_elastic_job_has_lost_pods_replaced_instead_of_failing():
    kids, _ = build(
        trainingrun(
            "llm",
            resources={"minNodes": 1, "maxNodes": 2, "nprocPerNode": 2},
            failurePolicy={"maxRestarts": 5},
            scheduling={"scheduler": "volcano"},
        )
    )
    spec = kids["Job"]["spec"]
    assert (spec["completions"], spec["parallelism"], spec["backoffLimit"]) == (2, 2, 5)
    invalid, stopped, disrupted = spec["podFailurePolicy"]["rules"]
    assert invalid["action"] == "FailJob" and invalid["onExitCodes"]["values"] == [3]
    # a pod that checkpointed on SIGTERM (deleted, preempted) is replaced without counting
    assert stopped == {
        "action": "Ignore",
        "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [4]},
    }
    assert disrupted == {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    }
    assert "--nnodes=1:2" in spec["template"]["spec"]["containers"][0]["command"]
    assert kids["PodGroup"]["spec"]["minMember"] == 1  # Volcano places the minimum together


def _pod(kids):
    return kids["Job"]["spec"]["template"]["spec"]


def test_gpu_pods_get_extended_resources_as_limits_a_gpu_toleration_and_a_sized_shm():
    kids, _ = build(
        trainingrun(
            "llm",
            resources={
                "gpusPerNode": 8,
                "requests": {"cpu": "90", "memory": "1000Gi", "vpc.amazonaws.com/efa": "32"},
                "limits": {"memory": "1100Gi", "hugepages-2Mi": "5Gi"},
                "shmSize": "64Gi",
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}},
            },
        )
    )
    pod = _pod(kids)
    assert pod["containers"][0]["resources"] == {
        "requests": {"cpu": "90", "memory": "1000Gi", "vpc.amazonaws.com/efa": "32", "nvidia.com/gpu": "8"},
        "limits": {
            "vpc.amazonaws.com/efa": "32",
            "nvidia.com/gpu": "8",
            "memory": "1100Gi",
            "hugepages-2Mi": "5Gi",
        },
    }
    # GPU pools are tainted: a pod with GPUs tolerates that without being told
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["affinity"] == {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}}
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Gi"}} in pod["volumes"]
    # a CPU pod gets no GPU toleration
    assert "tolerations" not in _pod(build(trainingrun("cpu"))[0])


def test_image_env_host_network_and_service_account():
    body = trainingrun(
        "llm",
        image="registry.example/trainer:cu124",
        env={"NCCL_DEBUG": "INFO", "FI_PROVIDER": "efa"},
        hostNetwork=True,
        serviceAccountName="trainer",
        storage={"secretName": "team-s3"},
    )
    pod = _pod(build(body)[0])
    init, c = pod["initContainers"][0], pod["containers"][0]
    assert init["image"] == c["image"] == "registry.example/trainer:cu124"
    names = [e["name"] for e in c["env"]]
    assert names[:2] == ["FI_PROVIDER", "NCCL_DEBUG"] and "CAPSTAN_NODE_RANK" in names
    assert (pod["hostNetwork"], pod["dnsPolicy"]) == (True, "ClusterFirstWithHostNet")
    assert pod["serviceAccountName"] == "trainer"
    env = {e["name"]: e for e in c["env"]}
    # the resource's own Secret must exist: its keys are required (the token and region are not)
    ref = env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "team-s3", "key": "AWS_SECRET_ACCESS_KEY", "optional": False}
    assert env["AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    plain = _pod(build(trainingrun("plain"))[0])
    assert "hostNetwork" not in plain and "serviceAccountName" not in plain


def test_the_grace_period_is_time_to_write_the_checkpoint():
    pod = _pod(build(trainingrun("llm", model={"preset": "8b"}, resources={"minNodes": 1, "maxNodes": 1}))[0])
    # 8e9 parameters x 12 bytes at 200 MB/s on one node: 480 s, plus 60
    assert pod["terminationGracePeriodSeconds"] == 540
    pod = _pod(build(trainingrun("llm", model={"preset": "8b"}, resources={"minNodes": 4, "maxNodes": 4}))[0])
    assert pod["terminationGracePeriodSeconds"] == 180
    assert _pod(build(trainingrun("t", model={"preset": "test"}))[0])["terminationGracePeriodSeconds"] == 61
    pod = _pod(build(trainingrun("llm", terminationGracePeriodSeconds=900))[0])
    assert pod["terminationGracePeriodSeconds"] == 900


def test_an_elastic_jobs_backoff_limit_is_what_is_left_of_the_budget():
    body = trainingrun("llm", resources={"minNodes": 1, "maxNodes": 2}, failurePolicy={"maxRestarts": 5})
    body["status"] = {"restarts": 2}
    assert build(body)[0]["Job"]["spec"]["backoffLimit"] == 3
    body["status"] = {"restarts": 7}
    assert build(body)[0]["Job"]["spec"]["backoffLimit"] == 0


def test_env_names_the_operator_sets_are_refused():
    import pytest

    with pytest.raises(ValueError, match="AWS_SECRET_ACCESS_KEY"):
        TrainingRunSpec.model_validate({**trainingrun("x")["spec"], "env": {"AWS_SECRET_ACCESS_KEY": "x"}})


def test_env_values_from_a_secret_a_config_map_or_the_pod():
    body = trainingrun(
        "llm",
        env={"NCCL_DEBUG": "INFO"},
        envValueFrom={
            "HF_TOKEN": {"secretKeyRef": {"name": "hf", "key": "token"}},
            "WANDB_PROJECT": {"configMapKeyRef": {"name": "team", "key": "project", "optional": True}},
            "NODE": {"fieldRef": {"fieldPath": "spec.nodeName"}},
        },
    )
    env = {e["name"]: e for e in _pod(build(body)[0])["containers"][0]["env"]}
    assert env["HF_TOKEN"] == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token", "optional": False}},
    }
    assert env["WANDB_PROJECT"]["valueFrom"]["configMapKeyRef"]["optional"] is True
    assert env["NODE"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["NCCL_DEBUG"] == {"name": "NCCL_DEBUG", "value": "INFO"}


def test_env_value_sources_are_checked():
    import pytest

    spec = trainingrun("x")["spec"]
    with pytest.raises(ValueError, match="exactly one of secretKeyRef, configMapKeyRef, fieldRef"):
        TrainingRunSpec.model_validate({**spec, "envValueFrom": {"A": {}}})
    with pytest.raises(ValueError, match="env and envValueFrom both set A"):
        TrainingRunSpec.model_validate(
            {**spec, "env": {"A": "1"}, "envValueFrom": {"A": {"fieldRef": {"fieldPath": "spec.nodeName"}}}}
        )
    with pytest.raises(ValueError, match="envValueFrom names .* AWS_ROLE_ARN"):
        TrainingRunSpec.model_validate(
            {**spec, "envValueFrom": {"AWS_ROLE_ARN": {"secretKeyRef": {"name": "s", "key": "k"}}}}
        )


def test_a_kueue_gang_stopped_after_checkpointing_does_not_fail_its_job():
    """Kueue preempts by suspending the Job; its trainers exit 4 after checkpointing. That must
    leave the Job for Kueue to resume, not fail it (the native gang's Job fails, and the operator
    recreates it)."""
    kueue = build(trainingrun("llm", scheduling={"scheduler": "kueue", "queueName": "team-q"}))[0]["Job"]
    native = build(trainingrun("llm"))[0]["Job"]

    def on_exit_4(job):
        rules = job["spec"]["podFailurePolicy"]["rules"]
        return [r["action"] for r in rules if 4 in (r.get("onExitCodes") or {}).get("values", [])]

    assert on_exit_4(kueue) == ["Ignore"] and on_exit_4(native) == ["FailJob"]
