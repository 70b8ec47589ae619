"""The tokenizer a Dataset trains (or takes as given) and the special tokens and chat template
saved with it."""

from __future__ import annotations

from pydantic import ConfigDict, Field, model_validator

from capstan_api.common import OPTIONAL_URI_PATTERN, ApiModel, cel
from capstan_api.workload import LocalRef

ONE_SOURCE = "at most one of uri, fromModel or datasetRef may be set"


class SpecialTokens(ApiModel):
    bos: str = Field(
        default="<|begin_of_text|>", min_length=1, max_length=64, description="bos begins a text."
    )
    eos: str = Field(
        default="<|end_of_text|>",
        min_length=1,
        max_length=64,
        description="eos ends a text; it is appended after every document in the shards.",
    )
    pad: str = Field(default="<|pad|>", min_length=1, max_length=64, description="pad fills batches.")
    additional: list[str] = Field(
        default_factory=lambda: ["<|system|>", "<|user|>", "<|assistant|>"],
        max_length=64,
        description="additional special tokens, e.g. the chat roles the chat template uses.",
    )

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "self.bos != self.eos && self.bos != self.pad && self.eos != self.pad",
                "bos, eos and pad must differ",
            )
        )
    )

    @model_validator(mode="after")
    def _check(self) -> SpecialTokens:
        if len({self.bos, self.eos, self.pad}) != 3:
            raise ValueError("bos, eos and pad must differ")
        return self

    def all(self) -> list[str]:
        """Every special token, in id order when training (bos, eos, pad, then additional)."""
        out = [self.bos, self.eos, self.pad]
        out += [t for t in self.additional if t not in out]
        return out


DEFAULT_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


class Tokenizer(ApiModel):
    """Train a byte-level BPE on a deterministic sample of the cleaned text, or use a given one."""

    uri: str = Field(
        default="",
        max_length=2000,
        pattern=OPTIONAL_URI_PATTERN,
        description="uri of an existing tokenizer.json; empty (and no fromModel or datasetRef) means "
        "train a byte-level BPE.",
    )
    from_model: str = Field(
        default="",
        max_length=2000,
        pattern=OPTIONAL_URI_PATTERN,
        description="fromModel is a Hugging Face model directory whose tokenizer.json is used as is "
        "(byte for byte, so a TrainingRun starting from that model with init.huggingFace can check "
        "it); specialTokens.eos must be one of its tokens.",
    )
    dataset_ref: LocalRef | None = Field(
        default=None,
        description="datasetRef names a Dataset (same namespace) whose tokenizer.json is used as is, "
        "the same bytes as uri would give, once that Dataset is Ready; this one waits for it. "
        "Datasets applied together (a chat Dataset sharing its base model's tokenizer) then need no "
        "ordering.",
    )
    vocab_size: int = Field(
        default=32000,
        ge=256,
        le=1_000_000,
        description="vocabSize of the trained tokenizer, special tokens included.",
    )
    min_frequency: int = Field(
        default=2, ge=1, le=1_000_000_000, description="minFrequency a pair needs to be merged."
    )
    sample_bytes: int = Field(
        default=500_000_000,
        ge=1,
        le=10**13,
        description="sampleBytes is how much training-split text to train on, at most.",
    )
    special_tokens: SpecialTokens = Field(
        default_factory=SpecialTokens,
        description="specialTokens for begin/end of text, padding and chat roles.",
    )
    chat_template: str = Field(
        default=DEFAULT_CHAT_TEMPLATE,
        max_length=20000,
        description="chatTemplate is a Jinja template for chat serving, saved in tokenizer_config.json.",
    )

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "self.uri != '' || self.fromModel != '' || has(self.datasetRef) || "
                "self.vocabSize >= 259 + size(self.specialTokens.additional)",
                "vocabSize must hold the 256 byte tokens and every special token",
            ),
            (
                "(self.uri != '' ? 1 : 0) + (self.fromModel != '' ? 1 : 0) + "
                "(has(self.datasetRef) ? 1 : 0) <= 1",
                ONE_SOURCE,
            ),
        )
    )

    @model_validator(mode="after")
    def _check(self) -> Tokenizer:
        given = bool(self.uri) + bool(self.from_model) + (self.dataset_ref is not None)
        if not given and self.vocab_size < 256 + len(self.special_tokens.all()):
            raise ValueError("vocabSize must hold the 256 byte tokens and every special token")
        if given > 1:
            raise ValueError(ONE_SOURCE)
        return self
