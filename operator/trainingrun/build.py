"""Children of a TrainingRun: a ConfigMap with the resolved resource, a headless Service that
gives pod 0 a stable DNS name, and an Indexed Job with one pod per node running torchrun.

The torchrun command is built with torchx (`specs.Role` and its macros) rather than by string
concatenation; the pod around it is built here. Pure functions: no I/O."""

from __future__ import annotations

import copy
import math
from typing import Any

from torchx import specs
from torchx.specs import macros

from capstan_api import exitcodes, files
from capstan_api.network import TRAIN_METRICS_PORT, TRAIN_METRICS_PORT_ENV
from capstan_api.trainingrun import TrainingRunSpec
from capstan_operator import children
from capstan_operator.config import OperatorConfig

COMPONENT = "trainer"
CONTAINER = "trainer"
VALIDATE_CONTAINER = "validate"
RDZV_PORT = 29400
LABEL_KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
ANNOTATION_VOLCANO_GROUP = "scheduling.k8s.io/group-name"
VOLCANO_API = "scheduling.volcano.sh/v1beta1"
SHM_VOLUME = "dshm"
STOPPED_RULE = {
    "action": "FailJob",
    "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": [exitcodes.STOPPED]},
}
"""STOPPED_RULE: a trainer that stopped after checkpointing fails the Job with reason
PodFailurePolicy, so the Job says why even once its pods are gone (the operator then recreates
the gang without counting a restart); with a pod failure policy a deleted pod also counts as
failed only once it has exited, so its exit code is seen."""


