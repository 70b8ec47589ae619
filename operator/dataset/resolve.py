"""What stands between a Dataset and its Jobs: the operator's licence policy, and the Dataset whose
tokenizer it uses (spec.tokenizer.datasetRef), resolved to that tokenizer's URI. Pure: no I/O."""

from __future__ import annotations

from capstan_api import files
from capstan_api.dataset import DatasetSpec
from capstan_operator import refs
from capstan_operator.config import OperatorConfig
from capstan_operator.refs import Resolution

TOKENIZER_FIELD = "spec.tokenizer.datasetRef"


def own_tokenizer(name: str, spec: DatasetSpec) -> str:
    """Why spec names this Dataset itself as its tokenizer's source (empty: it does not). The API
    server cannot tell (CEL sees no metadata), so the reconciler refuses it."""
    ref = spec.tokenizer.dataset_ref
    return f"{TOKENIZER_FIELD}: a Dataset cannot use its own tokenizer" if ref and ref.name == name else ""


def tokenizer(name: str, spec: DatasetSpec, base: dict | None) -> Resolution:
    """spec with tokenizer.datasetRef replaced by the tokenizer.json beside the named Dataset's
    manifest (the same bytes), or what it waits for, or why it cannot be. `base`: the named
    Dataset as read (None when missing); a spec without datasetRef comes back as it is."""
    ref = spec.tokenizer.dataset_ref
    if ref is None:
        return Resolution(spec=spec)
    own = own_tokenizer(name, spec)
    if own:
        return Resolution(failure=own)
    manifest = refs.manifest(TOKENIZER_FIELD, ref.name, base)
    blocked = refs.unresolved(manifest)
    if blocked:
        return blocked
    # The workers (and older images, whose spec knows no datasetRef) see a plain tokenizer.uri.
    uri = files.join(manifest.uri.rsplit("/", 1)[0], files.TOKENIZER_FILE)
    tok = spec.tokenizer.model_copy(update={"uri": uri, "dataset_ref": None})
    return Resolution(
        spec=DatasetSpec.model_validate(spec.model_copy(update={"tokenizer": tok}).model_dump())
    )


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
