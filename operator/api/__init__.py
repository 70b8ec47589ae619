"""Capstan API models (group capstan.dev, version v1alpha1).

Imports nothing but pydantic and the standard library: the trainer imports it too.
"""

from dataclasses import dataclass

from pydantic import BaseModel

from capstan_operator.api.dataset import DatasetSpec
from capstan_operator.api.deployment import DeploymentSpec
from capstan_operator.api.evaluation import EvaluationSpec
from capstan_operator.api.trainingrun import TrainingRunSpec


@dataclass(frozen=True)
class KindInfo:
    kind: str
    plural: str
    short_names: tuple[str, ...]
    spec: type[BaseModel]


# Every kind the operator serves; the CRD generator and the operator iterate over this.
KINDS: dict[str, KindInfo] = {
    k.kind: k
    for k in (
        KindInfo("Dataset", "datasets", ("cds",), DatasetSpec),
        KindInfo("TrainingRun", "trainingruns", ("tr",), TrainingRunSpec),
        KindInfo("Evaluation", "evaluations", ("ceval",), EvaluationSpec),
        KindInfo("Deployment", "deployments", ("cdeploy",), DeploymentSpec),
    )
}
