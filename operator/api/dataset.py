"""Dataset spec. Placeholder until its issue fills it in."""

from __future__ import annotations

from capstan_operator.api.common import ApiModel


class DatasetSpec(ApiModel):
    """Dataset desired state."""
