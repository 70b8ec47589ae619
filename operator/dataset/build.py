"""Children of a Dataset: a ConfigMap with the resource as the `-f` file, and per preparation stage
(capstan_api.preparation) an Indexed Job running
`python -m capstan_trainer.prepare -f <file> --stage <stage> --workers <spec.workers>`, one pod per
index. Pure functions: no I/O."""

from __future__ import annotations

from typing import Any

from capstan_api import files
from capstan_api.dataset import DatasetSpec
from capstan_api.preparation import Stage
from capstan_operator import children
from capstan_operator.config import OperatorConfig

COMPONENT = "prepare"
BACKOFF_LIMIT_PER_INDEX = 2  # transient failures (storage hiccups) get two more tries per index
HOW_FIELDS = ("workers", "resources", "serviceAccountName", "storage", "startDeadlineSeconds")
"""HOW_FIELDS say how a preparation runs, not what it makes: changing them prepares nothing again."""
ANNOTATION_REVISION = "capstan.dev/revision"
REVISIONS_DIR = "revisions"


def spec_hash(body: dict) -> str:
    """What a revision is prepared from: the stored spec less HOW_FIELDS."""
    spec = DatasetSpec.model_validate(body.get("spec") or {})  # defaults filled: one form
    return children.spec_hash(spec.to_wire_set(), HOW_FIELDS)


def revision_uri(output_uri: str, revision: int) -> str:
    """Each preparation writes `<output.uri>/revisions/<n>/`; earlier revisions stay readable."""
    return files.join(output_uri, REVISIONS_DIR, str(revision))


def revision_spec(spec: DatasetSpec, revision: int) -> DatasetSpec:
    """`spec` writing into its revision's folder: what every stage's workers read."""
    output = spec.output.model_copy(update={"uri": revision_uri(spec.output.uri, revision)})
    return spec.model_copy(update={"output": output})


def revision_of(config_map: dict | None) -> int | None:
    """The revision a preparation's ConfigMap was made for."""
    value = ((config_map or {}).get("metadata", {}).get("annotations") or {}).get(ANNOTATION_REVISION)
    return int(value) if value and value.isdigit() else None


def config_map_name(name: str) -> str:
    """One ConfigMap for every stage: they all read the spec the preparation started with."""
    return children.child_name(name, COMPONENT)


def stage_job_name(name: str, stage: str) -> str:
    return children.child_name(name, f"{COMPONENT}-{stage}")


def build_config_map(body: dict, spec: DatasetSpec, revision: int) -> dict[str, Any]:
    """The ConfigMap holding `body` (the Dataset as stored) with `spec` writing into `revision`'s
    folder as the workers' `-f` file; it fixes the spec for every stage of that revision."""
    resource = children.resolved_resource(body, revision_spec(spec, revision).to_wire())
    cm = children.config_map(body, config_map_name(body["metadata"]["name"]), COMPONENT, resource)
    cm["metadata"]["annotations"] = {ANNOTATION_REVISION: str(revision)}
    return children.stamped(cm, spec_hash(body))


def build_stage_job(body: dict, spec: DatasetSpec, cfg: OperatorConfig, stage: Stage) -> dict[str, Any]:
    """The Indexed Job of one stage: `stage.workers` pods, each given its index by the Job."""
    name = body["metadata"]["name"]
    env = children.workload_env(body, cfg, {"CAPSTAN_ALLOWED_LICENCES": ",".join(cfg.allowed_licences)})
    command = ["python", "-m", "capstan_trainer.prepare", "-f", children.CONFIG_PATH]
    container = {
        "name": COMPONENT,
        "image": cfg.workload_image,
        "imagePullPolicy": cfg.image_pull_policy,
        "command": [*command, "--stage", stage.name, "--workers", str(spec.workers)],
        "env": env,
        "resources": children.container_resources(spec.resources),
        "volumeMounts": [children.config_mount()],
    }
    job = children.indexed_job(
        body,
        stage_job_name(name, stage.name),
        COMPONENT,
        container,
        stage.workers,
        BACKOFF_LIMIT_PER_INDEX,
        cfg,
        config_map_name(name),
        children.placement(spec.resources),
    )
    return children.stamped(job, spec_hash(body))
