"""What a vLLM serving pod has beyond the built-in server's: an init container that copies the
Hugging Face export to a local volume, the `vllm serve` command, and the volumes and environment
vLLM needs under the "restricted" pod security the operator applies. Pure functions: no I/O.

Readiness (/health), the port, the Service, the metrics the canary analysis reads (/metrics on the
same port) and the HPA work as for the built-in server; build.py puts them together."""

from __future__ import annotations

from typing import Any

from capstan_api.deployment import DeploymentSpec
from capstan_operator import children
from capstan_operator.config import OperatorConfig

INIT_CONTAINER = "fetch-model"
MODEL_VOLUME = "model"
MODEL_DIR = "/models/served"
SHM_VOLUME = "dshm"
RUNNING_REQUESTS_METRIC = "vllm:num_requests_running"


def command(spec: DeploymentSpec, served_model_name: str, port: int) -> list[str]:
    s = spec.server
    return [
        "vllm", "serve", MODEL_DIR,
        "--served-model-name", served_model_name, "--host", "0.0.0.0", "--port", str(port),
        "--max-num-seqs", str(s.max_batch_size),
        # The export is float32 (exact); serve in bfloat16 as the model was trained, where
        # vLLM's "auto" would pick float16 for float32 weights.
        "--dtype", "bfloat16",
        *(["--max-model-len", str(s.max_model_len)] if s.max_model_len else []),
        *(["--tensor-parallel-size", str(spec.resources.gpus)] if spec.resources.gpus > 1 else []),
    ]  # fmt: skip


def env() -> list[dict[str, str]]:
    """vLLM's environment: caches under the writable /tmp (the root filesystem is read-only and
    the image's user may have no home), and nothing phoned home or fetched from the hub."""
    values = {
        "HOME": children.SCRATCH_DIR,
        "HF_HUB_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    return [{"name": k, "value": v} for k, v in values.items()]


def init_container(body: dict, cfg: OperatorConfig, export_uri: str) -> dict[str, Any]:
    """Copies the export into the model volume with the workload image's storage access (any
    fsspec URI, the operator's endpoint and credentials), so vLLM reads a local folder."""
    return {
        "name": INIT_CONTAINER,
        "image": cfg.workload_image,
        "imagePullPolicy": cfg.image_pull_policy,
        "command": ["python", "-m", "capstan_trainer.fetch", "--uri", export_uri, "--out", MODEL_DIR],
        "env": children.workload_env(body, cfg),
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
        "volumeMounts": [model_mount()],
    }


def model_mount() -> dict[str, Any]:
    return {"name": MODEL_VOLUME, "mountPath": MODEL_DIR}


def volumes() -> list[dict[str, Any]]:
    """The model copy (node disk), and a memory-backed /dev/shm: vLLM's workers and NCCL share
    tensors through it, and a container's default 64 MiB is too small."""
    return [
        {"name": MODEL_VOLUME, "emptyDir": {}},
        {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory"}},
    ]


def mounts() -> list[dict[str, Any]]:
    return [model_mount(), {"name": SHM_VOLUME, "mountPath": "/dev/shm"}]
