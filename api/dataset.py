"""Dataset spec: raw text in object storage -> clean, deduplicated, licensed, tokenized shards.

Defaults follow the published pipelines the filters come from (Gopher, C4, FineWeb as implemented
in datatrove), so a spec that only names sources, licences and an output is a reasonable one.
The cleaning stages' models are in `cleaning`, the tokenizer's in `tokenizer`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from capstan_api.cleaning import Cleaning, Dedup, Filters, Pii
from capstan_api.common import SPDX_PATTERN, URI_PATTERN, ApiModel, cel, immutable
from capstan_api.exclusions import Exclusions
from capstan_api.mitigation import Augmentation
from capstan_api.tokenizer import Tokenizer
from capstan_api.workload import (
    PodResources,
    StorageAccess,
    service_account_field,
    start_deadline_field,
    storage_field,
)

SpdxId = Annotated[str, Field(min_length=1, max_length=128, pattern=SPDX_PATTERN)]

DEFAULT_ALLOWED_LICENCES = [
    "CC0-1.0",
    "CC-BY-4.0",
    "CC-BY-SA-4.0",
    "ODC-By-1.0",
    "PDDL-1.0",
    "MIT",
    "Apache-2.0",
    "BSD-2-Clause",
    "BSD-3-Clause",
]


class Provenance(ApiModel):
    """Where a source came from; copied into the datasheet."""

    description: str = Field(
        default="", max_length=2000, description="description is who collected the text, how and why."
    )
    url: str = Field(default="", max_length=2000, description="url is where the original can be found.")
    collected: str = Field(
        default="",
        max_length=64,
        description="collected is when the text was collected (free form, e.g. 2026-11).",
    )


class Source(ApiModel):
    """One set of input files with one format and one declared licence."""

    uri: str = Field(
        min_length=1,
        max_length=2000,
        pattern=URI_PATTERN,
        description="uri is an fsspec URI (s3://, file://, ...) of a file, folder or glob (*, **, ?).",
    )
    format: Literal["jsonl", "text", "parquet", "chat", "preference"] = Field(
        default="jsonl",
        description=(
            "format is jsonl (one JSON object per line), text (one document per file), parquet, or chat: "
            "JSONL conversations, OpenAI-style `messages` (role system/user/assistant, content) or "
            "ShareGPT-style `conversations` (from system/human/gpt, value), rendered with "
            "tokenizer.chatTemplate; or preference: JSONL pairs `prompt`, `chosen`, `rejected`, each a "
            "string or a list of messages, for a dpo TrainingRun."
        ),
    )
    compression: Literal["infer", "none", "gzip", "zstd"] = Field(
        default="infer", description="compression of jsonl/text files; infer uses the suffix (.gz, .zst)."
    )
    text_field: str = Field(
        default="text", min_length=1, max_length=256, description="textField is the field holding the text."
    )
    licence: str = Field(
        min_length=1,
        max_length=128,
        pattern=SPDX_PATTERN,
        description="licence is the SPDX id of the licence the whole source is under (required).",
    )
    licence_field: str = Field(
        default="licence",
        max_length=256,
        description="licenceField is a per-document field whose SPDX id overrides licence; empty turns it off.",
    )
    url_field: str = Field(
        default="url",
        max_length=256,
        description="urlField is a per-document field with the page URL, if any.",
    )
    provenance: Provenance = Field(
        default_factory=Provenance, description="provenance says where the source came from."
    )


class Output(ApiModel):
    uri: str = Field(
        min_length=1,
        max_length=2000,
        pattern=URI_PATTERN,
        description="uri of the output folder (fsspec URI); fixed once created, so shards never mix.",
        json_schema_extra=immutable("output.uri"),
    )
    shard_tokens: int = Field(
        default=100_000_000,
        ge=1,
        le=1 << 32,
        description="shardTokens is the number of tokens per shard file (the last is shorter).",
    )
    validation_fraction: float = Field(
        default=0.01,
        ge=0,
        lt=1,
        description="validationFraction of documents held out, chosen by a hash of their text (stable as data grows).",
    )


class DatasetSpec(ApiModel):
    """Dataset desired state: where the text is, how to clean it, and where the shards go."""

    sources: list[Source] = Field(min_length=1, max_length=256, description="sources of raw text.")
    allowed_licences: list[SpdxId] = Field(
        default_factory=lambda: list(DEFAULT_ALLOWED_LICENCES),
        max_length=256,
        description="allowedLicences are the SPDX ids that may enter the dataset; the operator's policy can narrow them.",
    )
    cleaning: Cleaning = Field(default_factory=Cleaning, description="cleaning is text normalisation.")
    filters: Filters = Field(default_factory=Filters, description="filters are the quality filters.")
    dedup: Dedup = Field(default_factory=Dedup, description="dedup is exact and near-duplicate removal.")
    pii: Pii = Field(default_factory=Pii, description="pii is personal-data redaction.")
    augmentation: Augmentation = Field(
        default_factory=Augmentation,
        description="augmentation adds counterfactual copies of kept documents, after deduplication.",
    )
    tokenizer: Tokenizer = Field(default_factory=Tokenizer, description="tokenizer to train or use.")
    # None, not an empty default: an unset field stays off the wire, so Datasets written before it
    # existed keep their spec hash (and are not prepared again on upgrade).
    exclusions: Exclusions | None = Field(
        default=None,
        description="exclusions are documents to remove (data-subject requests): ids, source URLs or "
        "globs, regexes over text, or a list file; a change prepares a new revision without them.",
    )
    output: Output = Field(description="output says where and how the shards are written.")
    train_on: Literal["assistant", "all"] = Field(
        default="assistant",
        description=(
            "trainOn says which tokens of a chat conversation carry loss in an sft TrainingRun: the "
            "assistant turns (their end-of-turn token included) or all of the rendered text."
        ),
    )
    max_error_rate: float = Field(
        default=0.001,
        ge=0,
        le=1,
        description="maxErrorRate is the share of malformed records (bad JSON, missing text) tolerated before the run fails.",
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=4096,
        description="workers is how many pods run each parallel stage (map, dedup, tokenize, shard); the output is the same for any count.",
    )
    resources: PodResources = Field(
        default_factory=lambda: PodResources(cpu="1", memory="3Gi"),
        description="resources of each preparation pod (requests; memory is also the limit) and where it may run.",
    )
    service_account_name: str = service_account_field()
    storage: StorageAccess = storage_field()
    start_deadline_seconds: int = start_deadline_field()
    seed: int = Field(
        default=0,
        ge=0,
        le=2**32 - 1,
        description="seed of MinHash permutations, the validation split hash and the augmentation draw.",
    )

    model_config = ConfigDict(
        json_schema_extra=cel(
            ("size(self.allowedLicences) > 0", "allowedLicences must name at least one licence"),
            (
                "self.sources.all(s, s.format == 'preference') || self.sources.all(s, s.format != 'preference')",
                "preference sources cannot be mixed with other formats",
            ),
        )
    )

    @property
    def loss_mask(self) -> bool:
        """Whether the shards carry a loss mask: they do when any source is chat or preference."""
        return any(s.format in ("chat", "preference") for s in self.sources)

    @property
    def preference(self) -> bool:
        """Preference pairs: each document is a chosen then a rejected sequence."""
        return any(s.format == "preference" for s in self.sources)

    @model_validator(mode="after")
    def _check(self) -> DatasetSpec:
        kinds = {s.format == "preference" for s in self.sources}
        if len(kinds) > 1:
            raise ValueError("sources: preference sources cannot be mixed with other formats")
        if not self.allowed_licences:
            raise ValueError("allowedLicences must name at least one licence")
        return self
