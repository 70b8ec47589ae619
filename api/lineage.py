"""Reverse lineage and removal: which resources were built from which Dataset revision, and what
a revision removed. The operator writes these into Dataset and TrainingRun status."""

from __future__ import annotations

from pydantic import Field

from capstan_api.common import ApiModel

DATA_REMOVED = "DataRemoved"
"""DATA_REMOVED: condition of a TrainingRun (and a Deployment serving one) trained on a Dataset
revision that held documents a later revision removed."""


class RuleCount(ApiModel):
    rule: str = Field(description="rule is the exclusion rule's field path (spec.exclusions.urls[0], ...).")
    documents: int = Field(default=0, description="documents is how many documents the rule removed.")


class RevisionUse(ApiModel):
    """One revision of a Dataset and what was built from it."""

    revision: int = Field(description="revision is the Dataset revision (its folder revisions/<n>/).")
    manifest_uri: str = Field(default="", description="manifestUri is that revision's manifest.json.")
    training_runs: list[str] = Field(
        default_factory=list, description="trainingRuns are the TrainingRuns that trained on it."
    )
    evaluations: list[str] = Field(
        default_factory=list, description="evaluations are the Evaluations of those TrainingRuns."
    )
    deployments: list[str] = Field(
        default_factory=list, description="deployments are the Deployments serving those TrainingRuns."
    )