IGNORE_STOPPED_RULE = {
    "action": "Ignore",
    "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": [exitcodes.STOPPED]},
}
"""IGNORE_STOPPED_RULE: in an elastic gang a pod that stopped after checkpointing (deleted,
preempted) is replaced by the Job controller without counting a failure, while the others
re-rendezvous at the smaller world size; the replacement joins them when it starts. Under Kueue,
the pods of a Job it suspends (preemption) stop so, and the Job waits to be readmitted."""
DISRUPTION_RULE = {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
"""DISRUPTION_RULE: an evicted or preempted pod of an elastic gang is replaced without counting."""
DISRUPTED_RULE = {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
"""DISRUPTED_RULE: in a fixed-size gang an evicted or preempted pod (spot reclaim, a drained
node) fails the Job with reason PodFailurePolicy, even when it was killed before its checkpoint
was written: the operator recreates the gang without counting a restart."""
INVALID_RULE = {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [exitcodes.INVALID_CONFIG]}}
"""INVALID_RULE: the spec or the data is wrong (the validate init container exits 3): no pod
will do better, so the Job fails at once, elastic or not."""


OPERATOR_FIELDS = (
    "failurePolicy",
    "plan",
    "suspend",
    "scheduling.gangTimeoutSeconds",
    "serviceAccountName",
    "storage",
    "terminationGracePeriodSeconds",
)
"""OPERATOR_FIELDS only the operator acts on, or that change nothing the trainers compute:
editing them does not recreate a running gang (the next gang has them)."""
CHECKPOINT_BYTES_PER_PARAM = 12  # fp32 weights and two Adam moments
CHECKPOINT_WRITE_BYTES_PER_S = 200_000_000  # per node, to object storage: a cautious figure
GRACE_BASE_S = 60


def spec_hash(body: dict) -> str:
    """What a gang trains from: the stored spec less OPERATOR_FIELDS. A gang made from another
    one is recreated and continues from the newest checkpoint (e.g. totalSteps raised)."""
    spec = TrainingRunSpec.model_validate(body.get("spec") or {})  # defaults filled: one form
    return children.spec_hash(spec.to_wire_set(), OPERATOR_FIELDS)


def elastic(spec: TrainingRunSpec) -> bool:
    """minNodes < maxNodes: the gang trains on while at least minNodes pods run."""
    return spec.resources.min_nodes < spec.resources.max_nodes


def job_name(name: str) -> str:
    return children.child_name(name, "train")


def service_name(name: str) -> str:
    return job_name(name)


def rendezvous_host(name: str, namespace: str) -> str:
    """Pod 0's stable DNS name: `<job>-0.<service>.<namespace>.svc` (Indexed Job hostname +
    subdomain). Namespace-qualified so it resolves without DNS search paths, in pod 0 itself too."""
    return f"{job_name(name)}-0.{service_name(name)}.{namespace}.svc"


def grace_seconds(spec: TrainingRunSpec) -> int:
    """terminationGracePeriodSeconds of a trainer pod: the spec's, else time to write the
    checkpoint that SIGTERM asks for (see the field's description)."""
    if spec.termination_grace_period_seconds:
        return spec.termination_grace_period_seconds
    per_node = spec.model.approx_params() * CHECKPOINT_BYTES_PER_PARAM / spec.resources.min_nodes
    return GRACE_BASE_S + math.ceil(per_node / CHECKPOINT_WRITE_BYTES_PER_S)


def torchrun_restarts(spec: TrainingRunSpec) -> int:
    """torchrun's --max-restarts: 0 in a fixed-size gang, where a crashed worker fails its pod
    and the operator's gang restart is the one that counts (failurePolicy.maxRestarts); in an
    elastic gang the restarts that re-form the group when a peer leaves."""
    return spec.failure_policy.max_restarts if elastic(spec) else 0


def trainer_role(name: str, namespace: str, spec: TrainingRunSpec, cfg: OperatorConfig) -> specs.Role:
    """The torchrun role with macros substituted for pod `$(JOB_COMPLETION_INDEX)` of the gang.

    `python -m capstan_trainer.train.launch ARGS` runs `python -m torch.distributed.run ARGS`
    (torchrun, no console script needed) and exits 4 when the workers stopped after a checkpoint,
    which torchrun itself reports as 1."""
    r = spec.resources
    role = specs.Role(
        name=CONTAINER,
        image=spec.image or cfg.workload_image,
        entrypoint="python",
        args=[
            "-m",
            "capstan_trainer.train.launch",
            f"--nnodes={r.min_nodes}:{r.max_nodes}",
            f"--nproc-per-node={r.nproc_per_node}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={rendezvous_host(name, namespace)}:{RDZV_PORT}",
            f"--rdzv-id={macros.app_id}",
            f"--max-restarts={torchrun_restarts(spec)}",
            "-m",
            "capstan_trainer.train",
            "-f",
            children.CONFIG_PATH,
        ],
        env={
            "CAPSTAN_NODE_RANK": macros.replica_id,
            # torch 2.15 builds the shared rendezvous store's bootstrap info (MASTER_ADDR) in an
            # agent's first round only: a pod that joins a later round (an elastic replacement)
            # waits for it forever. Unshared, rank 0 publishes it in every round.
            "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
        },
        # cpu/memory come from spec.resources.requests; the role carries the GPU count.
        resource=specs.Resource(cpu=0, gpu=r.gpus_per_node, memMB=0),
        port_map={"c10d": RDZV_PORT},
        num_replicas=r.max_nodes,
        min_replicas=r.min_nodes,
        max_retries=torchrun_restarts(spec),
    )
    values = macros.Values(
        img_root="", app_id=job_name(name), replica_id="$(JOB_COMPLETION_INDEX)", rank0_env=""
    )
    return values.apply(role)


OVERCOMMITTED = ("cpu", "memory", "ephemeral-storage")
"""OVERCOMMITTED resources may be requested without a limit; any other (GPUs, EFA, RDMA,
hugepages) must have its limit set, equal to its request."""


def trainer_resources(spec: TrainingRunSpec) -> dict[str, Any]:
    """requests and limits of the trainer container: extended resources asked for in requests
    are limits too, GPUs both; resources.limits on top."""
    r = spec.resources
    requests = dict(r.requests)
    limits = {k: v for k, v in requests.items() if k not in OVERCOMMITTED}
    if r.gpus_per_node:
        requests[children.GPU] = limits[children.GPU] = str(r.gpus_per_node)
    limits.update(r.limits)
    return {"limits": limits, "requests": requests}


def trainer_container(role: specs.Role, env: list[dict], spec: TrainingRunSpec, cfg: OperatorConfig) -> dict:
    """The torchrun container of a gang pod, from the torchx role: its command, ports and GPUs.

    Built from the role directly rather than through torchx's `role_to_pod`: that helper also
    writes a securityContext, a nodeSelector and cpu/memory figures of its own that this pod
    sets from the spec, so its output had to be partly undone."""
    return {
        "name": CONTAINER,
        "image": role.image,
        "imagePullPolicy": cfg.image_pull_policy,
        "command": [role.entrypoint, *role.args],
        "env": env,
        "ports": [{"containerPort": port, "name": name} for name, port in role.port_map.items()]
        + [{"containerPort": TRAIN_METRICS_PORT, "name": "metrics"}],
        "resources": trainer_resources(spec),
        # Data loader workers and NCCL share tensors through /dev/shm; the default 64 MB is too small.
        "volumeMounts": [{"mountPath": "/dev/shm", "name": SHM_VOLUME}, children.config_mount()],
    }


def pod_spec(body: dict, spec: TrainingRunSpec, cfg: OperatorConfig) -> dict[str, Any]:
    name = body["metadata"]["name"]
    role = trainer_role(name, body["metadata"]["namespace"], spec, cfg)
    # The trainers record it in progress.json: a run "already finished" is one this spec finished.
    env = children.workload_env(body, cfg, {**role.env, files.SPEC_HASH_ENV: spec_hash(body)})
    # The first trainer process serves /metrics on the pod IP (trainer/train/metrics.py).
    env += [
        {"name": TRAIN_METRICS_PORT_ENV, "value": str(TRAIN_METRICS_PORT)},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]
    # The user's first: a name the operator sets is refused by the API, and would lose here anyway.
    ours = {e["name"] for e in env}
    users = [{"name": k, "value": v} for k, v in sorted(spec.env.items())]
    users += [{"name": k, "valueFrom": src.to_wire()} for k, src in sorted(spec.env_value_from.items())]
    env = [e for e in users if e["name"] not in ours] + env
    # Checks the spec, the data and the storage before torchrun starts: a bad spec exits 3 here
    # (torchrun would turn a worker's 3 into its own 1 and spend restarts on it).
    validate = {
        "name": VALIDATE_CONTAINER,
        "image": role.image,
        "imagePullPolicy": cfg.image_pull_policy,
        "command": ["python", "-m", "capstan_trainer.train", "--validate-only", "-f", children.CONFIG_PATH],
        "env": env,
        "volumeMounts": [children.config_mount()],
    }
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        **children.pod_identity(body, cfg),
        "terminationGracePeriodSeconds": grace_seconds(spec),
        "initContainers": [validate],
        "containers": [trainer_container(role, env, spec, cfg)],
        "subdomain": service_name(name),
        "volumes": [
            {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": spec.resources.shm_size}},
            children.config_volume(job_name(name)),
        ],
    }
    r = spec.resources
    if r.node_selector:
        pod["nodeSelector"] = dict(r.node_selector)
    tolerations = children.tolerations(r.tolerations, r.gpus_per_node)
    if tolerations:
        pod["tolerations"] = tolerations
    if r.affinity:
        pod["affinity"] = copy.deepcopy(r.affinity)
    if spec.host_network:
        # Pod 0's DNS name (the rendezvous endpoint) then resolves to its node's address.
        pod["hostNetwork"] = True
        pod["dnsPolicy"] = "ClusterFirstWithHostNet"
    if r.priority_class_name:
        pod["priorityClassName"] = r.priority_class_name
    if spec.scheduling.scheduler == "volcano":
        pod["schedulerName"] = "volcano"
    return children.restricted(pod, cfg)


def service(body: dict) -> dict[str, Any]:
    name = body["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": children.child_meta(body, service_name(name), COMPONENT),
        "spec": {
            "clusterIP": "None",
            # Rendezvous starts before any pod is Ready.
            "publishNotReadyAddresses": True,
            "selector": children.pod_labels(body, COMPONENT),
            "ports": [{"name": "c10d", "port": RDZV_PORT, "targetPort": RDZV_PORT}],
        },
    }


def restarts_left(body: dict, spec: TrainingRunSpec) -> int:
    """What is left of failurePolicy.maxRestarts after status.restarts: an elastic Job's
    backoffLimit, so that the pods it replaces and the gangs the operator recreates share one
    budget."""
    used = int((body.get("status") or {}).get("restarts") or 0)
    return max(0, spec.failure_policy.max_restarts - used)


def job(body: dict, spec: TrainingRunSpec, cfg: OperatorConfig) -> dict[str, Any]:
    name = body["metadata"]["name"]
    nodes = spec.resources.max_nodes
    s = spec.scheduling
    extra_labels = {LABEL_KUEUE_QUEUE: s.queue_name} if s.scheduler == "kueue" else {}
    annotations = {ANNOTATION_VOLCANO_GROUP: job_name(name)} if s.scheduler == "volcano" else {}
    # Prometheus finds rank 0's training metrics by these (every pod answers; rank 0's has the series).
    annotations.update(children.scrape_annotations(TRAIN_METRICS_PORT))
    template_meta: dict[str, Any] = {
        "labels": children.pod_labels(body, COMPONENT),
        "annotations": annotations,
    }
    meta = children.child_meta(body, job_name(name), COMPONENT, extra_labels)
    if elastic(spec):
        # A lost or crashed pod is replaced by the Job controller (up to maxRestarts) while the
        # others train on; the operator recreates the gang only once the Job has failed.
        failures: dict[str, Any] = {
            "backoffLimit": restarts_left(body, spec),
            "podFailurePolicy": {"rules": [INVALID_RULE, IGNORE_STOPPED_RULE, DISRUPTION_RULE]},
        }
    else:
        # A lost pod fails the whole Job at once; the operator recreates the gang (torchrun
        # handles worker crashes inside a pod on its own).
        # Under Kueue a gang whose Job is suspended (preempted) stops after checkpointing: that
        # must not fail the Job, which Kueue resumes when it readmits it; a pod lost otherwise
        # is seen on the pod (exit 4) and the operator recreates the gang all the same.
        stopped = IGNORE_STOPPED_RULE if s.scheduler == "kueue" else STOPPED_RULE
        failures = {
            "backoffLimit": 0,
            "podFailurePolicy": {"rules": [INVALID_RULE, stopped, DISRUPTED_RULE]},
        }
    children.stamped({"metadata": meta}, spec_hash(body))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "completionMode": "Indexed",
            "completions": nodes,
            "parallelism": nodes,
            **failures,
            # Kueue admits the Job by unsuspending it.
            "suspend": s.scheduler == "kueue",
            "template": {"metadata": template_meta, "spec": pod_spec(body, spec, cfg)},
        },
    }


