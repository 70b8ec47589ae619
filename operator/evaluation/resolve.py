"""Resolve an Evaluation's references: trainingRunRef -> the run's last checkpoint, datasetRef ->
the Dataset's manifest (the validation split), empty outputUri -> the operator's artifact
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
) -> Resolution:
    """`run` and `dataset` are the objects spec.model.trainingRunRef and spec.datasetRef name."""
    waits: list[str] = []
    model = spec.model
    if model.training_run_ref is not None:
        ref = refs.last_checkpoint("spec.model.trainingRunRef", model.training_run_ref.name, run)
        if ref.failure:
            return Resolution(failure=ref.failure)
        if ref.waiting:
            waits.append(ref.waiting)
        else:
            model = model.model_copy(update={"training_run_ref": None, "uri": ref.uri})
    validation_uri = spec.validation_uri
    if spec.dataset_ref is not None:
        ref = refs.manifest("spec.datasetRef", spec.dataset_ref.name, dataset)
        if ref.failure:
            return Resolution(failure=ref.failure)
        if ref.waiting:
            waits.append(ref.waiting)
        else:
            validation_uri = ref.uri
    if waits:
        return refs.waiting(waits)
    output_uri = spec.output_uri
    if not output_uri:
        where = refs.artifact_uri(cfg, "spec.outputUri", "results", namespace, name, "evaluation")
        if where.failure:
            return Resolution(failure=where.failure)
        output_uri = where.uri
    resolved = spec.model_copy(
        update={
            "model": model,
            "dataset_ref": None,
            "validation_uri": validation_uri,
            "output_uri": output_uri,
        }
    )
    return Resolution(spec=EvaluationSpec.model_validate(resolved.model_dump()))
