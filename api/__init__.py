"""capstan_api: the contract between the operator and the workloads (group capstan.dev, version
v1alpha1): the four kinds' specs and statuses, condition types and phases, exit codes, the files
both sides exchange (`files`), reading a `-f` resource file (`resource`) and the CRD generator
(`crdgen`).

Imports pydantic, PyYAML and the standard library only, never the operator or the workloads:
the operator image and the workload image both install it.
"""

from dataclasses import dataclass

from pydantic import BaseModel

from capstan_api.dataset import DatasetSpec
from capstan_api.deployment import DeploymentSpec
from capstan_api.evaluation import EvaluationSpec
from capstan_api.trainingrun import TrainingRunSpec


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
