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


class ReplayInfo(ApiModel):
    """What a replay (init.replayWithout) started from, in progress.json and status.replay."""

    replayed: str = Field(default="", description="replayed is the checkpoint root of the run replayed.")
    checkpoint: str = Field(
        default="", description="checkpoint is the step folder the replay started from (empty: from scratch)."
    )
    step: int = Field(default=0, description="step of that checkpoint.")
    first_exposure: int | None = Field(
        default=None,
        description="firstExposure is the first step (0-based) of the replayed run whose batch held a "
        "token of a removed document (absent: none within its steps).",
    )
    removed_documents: int = Field(
        default=0, description="removedDocuments is how many removed documents the replayed run's data held."
    )
    steps_saved: int = Field(
        default=0,
        description="stepsSaved is how many steps the replay did not redo against training from scratch.",
    )
