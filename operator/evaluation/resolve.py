"""Resolve an Evaluation's references: trainingRunRef -> the run's last checkpoint (with model.step:
its checkpoint of that step, once committed), uri + step -> that step folder, datasetRef -> the
Dataset's manifest (the validation split), empty outputUri -> the operator's artifact
location. Pure: the caller passes the referenced objects (None when missing)."""

from __future__ import annotations

from capstan_api.evaluation import EvaluationSpec
from capstan_operator import refs
from capstan_operator.config import OperatorConfig
from capstan_operator.refs import Resolution


def resolve(
    namespace: str,
    name: str,
    spec: EvaluationSpec,
    run: dict | None,
    dataset: dict | None,
    cfg: OperatorConfig,
    step_committed: bool = False,
) -> Resolution:
    """`run` and `dataset` are the objects spec.model.trainingRunRef and spec.datasetRef name;
    `step_committed` whether the commit marker of the run's checkpoint of spec.model.step is there
    (read only when `refs.step_folder` names one)."""
    model, validation_uri = spec.model, spec.validation_uri
    checkpoint = validation = None
    if model.training_run_ref is not None:
        run_name = model.training_run_ref.name
        if model.step is None:
            checkpoint = refs.last_checkpoint("spec.model.trainingRunRef", run_name, run)
        else:
            checkpoint = refs.checkpoint_at_step("spec.model.step", run_name, run, model.step, step_committed)
        model = model.model_copy(update={"training_run_ref": None, "uri": checkpoint.uri, "step": None})
    elif model.step is not None:
        model = model.model_copy(update={"uri": model.checkpoint_uri(), "step": None})
    if spec.dataset_ref is not None:
        validation = refs.manifest("spec.datasetRef", spec.dataset_ref.name, dataset)
        validation_uri = validation.uri
    output = None
    if not spec.output_uri:
        output = refs.artifact_uri(cfg, "spec.outputUri", "results", namespace, name, "evaluation")
    blocked = refs.unresolved(checkpoint, validation) or refs.unresolved(output)
    if blocked:
        return blocked
    resolved = spec.model_copy(
        update={
            "model": model,
            "dataset_ref": None,
            "validation_uri": validation_uri,
            "output_uri": output.uri if output else spec.output_uri,
        }
    )
    return Resolution(spec=EvaluationSpec.model_validate(resolved.model_dump()))
