"""The Hugging Face export a vLLM Deployment serves, one per checkpoint: where it lives, the Job
that writes it, and what the reconciler knows about it. Pure functions: no I/O.

A step folder is exported once, to `<step folder>/hf` (capstan_api.files.export_uri), by a Job
named after the checkpoint: every Deployment and revision serving that checkpoint finds the same
export (its EXPORTED marker) or the same Job, and a failed export shows in status with its log.
The Job runs on CPU in the workload image; no GPU is held while the weights are converted. A URI
that is already an export (config.json, no step folder) is served as it is."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from capstan_api import files
from capstan_api.deployment import DeploymentSpec
from capstan_api.workload import PodResources
from capstan_operator import children
from capstan_operator.config import OperatorConfig

COMPONENT = "export"
CONTAINER = "export"
BACKOFF_LIMIT = 1  # one more try for a storage hiccup; the export is rewritten whole
ANNOTATION_CHECKPOINT = "capstan.dev/checkpoint"


def served_uri(model_uri: str) -> str:
    """The folder vLLM loads for `model_uri`: a step folder's export, else the URI itself."""
    return files.export_uri(model_uri) if files.step_of(model_uri) is not None else model_uri


def marker_uri(model_uri: str) -> str:
    return files.join(files.export_uri(model_uri), files.EXPORT_MARKER)


def job_name(step_folder: str) -> str:
    """One name per checkpoint in a namespace, whichever Deployment asks first."""
    digest = hashlib.sha256(step_folder.rstrip("/").encode()).hexdigest()[:12]
    return f"capstan-export-{digest}"


def job(body: dict, spec: DeploymentSpec, cfg: OperatorConfig, step_folder: str) -> dict[str, Any]:
    """The export Job of `step_folder`, owned by the Deployment `body` that asked first."""
    name = job_name(step_folder)
    # The serving pods' CPU and memory (loading the model is the same work); no GPU, no GPU nodes.
    res = PodResources(cpu=spec.resources.cpu, memory=spec.resources.memory)
    container = {
        "name": CONTAINER,
        "image": cfg.workload_image,
        "imagePullPolicy": cfg.image_pull_policy,
        "command": [
            "python",
            "-m",
            "capstan_trainer.export",
            "--checkpoint",
            step_folder,
            "--out",
            files.export_uri(step_folder),
        ],  # fmt: skip
        "env": children.workload_env(body, cfg),
        "resources": children.container_resources(res),
    }
    out = children.workload_job(body, name, COMPONENT, container, BACKOFF_LIMIT, cfg, with_config=False)
    out["metadata"]["annotations"] = {ANNOTATION_CHECKPOINT: step_folder.rstrip("/")}
    return out


@dataclass(frozen=True)
class Export:
    """Whether the export of a model URI can be served."""

    ready: bool = False
    waiting: str = ""
    """waiting says what is being done (the Job exporting, a pod that cannot start yet)."""
    failure: str = ""
    """failure says why it cannot be served until someone acts (and what to do)."""
    started: bool = False
    """started: this reconcile created the export Job."""


def given_export(model_uri: str, config: dict | None) -> Export:
    """A URI that is not a step folder must already be an export (its config.json, read as `config`)."""
    if config is not None:
        return Export(ready=True)
    return Export(
        failure=f"runtime vllm serves a checkpoint step folder (.../step-XXXXXXXX) or a Hugging Face "
        f"export (a folder with config.json); {model_uri} is neither (a checkpoint root? name its step folder)"
    )
