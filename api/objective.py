"""What a TrainingRun optimises, and the figures its trainers report for it.

pretrain: next-token loss on every token. sft: the same loss only on the tokens a chat Dataset's
loss mask marks (assistant turns by default). dpo: Direct Preference Optimization (Rafailov et
al. 2023) on a preference Dataset, against a frozen reference model (the init weights).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from capstan_api.common import ApiModel

Objective = Literal["pretrain", "sft", "dpo"]


class DpoSpec(ApiModel):
    """DPO settings; names follow TRL's DPOConfig."""

    beta: float = Field(
        default=0.1,
        gt=0,
        le=100,
        description="beta scales the log-probability ratios against the reference: higher keeps the policy closer to it.",
    )
    loss_type: Literal["sigmoid"] = Field(
        default="sigmoid",
        description="lossType is the DPO loss: sigmoid (the paper's -log sigmoid of the margin).",
    )


class DpoFigures(ApiModel):
    """DPO's figures over the last reported step's pairs (TRL's rewards/* metrics)."""

    rewards_chosen: float = Field(
        description="rewardsChosen: mean beta x (policy - reference) log-prob of the chosen answers."
    )
    rewards_rejected: float = Field(description="rewardsRejected: the same for the rejected answers.")
    rewards_margin: float = Field(description="rewardsMargin: mean of chosen minus rejected reward.")
    rewards_accuracy: float = Field(
        description="rewardsAccuracy: share of pairs whose chosen reward is higher, 0..1."
    )
    eval_rewards_accuracy: float | None = Field(
        default=None,
        description="evalRewardsAccuracy: rewardsAccuracy over the held-out (validation) pairs at the last evaluation.",
    )
