"""Resolve an Evaluation's references: trainingRunRef -> the run's last checkpoint (with model.step:
its checkpoint of that step, once committed), uri + step -> that step folder, datasetRef -> the
Dataset's manifest (the validation split), baselineRef -> that Evaluation's results.json, empty
outputUri -> the operator's artifact location. Pure: the caller passes the referenced objects (None when missing)."""

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
    deployment: dict | None = None,
    baseline: dict | None = None,
) -> Resolution:
    """`run`, `dataset`, `deployment` and `baseline` are the objects spec.model.trainingRunRef,
    spec.datasetRef, spec.model.deploymentRef and spec.baselineRef name;
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
    elif model.deployment_ref is not None:
        checkpoint = _served("spec.model.deploymentRef", model.deployment_ref.name, deployment)
        model = model.model_copy(update={"deployment_ref": None, "uri": checkpoint.uri})
    elif model.step is not None:
        model = model.model_copy(update={"uri": model.checkpoint_uri(), "step": None})
    if spec.dataset_ref is not None:
        validation = refs.manifest("spec.datasetRef", spec.dataset_ref.name, dataset)
        validation_uri = validation.uri
    base, baseline_uri = None, spec.baseline_results_uri
    if spec.baseline_ref is not None:
        base = _baseline(name, spec.baseline_ref.name, baseline)
        baseline_uri = base.uri
    output = None
    if not spec.output_uri:
        output = refs.artifact_uri(cfg, "spec.outputUri", "results", namespace, name, "evaluation")
    blocked = refs.unresolved(checkpoint, validation, base) or refs.unresolved(output)
    if blocked:
        return blocked
    resolved = spec.model_copy(
        update={
            "model": model,
            "dataset_ref": None,
            "validation_uri": validation_uri,
            # Older workload images know no baselineRef: the resolved spec names only the URI.
            "baseline_ref": None,
            "baseline_results_uri": baseline_uri,
            "output_uri": output.uri if output else spec.output_uri,
            # The Deployment acts on regressions (it reads the Evaluation as stored); the
            # workload, whose model is now a URI, has no deploymentRef to roll back.
            "on_regression": "none",
        }
    )
    return Resolution(spec=EvaluationSpec.model_validate(resolved.model_dump()))


def _served(field: str, name: str, deployment: dict | None) -> refs.Ref:
    """The model Deployment `name` serves now (its stable revision's status.modelUri)."""
    if deployment is None:
        return refs.Ref(waiting=f"Deployment {name} ({field}: not found)")
    uri = refs.status_of(deployment).get("modelUri")
    return refs.Ref(uri=uri) if uri else refs.Ref(waiting=f"Deployment {name} to serve a model ({field})")


def _baseline(name: str, base: str, evaluation: dict | None) -> refs.Ref:
    """spec.baselineRef -> the base Evaluation's results.json (never this Evaluation's own)."""
    if base == name:
        return refs.Ref(failure="spec.baselineRef: an Evaluation cannot be its own baseline")
    return refs.results("spec.baselineRef", base, evaluation)
