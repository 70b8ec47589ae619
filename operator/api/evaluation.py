"""Evaluation spec. Placeholder until its issue fills it in."""

from __future__ import annotations

from capstan_operator.api.common import ApiModel


class EvaluationSpec(ApiModel):
    """Evaluation desired state."""