def pod_group(body: dict, spec: TrainingRunSpec) -> dict[str, Any]:
    """Volcano PodGroup: the scheduler places minMember pods (minNodes) together or none."""
    name = body["metadata"]["name"]
    out: dict[str, Any] = {
        "apiVersion": VOLCANO_API,
        "kind": "PodGroup",
        "metadata": children.child_meta(body, job_name(name), COMPONENT),
        "spec": {"minMember": spec.resources.min_nodes},
    }
    if spec.scheduling.queue_name:
        out["spec"]["queue"] = spec.scheduling.queue_name
    if spec.resources.priority_class_name:
        out["spec"]["priorityClassName"] = spec.resources.priority_class_name
    return out


def build(
    body: dict, spec: TrainingRunSpec, cfg: OperatorConfig, planned_gpu_hours: float | None = None
) -> list[dict[str, Any]]:
    """[ConfigMap, Service, (PodGroup,) Job] for `body` with `spec` already resolved (dataset
    URIs, initial checkpoint and checkpoint root filled in), in creation order.
    `planned_gpu_hours` (status.plan.gpuHours) goes on the resource for the model card."""
    name = body["metadata"]["name"]
    resource = children.resolved_resource(body, spec.to_wire())
    if planned_gpu_hours is not None:
        resource["metadata"]["annotations"] = {files.PLANNED_GPU_HOURS_ANNOTATION: str(planned_gpu_hours)}
    if body["metadata"].get("uid"):
        # The trainer records it as each checkpoint's owner: a run recreated under the same name
        # must not resume the old one's checkpoints.
        resource["metadata"]["uid"] = body["metadata"]["uid"]
    out = [children.config_map(body, job_name(name), COMPONENT, resource), service(body)]
    if spec.scheduling.scheduler == "volcano":
        out.append(pod_group(body, spec))
    out.append(job(body, spec, cfg))
    return out
