"""What stands between a Dataset and its Job: the operator's licence policy. A Dataset names no
other resource, so this is all it resolves. Pure: no I/O."""

from __future__ import annotations

from capstan_api.dataset import DatasetSpec
from capstan_operator.config import OperatorConfig


def licence_refusals(spec: DatasetSpec, cfg: OperatorConfig) -> list[str]:
    """Why the operator's licence policy refuses this Dataset (empty: it may run).

    A source whose declared licence is outside the policy is refused outright; per-document
    licences are narrowed by the workload itself (CAPSTAN_ALLOWED_LICENCES)."""
    policy = set(cfg.allowed_licences)
    out = [
        f"spec.sources[{i}].licence: {s.licence} is not allowed by the operator's policy"
        for i, s in enumerate(spec.sources)
        if s.licence not in policy
    ]
    if not policy.intersection(spec.allowed_licences):
        out.append(
            "spec.allowedLicences: none of "
            f"{', '.join(spec.allowed_licences)} is allowed by the operator's policy"
        )
    return out
